"""LightGCN encoder (He et al., 2020), as used by BEAT stage 1 (paper eqs. 2–3)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from beatrec.tokenizer.graph import sym_spmm
from beatrec.tokenizer.sampling import SampledGraph, propagate_sampled

E0_KEY = "gcn.table.weight"  # E⁰ in a tokenizer's state dict (``tokenizer.safetensors``)
LEGACY_E0_KEY = "gcn.embedding"  # runs written before E⁰ became an nn.Embedding


def e0_from_state(state: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """E⁰ (U+I, dim) from a saved tokenizer state dict, or None when it holds none."""
    return state.get(E0_KEY, state.get(LEGACY_E0_KEY))


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
        # E⁰ as an nn.Embedding so that DDP knows when its gradient is sparse (``table.sparse``, set by sampled
        # training: a step then reads, and updates, only the rows of its sampled neighbourhood).
        self.table = nn.Embedding(n_users + n_items, dim, sparse=False)
        nn.init.normal_(self.table.weight, std=0.1)
        keep = torch.ones(n_users + n_items, 1)
        if not user_ids:
            keep[:n_users] = 0.0
            with torch.no_grad():
                self.embedding[:n_users] = 0.0  # saved as zeros: loaders that propagate E⁰ as-is agree
        self.register_buffer("keep", keep, persistent=False)  # (U+I, 1) 1 = a free row, 0 = held at zero

    @torch.no_grad()
    def init_spectral(self, adj: torch.Tensor, seed: int = 0, std: float = 0.1) -> int:
        """E⁰ from the graph's spectrum instead of noise: the truncated SVD R ≈ U_k S_k V_kᵀ of the user-item
        block R of Â gives user rows U_k S_k^½ and item rows V_k S_k^½ in the first k columns (largest singular
        values first), rescaled to standard deviation ``std`` (the noise init's); columns beyond k keep the noise.
        A smooth start that already holds the graph's leading structure. Returns k."""
        from scipy.sparse.linalg import svds

        from beatrec.tokenizer.graph import csr_to_scipy

        r = csr_to_scipy(adj)[: self.n_users, self.n_users :]  # (U, I)
        k = min(self.embedding.shape[1], min(r.shape) - 1)
        if k < 1:
            return 0
        v0 = np.random.default_rng(seed).standard_normal(min(r.shape))
        u, sv, vt = svds(r.astype(np.float64), k=k, random_state=seed, v0=v0)
        order = np.argsort(-sv)
        root = np.sqrt(sv[order])
        e = np.concatenate([u[:, order] * root, vt[order].T * root])  # (U+I, k)
        e *= std / max(e.std(), 1e-12)
        self.embedding[:, :k] = torch.from_numpy(e).to(self.embedding.dtype)
        if not self.user_ids:
            self.embedding[: self.n_users] = 0.0
        return k

    @property
    def embedding(self) -> nn.Parameter:
        """E⁰, (U+I, dim): users' rows first."""
        return self.table.weight

    def forward(self, graph: torch.Tensor | SampledGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate once, over the whole graph or over a sampled neighbourhood of a batch's seed nodes.

        Args:
            graph: (U+I, U+I) CSR Â from :func:`beatrec.tokenizer.graph.normalized_adjacency`, or a
                :class:`~beatrec.tokenizer.sampling.SampledGraph` whose seeds are users first, then items.
        Returns:
            users (U, dim), items (I, dim); for a sampled graph, the seed users (u, dim) and seed items (i, dim)
            in seed order.
        """
        if isinstance(graph, SampledGraph):
            z = propagate_sampled(self.embedding, graph, self.table.sparse, None if self.user_ids else self.keep)
            n_u = int((graph.nodes[: graph.n_seeds] < self.n_users).sum())
            return z[:n_u], z[n_u:]
        h = self.embedding if self.user_ids else self.embedding * self.keep  # (U+I, d); zero rows get no gradient
        acc = h
        for _ in range(self.n_layers):
            h = sym_spmm(graph, h)  # (U+I, d)
            acc = acc + h
        z = acc / (self.n_layers + 1)
        return z[: self.n_users], z[self.n_users :]

    @torch.no_grad()
    def propagate_all(self, adj: torch.Tensor, chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 3 for every node without gradients, layer by layer over the whole graph, ``chunk`` embedding
        columns at a time (propagation is column-wise independent), so the working memory is 3 (U+I, chunk)
        buffers besides the (U+I, dim) output. -> users (U, dim), items (I, dim)."""
        e = self.embedding if self.user_ids else self.embedding * self.keep
        out = torch.empty_like(e)
        for c in range(0, e.shape[1], chunk):
            h = e[:, c : c + chunk].contiguous()  # (U+I, chunk)
            acc = h.clone()
            for _ in range(self.n_layers):
                h = adj @ h
                acc += h
            out[:, c : c + chunk] = acc / (self.n_layers + 1)
        return out[: self.n_users], out[self.n_users :]
