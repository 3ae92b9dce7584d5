"""Where can user signal show? A check of a dataset's reference texts (``beatrec signal``).

A shuffled-user control (:mod:`beatrec.align.controls`) can only be beaten on references that depend on the
user. This module measures that dependence from the references alone, with a frozen sentence encoder
(cosine between unit-normalised embeddings), before any model is trained:

**Explanations** (one reference r_ui per text pair (u, i)):

- *user effect* (the controlled difference): for an anchor (u, i) and every other item j of the same user u
  that another user v also has a reference for, ``cos(r_ui, r_uj) - mean_v cos(r_ui, r_vj)``: is the same
  user's reference of j closer to r_ui than another user's reference of the *same* j? Averaged over j per
  anchor; one unit per user (the mean over its anchors, which share pairs and are not independent). About 0 means the references carry no user signal.
- *item effect*: for an anchor (u, i) that another user v also has a reference for,
  ``mean_v cos(r_ui, r_vi) - mean cos(r_ui, r)`` over every reference r of another user and another item
  (the exact random-pair mean, no sampling).

**Profiles** (one ``user_summary`` per text user; ``item_summary`` per text item likewise):

- *graph effect*: for each text user u, the text user(s) w sharing the most items with u in the interaction
  graph (graph only; ties averaged) against the mean over all other text users:
  ``mean_w cos(p_u, p_w) - mean_{v != u} cos(p_u, p_v)``. Users sharing no item with any other text user are
  left out. Above 0: the profile depends on what the graph knows, so a model reading graph-derived tokens can
  be scored for personalisation on these profiles.

Each effect is a mean over units with a normal 95% half-width (1.96 standard errors, as ``mean ± hw``).
A difference counts as present when its interval lies above 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import norm

from beatrec.data.dataset import XRecDataset


class Encoder(Protocol):
    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray: ...


class Effect(NamedTuple):
    """One measured difference of cosines: mean over ``n`` units and its ``level`` half-width."""

    mean: float
    half_width: float
    n: int

    @property
    def present(self) -> bool:
        """The interval lies above 0."""
        return self.n > 1 and self.mean - self.half_width > 0

    def __str__(self) -> str:
        return f"{self.mean:+.3f} ± {self.half_width:.3f} (n {self.n})" if self.n else "not measurable (n 0)"


class ExplanationSignal(NamedTuple):
    user_effect: Effect  # same user, other item - other user, same other item (controlled)
    item_effect: Effect  # same item, other user - random pair
    same_user: float  # mean cos(r_ui, r_uj) over the user-effect units
    other_user_same_item: float  # mean cos(r_ui, r_vj), the control of same_user
    same_item: float  # mean cos(r_ui, r_vi)
    random: float  # mean cos(r_ui, r) over random pairs (other user, other item)
    n_pairs: int


class ProfileSignal(NamedTuple):
    graph_effect: Effect  # most-shared-neighbour profile - random profile
    neighbour: float  # mean cos to the graph neighbour's profile
    random: float  # mean cos to all other profiles
    n_entities: int  # entities with a non-empty profile


class ReferenceSignal(NamedTuple):
    dataset: str
    explanations: ExplanationSignal
    user_profiles: ProfileSignal | None  # None: no user_summary texts
    item_profiles: ProfileSignal | None


def effect(values: Sequence[float] | np.ndarray, level: float = 0.95) -> Effect:
    """Mean of per-unit ``values`` with its normal ``level`` half-width (z · sd / sqrt(n))."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return Effect(float("nan"), float("nan"), 0)
    hw = float(norm.ppf(0.5 + level / 2) * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("inf")
    return Effect(float(v.mean()), hw, len(v))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def explanation_signal(uid: np.ndarray, iid: np.ndarray, emb: np.ndarray, level: float = 0.95) -> ExplanationSignal:
    """The explanation decomposition of the module docstring.

    Args:
        uid, iid: (P,) the pair of each reference (distinct pairs); emb: (P, d) reference embeddings (normalised
            here). Memory is O(P·d): cosines are taken per row, never as a (P, P) matrix.
    """
    uid, iid = np.asarray(uid, dtype=np.int64), np.asarray(iid, dtype=np.int64)
    e = _unit(emb)  # (P, d); cosines are taken row by row, never as a (P, P) matrix
    u_codes, u_of = np.unique(uid, return_inverse=True)
    i_codes, i_of = np.unique(iid, return_inverse=True)
    user_sum = np.zeros((len(u_codes), e.shape[1]))
    item_sum = np.zeros((len(i_codes), e.shape[1]))
    np.add.at(user_sum, u_of, e)
    np.add.at(item_sum, i_of, e)
    n_u, n_i = np.bincount(u_of)[u_of], np.bincount(i_of)[i_of]  # (P,) rows of the pair's user / item
    # every other pair minus the same user's and the same item's (the pair itself is in both: added back once)
    other_sum = (e * (e.sum(0) - user_sum[u_of] - item_sum[i_of] + e)).sum(1)  # (P,)
    n_other = len(uid) - n_u - n_i + 1
    random_mean = np.where(n_other > 0, other_sum / np.maximum(n_other, 1), np.nan)  # (P,)

    def sim(a: int, rows: np.ndarray | list[int]) -> np.ndarray:
        return e[rows] @ e[a]

    user_units, same_vals, ctrl_vals = [], [], []
    item_units, item_vals, rand_vals = [], [], []
    by_item = pd.Series(np.arange(len(uid))).groupby(iid).apply(np.asarray).to_dict()
    by_user = pd.Series(np.arange(len(uid))).groupby(uid).apply(np.asarray).to_dict()
    for a in range(len(uid)):
        u, i = uid[a], iid[a]
        diffs, s_same, s_ctrl = [], [], []
        for b in by_user[u]:  # (u, j), j != i
            if iid[b] == i:
                continue
            others = [c for c in by_item[iid[b]] if uid[c] != u]  # (v, j), v != u
            if others:
                s, c = float(e[a] @ e[b]), float(sim(a, others).mean())
                diffs.append(s - c)
                s_same.append(s)
                s_ctrl.append(c)
        if diffs:
            user_units.append((u, np.mean(diffs)))
            same_vals.append(np.mean(s_same))
            ctrl_vals.append(np.mean(s_ctrl))
        co = [c for c in by_item[i] if uid[c] != u]  # (v, i), v != u
        if co and np.isfinite(random_mean[a]):
            m = float(sim(a, co).mean())
            item_units.append(m - random_mean[a])
            item_vals.append(m)
            rand_vals.append(random_mean[a])
    nanmean = lambda x: float(np.mean(x)) if len(x) else float("nan")  # noqa: E731
    # one unit per user (the mean over its anchors): anchors of one user share their pairs, so they are not
    # independent, while different users' anchors are
    per_user = pd.DataFrame(user_units, columns=["u", "d"]).groupby("u")["d"].mean().to_numpy() \
        if user_units else np.zeros(0)
    return ExplanationSignal(effect(per_user, level), effect(item_units, level), nanmean(same_vals),
                             nanmean(ctrl_vals), nanmean(item_vals), float(np.nanmean(random_mean)), len(uid))


def profile_signal(entities: np.ndarray, emb: np.ndarray, shared: sp.spmatrix, level: float = 0.95) -> ProfileSignal:
    """The profile decomposition of the module docstring.

    Args:
        entities: (E,) ids with a profile; emb: (E, d) their profile embeddings; shared: (E, E) how many graph
            neighbours (items of two users, users of two items) each pair of entities shares (diagonal ignored).
    """
    e = _unit(emb)  # (E, d)
    n = len(entities)
    rand = (e @ e.sum(0) - (e * e).sum(1)) / max(n - 1, 1)  # (E,) exact mean cosine to the others
    s = sp.csr_matrix(shared, dtype=np.float64)
    s.setdiag(0)
    s.eliminate_zeros()
    units, nb = [], []
    for a in range(n):
        row = s.getrow(a)
        if row.nnz == 0:
            continue
        top = row.indices[row.data == row.data.max()]  # every neighbour sharing the most
        v = float((e[top] @ e[a]).mean())
        units.append(v - rand[a])
        nb.append(v)
    return ProfileSignal(effect(units, level), float(np.mean(nb)) if nb else float("nan"), float(rand.mean()), n)


def _profiles(frame: pd.DataFrame, key: str, column: str) -> tuple[np.ndarray, list[str]]:
    """One non-empty profile per entity (its first row's), sorted by id."""
    rows = frame[[key, column]].copy()
    rows[column] = rows[column].astype(str).str.strip()
    rows = rows[rows[column] != ""].drop_duplicates(key).sort_values(key)
    return rows[key].to_numpy(np.int64), rows[column].tolist()


def _co_counts(ids: np.ndarray, left: np.ndarray, right: np.ndarray) -> sp.csr_matrix:
    """(E, E) number of distinct ``right`` neighbours entity ``ids[a]`` and ``ids[b]`` share in the graph."""
    pos = pd.Series(np.arange(len(ids)), index=ids)
    keep = np.isin(left, ids)
    rows = pos.loc[left[keep]].to_numpy()
    cols, _ = pd.factorize(right[keep])
    m = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ids), int(cols.max(initial=-1)) + 1))
    m.data[:] = 1.0  # a repeated edge counts once
    return (m @ m.T).tocsr()


