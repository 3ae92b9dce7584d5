"""Seeded synthetic user–item graphs with planted genre blocks, for stage-1 scaling benchmarks and tests.

Each user belongs to one of ``n_genres`` genres and draws ``per_user`` items, 80% from its genre's block of
items and 20% uniformly; duplicates are dropped. A model that learns the blocks ranks a user's held-out items
far above popularity.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class BlockGraph(NamedTuple):
    n_users: int
    n_items: int
    users: np.ndarray  # (E,) int64, sorted by user
    items: np.ndarray  # (E,) int64
    split: np.ndarray  # (E,) int8: 0 train, 1 validation, 2 test


def genre_block_graph(n_users: int, per_user: int = 10, n_genres: int = 20, n_items: int | None = None,
                      seed: int = 0) -> BlockGraph:
    """A genre-block graph of ``n_users`` users (``n_items`` defaults to max(1000, n_users // 2)).

    Every user with at least 3 edges holds out one random edge for validation and one for test.
    """
    rng = np.random.default_rng(seed)
    n_items = n_items or max(1000, n_users // 2)
    ug = rng.integers(0, n_genres, n_users)
    block = n_items // n_genres
    users = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
    items = (np.repeat(ug, per_user) * block + rng.integers(0, block, len(users))) % n_items
    mix = rng.random(len(users)) < 0.2
    items[mix] = rng.integers(0, n_items, int(mix.sum()))
    key = np.unique(users * n_items + items)
    users, items = key // n_items, key % n_items
    split = np.zeros(len(users), np.int8)
    start = np.searchsorted(users, np.arange(n_users))
    deg = np.diff(np.append(start, len(users)))
    ok = deg >= 3
    pick = (rng.random((n_users, 2)) * deg[:, None]).astype(np.int64)
    pick[:, 1] = np.where(pick[:, 1] == pick[:, 0], (pick[:, 0] + 1) % np.maximum(deg, 1), pick[:, 1])
    split[(start + pick[:, 0])[ok]] = 1
    split[(start + pick[:, 1])[ok]] = 2
    return BlockGraph(n_users, n_items, users, items, split)
