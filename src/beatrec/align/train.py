"""``beatrec align``: train the projector on training users' pairs, validate on validation users.

The loop is plain Hugging Face Accelerate, so the same command scales out unchanged:
``accelerate launch -m beatrec align ...`` or ``torchrun --nproc_per_node K -m beatrec align ...``.
Checkpoints hold only the trained parameters (projector, and codebooks when fine-tuned) plus the config.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from beatrec.align.batch import collate_train
from beatrec.align.config import AlignConfig
from beatrec.align.model import BehaviorLM
from beatrec.align.prompt import PromptBuilder
from beatrec.align.vocab import BehaviorVocab, load_source
from beatrec.config import save_yaml
from beatrec.data.dataset import XRecDataset, load_dataset
from beatrec.data.split import ZeroShotSplit, eval_pairs, training_texts
from beatrec.errors import RunError
from beatrec.lm import load_causal_lm
from beatrec.runtime import torch_threads

ALIGN_DIR = "align"
WEIGHTS = "weights.safetensors"


class AlignResult(NamedTuple):
    out_dir: Path
    history: pd.DataFrame  # one row per logged step: step, epoch, loss, nll, sar, seconds
    val_nll: list[float]  # per epoch
    samples_per_s: float


def pair_records(rows: pd.DataFrame) -> list[dict]:
    return rows[["uid", "iid", "title", "explanation"]].to_dict("records")


def check_vocab_matches(vocab: BehaviorVocab, ds: XRecDataset, run: Path) -> None:
    if vocab.n_users != ds.n_users or vocab.n_items != ds.n_items:
        raise RunError(
            f"{run}: stage-1 tokens cover {vocab.n_users} users / {vocab.n_items} items but {ds.root} has "
            f"{ds.n_users} / {ds.n_items}; was the run tokenized from another dataset?"
        )


@torch.no_grad()
def mean_nll(model: BehaviorLM, loader: DataLoader, accelerator) -> float:  # noqa: ANN001
    model.eval()
    tot = torch.zeros(2)
    for batch in loader:
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


def _train(run: Path, data: Path, cfg: AlignConfig, progress: bool, subdir: str = ALIGN_DIR) -> AlignResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    accelerator = Accelerator(cpu=not torch.cuda.is_available())  # cpu=True: multi-process CPU (gloo) under torchrun
    set_seed(cfg.train.seed)
    main = accelerator.is_main_process
    log = (lambda m: print(m, flush=True)) if (progress and main) else (lambda m: None)

    if not (run / "split.json").is_file():
        raise RunError(f"{run}: no split.json; run `beatrec tokenize --data {data} --out {run}` first")
    vocab = load_source(run, cfg.model.source, data)
    ds = load_dataset(data)
    check_vocab_matches(vocab, ds, run)
    split = ZeroShotSplit.load(run / "split.json")
    train_rows = pair_records(training_texts(ds, split))  # never a val/test user's text
    val_rows = pair_records(eval_pairs(ds, split, "val"))
    rng = np.random.default_rng(cfg.train.seed)
    if cfg.train.max_train_pairs and len(train_rows) > cfg.train.max_train_pairs:
        train_rows = [train_rows[i] for i in np.sort(rng.choice(len(train_rows), cfg.train.max_train_pairs, False))]
    if cfg.train.val_pairs and len(val_rows) > cfg.train.val_pairs:
        val_rows = [val_rows[i] for i in np.sort(rng.choice(len(val_rows), cfg.train.val_pairs, False))]
    if not train_rows:
        raise RunError(f"{data}: no training pairs (no text rows of training users)")

    lm, tok = load_causal_lm(cfg.lm)
    model = BehaviorLM(lm, vocab, cfg.model, seed=cfg.train.seed)
    builder = PromptBuilder(tok, model.n_side_slots, model.n_side_slots)
    collate = partial(collate_train, builder, max_words=cfg.model.max_words, max_tokens=cfg.model.max_target_tokens)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    loader = DataLoader(train_rows, batch_size=cfg.train.batch_size, shuffle=True, collate_fn=collate, generator=gen)
    val_loader = DataLoader(val_rows, batch_size=cfg.train.batch_size, collate_fn=collate)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=0.0)
    model, opt, loader, val_loader = accelerator.prepare(model, opt, loader, val_loader)
    log(f"[align] {len(train_rows)} training pairs, {len(val_rows)} validation pairs, "
        f"{sum(p.numel() for p in params):,} trainable parameters, {accelerator.num_processes} process(es)")

    history: list[dict] = []
    val_nll: list[float] = []
    step, n_seen, t0 = 0, 0, time.perf_counter()
    total = cfg.train.epochs * len(loader)
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    bar = tqdm(total=total, desc="align", unit="step", disable=not (progress and main) or None)
    model.train()
    done = False
    for epoch in range(1, cfg.train.epochs + 1):
        sums = np.zeros(3)
        k = 0
        for batch in loader:
            out = model(batch)
            accelerator.backward(out.loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            n_seen += len(batch.users) * accelerator.num_processes
            sums += [out.loss.item(), out.nll.item(), out.sar.item()]
            k += 1
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == total:
                m = sums / k
                history.append({"step": step, "epoch": epoch, "loss": m[0], "nll": m[1], "sar": m[2],
                                "seconds": time.perf_counter() - t0})
                bar.set_postfix(nll=f"{m[1]:.3f}", sar=f"{m[2]:.3f}")
                sums[:] = 0
                k = 0
            if cfg.train.max_steps and step >= cfg.train.max_steps:
                done = True
                break
        if len(val_rows):
            val_nll.append(mean_nll(model, val_loader, accelerator))
            log(f"[align] epoch {epoch}: validation NLL {val_nll[-1]:.4f}")
        if done:
            break
    bar.close()
    train_s = time.perf_counter() - t0
    out_dir = run / subdir
    hist = pd.DataFrame(history)
    accelerator.wait_for_everyone()
    if cfg.train.rank_weights:
        out_dir.mkdir(parents=True, exist_ok=True)
        state = accelerator.unwrap_model(model).trained_state()
        save_file({k: v.contiguous().cpu() for k, v in state.items()},
                  str(out_dir / f"weights.rank{accelerator.process_index}.safetensors"))
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        inner = accelerator.unwrap_model(model)
        save_file({k: v.contiguous().cpu() for k, v in inner.trained_state().items()}, str(out_dir / WEIGHTS))
        save_yaml(cfg, out_dir / "config.yaml")
        emb = lm.get_input_embeddings()
        meta = {"data": str(data.resolve()), "lm": cfg.lm.name, "lm_width": emb.embedding_dim,
                "lm_vocab": emb.num_embeddings, "n_users": vocab.n_users, "n_items": vocab.n_items,
                "n_micro": vocab.n_micro, "code_dim": vocab.code_dim, "source": cfg.model.source}
        (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
        hist.to_csv(out_dir / "history.csv", index=False)
        metrics = {"train_pairs": len(train_rows), "val_pairs": len(val_rows), "steps": step,
                   "processes": accelerator.num_processes, "train_seconds": train_s,
                   "samples_per_s": n_seen / train_s if train_s > 0 else float("nan"), "val_nll": val_nll}
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if len(hist):
            from beatrec.plots import plot_align_curves

            plot_align_curves(hist, out_dir / "loss_curves.png")
        log(f"[align] wrote {out_dir} ({step} steps, {metrics['samples_per_s']:.1f} samples/s)")
    accelerator.wait_for_everyone()
    return AlignResult(out_dir, hist, val_nll, n_seen / train_s if train_s > 0 else float("nan"))