def reference_signal(ds: XRecDataset, encoder: Encoder, level: float = 0.95,
                     progress: bool = False) -> ReferenceSignal:
    """Measure every decomposition of the module docstring on ``ds``'s text rows (``explanations.jsonl`` and
    ``test.jsonl``; the graph is every edge of ``interactions.csv``, all splits)."""
    frames = [ds.texts] + ([ds.test_texts] if ds.test_texts is not None else [])
    texts = pd.concat(frames, ignore_index=True).drop_duplicates(["uid", "iid"]).reset_index(drop=True)
    emb = encoder.encode(texts["explanation"].astype(str).tolist(), progress=progress)
    expl = explanation_signal(texts["uid"].to_numpy(), texts["iid"].to_numpy(), emb, level)
    users, items = ds.interactions["user"].to_numpy(), ds.interactions["item"].to_numpy()
    out = []
    for key, column, left, right in (("uid", "user_summary", users, items), ("iid", "item_summary", items, users)):
        ids, profiles = _profiles(texts, key, column)
        if len(ids) < 2:
            out.append(None)
            continue
        out.append(profile_signal(ids, encoder.encode(profiles, progress=progress), _co_counts(ids, left, right),
                                  level))
    return ReferenceSignal(ds.name, expl, *out)


def verdict(sig: ReferenceSignal) -> list[str]:
    """What the measurements mean, in plain words (one sentence per finding)."""
    e = sig.explanations
    lines = []
    if e.user_effect.n == 0:
        lines.append("No user has references for two items that other users also explain, so the user signal "
                     "of these references cannot be measured.")
    elif e.user_effect.present:
        lines.append(f"These references carry user signal: a user's reference for another item is closer than "
                     f"another user's reference for that same item ({e.user_effect}). A model that uses the user "
                     "can beat a shuffled-user control on them.")
    else:
        lines.append(f"These references carry no user signal: a user's reference for another item is no closer "
                     f"than another user's reference for that same item ({e.user_effect}). A shuffled-user "
                     "control cannot be beaten on them; read such a control as a check of the data, not of the "
                     "model.")
    if e.item_effect.n:
        what = "depend on the item" if e.item_effect.present else "show no item signal"
        lines.append(f"They {what}: two users' references of the same item are closer than random pairs "
                     f"({e.item_effect}); a shuffled-item control is informative when this is above 0.")
    for label, p in (("user", sig.user_profiles), ("item", sig.item_profiles)):
        if p is None:
            lines.append(f"No {label} profiles ({label}_summary) to check.")
        elif p.graph_effect.n == 0:
            lines.append(f"No two {label}s with profiles share a graph neighbour: {label} profiles unchecked.")
        else:
            verb = "carry" if p.graph_effect.present else "do not carry"
            lines.append(f"The {label} profiles {verb} what the graph knows: the profile of the {label} sharing "
                         f"the most {'items' if label == 'user' else 'users'} is closer than a random "
                         f"{label}'s ({p.graph_effect})." + (
                             f" Personalisation can be measured on {label} profiles."
                             if p.graph_effect.present and label == "user" else ""))
    return lines


