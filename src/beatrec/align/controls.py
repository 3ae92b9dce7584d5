"""Shuffled-token controls: does a stage-2 model use the user's (item's) behavior tokens at all?

The control explains every evaluated pair (u, i) with *another* evaluated user's tokens (``side="user"``) or
another evaluated item's tokens (``side="item"``), everything else unchanged (the item title stays the
pair's own), and is scored against the pair's own reference. If the model's explanations are no better than
its control's, the tokens of that side carry no signal the model uses, whatever the absolute scores.
The reassignment is a seeded *derangement* of the distinct ids on that side: every id maps to a different one,
and all pairs of the same user get the same stand-in.
"""

from __future__ import annotations

import numpy as np

SIDES = ("user", "item")
KEY = {"user": "uid", "item": "iid"}


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) a uniformly random permutation of 0..n-1 with no fixed point (n >= 2), by rejection."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    while True:
        p = rng.permutation(n)
        if (p != np.arange(n)).all():
            return p


def shuffled_pairs(pairs: list[dict], side: str, seed: int = 0) -> list[dict]:
    """Copies of ``pairs`` (dicts with uid, iid, ...) whose ``side`` id is replaced by another evaluated id
    (a seeded derangement of the distinct ids); order and every other field are kept.

    Raises:
        ValueError: unknown side, or fewer than two distinct ids on that side.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    key = KEY[side]
    ids = np.unique([int(p[key]) for p in pairs])
    if len(ids) < 2:
        raise ValueError(f"a shuffled-{side} control needs at least two distinct {side}s, got {len(ids)}")
    stand_in = dict(zip(ids.tolist(), ids[derangement(len(ids), np.random.default_rng(seed))].tolist(), strict=True))
    return [{**p, key: stand_in[int(p[key])]} for p in pairs]
