"""``beatrec align``: train the projector on training users' pairs, validate on validation users.

The loop is plain Hugging Face Accelerate, so the same command scales out unchanged:
``accelerate launch -m beatrec align ...`` or ``torchrun --nproc_per_node K -m beatrec align ...``.
Checkpoints hold only the trained parameters (projector, and codebooks when fine-tuned) plus the config.
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from beatrec.align.anchor import anchor_warmup
from beatrec.align.batch import collate_train
from beatrec.align.config import AlignConfig
from beatrec.align.history import HistoryPrompts
from beatrec.align.model import BehaviorLM, lora_config_dict
from beatrec.align.sources import load_source
from beatrec.align.task_data import TaskBatches, task_rows
from beatrec.align.tasks import EXPLAIN
from beatrec.align.vocab import BehaviorVocab
from beatrec.config import save_yaml, to_dict
from beatrec.data.dataset import XRecDataset, load_dataset
from beatrec.data.split import ZeroShotSplit, eval_pairs, stage2_texts, training_texts
from beatrec.errors import RunError
from beatrec.lm import load_causal_lm
from beatrec.runtime import torch_threads

ALIGN_DIR = "align"
WEIGHTS = "weights.safetensors"
ADAPTER_DIR = "adapter"  # the LoRA adapter (finetune=lora), in peft's format
PEFT_PREFIX = "base_model.model."  # how a PeftModel names the wrapped LM's parameters in a saved adapter


class AlignResult(NamedTuple):
    out_dir: Path
    history: pd.DataFrame  # one row per logged step: step, epoch, loss, nll, sar, seconds
    val_nll: list[float]  # per validation pass
    samples_per_s: float


def pair_records(rows: pd.DataFrame) -> list[dict]:
    return rows[["uid", "iid", "title", "explanation"]].to_dict("records")


def check_vocab_matches(vocab: BehaviorVocab, ds: XRecDataset, run: Path) -> None:
    if vocab.n_users != ds.n_users or vocab.n_items != ds.n_items:
        raise RunError(
            f"{run}: stage-1 tokens cover {vocab.n_users} users / {vocab.n_items} items but {ds.root} has "
            f"{ds.n_users} / {ds.n_items}; was the run tokenized from another dataset?"
        )


def autocast(accelerator, precision: str):  # noqa: ANN001, ANN201 - a context manager
    """``train.precision``: bfloat16 autocast on the accelerator's device type, or nothing."""
    return torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


@torch.no_grad()
def mean_nll(model: BehaviorLM, loader: DataLoader, accelerator, precision: str = "float32") -> float:  # noqa: ANN001
    model.eval()
    tot = torch.zeros(2)
    for batch in loader:
        with autocast(accelerator, precision):
            out = model(batch)
        n = (batch.labels[:, 1:] != -100).sum()
        tot += torch.stack([out.nll.detach().float().cpu() * n, n.float().cpu()])
    tot = accelerator.reduce(tot.to(accelerator.device), reduction="sum").cpu()
    model.train()
    return float(tot[0] / tot[1].clamp_min(1))


def train_align(run: str | Path, data: str | Path, cfg: AlignConfig, progress: bool = True,
                subdir: str = ALIGN_DIR) -> AlignResult:
    """Train stage 2 on the stage-1 run ``run`` and write ``run/subdir`` (default ``align/``).

    A different ``subdir`` keeps several stage-2 variants (ablations, the continuous baseline) beside one
    stage-1 run; :func:`beatrec.align.explain.load_aligned` reads them back with the same ``subdir``.
    """
    with torch_threads(cfg.train.threads):
        return _train(Path(run), Path(data), cfg, progress, subdir)


