"""PNG plots a person would rather look at than read: loss and validation curves, codebook usage."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss_curves(history: pd.DataFrame, path: Path) -> None:
    """Per-epoch training losses (left) and validation HR (right)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for col in ("loss", "behave", "vq", "macro", "micro"):
        if col in history and len(history):
            a.plot(history["epoch"], history[col], marker="o", ms=3, label=col)
    a.set_xlabel("epoch")
    a.set_ylabel("mean training loss")
    a.set_yscale("symlog", linthresh=1e-2)
    a.legend()
    a.set_title("Tokenizer losses")
    if len(history):
        b.plot(history["epoch"], history["val_hr"], marker="o", ms=3, label="quantised")
        b.plot(history["epoch"], history["val_hr_continuous"], marker="s", ms=3, label="continuous")
    b.set_xlabel("epoch")
    b.set_ylabel("validation HR@k")
    b.legend()
    b.set_title("Early-stopping metric")
    _save(fig, path)


def plot_codebook_usage(codes: dict[str, torch.Tensor], n_codes: int, path: Path) -> None:
    """One panel per codebook: assignments per code, sorted descending (a flat curve is healthy)."""
    fig, axes = plt.subplots(1, len(codes), figsize=(4 * len(codes), 3.4), squeeze=False)
    for ax, (name, c) in zip(axes[0], codes.items(), strict=True):
        counts = torch.bincount(c.reshape(-1).long(), minlength=n_codes).sort(descending=True).values
        used = int((counts > 0).sum())
        ax.bar(range(n_codes), counts.numpy(), width=1.0)
        ax.set_title(f"{name}: {used}/{n_codes} codes used")
        ax.set_xlabel("code rank")
        ax.set_ylabel("entities" if "macro" in name else "assignments")
    _save(fig, path)


def plot_align_curves(history: pd.DataFrame, path: Path, evals: pd.DataFrame | None = None) -> None:
    """Stage-2 training: explanation NLL (training; validation passes when given) and SAR against steps."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(history["step"], history["nll"], marker="o", ms=3, label="training")
    if evals is not None and len(evals):
        a.plot(evals["step"], evals["val_nll"], marker="s", ms=4, label="validation")
        a.legend()
    a.set_xlabel("step")
    a.set_ylabel("mean explanation NLL (nats/token)")
    a.set_title("NLL")
    b.plot(history["step"], history["sar"], marker="o", ms=3, color="tab:orange")
    b.set_xlabel("step")
    b.set_ylabel("SAR (eq. 11)")
    b.set_title("Semantic Alignment Regularization")
    _save(fig, path)


_SEQREC_LOSSES = ("loss", "gen_behavior", "gen_semantic", "con_behavior", "con_semantic", "recon", "match")


def plot_seqrec_history(history: pd.DataFrame, path: Path) -> None:
    """One sequential-recommendation run: per-epoch training losses (left) and validation Recall/NDCG@10 (right)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for col in _SEQREC_LOSSES:
        if col in history and len(history) and history[col].abs().sum() > 0:  # a switched-off task stays 0
            a.plot(history["epoch"], history[col], marker="o", ms=3, label=col)
    a.set_xlabel("epoch")
    a.set_ylabel("mean training loss")
    a.legend()
    a.set_title("Training losses")
    for col, label in (("val_recall@10", "Recall@10"), ("val_ndcg@10", "NDCG@10 (early stopping)")):
        if col in history and len(history):
            b.plot(history["epoch"], history[col], marker="o", ms=3, label=label)
    b.set_xlabel("epoch")
    b.set_ylabel("validation")
    b.legend()
    b.set_title("Validation")
    _save(fig, path)


def plot_validation_curves(curves: dict[str, pd.DataFrame], path: Path, title: str = "") -> None:
    """Validation NDCG@10 per epoch, one line per model (history.csv of each run), best epoch marked."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, h in curves.items():
        if "val_ndcg@10" not in h or not len(h):
            continue
        line = ax.plot(h["epoch"], h["val_ndcg@10"], marker="o", ms=2.5, label=label)[0]
        best = h["val_ndcg@10"].idxmax()
        ax.plot(h["epoch"][best], h["val_ndcg@10"][best], marker="*", ms=11, color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(title or "Validation NDCG@10 per epoch (star: best epoch, whose weights are tested)")
    ax.legend(fontsize=8)
    _save(fig, path)
