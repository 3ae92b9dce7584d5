"""Full-ranking top-K metrics: HitRatio@K, Recall@K and NDCG@K over all items (no sampled negatives).

For a user with held-out item set T and top-K list (r_1..r_K) after excluding the user's known items:
HR@K = 1[|T ∩ top-K| > 0]; Recall@K = |T ∩ top-K| / |T|;
NDCG@K = Σ_{j: r_j ∈ T} 1/log2(j+1) / Σ_{j=1}^{min(|T|,K)} 1/log2(j+1).
Each metric is averaged over users with at least one held-out item.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch


class RankingMetrics(NamedTuple):
    hr: float
    recall: float
    ndcg: float
    n_users: int


def interaction_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary (n_users, n_items) CSR matrix of the given edges."""
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    m.data[:] = 1.0
    return m


def rank_metrics_from_topk(topk: np.ndarray, heldout: sp.csr_matrix, users: np.ndarray) -> RankingMetrics:
    """Metrics from precomputed top-K lists.

    Args:
        topk: (n, K) item ids ranked best first, row j belongs to ``users[j]``.
        heldout: (U, I) binary CSR of held-out items.
        users: (n,) user ids.
    """
    k = topk.shape[1]
    truth = heldout[users]  # (n, I)
    hits = hit_matrix(topk, truth)  # (n, K)
    n_true = np.asarray(truth.sum(1)).ravel().astype(np.int64)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * disc).sum(1)
    idcg = np.cumsum(disc)[np.minimum(n_true, k) - 1]
    return RankingMetrics(
        hr=float(hits.any(1).mean()),
        recall=float((hits.sum(1) / n_true).mean()),
        ndcg=float((dcg / idcg).mean()),
        n_users=len(users),
    )


@torch.no_grad()
def evaluate_scores(
    user_vecs: torch.Tensor | None,
    item_vecs: torch.Tensor | None,
    exclude: sp.csr_matrix,
    heldout: sp.csr_matrix,
    k: int = 20,
    item_bias: torch.Tensor | None = None,
    chunk: int = 2048,
) -> RankingMetrics:
    """Score every item for every user with held-out items (dot product, plus an optional item bias),
    mask ``exclude`` (known interactions), and compute HR/Recall/NDCG@k.

    Args:
        user_vecs: (U, d) or None for a pure item-bias ranker (popularity).
        item_vecs: (I, d) or None.
        exclude: (U, I) CSR of items never to recommend (the training edges, and validation edges at test time).
        heldout: (U, I) CSR of target items.
        item_bias: (I,) added to every user's scores.
    """
    users = np.flatnonzero(np.diff(heldout.indptr) > 0)
    if len(users) == 0:
        return RankingMetrics(0.0, 0.0, 0.0, 0)
    return rank_metrics_from_topk(rank_topk(user_vecs, item_vecs, exclude, users, k, item_bias, chunk), heldout, users)


@torch.no_grad()
def rank_topk(
    user_vecs: torch.Tensor | None,
    item_vecs: torch.Tensor | None,
    exclude: sp.csr_matrix,
    users: np.ndarray,
    k: int = 20,
    item_bias: torch.Tensor | None = None,
    chunk: int = 2048,
) -> np.ndarray:
    """(n, k) top-k item ids of ``users`` (n,) by dot product (+ ``item_bias``), ``exclude``'s items masked;
    arguments as :func:`evaluate_scores`."""
    n_items = exclude.shape[1]
    chunk = max(1, min(chunk, (1 << 25) // max(n_items, 1)))  # a score block holds at most 2^25 floats (128 MiB)
    tops = []
    for start in range(0, len(users), chunk):
        ub = users[start : start + chunk]
        if user_vecs is not None and item_vecs is not None:
            s = user_vecs[torch.from_numpy(ub)] @ item_vecs.t()  # (b, I)
        else:
            s = torch.zeros(len(ub), n_items)
        if item_bias is not None:
            s = s + item_bias[None]
        ex = exclude[ub].tocoo()
        s[torch.from_numpy(ex.row).long(), torch.from_numpy(ex.col).long()] = -float("inf")
        tops.append(torch.topk(s, k, dim=1).indices.numpy())
    return np.concatenate(tops) if tops else np.zeros((0, k), dtype=np.int64)


def per_user_hits(topk: np.ndarray, heldout: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """(n,) float: HR@K of each user, 1 when any of ``users[j]``'s held-out items is in ``topk[j]`` (n, K), else 0
    (the per-user values whose mean is :attr:`RankingMetrics.hr`)."""
    return hit_matrix(topk, heldout[users]).any(1).astype(np.float64)


def hit_matrix(topk: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """(n, K) bool: whether ``topk[j, r]`` is a held-out item of row j of ``truth`` (n, I)."""
    return np.asarray(truth[np.arange(truth.shape[0])[:, None], topk].todense()) > 0
