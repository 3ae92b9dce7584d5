"""Micro supervision: masked reconstruction of LLM-extracted preference phrases (BEAT eqs. 7–8).

An entity's n ranked phrase embeddings form a short sequence; t of the n positions are replaced by a learned
mask embedding (a fresh random choice per sample, drawn from a ``torch.Generator`` — never by re-seeding the
global RNG); one decoder layer (self-attention over the phrase sequence, cross-attention to the entity's N
quantised micro tokens, feed-forward) reconstructs the masked phrase embeddings, scored by squared L2 error.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class MicroOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, n, T) predicted phrase embeddings
    mask: torch.Tensor  # (B, n) bool, positions that were masked (and scored)
    loss: torch.Tensor  # () mean squared L2 error over masked positions (eq. 8)


def choose_mask(valid: torch.Tensor, n_masked: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick min(t, #valid) valid positions per row uniformly at random.

    Args:
        valid: (B, n) bool, which phrase slots hold a phrase.
        n_masked: t.
    Returns:
        (B, n) bool mask.
    """
    scores = torch.rand(valid.shape, generator=generator)
    scores = scores.masked_fill(~valid, float("inf"))
    order = scores.argsort(dim=1)  # valid slots first, in random order
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(valid.shape[1]).expand_as(order).contiguous())
    return (rank < n_masked) & valid


class MicroReconstructor(nn.Module):
    """Cross-attention reconstructor for one entity type (users or items).

    Args:
        text_dim: T, width of the phrase embeddings.
        code_dim: width of the quantised micro tokens.
        n_phrases: n, phrase slots per entity.
        attn_dim, heads: width and heads of the decoder layer.
    """

    def __init__(self, text_dim: int, code_dim: int, n_phrases: int, attn_dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(text_dim, attn_dim)
        self.memory = nn.Linear(code_dim, attn_dim)
        self.pos = nn.Parameter(torch.randn(n_phrases, attn_dim) * 0.02)
        self.mask_embedding = nn.Parameter(torch.randn(attn_dim) * 0.02)  # registered: it is trained
        self.layer = nn.TransformerDecoderLayer(
            attn_dim, heads, dim_feedforward=2 * attn_dim, dropout=0.0, batch_first=True
        )
        self.out = nn.Linear(attn_dim, text_dim)
        nn.init.zeros_(self.out.weight)  # start from the zero prediction (error 1 per unit target), not ~100
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        phrases: torch.Tensor,
        valid: torch.Tensor,
        micro_tokens: torch.Tensor,
        mask: torch.Tensor,
        objective: str = "masked",
    ) -> MicroOutput:
        """Reconstruct masked phrase embeddings.

        Args:
            phrases: (B, n, T) phrase embeddings (targets; L2-normalised here).
            valid: (B, n) bool, slots holding a phrase.
            micro_tokens: (B, N, code_dim) the entity's quantised micro vectors.
            mask: (B, n) bool, slots to hide and reconstruct (subset of ``valid``).
            objective: ``"masked"`` (eq. 8: squared error at the masked slots, the other phrases visible) or
                ``"set"`` (not in the paper: every slot is hidden, so only the micro tokens inform the
                prediction, and the n predictions are matched to the entity's phrases as a *set*: symmetric
                Chamfer distance, mean of each phrase's nearest prediction and each prediction's nearest
                phrase; the phrases' rank order, which carries little, is not asked for).
        """
        if objective == "set":
            return self._set_forward(phrases, valid, micro_tokens)
        target = F.normalize(phrases, dim=-1)  # (B, n, T)
        h = self.inp(target)  # (B, n, A)
        h = torch.where(mask[..., None], self.mask_embedding.expand_as(h), h) + self.pos[None]
        mem = self.memory(micro_tokens)  # (B, N, A)
        h = self.layer(h, mem, tgt_key_padding_mask=~valid)  # (B, n, A)
        recon = self.out(h)  # (B, n, T)
        err = (recon - target).pow(2).sum(-1)  # (B, n)
        loss = (err * mask).sum() / mask.sum().clamp_min(1)
        return MicroOutput(recon, mask, loss)

    def _set_forward(self, phrases: torch.Tensor, valid: torch.Tensor, micro_tokens: torch.Tensor) -> MicroOutput:
        target = F.normalize(phrases, dim=-1)  # (B, n, T)
        b, n, _ = target.shape
        h = self.mask_embedding.expand(b, n, -1) + self.pos[None]  # (B, n, A): queries only
        h = self.layer(h, self.memory(micro_tokens))  # (B, n, A)
        recon = self.out(h)  # (B, n, T)
        return MicroOutput(recon, valid, set_chamfer(recon, target, valid))


def set_chamfer(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Symmetric squared-L2 Chamfer distance between each row's predictions and its valid targets.

    Args:
        pred: (B, m, T) predicted vectors; target: (B, n, T); valid: (B, n) bool, which targets exist.
    Returns:
        () mean over rows with >= 1 valid target of ½·(mean_pred min_target d + mean_target min_pred d).
    """
    d = torch.cdist(pred, target).pow(2)  # (B, m, n)
    to_target = d.masked_fill(~valid[:, None, :], torch.finfo(d.dtype).max).min(dim=2).values  # (B, m)
    to_pred = d.min(dim=1).values  # (B, n)
    rows = valid.any(1)
    per = to_target.mean(1) + (to_pred * valid).sum(1) / valid.sum(1).clamp_min(1)  # (B,)
    return 0.5 * (per * rows).sum() / rows.sum().clamp_min(1)
