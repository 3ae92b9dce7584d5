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
from typing import Any

import numpy as np
import torch

from beatrec.config import check, save_yaml
from beatrec.lm import LMConfig
from beatrec.seqrec.data import Samples, leave_one_out, subset_samples
from beatrec.seqrec.evaluate import KS, metrics_from_topk
from beatrec.seqrec.llmbs.indices import IndexConfig
from beatrec.seqrec.llmbs.model import GCDConfig
from beatrec.seqrec.llmbs.tasks import TaskConfig
from beatrec.seqrec.llmbs.train import LLMBSTrainConfig
from beatrec.seqrec.train import SeqTrainConfig


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
    behavior_run: str = ""  # an existing SASRec run (same dataset/slice) for the behavior embeddings
    behavior_train: SeqTrainConfig = field(default_factory=SeqTrainConfig)
    model: str = "llmbs"

    def validate(self) -> None:
        check(self.beam >= max(KS), f"beam must be >= {max(KS)} (top-{max(KS)} lists are scored)")
        for name in ("anneal_users", "max_users", "eval_users"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0")
        check(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")


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

    from beatrec.lm import load_causal_lm
    from beatrec.seqrec.llmbs.generate import recommend
    from beatrec.seqrec.llmbs.indices import build_index, lm_item_embeddings
    from beatrec.seqrec.llmbs.model import LLMBS
    from beatrec.seqrec.llmbs.tasks import build_examples
    from beatrec.seqrec.llmbs.train import adapter_disabled, anneal, fit
    from beatrec.seqrec.llmbs.vocab import add_code_tokens
    from beatrec.seqrec.train import SeqRecConfig, _behavior_embeddings, _load_dataset

    cfg = cfg or LLMBSConfig()
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    log = (lambda m: print(m, flush=True)) if progress else (lambda m: None)  # noqa: E731
    timings: dict[str, float] = {}
    t = time.perf_counter()
    seq_cfg = SeqRecConfig(model="sasrec", max_len=cfg.max_len, max_users=cfg.max_users, subset_seed=cfg.subset_seed,
                           behavior_run=cfg.behavior_run, behavior_train=cfg.behavior_train)
    ds = _load_dataset(data, seq_cfg)
    split = leave_one_out(ds, cfg.max_len)
    log(f"[llmbs] {ds.name}: {ds.n_users} users, {ds.n_items} items, {len(split.train.target)} training windows")
    behavior = _behavior_embeddings(data, out, seq_cfg, ds, progress)
    timings["behavior_s"] = time.perf_counter() - t
    t = time.perf_counter()
    lm, tok = load_causal_lm(cfg.lm)
    index_cfg, note = cfg.index, ""
    if not ds.has_text and index_cfg.kind in ("dual", "semantic"):
        note = f"{ds.name} has no item text: index.kind {index_cfg.kind} -> behavior (behavior codes only)"
        log(f"[llmbs] {note}")
        index_cfg = IndexConfig(**{**index_cfg.__dict__, "kind": "behavior"})
    titles = ds.titles
    semantic = (lm_item_embeddings(lm, tok, [t or f"item {r}" for t, r in zip(titles, ds.item_raw_ids, strict=True)])
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

    def scored(samples: Samples) -> dict[str, float]:
        s = subset_samples(samples, cfg.eval_users, cfg.subset_seed)
        tops = []
        for b in range(0, len(s.target), cfg.eval_batch_size):
            res = recommend(model.inference_modules(), tok, vocab, s.history[b : b + cfg.eval_batch_size], code_text,
                            cfg.beam, cfg.tasks.max_history)
            tops.append(res.values[:, : max(KS)].numpy())
        return metrics_from_topk(np.concatenate(tops), s.target).as_dict()

    t = time.perf_counter()
    results = {"test": scored(split.test)}
    per_1000 = (time.perf_counter() - t) / max(min(cfg.eval_users or len(split.test.target), len(split.test.target)), 1) * 1000
    results["val"] = scored(split.val)
    if stage2 is not None:
        with adapter_disabled(model):
            results["test_without_adapter"] = scored(split.test)
    timings["inference_s_per_1000_users"] = per_1000
    # What training changed: LoRA adapters (or every LM weight under full fine-tuning) and the new vocabulary rows.
    full = cfg.train.finetune == "full"
    state = {k: v.detach().contiguous() for k, v in model.lm.named_parameters()
             if "lora_" in k or (full and "embed_tokens" not in k and "lm_head" not in k)}
    state["new_token_rows.input"] = model.lm.get_input_embeddings().weight[vocab.first_new_id :].detach().contiguous()
    head = model.lm.get_output_embeddings()
    if head is not None and head.weight is not model.lm.get_input_embeddings().weight:
        state["new_token_rows.output"] = head.weight[vocab.first_new_id :].detach().contiguous()
    save_file(state, str(out / "llmbs_trained.safetensors"))
    metrics = {"model": "llmbs", "dataset": str(data), "n_users": ds.n_users, "n_items": ds.n_items,
               "index": index_cfg.kind, "index_note": note, "code_report": rep.as_dict(),
               "n_examples": len(examples), "stage1": stage1._asdict(),
               "anneal": stage2._asdict() if stage2 else None, **results, "timings": timings,
               "eval_users": cfg.eval_users or len(split.test.target)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    log(f"[llmbs] test {results['test']}")
    return metrics