def training_pairs(ds: XRecDataset, split: ZeroShotSplit, source: str, run: Path) -> pd.DataFrame:
    """Stage 2's training rows: every training user's (``all``) or the cross-fitted stage-2 users' only.

    Raises:
        RunError: ``crossfit`` on a stage-1 run tokenized without stage-2 users.
    """
    if source == "crossfit":
        if not len(split.stage2_users):
            raise RunError(f"{run}: train.pairs=crossfit needs stage-2 users, but this run's split has none; "
                           "tokenize again with --set split.stage2_frac=0.5")
        return stage2_texts(ds, split)
    return training_texts(ds, split)


def make_scheduler(opt: torch.optim.Optimizer, schedule: str, total: int, warmup: int):  # noqa: ANN201
    """transformers' learning-rate schedule stepped per optimizer step: linear warmup over ``warmup`` steps,
    then constant, or linear / cosine decay to 0 at ``total``."""
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    if schedule == "constant":
        return get_constant_schedule_with_warmup(opt, warmup)
    if schedule == "linear":
        return get_linear_schedule_with_warmup(opt, warmup, total)
    return get_cosine_schedule_with_warmup(opt, warmup, total)


def eval_steps(n_batches: int, per_epoch: int) -> set[int]:
    """Batch indices (1-based, within an epoch) after which validation runs: ``per_epoch`` evenly spaced,
    always including the epoch's last batch."""
    k = min(per_epoch, n_batches)
    return {round(n_batches * (j + 1) / k) for j in range(k)}


