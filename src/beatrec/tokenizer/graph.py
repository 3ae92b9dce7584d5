"""The symmetric-normalised user–item graph and a sparse matmul with a cheap backward.

BEAT eq. 2 (LightGCN propagation) multiplies by Â = D^{-1/2} A D^{-1/2}, where A is the bipartite adjacency
of users (rows 0..U-1) and items (rows U..U+I-1). Â is symmetric, so the gradient of Â·X with respect to X is
Â·G: one more CSR matmul instead of torch's generic (slow) sparse backward. Measured on the Amazon training
graph (30.6k nodes, 577k non-zeros, d=192, 2 cores): 3 layers forward+backward 0.08 s with this function
against 0.71 s with ``torch.sparse.mm`` on a COO tensor.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """Build Â = D^{-1/2} A D^{-1/2} as a CSR tensor of shape (U+I, U+I).

    Args:
        users: (E,) user ids of the training edges.
        items: (E,) item ids of the same edges (0-based item ids; they are offset by ``n_users`` here).
    """
    n = n_users + n_items
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64) + n_users
    rows = np.concatenate([users, items])
    cols = np.concatenate([items, users])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = deg[nz] ** -0.5
    vals = (inv_sqrt[rows] * inv_sqrt[cols]).astype(np.float32)
    m = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    m.sum_duplicates()
    m.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data),
            size=(n, n),
        )


class _SymmetricSpMM(torch.autograd.Function):
    """Y = Â·X for a constant symmetric sparse Â; dX = Â·dY."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # type: ignore[override]
        return None, ctx.adj @ grad.contiguous()


def sym_spmm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Differentiable Â·X for symmetric CSR Â (N, N) and dense X (N, d) -> (N, d)."""
    return _SymmetricSpMM.apply(adj, x)
