"""Full-ranking Recall@K and NDCG@K (K = 5, 10) for leave-one-out next-item prediction.

DESIGN.md "Evaluation protocol": every item is a candidate (no sampled negatives) and history items are not
masked. With one held-out item per user at 1-based rank r, Recall@K = 1[r <= K] and
NDCG@K = 1[r <= K] / log2(r + 1), averaged over users. The arithmetic is that of
:func:`beatrec.metrics.ranking.rank_metrics_from_topk` (one target per user), which this module calls.

Inputs are either a score matrix (U, n_items) (discriminative models such as SASRec) or a per-user ranked
top-k list (U, k) of item ids padded with -1 (generative models, whose beam search may return fewer
than k valid items: a missing slot never hits).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from beatrec.metrics.ranking import rank_metrics_from_topk

KS = (5, 10)


class SeqMetrics(NamedTuple):
    recall5: float
    recall10: float
    ndcg5: float
    ndcg10: float
    n_users: int

    def as_dict(self) -> dict[str, float | int]:
        """``{"recall@5": .., "recall@10": .., "ndcg@5": .., "ndcg@10": .., "n_users": ..}``."""
        return {"recall@5": self.recall5, "recall@10": self.recall10, "ndcg@5": self.ndcg5,
                "ndcg@10": self.ndcg10, "n_users": self.n_users}


def metrics_from_topk(topk: np.ndarray, targets: np.ndarray) -> SeqMetrics:
    """Recall/NDCG@5/10 from ranked lists.

    Args:
        topk: (U, k) item ids best first, k >= 10; -1 marks an empty slot.
        targets: (U,) the held-out item of each row.
    """
    topk = np.asarray(topk, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    n = len(targets)
    if topk.ndim != 2 or topk.shape[0] != n:
        raise ValueError(f"topk must be (U, k) with U = len(targets) = {n}, got {topk.shape}")
    if topk.shape[1] < max(KS):
        raise ValueError(f"topk needs at least {max(KS)} columns, got {topk.shape[1]}")
    if n == 0:
        return SeqMetrics(0.0, 0.0, 0.0, 0.0, 0)
    n_cols = int(max(topk.max(), targets.max())) + 2  # the last column is the "empty slot" sink
    lists = np.where(topk < 0, n_cols - 1, topk)
    users = np.arange(n)
    heldout = sp.csr_matrix((np.ones(n, dtype=np.float32), (users, targets)), shape=(n, n_cols))
    out = {k: rank_metrics_from_topk(lists[:, :k], heldout, users) for k in KS}
    return SeqMetrics(out[5].recall, out[10].recall, out[5].ndcg, out[10].ndcg, n)


def topk_from_scores(scores: torch.Tensor, k: int = max(KS)) -> np.ndarray:
    """(U, n_items) scores -> (U, k) item ids, highest score first (nothing masked)."""
    return torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.cpu().numpy()


def metrics_from_scores(scores: torch.Tensor, targets: np.ndarray) -> SeqMetrics:
    """Recall/NDCG@5/10 of a full score matrix (U, n_items) against targets (U,)."""
    top = topk_from_scores(scores, max(KS))
    if top.shape[1] < max(KS):
        top = np.pad(top, ((0, 0), (0, max(KS) - top.shape[1])), constant_values=-1)
    return metrics_from_topk(top, targets)


def popularity_topk(popularity: np.ndarray, n_users: int, k: int = max(KS)) -> np.ndarray:
    """The same top-k most popular items (ties by lower id) for each of ``n_users`` users: (n_users, k)."""
    order = np.lexsort((np.arange(len(popularity)), -np.asarray(popularity, dtype=np.float64)))[:k]
    if len(order) < k:
        order = np.pad(order, (0, k - len(order)), constant_values=-1)
    return np.broadcast_to(order, (n_users, k)).copy()
