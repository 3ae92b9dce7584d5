"""SASRec (Kang & McAuley, ICDM 2018) with a full-softmax cross-entropy loss over all items (the common "CE"
variant, e.g. Klenitskiy & Vasilev, RecSys 2023).

A causal transformer over the item history; the last position's state h is scored against every item's input
embedding (tied weights): s_i = h·e_i, loss = CE(softmax(s), target). It is both a baseline and EAGER's behavior
encoder: its item embeddings e_i are the behavior embeddings clustered into behavior codes and the targets of
the behavior stream's global contrastive task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from beatrec.config import check
from beatrec.seqrec.encoder import ItemSequenceEncoder


@dataclass
class SASRecConfig:
    """Architecture of SASRec (defaults: a small model for Amazon-size data on a CPU)."""

    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.3

    def validate(self) -> None:
        for name in ("d_model", "n_heads", "n_layers", "d_ff"):
            check(getattr(self, name) >= 1, f"sasrec.{name} must be >= 1")
        check(self.d_model % self.n_heads == 0, "sasrec.d_model must be divisible by sasrec.n_heads")
        check(0 <= self.dropout < 1, "sasrec.dropout must be in [0, 1)")


class SASRecLoss(NamedTuple):
    loss: torch.Tensor  # () the training loss (the first field of every model's calculate_loss output)


class SASRecOutput(NamedTuple):
    loss: torch.Tensor  # () cross-entropy (0 when no targets were given)
    scores: torch.Tensor  # (B, n_items) logits over all items
    user: torch.Tensor  # (B, d) last-position state


class SASRec(nn.Module):
    """SASRec over ``n_items`` items and histories of at most ``max_len`` items."""

    def __init__(self, n_items: int, max_len: int, cfg: SASRecConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.n_items = cfg, n_items
        self.encoder = ItemSequenceEncoder(n_items, cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.d_ff,
                                           cfg.dropout, max_len, causal=True)

    def item_embeddings(self) -> torch.Tensor:
        """(n_items, d) item embeddings (row i = internal item i), the behavior embeddings of EAGER."""
        return self.encoder.item_emb.weight[1:]

    def forward(self, history: torch.Tensor, target: torch.Tensor | None = None) -> SASRecOutput:
        """history (B, L) with PAD, target (B,) or None -> SASRecOutput."""
        h = self.encoder(history).states[:, -1]  # (B, d) the latest position
        scores = h @ self.item_embeddings().t()  # (B, n_items)
        loss = F.cross_entropy(scores, target) if target is not None else scores.new_zeros(())
        return SASRecOutput(loss, scores, h)

    def calculate_loss(self, history: torch.Tensor, target: torch.Tensor) -> SASRecLoss:
        """The seqrec training contract: (B, L) histories, (B,) next items -> named losses, the first minimised."""
        return SASRecLoss(self(history, target).loss)

    @torch.no_grad()
    def topk(self, history: torch.Tensor, k: int) -> np.ndarray:
        """The seqrec ranking contract: (B, L) histories -> (B, k) item ids with the highest scores, best first
        (nothing masked); ``history`` may live on any device, the result is on the CPU."""
        history = history.to(self.encoder.item_emb.weight.device)
        return torch.topk(self(history).scores, k, dim=1).indices.cpu().numpy()
