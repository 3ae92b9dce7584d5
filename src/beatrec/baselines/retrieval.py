"""Retrieval: the explanation of the most similar *training* pair by graph embeddings.

For a pair (u, i) the query is the concatenation [z_u ‖ z_i] of the stage-1 continuous LightGCN vectors
(:mod:`beatrec.tokenizer.embeddings`); the candidates are the pairs of training users that have text
(:func:`beatrec.data.split.training_texts`), keyed the same way. The prediction is the explanation of the
candidate with the highest cosine similarity (ties: the first in file order). A zero-shot user's pair
therefore borrows the text of a behaviorally similar training user and item; no text of a validation or test
user can be returned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from beatrec.data.dataset import XRecDataset
from beatrec.data.split import ZeroShotSplit, training_texts
from beatrec.errors import RunError
from beatrec.tokenizer.embeddings import GraphEmbeddings


def pair_keys(emb: GraphEmbeddings, uids: np.ndarray, iids: np.ndarray) -> torch.Tensor:
    """(P,) user and item ids -> (P, 2D) unit-norm [z_u ‖ z_i]."""
    u = emb.user[torch.tensor(np.asarray(uids, dtype=np.int64))]
    i = emb.item[torch.tensor(np.asarray(iids, dtype=np.int64))]
    return F.normalize(torch.cat([u, i], dim=1), dim=1)


def nearest_training_pairs(ds: XRecDataset, split: ZeroShotSplit, pairs: pd.DataFrame, emb: GraphEmbeddings,
                           chunk: int = 1024) -> np.ndarray:
    """For each row of ``pairs`` (uid, iid): the row index into ``training_texts(ds, split)`` of the most
    similar training pair. -> (P,) int64."""
    train = training_texts(ds, split)
    if train.empty:
        raise RunError(f"{ds.root}: no training pairs to retrieve from")
    keys = pair_keys(emb, train["uid"].to_numpy(), train["iid"].to_numpy())  # (T, 2D)
    q = pair_keys(emb, pairs["uid"].to_numpy(), pairs["iid"].to_numpy())  # (P, 2D)
    out = [torch.argmax(q[s : s + chunk] @ keys.T, dim=1) for s in range(0, len(q), chunk)]  # argmax: first max
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def retrieval_predictions(ds: XRecDataset, split: ZeroShotSplit, pairs: pd.DataFrame,
                          emb: GraphEmbeddings) -> list[str]:
    """The retrieved training explanation of every row of ``pairs``."""
    expl = training_texts(ds, split)["explanation"].tolist()
    return [expl[int(j)] for j in nearest_training_pairs(ds, split, pairs, emb)]
