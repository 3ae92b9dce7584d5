"""``beatrec seqrec train --model llmbs``: LLM-BS end to end on a sequential dataset directory.

Steps (each logged, timings in ``metrics.json``): leave-one-out split (optionally a seeded user slice) ->
behavior embeddings (a SASRec run, trained into ``RUN/behavior`` or read from ``behavior_run``) -> semantic
embeddings (the LM's mean hidden state over each title, eq. 2) -> dual-source index -> code tokens added to
the LM -> multi-task training with GCD -> annealing adapter on each user's most recent window (a slice) ->
test/validation Recall and NDCG@5/10 by constrained beam search, with and without the adapter.
A dataset without item text can only build behavior-derived indices and says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from beatrec.config import check, save_yaml
from beatrec.lm import LMConfig
from beatrec.runtime import machine_info
from beatrec.seqrec.config import SeqTrainConfig
from beatrec.seqrec.data import Samples, leave_one_out, subset_samples
from beatrec.seqrec.evaluate import KS, metrics_from_topk
from beatrec.seqrec.llmbs.indices import IndexConfig
from beatrec.seqrec.llmbs.model import GCDConfig
from beatrec.seqrec.llmbs.tasks import TaskConfig
from beatrec.seqrec.llmbs.train import LLMBSTrainConfig
from beatrec.seqrec.rundir import RANKINGS, write_rankings


@dataclass
class LLMBSConfig:
    """Everything an LLM-BS run reads; saved as ``config.yaml`` in the run directory."""

    lm: LMConfig = field(default_factory=LMConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    gcd: GCDConfig = field(default_factory=GCDConfig)
    train: LLMBSTrainConfig = field(default_factory=LLMBSTrainConfig)
    anneal: bool = True  # train the annealing adapter
    anneal_users: int = 500  # users in the annealing slice (their most recent window each); 0 = all
    beam: int = 20
    max_len: int = 20  # history items per training window
    max_users: int = 0  # 0 = all users; else a seeded slice of users (CPU runs)
    subset_seed: int = 0
    eval_users: int = 0  # test/validation users scored (seeded subset); 0 = all
    eval_batch_size: int = 16
    eval_val: bool = True  # also score the validation users (the benchmark turns this off to save time)
    behavior_run: str = ""  # an existing SASRec run (same dataset/slice) for the behavior embeddings
    behavior_train: SeqTrainConfig = field(default_factory=SeqTrainConfig)
    model: str = "llmbs"

    def validate(self) -> None:
        check(self.beam >= max(KS), f"beam must be >= {max(KS)} (top-{max(KS)} lists are scored)")
        for name in ("anneal_users", "max_users", "eval_users"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0")
        check(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")


WEIGHTS = "llmbs_trained.safetensors"


def _is_main() -> bool:
    from beatrec.seqrec.llmbs.train import accelerator

    return accelerator().is_main_process


def score_split(lm, tok, vocab, code_text: list[str], split, cfg: LLMBSConfig, progress: bool = False,  # noqa: ANN001
                with_adapter_off: bool = False) -> Scored:
    """Test and validation Recall/NDCG@5/10 by constrained beam search (``cfg.eval_users`` seeded users; the
    annealing adapter on, and with ``with_adapter_off`` also off on the test users), and the test inference
    seconds per 1,000 users."""
    from tqdm.auto import tqdm

    from beatrec.seqrec.llmbs.generate import recommend
    from beatrec.seqrec.llmbs.train import adapter_disabled

    rankings = {}

    def scored(samples: Samples, desc: str) -> dict[str, float]:
        s = subset_samples(samples, cfg.eval_users, cfg.subset_seed)
        tops = []
        for b in tqdm(range(0, len(s.target), cfg.eval_batch_size), desc=desc, disable=not progress, leave=False):
            res = recommend(lm, tok, vocab, s.history[b : b + cfg.eval_batch_size], code_text, cfg.beam,
                            cfg.tasks.max_history)
            tops.append(res.values[:, : max(KS)].numpy())
        rankings[desc] = (s.user, np.concatenate(tops))
        return metrics_from_topk(rankings[desc][1], s.target).as_dict()

    t = time.perf_counter()
    results = {"test": scored(split.test, "test")}
    per_1000 = (time.perf_counter() - t) / max(len(rankings["test"][0]), 1) * 1000
    if cfg.eval_val:
        results["val"] = scored(split.val, "validation")
    if with_adapter_off:
        with adapter_disabled(lm):
            results["test_without_adapter"] = scored(split.test, "test, adapter off")
    return Scored(results, per_1000, *rankings["test"])


class Scored(NamedTuple):
    metrics: dict[str, dict[str, float]]  # test, val (and test_without_adapter) Recall/NDCG@5/10
    inference_s_per_1000_users: float
    test_users: np.ndarray  # (U,) internal user ids scored
    test_top: np.ndarray  # (U, 10) ranked internal item ids (annealing adapter on)


def last_windows(train: Samples) -> Samples:
    """Each user's most recent training window (the annealing slice's candidates)."""
    last = {}
    for i, u in enumerate(train.user.tolist()):
        last[u] = i
    idx = np.asarray([last[u] for u in sorted(last)], dtype=np.int64)
    return Samples(train.history[idx], train.target[idx], train.user[idx])


def train_llmbs(data: str | Path, out_dir: str | Path, cfg: LLMBSConfig | None = None, progress: bool = True
                ) -> dict[str, Any]:
    """Train and evaluate an LLM-BS run; returns (and writes) ``metrics.json``."""
    from safetensors.torch import save_file

    from beatrec.lm import load_causal_lm, resolve_lm_path
    from beatrec.seqrec.audit import warn_if_ordered
    from beatrec.seqrec.config import SeqRecConfig
    from beatrec.seqrec.llmbs.indices import build_index, cached_lm_item_embeddings
    from beatrec.seqrec.llmbs.model import LLMBS
    from beatrec.seqrec.llmbs.tasks import build_examples
    from beatrec.seqrec.llmbs.train import accelerator, anneal, fit
    from beatrec.seqrec.llmbs.vocab import add_code_tokens
    from beatrec.seqrec.rundir import load_run_dataset, write_run_json
    from beatrec.seqrec.train import behavior_embeddings

    cfg = cfg or LLMBSConfig()
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if _is_main():
        save_yaml(cfg, out / "config.yaml")
    log = (lambda m: print(m, flush=True)) if progress and _is_main() else (lambda m: None)  # noqa: E731
    timings: dict[str, float] = {}
    t = time.perf_counter()
    seq_cfg = SeqRecConfig(model="sasrec", max_len=cfg.max_len, max_users=cfg.max_users, subset_seed=cfg.subset_seed,
                           behavior_run=cfg.behavior_run, behavior_train=cfg.behavior_train)
    ds = load_run_dataset(data, seq_cfg.max_users, seq_cfg.subset_seed)
    warn_if_ordered(ds)
    split = leave_one_out(ds, cfg.max_len)
    log(f"[llmbs] {ds.name}: {ds.n_users} users, {ds.n_items} items, {len(split.train.target)} training windows")
    acc = accelerator()
    with acc.main_process_first():  # one process trains the behavior encoder, the others then read it
        behavior = behavior_embeddings(data, out, seq_cfg, ds, progress and acc.is_main_process)
    timings["behavior_s"] = time.perf_counter() - t
    t = time.perf_counter()
    lm, tok = load_causal_lm(cfg.lm)
    lm.to(acc.device)
    index_cfg, note = cfg.index, ""
    if not ds.has_text and index_cfg.kind in ("dual", "semantic"):
        note = f"{ds.name} has no item text: index.kind {index_cfg.kind} -> behavior (behavior codes only)"
        log(f"[llmbs] {note}")
        index_cfg = IndexConfig(**{**index_cfg.__dict__, "kind": "behavior"})
    titles = ds.titles
    semantic = (cached_lm_item_embeddings(lm, tok, [t or f"item {r}" for t, r in zip(titles, ds.item_raw_ids,
                                                                                     strict=True)],
                                          str(resolve_lm_path(cfg.lm)))
                if titles is not None else torch.zeros(ds.n_items, 1))
    timings["semantic_s"] = time.perf_counter() - t
    codes = build_index(index_cfg, ds.n_items, semantic if titles is not None else None, behavior)
    codes.save(out / "codes_llmbs.csv", ds.item_raw_ids)
    vocab = add_code_tokens(lm, tok, codes)
    code_text = [vocab.text(i, tok) for i in range(ds.n_items)]
    rep = codes.report()
    log(f"[llmbs] index {index_cfg.kind}: depth {codes.depth}, {len(tok) - vocab.first_new_id} new tokens")
    examples = build_examples(split.train, code_text, titles, cfg.tasks)
    gcd = cfg.gcd if titles is not None else GCDConfig(0.0, cfg.gcd.lambda_behavior, cfg.gcd.temperature)
    model = LLMBS(lm, semantic, behavior, gcd)
    t = time.perf_counter()
    stage1 = fit(model, tok, examples, cfg.train, vocab.first_new_id, progress)
    timings["train_s"] = time.perf_counter() - t
    log(f"[llmbs] stage 1: {len(examples)} examples, {stage1.steps} steps, {stage1.seconds:.0f} s, "
        f"loss per epoch {[round(x, 4) for x in stage1.losses]}")
    stage2 = None
    if cfg.anneal:
        sl = subset_samples(last_windows(split.train), cfg.anneal_users, cfg.subset_seed)
        ex2 = build_examples(sl, code_text, None, TaskConfig(seqrec=-1, semantic=0, preference=0))
        t = time.perf_counter()
        stage2 = anneal(model, tok, ex2, cfg.train, progress)
        timings["anneal_s"] = time.perf_counter() - t
        log(f"[llmbs] annealing adapter: {len(ex2)} examples, {stage2.steps} steps, {stage2.seconds:.0f} s")
    if not acc.is_main_process:  # multi-GPU: evaluation and the run directory belong to the main process
        return {}

    sc = score_split(model.inference_modules(), tok, vocab, code_text, split, cfg, progress,
                     with_adapter_off=stage2 is not None)
    results = sc.metrics
    timings["inference_s_per_1000_users"] = sc.inference_s_per_1000_users
    write_rankings(out / RANKINGS, ds, sc.test_users, sc.test_top)
    # What training changed: LoRA adapters (or every LM weight under full fine-tuning) and the new vocabulary rows.
    full = cfg.train.finetune == "full"
    state = {k: v.detach().cpu().contiguous() for k, v in model.lm.named_parameters()
             if "lora_" in k or (full and "embed_tokens" not in k and "lm_head" not in k)}
    state["new_token_rows.input"] = model.lm.get_input_embeddings().weight[vocab.first_new_id :].detach().cpu().contiguous()
    head = model.lm.get_output_embeddings()
    if head is not None and head.weight is not model.lm.get_input_embeddings().weight:
        state["new_token_rows.output"] = head.weight[vocab.first_new_id :].detach().cpu().contiguous()
    save_file(state, str(out / WEIGHTS))
    write_run_json(out, data, "llmbs", ds, first_new_id=vocab.first_new_id, annealed=stage2 is not None)
    metrics = {"model": "llmbs", "dataset": str(data), "n_users": ds.n_users, "n_items": ds.n_items,
               "index": index_cfg.kind, "index_note": note, "code_report": rep.as_dict(),
               "n_examples": len(examples), "stage1": stage1._asdict(),
               "anneal": stage2._asdict() if stage2 else None, **results, "timings": timings,
               "eval_users": cfg.eval_users or len(split.test.target), "machine": machine_info(acc.device)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    log(f"[llmbs] test {results['test']}")
    return metrics


def load_llmbs(run: str | Path, ds=None):  # noqa: ANN001, ANN201
    """Rebuild a trained LLM-BS run for inference: the base LM of ``config.yaml``, the code tokens of
    ``codes_llmbs.csv``, the LoRA adapters (stage 1 and annealing) and every trained tensor of
    ``llmbs_trained.safetensors``. Returns ``(lm, tok, vocab, code_text)``."""
    from peft import get_peft_model
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from beatrec.config import load_yaml
    from beatrec.errors import RunError
    from beatrec.lm import load_causal_lm
    from beatrec.seqrec.codes import ItemCodes
    from beatrec.seqrec.llmbs.train import add_annealing_adapter, lora_config
    from beatrec.seqrec.llmbs.vocab import add_code_tokens
    from beatrec.seqrec.rundir import read_run_json

    run = Path(run)
    info = read_run_json(run)
    for f in ("config.yaml", "codes_llmbs.csv", WEIGHTS):
        if not (run / f).is_file():
            raise RunError(f"{run}: {f} missing (not a finished LLM-BS run)")
    cfg = load_yaml(LLMBSConfig, run / "config.yaml")
    try:
        state = load_file(str(run / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise RunError(f"{run / WEIGHTS}: corrupt ({e})") from e
    lm, tok = load_causal_lm(cfg.lm)
    codes = ItemCodes.load(run / "codes_llmbs.csv")
    vocab = add_code_tokens(lm, tok, codes)
    if vocab.first_new_id != info["first_new_id"]:
        raise RunError(f"{run}: the LM's vocabulary has {vocab.first_new_id} tokens, the run was trained with "
                       f"{info['first_new_id']} (a different lm.name?)")
    if cfg.train.finetune == "lora":
        lm = get_peft_model(lm, lora_config(cfg.train.lora))
    if info["annealed"]:
        lm = add_annealing_adapter(lm, cfg.train.lora)
    params = dict(lm.named_parameters())
    with torch.no_grad():
        for name in ("input", "output"):
            rows = state.pop(f"new_token_rows.{name}", None)
            layer = lm.get_input_embeddings() if name == "input" else lm.get_output_embeddings()
            if rows is not None:
                layer.weight[vocab.first_new_id :] = rows
        unknown = sorted(set(state) - set(params))
        if unknown:
            raise RunError(f"{run / WEIGHTS}: {len(unknown)} tensors do not fit this LM (first: {unknown[0]})")
        for k, v in state.items():
            params[k].copy_(v)
    lm.eval()
    n_items = ds.n_items if ds is not None else info["n_items"]
    if n_items != codes.n_items:
        raise RunError(f"{run}: codes for {codes.n_items} items, the dataset has {n_items}")
    return lm, tok, vocab, [vocab.text(i, tok) for i in range(codes.n_items)]


def evaluate_llmbs(run: str | Path, data: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """``beatrec seqrec evaluate`` of an LLM-BS run: reload it, score test/validation (adapter on and off),
    write ``RUN/evaluation.json`` and return it."""
    from beatrec.config import load_yaml
    from beatrec.errors import RunError
    from beatrec.seqrec.rundir import dataset_fingerprint, load_run_dataset, read_run_json

    run = Path(run)
    info = read_run_json(run)
    cfg = load_yaml(LLMBSConfig, run / "config.yaml")
    ds = load_run_dataset(data or info["data"], cfg.max_users, cfg.subset_seed)
    if dataset_fingerprint(ds) != info["items_fingerprint"]:
        raise RunError(f"{run}: the dataset's items differ from those the run was trained on")
    lm, tok, vocab, code_text = load_llmbs(run, ds)
    split = leave_one_out(ds, cfg.max_len)
    sc = score_split(lm, tok, vocab, code_text, split, cfg, progress, with_adapter_off=info["annealed"])
    results = sc.metrics
    write_rankings(run / f"evaluation_{RANKINGS}", ds, sc.test_users, sc.test_top)
    result = {"model": "llmbs", "run": str(run), **results, "inference_s_per_1000_users": sc.inference_s_per_1000_users}
    (run / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    if progress:
        t = results["test"]
        print(f"llmbs test: R@5 {t['recall@5']:.4f} R@10 {t['recall@10']:.4f} N@5 {t['ndcg@5']:.4f} "
              f"N@10 {t['ndcg@10']:.4f}", flush=True)
    return result
