"""Continuous LightGCN vectors as the source of the soft tokens (the XRec-style baseline of BEAT stage 2).

XRec (Ma et al., 2024) injects a graph encoder's *continuous* user and item embeddings into a frozen LM through
an MLP adapter. Here the same :class:`~beatrec.align.model.BehaviorLM` machinery does it: this module stands
in for :class:`~beatrec.align.vocab.BehaviorVocab` (``model.source: continuous``), so the projector (the MLP
adapter), the prompt slots, the loss and the training loop are exactly BEAT's. Each entity's LightGCN vector
z (D = (1+N)·P) is cut into the same 1 + N parts the tokenizer quantises, one part per slot, but nothing is
quantised: no discrete token is involved.

The tables are divided by one scalar (their overall standard deviation, ``scale``) so the adapter sees unit-
scale inputs whatever the LightGCN initialisation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from beatrec.align.vocab import BehaviorVocab
from beatrec.errors import RunError


class ContinuousVectors(nn.Module):
    """Per-entity continuous vectors with the interface of :class:`~beatrec.align.vocab.BehaviorVocab`.

    Args:
        user: (U, D) float; item: (I, D) float; n_parts: 1 + N (D must be divisible by it).
    """

    def __init__(self, user: torch.Tensor, item: torch.Tensor, n_parts: int) -> None:
        super().__init__()
        if user.ndim != 2 or item.ndim != 2 or user.shape[1] != item.shape[1] or user.shape[1] % n_parts:
            raise RunError(f"continuous vectors of widths {tuple(user.shape)} / {tuple(item.shape)} cannot be cut "
                           f"into {n_parts} equal parts")
        scale = float(torch.cat([user, item]).float().std().clamp_min(1e-8))
        self.scale = scale
        self.user = nn.Parameter(user.float() / scale, requires_grad=False)
        self.item = nn.Parameter(item.float() / scale, requires_grad=False)
        self.n_micro = n_parts - 1
        self.code_dim = user.shape[1] // n_parts

    @classmethod
    def from_run(cls, run: str | Path, data: str | Path | None = None) -> ContinuousVectors:
        """The LightGCN vectors of a stage-1 run, cut into as many parts as the run has tokens per entity."""
        from beatrec.tokenizer.embeddings import load_graph_embeddings

        emb = load_graph_embeddings(run, data)
        n_parts = BehaviorVocab.from_run(run).n_micro + 1
        return cls(emb.user, emb.item, n_parts)

    @property
    def n_users(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item.shape[0])

    def vectors(self, side: str, ids: torch.Tensor) -> torch.Tensor:
        """(B,) ids -> (B, 1+N, P): the entity's vector cut into its macro part and N micro parts."""
        z = (self.user if side == "user" else self.item)[ids]  # (B, D)
        return z.view(len(ids), self.n_micro + 1, self.code_dim)

    def scale_sample(self) -> torch.Tensor:
        """(K, P) vectors whose projection sets the projector's initial output scale."""
        rows = torch.cat([self.user[:4096], self.item[:4096]])  # (k, D)
        return rows.reshape(-1, self.code_dim)

    def set_trainable(self, flag: bool) -> None:
        self.user.requires_grad_(flag)
        self.item.requires_grad_(flag)
