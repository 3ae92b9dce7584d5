"""The 2-layer MLP projector from codebook vectors to the LM's input-embedding width (BEAT stage 2)."""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """x (..., code_dim) -> (..., lm_dim): Linear, GELU, Linear. One projector for all slots; a learned slot
    embedding tells the LM which side and part (user/item × macro/micro_j) a token fills."""

    def __init__(self, code_dim: int, lm_dim: int, hidden: int, n_slots: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(code_dim, hidden), nn.GELU(), nn.Linear(hidden, lm_dim))
        self.slot = nn.Parameter(torch.zeros(n_slots, code_dim))

    def forward(self, x: torch.Tensor, slot_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, S, code_dim) -> (B, S, lm_dim); slot ``slot_ids[s]`` (S,) for position s, default 0..S-1 (a
        prompt holding one side's tokens only names which slots they are)."""
        slot = self.slot[: x.shape[1]] if slot_ids is None else self.slot[slot_ids]  # (S, code_dim)
        return self.mlp(x + slot[None])
