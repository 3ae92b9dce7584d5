"""Do a representation of users carry their planted intents? A linear probe on the synthetic dataset.

A one-vs-rest logistic probe is fitted on some users' features (behavior tokens one-hot per slot, LightGCN
vectors, or a spectral embedding of the interaction graph) and their planted intents (``planted.json``), and
scored on other users: per scored user, the precision of its top-k predicted intents (k = intents per user;
chance = k / n_intents). :func:`spectral_embedding` is the *oracle graph probe's* feature: what the training
edges alone hold, before any model is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from beatrec.data.planted_signal import Planted


class ProbeResult(NamedTuple):
    precision: np.ndarray  # (U_scored,) top-k intent precision per scored user
    chance: float  # k / n_intents
    genre_accuracy: float  # a logistic genre probe on the same features

    @property
    def mean(self) -> float:
        return float(self.precision.mean())


def spectral_embedding(interactions: pd.DataFrame, n_users: int, n_items: int, dim: int = 32,
                       seed: int = 0) -> np.ndarray:
    """(n_users, dim) unit-norm user rows of the truncated SVD of the symmetric-normalised training graph
    D_u^-1/2 A D_i^-1/2 (``split == "train"`` edges; every edge when there is no split column)."""
    from scipy.sparse.linalg import svds

    tr = interactions[interactions["split"] == "train"] if "split" in interactions else interactions
    a = sp.csr_matrix((np.ones(len(tr)), (tr["user"].to_numpy(), tr["item"].to_numpy())), shape=(n_users, n_items))
    du, di = np.asarray(a.sum(1)).ravel(), np.asarray(a.sum(0)).ravel()
    norm = sp.diags(1 / np.sqrt(np.maximum(du, 1))) @ a @ sp.diags(1 / np.sqrt(np.maximum(di, 1)))
    k = min(dim, min(n_users, n_items) - 1)
    u, s, _ = svds(norm, k=k, random_state=seed)  # (U, k), (k,)
    x = u * s
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def codeword_features(run: str | Path, side: str = "user") -> np.ndarray:
    """(n, (1+N)·C) every entity's codeword vectors, concatenated over its slots: what stage 2's projector reads
    (the one-hot token ids hide that nearby codes are nearby)."""
    import torch

    from beatrec.align.vocab import BehaviorVocab

    v = BehaviorVocab.from_run(run)
    n = v.n_users if side == "user" else v.n_items
    with torch.no_grad():
        return v.vectors(side, torch.arange(n)).reshape(n, -1).numpy()


def one_hot_tokens(codes: np.ndarray) -> np.ndarray:
    """(U, S) token ids per slot -> (U, sum of slot vocabularies) one-hot features."""
    cols = [np.eye(int(codes[:, s].max()) + 1)[codes[:, s]] for s in range(codes.shape[1])]
    return np.concatenate(cols, axis=1)


def intent_probe(features: np.ndarray, planted: Planted, fit_users: np.ndarray, score_users: np.ndarray,
                 side: str = "user") -> ProbeResult:
    """Fit on ``fit_users``' features (rows = entity ids; standardised on the fitted users) and planted intents;
    score ``score_users``.

    Args:
        side: ``"user"`` or ``"item"`` (which planted intents and genres).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    intents = planted.user_intents if side == "user" else planted.item_intents
    genre = planted.user_genre if side == "user" else planted.item_genre
    n_intents, k = len(planted.intent_phrases), intents.shape[1]
    y = np.zeros((len(intents), n_intents))
    np.put_along_axis(y, intents, 1, axis=1)
    fit_users, score_users = np.asarray(fit_users), np.asarray(score_users)
    scale = StandardScaler().fit(features[fit_users])  # the probe does not depend on the features' scale
    x_fit, x_score = scale.transform(features[fit_users]), scale.transform(features[score_users])
    present = y[fit_users].any(0)  # an intent no fitted user has cannot be predicted: score it lowest
    clf = OneVsRestClassifier(LogisticRegression(max_iter=2000)).fit(x_fit, y[fit_users][:, present])
    scores = np.full((len(score_users), n_intents), -np.inf)
    scores[:, present] = clf.decision_function(x_score).reshape(len(score_users), -1)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    precision = np.take_along_axis(y[score_users], top, axis=1).mean(1)
    if len(np.unique(genre[fit_users])) > 1:
        g = LogisticRegression(max_iter=2000).fit(x_fit, genre[fit_users])
        acc = float((g.predict(x_score) == genre[score_users]).mean())
    else:
        acc = float("nan")
    return ProbeResult(precision, k / n_intents, acc)
