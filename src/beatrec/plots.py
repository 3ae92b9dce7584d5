"""PNG plots a person would rather look at than read: loss curves and codebook usage."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_align_curves(history: pd.DataFrame, path: Path) -> None:
    """Stage-2 training: explanation NLL and SAR against optimizer steps."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(history["step"], history["nll"], marker="o", ms=3)
    a.set_xlabel("step")
    a.set_ylabel("mean explanation NLL (nats/token)")
    a.set_title("NLL")
    b.plot(history["step"], history["sar"], marker="o", ms=3, color="tab:orange")
    b.set_xlabel("step")
    b.set_ylabel("SAR (eq. 11)")
    b.set_title("Semantic Alignment Regularization")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
