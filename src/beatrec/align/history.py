"""The user's history as titles in the stage-2 prompt (``model.history_titles`` > 0, issue #25).

The history-prompting baseline replaces the user's behavior tokens by the titles of up to N of the user's
training-graph items (most typical of the user by the stage-1 LightGCN vectors first; titles only from training
users' text rows, :mod:`beatrec.data.history`); "BEAT + history" keeps the tokens and adds the titles. The
target item of each pair is left out of its own history.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from beatrec.data.dataset import XRecDataset
from beatrec.data.history import format_history, history_titles
from beatrec.data.split import ZeroShotSplit
from beatrec.tokenizer.embeddings import GraphEmbeddings, load_graph_embeddings


class HistoryCoverage(NamedTuple):
    n_pairs: int
    share_with_any: float  # pairs whose user has at least one titled history item
    mean_titles: float  # titles per prompt


class HistoryPrompts(NamedTuple):
    """Everything needed to write a pair's history field."""

    ds: XRecDataset
    split: ZeroShotSplit
    vectors: GraphEmbeddings | None
    n: int

    @classmethod
    def build(cls, ds: XRecDataset, split: ZeroShotSplit, run: str | Path, n: int) -> HistoryPrompts:
        """Rank by the stage-1 run's graph vectors (``run/embeddings.safetensors``)."""
        return cls(ds, split, load_graph_embeddings(run, ds.root), n)

    def attach(self, rows: list[dict]) -> HistoryCoverage:
        """Set ``row["history"]`` (formatted titles, target item excluded) on every row about a user (dicts with
        uid and, for a pair, iid), in place; returns the coverage of these rows."""
        rows = [r for r in rows if "uid" in r]  # an item's profile has no user
        if not rows:
            return HistoryCoverage(0, 0.0, 0.0)
        users = np.array([int(r["uid"]) for r in rows], dtype=np.int64)
        items = np.array([int(r.get("iid", -1)) for r in rows], dtype=np.int64)  # -1: no target item
        h = history_titles(self.ds, self.split, users, self.n, self.vectors, exclude=items)
        for r, titles in zip(rows, h.titles, strict=True):
            r["history"] = format_history(titles)
        return HistoryCoverage(len(rows), h.share_with_any, h.mean_titles)
