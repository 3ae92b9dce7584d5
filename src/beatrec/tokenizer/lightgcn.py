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
        user_ids: free user embeddings (the paper). False: *inductive users* — every user's E⁰ row is held at
            zero, so z_u = (Σ_l Âˡ E⁰)_u / (L+1) is built from its items' embeddings alone (odd layers), the same
            function of the graph for a trained user and for a zero-shot user whose text was never seen.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int = 3, user_ids: bool = True) -> None:
        super().__init__()
        self.n_users, self.n_items, self.n_layers, self.user_ids = n_users, n_items, n_layers, user_ids
        self.embedding = nn.Parameter(torch.empty(n_users + n_items, dim))
        nn.init.normal_(self.embedding, std=0.1)
        keep = torch.ones(n_users + n_items, 1)
        if not user_ids:
            keep[:n_users] = 0.0
            with torch.no_grad():
                self.embedding[:n_users] = 0.0  # saved as zeros: loaders that propagate E⁰ as-is agree
        self.register_buffer("keep", keep, persistent=False)  # (U+I, 1) 1 = a free row, 0 = held at zero

    def forward(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate once over the whole graph.

        Args:
            adj: (U+I, U+I) CSR Â from :func:`beatrec.tokenizer.graph.normalized_adjacency`.
        Returns:
            users (U, dim), items (I, dim).
        """
        h = self.embedding if self.user_ids else self.embedding * self.keep  # (U+I, d); zero rows get no gradient
        acc = h
        for _ in range(self.n_layers):
            h = sym_spmm(adj, h)  # (U+I, d)
            acc = acc + h
        z = acc / (self.n_layers + 1)
        return z[: self.n_users], z[self.n_users :]
