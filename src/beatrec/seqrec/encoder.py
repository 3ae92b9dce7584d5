"""Transformer encoder over a user's item-id history: the SASRec backbone (causal) and EAGER's shared encoder
(bidirectional).

Histories are right-aligned int64 matrices padded with ``data.PAD`` (= -1), the latest item last. Item ``i``
has embedding row ``i + 1``; row 0 is the padding embedding (kept at zero).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from beatrec.seqrec.data import PAD


class EncodedHistory(NamedTuple):
    states: torch.Tensor  # (B, L, d) contextual states (zero at padded positions)
    pad: torch.Tensor  # (B, L) bool, True at padded positions


def attention_mask(pad: torch.Tensor, causal: bool, n_heads: int) -> torch.Tensor:
    """Boolean mask (B·n_heads, L, L), True = may NOT attend.

    Padded keys are hidden; every position may always attend to itself, so a padded query row is never
    fully masked (which would give NaN); with ``causal`` a position attends to itself and earlier positions.
    """
    b, length = pad.shape
    eye = torch.eye(length, dtype=torch.bool, device=pad.device)
    blocked = pad[:, None, :] & ~eye  # (B, L, L)
    if causal:
        blocked = blocked | torch.triu(torch.ones(length, length, dtype=torch.bool, device=pad.device), 1)
    return blocked.repeat_interleave(n_heads, dim=0)


class ItemSequenceEncoder(nn.Module):
    """Item + learned position embeddings -> pre-LN transformer encoder -> final LayerNorm.

    Args:
        n_items: number of items (embedding rows n_items + 1, row 0 = padding).
        d_model, n_heads, n_layers, d_ff, dropout: transformer sizes.
        max_len: longest history (positions).
        causal: SASRec-style left-to-right attention (True) or bidirectional (False, EAGER/TIGER encoder).
        own_items: keep an item table (``item_emb``); False: the caller passes the history's item vectors to
            :meth:`forward` (EAGER with ``eager.tie_items``).
    """

    def __init__(self, n_items: int, d_model: int, n_heads: int, n_layers: int, d_ff: int, dropout: float,
                 max_len: int, causal: bool, own_items: bool = True) -> None:
        super().__init__()
        self.n_heads, self.max_len, self.causal = n_heads, max_len, causal
        self.item_emb = nn.Embedding(n_items + 1, d_model, padding_idx=0) if own_items else None
        self.pos_emb = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        if self.item_emb is not None:
            nn.init.normal_(self.item_emb.weight, std=0.02)
            with torch.no_grad():
                self.item_emb.weight[0].zero_()
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, history: torch.Tensor, item_vectors: torch.Tensor | None = None) -> EncodedHistory:
        """history (B, L) item ids with PAD -> EncodedHistory(states (B, L, d), pad (B, L)).

        ``item_vectors`` (B, L, d): the history items' input vectors, read instead of the encoder's own table
        (required without ``own_items``; values at padded positions are ignored).
        """
        length = history.shape[1]
        if length > self.max_len:
            raise ValueError(f"history length {length} exceeds max_len {self.max_len}")
        if item_vectors is None:
            if self.item_emb is None:
                raise ValueError("this encoder has no item table of its own: pass item_vectors=")
            item_vectors = self.item_emb(history + 1)
        pad = history == PAD  # (B, L)
        pos = torch.arange(self.max_len - length, self.max_len, device=history.device)  # right-aligned
        x = item_vectors + self.pos_emb(pos)[None]  # (B, L, d)
        x = self.drop(x) * (~pad)[..., None]
        h = self.layers(x, mask=attention_mask(pad, self.causal, self.n_heads))  # (B, L, d)
        h = self.norm(h) * (~pad)[..., None]
        return EncodedHistory(h, pad)