def _train(run: Path, data: Path, cfg: AlignConfig, progress: bool, subdir: str = ALIGN_DIR) -> AlignResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    accelerator = Accelerator(cpu=not torch.cuda.is_available())  # cpu=True: multi-process CPU (gloo) under torchrun
    set_seed(cfg.train.seed)
    main = accelerator.is_main_process
    log = (lambda m: print(m, flush=True)) if (progress and main) else (lambda m: None)
    t_tr = cfg.train

    if not (run / "split.json").is_file():
        raise RunError(f"{run}: no split.json; run `beatrec tokenize --data {data} --out {run}` first")
    vocab = load_source(run, cfg.model.source, data)
    ds = load_dataset(data)
    check_vocab_matches(vocab, ds, run)
    split = ZeroShotSplit.load(run / "split.json")
    train_frame = training_pairs(ds, split, t_tr.pairs, run)  # never a val/test user's text
    profile_frame = train_frame  # profiles: one per training user / item, whatever subset of pairs is kept
    val_frame = eval_pairs(ds, split, "val")
    rng = np.random.default_rng(t_tr.seed)
    if t_tr.max_train_pairs and len(train_frame) > t_tr.max_train_pairs:
        train_frame = train_frame.iloc[np.sort(rng.choice(len(train_frame), t_tr.max_train_pairs, False))]
    if t_tr.val_pairs and len(val_frame) > t_tr.val_pairs:
        val_frame = val_frame.iloc[np.sort(rng.choice(len(val_frame), t_tr.val_pairs, False))]
    if not len(train_frame):
        raise RunError(f"{data}: no training pairs (no text rows of training users)")
    if t_tr.tasks == (EXPLAIN,) and not t_tr.title_dropout:
        train_rows, val_rows = pair_records(train_frame), pair_records(val_frame)
    else:  # multitask: profiles of the same (training / validation) users' rows only
        train_rows = task_rows(train_frame, t_tr.tasks, t_tr.profile_ratio, t_tr.title_dropout, t_tr.seed,
                               profile_frame)
        val_rows = task_rows(val_frame, t_tr.tasks, t_tr.profile_ratio, 0.0, t_tr.seed)
    if cfg.model.history_titles:
        hist = HistoryPrompts.build(ds, split, run, cfg.model.history_titles)
        hist.attach(train_rows)
        hist.attach(val_rows)

    lm, tok = load_causal_lm(cfg.lm)
    model = BehaviorLM(lm, vocab, cfg.model, seed=t_tr.seed)
    builders = {t: model.prompt_builder(tok, t) for t in t_tr.tasks}
    collate = partial(collate_train, builders, max_words=cfg.model.max_words, max_tokens=cfg.model.max_target_tokens)
    gen = torch.Generator().manual_seed(t_tr.seed)
    if t_tr.tasks == (EXPLAIN,):  # the single-task loader (the same batches as before multitask training)
        loader = DataLoader(train_rows, batch_size=t_tr.batch_size, shuffle=True, collate_fn=collate, generator=gen)
        val_loader = DataLoader(val_rows, batch_size=t_tr.batch_size, collate_fn=collate)
    else:  # every batch one task, tasks interleaved
        loader = DataLoader(train_rows, batch_sampler=TaskBatches(train_rows, t_tr.batch_size, gen), collate_fn=collate)
        val_loader = DataLoader(val_rows, batch_sampler=TaskBatches(val_rows, t_tr.batch_size), collate_fn=collate)
    counts = {t: sum(r.get("task", EXPLAIN) == t for r in train_rows) for t in t_tr.tasks}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t_tr.lr, weight_decay=t_tr.weight_decay)
    model, opt, loader, val_loader = accelerator.prepare(model, opt, loader, val_loader)
    total = t_tr.epochs * len(loader)
    if t_tr.max_steps:
        total = min(total, t_tr.max_steps)
    sched = make_scheduler(opt, t_tr.schedule, total, round(t_tr.warmup_frac * total))
    log(f"[align] {len(train_rows)} training examples ({t_tr.pairs}; "
        f"{', '.join(f'{t} {n}' for t, n in counts.items())}), {len(val_rows)} validation examples, "
        f"{sum(p.numel() for p in params):,} trainable parameters ({cfg.model.finetune}), "
        f"{accelerator.num_processes} process(es), {total} steps, lr {t_tr.lr:g} {t_tr.schedule}")

    out_dir = run / subdir
    ckpt_path = out_dir / CHECKPOINT
    ckpt_id = checkpoint_identity(cfg, run)
    resume = read_checkpoint(ckpt_path, cfg, run)
    if resume is not None:
        accelerator.unwrap_model(model).load_trained_state(resume["trained"])
        accelerator.unwrap_model(model).generator.set_state(resume["sar_generator"])  # SAR pair sampling
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        log(f"[align] resuming from {ckpt_path} at step {resume['step']} of {total}")
    warm_s = 0.0
    if t_tr.anchor_warmup and resume is None:  # a checkpoint holds the warmed projector
        tw = time.perf_counter()
        inner = accelerator.unwrap_model(model)
        order = gen.get_state()  # the LM epochs see the batch order they would see without the warm-up
        warm = anchor_warmup(inner, loader, t_tr.anchor_warmup)
        gen.set_state(order)
        if accelerator.num_processes > 1:  # each process warmed on its shard: start from the mean projector
            with torch.no_grad():
                for p_ in inner.projector.parameters():
                    p_.copy_(accelerator.reduce(p_.detach().clone(), "mean"))
        warm_s = time.perf_counter() - tw
        log(f"[align] word-anchoring warm-up: {t_tr.anchor_warmup} passes, L_anchor {warm[0]:.3f} -> {warm[-1]:.3f} "
            f"({warm_s:.0f}s)")
    history: list[dict] = []
    evals: list[dict] = []  # one per validation pass: step, epoch, val_nll
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    step, n_seen, t0, before = 0, 0, time.perf_counter(), 0.0
    sums, k = np.zeros(5), 0
    if resume is not None:
        history, evals, best, step, n_seen = (resume["history"], resume["evals"], resume["best"], resume["step"],
                                              resume["n_seen"])
        sums, k, before = np.asarray(resume["sums"]), resume["k"], resume["train_seconds"]
        warm_s = resume["warmup_seconds"]
    bar = tqdm(total=total, initial=step, desc="align", unit="step", disable=not (progress and main) or None)
    at = eval_steps(len(loader), t_tr.evals_per_epoch)
    model.train()
    done = False
    first_epoch, skip = (resume["epoch"], resume["batch"]) if resume is not None else (1, 0)
    for epoch in range(first_epoch, t_tr.epochs + 1):
        if resume is not None and epoch == first_epoch:
            gen.set_state(resume["epoch_generator"])  # the resumed epoch's batch order
        epoch_gen = gen.get_state()
        if epoch != first_epoch or resume is None:
            sums, k = np.zeros(5), 0
        for j, batch in enumerate(loader, start=1):
            if j <= skip:  # batches the checkpointed run had already trained on
                continue
            if skip and j == skip + 1:
                torch.set_rng_state(resume["torch_rng"])  # dropout continues as it would have
                skip = 0
            with autocast(accelerator, t_tr.precision):
                out = model(batch)
            accelerator.backward(out.loss)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            n_seen += len(batch.users) * accelerator.num_processes
            sums += [out.loss.item(), out.nll.item(), out.sar.item(), out.anchor.item(), out.contrast.item()]
            k += 1
            bar.update(1)
            if step % t_tr.log_every == 0 or step == total:
                m = sums / k
                history.append({"step": step, "epoch": epoch, "loss": m[0], "nll": m[1], "sar": m[2], "anchor": m[3],
                                "contrast": m[4],
                                "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0})
                bar.set_postfix(nll=f"{m[1]:.3f}", sar=f"{m[2]:.3f}")
                sums[:] = 0
                k = 0
            done = bool(t_tr.max_steps and step >= t_tr.max_steps)
            if len(val_rows) and (j in at or done):
                v = mean_nll(model, val_loader, accelerator, t_tr.precision)
                evals.append({"step": step, "epoch": epoch, "val_nll": v})
                log(f"[align] step {step} (epoch {epoch}): validation NLL {v:.4f}")
                if t_tr.select_best and (best is None or v < best[0]):
                    best = (v, accelerator.unwrap_model(model).trained_state())
            if t_tr.checkpoint_every and step % t_tr.checkpoint_every == 0 and step < total and not done and main:
                write_checkpoint(ckpt_path, {
                    "config": ckpt_id, "step": step, "epoch": epoch, "batch": j,
                    "epoch_generator": epoch_gen, "torch_rng": torch.get_rng_state(),
                    "sar_generator": accelerator.unwrap_model(model).generator.get_state(),
                    "trained": accelerator.unwrap_model(model).trained_state(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "history": history, "evals": evals, "best": best,
                    "n_seen": n_seen, "sums": sums.tolist(), "k": k,
                    "train_seconds": before + time.perf_counter() - t0, "warmup_seconds": warm_s})
            if done:
                break
        if skip:  # the checkpoint closed its epoch: the next one starts afresh
            torch.set_rng_state(resume["torch_rng"])
            skip = 0
        if done:
            break
    bar.close()
    train_s = before + time.perf_counter() - t0
    inner = accelerator.unwrap_model(model)
    chosen = {"step": step, "rule": "last"}
    if best is not None:
        inner.load_trained_state(best[1])
        chosen = {**next(e for e in evals if e["val_nll"] == best[0]), "rule": "lowest validation NLL"}
        log(f"[align] kept step {chosen['step']} (validation NLL {best[0]:.4f})")
    hist = pd.DataFrame(history)
    accelerator.wait_for_everyone()
    if t_tr.rank_weights:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_trained(inner, out_dir, f"weights.rank{accelerator.process_index}.safetensors")
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_trained(inner, out_dir, WEIGHTS)
        save_yaml(cfg, out_dir / "config.yaml")
        emb = lm.get_input_embeddings()
        meta = {"data": str(data.resolve()), "lm": cfg.lm.name, "lm_width": emb.embedding_dim,
                "lm_vocab": emb.num_embeddings, "n_users": vocab.n_users, "n_items": vocab.n_items,
                "n_micro": vocab.n_micro, "code_dim": vocab.code_dim, "source": cfg.model.source,
                "finetune": cfg.model.finetune}
        (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
        hist.to_csv(out_dir / "history.csv", index=False)
        val_nll = [e["val_nll"] for e in evals]
        metrics = {"train_pairs": counts.get(EXPLAIN, 0), "train_examples": counts, "pairs": t_tr.pairs, "val_pairs": len(val_rows), "steps": step,
                   "processes": accelerator.num_processes, "train_seconds": train_s, "warmup_seconds": warm_s,
                   "samples_per_s": n_seen / train_s if train_s > 0 else float("nan"), "val_nll": val_nll,
                   "evaluations": evals, "kept": chosen}
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if len(hist):
            from beatrec.plots import plot_align_curves

            plot_align_curves(hist, out_dir / "loss_curves.png", pd.DataFrame(evals))
        log(f"[align] wrote {out_dir} ({step} steps, {metrics['samples_per_s']:.2f} samples/s)")
        ckpt_path.unlink(missing_ok=True)  # the finished weights replace it
    accelerator.wait_for_everyone()
    return AlignResult(out_dir, hist, [e["val_nll"] for e in evals], n_seen / train_s if train_s > 0 else float("nan"))


CHECKPOINT = "checkpoint.pt"  # RUN/<subdir>/checkpoint.pt while stage 2 trains (train.checkpoint_every)


def checkpoint_identity(cfg: AlignConfig, run: Path | None = None) -> dict:
    """What a checkpoint must match to be resumed: the config but machine settings (threads, logging, checkpoint
    interval), and the stage-1 tokens and split of ``run`` it trains on (a digest of their files)."""
    import hashlib

    d = to_dict(cfg)
    for key in ("threads", "log_every", "checkpoint_every"):
        d["train"].pop(key, None)
    if run is not None:
        h = hashlib.sha256()
        for name in ("user_tokens.parquet", "item_tokens.parquet", "split.json"):
            f = run / name
            h.update(f.read_bytes() if f.is_file() else b"-")
        d["stage1"] = h.hexdigest()[:16]
    return d


def write_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file, then a rename): a run killed while writing
    leaves the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path, cfg: AlignConfig, run: Path | None = None) -> dict | None:
    """The checkpoint at ``path`` when it was written under the same config and stage 1 (:func:`checkpoint_identity`),
    else None (no file, or another config: that one is ignored and overwritten by this training's)."""
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=False)
    return state if state.get("config") == checkpoint_identity(cfg, run) else None


def save_trained(model: BehaviorLM, out_dir: Path, name: str) -> None:
    """Write the trained parameters: ``name`` (projector, soft prompt, codebooks when trained) and, in LoRA
    mode, the LM adapter in peft's format beside it (``adapter/adapter_model.safetensors`` +
    ``adapter_config.json``, loadable with ``peft.PeftModel.from_pretrained`` on the base LM)."""
    from safetensors.torch import save_file

    state = model.trained_state()
    own = {k: v.contiguous().cpu() for k, v in state.items() if name != WEIGHTS or not k.startswith("lm.")}
    save_file(own, str(out_dir / name))  # a per-process file (rank_weights) keeps the adapter too, for comparison
    if model.cfg.finetune == "lora" and name == WEIGHTS:
        from peft import get_peft_model_state_dict

        adir = out_dir / ADAPTER_DIR
        adir.mkdir(exist_ok=True)
        adapter = {PEFT_PREFIX + k: v.contiguous().cpu() for k, v in get_peft_model_state_dict(model.lm).items()}
        save_file(adapter, str(adir / "adapter_model.safetensors"))
        (adir / "adapter_config.json").write_text(json.dumps(lora_config_dict(model.cfg, model.lm), indent=2,
                                                             default=list))
