"""The profile table's references and text-free baselines (issue #37, Table 2).

Personalisation is measured on zero-shot users' profiles: for each scored user (validation or test users, whose
texts no training stage read) the reference is the user's ``user_summary``; a method writes a profile from what
it may know of the user (tokens, graph vectors, history titles). Two baselines need no LM:

- **floor**: the profile of a random training user (seeded), the score of a profile that ignores the user;
- **retrieval**: the profile of the training user nearest by stage-1 LightGCN vector (cosine), the graph's own
  answer with no generation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from beatrec.data.dataset import XRecDataset
from beatrec.data.split import ZeroShotSplit, eval_pairs, training_texts
from beatrec.errors import RunError
from beatrec.tokenizer.embeddings import GraphEmbeddings


def user_profiles_of(rows: pd.DataFrame) -> pd.Series:
    """The non-empty ``user_summary`` of every user in ``rows`` (its first such row), indexed by uid (sorted)."""
    r = rows[["uid", "user_summary"]].copy()
    r["user_summary"] = r["user_summary"].astype(str).str.strip()
    r = r[r["user_summary"] != ""].drop_duplicates("uid").sort_values("uid")
    return pd.Series(r["user_summary"].to_numpy(), index=r["uid"].to_numpy(np.int64), name="user_summary")


def profile_references(ds: XRecDataset, split: ZeroShotSplit, which: str = "test") -> pd.Series:
    """The scored users' reference profiles: ``which`` = ``val`` or ``test`` users (:func:`eval_pairs`)."""
    refs = user_profiles_of(eval_pairs(ds, split, which))
    if refs.empty:
        raise RunError(f"{ds.root}: no {which} user has a user_summary to score profiles against")
    return refs


def training_profiles(ds: XRecDataset, split: ZeroShotSplit) -> pd.Series:
    """Training users' profiles (the only profiles a baseline may return)."""
    pool = user_profiles_of(training_texts(ds, split))
    if pool.empty:
        raise RunError(f"{ds.root}: no training user has a user_summary")
    return pool


def floor_profiles(ds: XRecDataset, split: ZeroShotSplit, n: int, seed: int = 0) -> list[str]:
    """``n`` profiles of random training users (uniform, with replacement, ``default_rng(seed)``)."""
    pool = training_profiles(ds, split).tolist()
    return [pool[int(i)] for i in np.random.default_rng(seed).integers(0, len(pool), n)]


def retrieval_profiles(ds: XRecDataset, split: ZeroShotSplit, users: np.ndarray, emb: GraphEmbeddings) -> list[str]:
    """For each user, the profile of the training user whose LightGCN vector is nearest (cosine; ties: the
    lowest id)."""
    pool = training_profiles(ds, split)
    keys = F.normalize(emb.user[torch.from_numpy(pool.index.to_numpy(np.int64, copy=True))], dim=1)  # (T, D)
    q = F.normalize(emb.user[torch.from_numpy(np.array(users, dtype=np.int64))], dim=1)  # (U, D)
    best = torch.argmax(q @ keys.T, dim=1).numpy()
    return [pool.iloc[int(j)] for j in best]