def signal_table(sig: ReferenceSignal) -> str:
    """A markdown table of every measured mean and effect."""
    e = sig.explanations
    rows = [("explanations", "same user, other item (cos)", f"{e.same_user:.3f}", ""),
            ("explanations", "other user, that same other item (cos)", f"{e.other_user_same_item:.3f}", ""),
            ("explanations", "**user effect** (difference of the two above)", "", str(e.user_effect)),
            ("explanations", "same item, other user (cos)", f"{e.same_item:.3f}", ""),
            ("explanations", "random pair: other user, other item (cos)", f"{e.random:.3f}", ""),
            ("explanations", "**item effect** (same item - random)", "", str(e.item_effect))]
    for label, p in (("user profiles", sig.user_profiles), ("item profiles", sig.item_profiles)):
        if p is not None:
            rows += [(label, "graph neighbour's profile (cos)", f"{p.neighbour:.3f}", ""),
                     (label, "random other profile (cos)", f"{p.random:.3f}", ""),
                     (label, "**graph effect** (neighbour - random)", "", str(p.graph_effect))]
    lines = ["| texts | comparison | mean cosine | difference, mean ± 95% half-width |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def signal_dict(sig: ReferenceSignal) -> dict:
    """JSON-ready form (effects as {mean, half_width, n, present})."""

    def conv(x: object) -> object:
        if isinstance(x, Effect):
            return {**x._asdict(), "present": x.present}
        if isinstance(x, tuple) and hasattr(x, "_asdict"):
            return {k: conv(v) for k, v in x._asdict().items()}
        return x

    return {**conv(sig), "verdict": verdict(sig)}
