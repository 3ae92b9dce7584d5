"""Full-ranking Recall/NDCG@5/10 on hand-computed rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from beatrec.seqrec.evaluate import metrics_from_scores, metrics_from_topk, popularity_topk


def _list_with_target_at(rank: int | None, target: int = 99) -> list[int]:
    items = [i for i in range(20) if i != target][:10]
    if rank is not None:
        items[rank - 1] = target
    return items


def test_hand_computed_ranks() -> None:
    ranks = [1, 3, 7, None]  # None: target beyond the top 10
    topk = np.array([_list_with_target_at(r) for r in ranks])
    m = metrics_from_topk(topk, np.full(4, 99))
    assert m.n_users == 4
    assert m.recall5 == pytest.approx(2 / 4)
    assert m.recall10 == pytest.approx(3 / 4)
    assert m.ndcg5 == pytest.approx((1.0 + 0.5) / 4)  # rank 3: 1/log2(4) = 0.5
    assert m.ndcg10 == pytest.approx((1.0 + 0.5 + 1 / math.log2(8)) / 4)


def test_single_user_values() -> None:
    assert metrics_from_topk(np.array([_list_with_target_at(1)]), np.array([99])).ndcg10 == 1.0
    m = metrics_from_topk(np.array([_list_with_target_at(3)]), np.array([99]))
    assert m.ndcg5 == pytest.approx(0.5) and m.recall5 == 1.0
    m = metrics_from_topk(np.array([_list_with_target_at(6)]), np.array([99]))
    assert (m.recall5, m.ndcg5) == (0.0, 0.0) and m.ndcg10 == pytest.approx(1 / math.log2(7))
    assert metrics_from_topk(np.array([_list_with_target_at(None)]), np.array([99])).ndcg10 == 0.0


def test_empty_slots_never_hit() -> None:
    topk = np.array([[5, -1, -1, -1, -1, -1, -1, -1, -1, -1], [-1] * 10])
    m = metrics_from_topk(topk, np.array([5, 3]))
    assert m.recall10 == 0.5 and m.ndcg10 == 0.5


def test_scores_rank_all_items_without_masking() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5] + [0.0] * 9, [0.3, 0.2, 0.1] + [0.0] * 9])
    m = metrics_from_scores(scores, np.array([2, 0]))  # ranks 2 and 1
    assert m.ndcg10 == pytest.approx((1 / math.log2(3) + 1.0) / 2) and m.recall5 == 1.0


def test_too_short_lists_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        metrics_from_topk(np.zeros((1, 5), dtype=int), np.array([0]))


def test_popularity_topk_ties_by_id() -> None:
    top = popularity_topk(np.array([1, 5, 5, 0]), 2, k=3)
    assert top.tolist() == [[1, 2, 0], [1, 2, 0]]
