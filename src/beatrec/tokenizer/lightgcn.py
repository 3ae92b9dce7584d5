"""LightGCN encoder (He et al., 2020), as used by BEAT stage 1 (paper eqs. 2–3)."""

from __future__ import annotations

import torch
from torch import nn

from beatrec.tokenizer.graph import sym_spmm


class LightGCN(nn.Module):
    """Free ID embeddings E⁰ propagated over Â, layer outputs averaged (eq. 3): z = 1/(L+1) Σ_l Âˡ E⁰.

    Args:
        n_users, n_items: graph size.
        dim: embedding width (BEAT splits it into 1 macro + N micro parts).
        n_layers: propagation depth L.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int = 3) -> None:
        super().__init__()
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.embedding = nn.Parameter(torch.empty(n_users + n_items, dim))
        nn.init.normal_(self.embedding, std=0.1)

    def forward(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate once over the whole graph.

        Args:
            adj: (U+I, U+I) CSR Â from :func:`beatrec.tokenizer.graph.normalized_adjacency`.
        Returns:
            users (U, dim), items (I, dim).
        """
        h = self.embedding  # (U+I, d)
        acc = h
        for _ in range(self.n_layers):
            h = sym_spmm(adj, h)  # (U+I, d)
            acc = acc + h
        z = acc / (self.n_layers + 1)
        return z[: self.n_users], z[self.n_users :]
