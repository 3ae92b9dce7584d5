"""A user's interaction history as item titles (input of the "history prompting" baseline).

A zero-shot user has no text, but does have graph edges. The titles of the items at the other end of those
edges are item metadata, not the user's own text, so a prompt may list them. Two rules keep it leak-free:

- titles come only from the text rows of *training* users (:func:`beatrec.data.split.training_texts`);
  an item whose only title sits in a val/test user's row has no title here;
- history items are the user's edges with ``split == "train"`` only (the val/test edges are the held-out
  recommendation targets).

Items are ranked by *graph typicality*: the cosine between the user's and the item's graph vectors
(e.g. LightGCN outputs, :class:`~beatrec.tokenizer.embeddings.GraphEmbeddings`), descending; ties, and
every item when no vectors are given, are ordered by the item's train-edge degree (descending) and then by
item id (ascending).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from beatrec.data.dataset import XRecDataset
from beatrec.data.split import ZeroShotSplit, training_texts

if TYPE_CHECKING:
    from beatrec.tokenizer.embeddings import GraphEmbeddings

NO_HISTORY = "(no titled items)"
"""What :func:`format_history` writes for an empty history."""

_CHUNK = 65536  # history rows per cosine block (bounds the (rows, D) gather)


class HistoryTitles(NamedTuple):
    """Ranked titled history of each requested user.

    Attributes:
        titles: ``m`` lists (one per requested user, in request order) of at most ``n`` titles, most typical
            first.
        item_ids: the item ids of ``titles``, same shape.
        share_with_any: share of the ``m`` requested users with at least one title (0.0 when ``m == 0``).
        mean_titles: mean number of titles per requested user (0.0 when ``m == 0``).
    """

    titles: list[list[str]]
    item_ids: list[list[int]]
    share_with_any: float
    mean_titles: float


def item_titles_from_training(ds: XRecDataset, split: ZeroShotSplit) -> dict[int, str]:
    """Item id -> title, read only from the text rows of the split's training users.

    Blank titles are ignored; when an item has several training rows, the first non-blank title in file
    order is kept. No row of a val or test user (nor of ``test.jsonl``) is read.
    """
    rows = training_texts(ds, split)
    title = rows["title"].astype(str).str.strip()
    named = (title != "").to_numpy()
    first = ~rows.loc[named, "iid"].duplicated(keep="first").to_numpy()  # first named row per item
    iids = rows["iid"].to_numpy()[named][first]
    return dict(zip(iids.tolist(), title.to_numpy()[named][first].tolist(), strict=True))


def _as_array(x: object) -> np.ndarray:
    """A torch tensor or array-like -> float32 numpy array."""
    detach = getattr(x, "detach", None)
    if detach is not None:
        return detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def history_titles(ds: XRecDataset, split: ZeroShotSplit, users: np.ndarray, n: int,
                   vectors: GraphEmbeddings | None = None,
                   exclude: np.ndarray | None = None) -> HistoryTitles:
    """The ``n`` most typical titled train-edge items of each user in ``users``.

    History of user ``u`` = items ``i`` with an edge ``(u, i)`` whose ``split`` is ``"train"`` and which have
    a training title (:func:`item_titles_from_training`), ranked by ``cos(z_u, z_i)`` descending, then by
    train degree of ``i`` descending, then by ``i`` ascending; the first ``n`` are kept.

    Args:
        ds: the dataset.
        split: the zero-shot split (decides which text rows may supply titles).
        users: ``(m,)`` int user ids; repeats allowed (one entry per pair being explained).
        n: maximum titles per user (>= 1).
        vectors: optional graph vectors, ``user`` ``(U, D)`` and ``item`` ``(I, D)`` with ``U >= ds.n_users``
            and ``I >= ds.n_items``; ``None`` ranks by degree alone.
        exclude: optional ``(m,)`` int item id to leave out of each user's history (the target item of the
            pair being explained); an id the user has no edge to (e.g. ``-1``) leaves nothing out.

    Returns:
        :class:`HistoryTitles` with one entry per element of ``users``, in order.

    Raises:
        ValueError: ``n < 1``, a user id outside ``0..ds.n_users-1``, ``exclude`` of the wrong length, or
            vectors of the wrong shape.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    m = len(users)
    if m and (users.min() < 0 or users.max() >= ds.n_users):
        raise ValueError(f"user ids must be in 0..{ds.n_users - 1}")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if len(exclude) != m:
            raise ValueError(f"exclude must have one item per user ({m}), got {len(exclude)}")

    titles = item_titles_from_training(ds, split)
    title_of = np.full(ds.n_items, "", dtype=object)
    has_title = np.zeros(ds.n_items, dtype=bool)
    ids = np.fromiter(titles, dtype=np.int64, count=len(titles))
    title_of[ids] = list(titles.values())
    has_title[ids] = True

    # ---- train edges to titled items, grouped by user
    tr = ds.interactions[ds.interactions["split"] == "train"]
    eu = tr["user"].to_numpy(dtype=np.int64)
    ei = tr["item"].to_numpy(dtype=np.int64)
    degree = np.bincount(ei, minlength=ds.n_items)  # (I,) train degree
    keep = has_title[ei]
    eu, ei = eu[keep], ei[keep]
    order = np.argsort(eu, kind="stable")
    eu, ei = eu[order], ei[order]
    starts = np.searchsorted(eu, np.arange(ds.n_users + 1))  # (U+1,) row ranges per user

    # ---- one row per (request k, history item): request positions `pos`, items `items`
    lo, hi = starts[users], starts[users + 1]  # (m,)
    counts = hi - lo
    pos = np.repeat(np.arange(m), counts)  # (R,)
    offset = np.arange(len(pos)) - np.repeat(np.cumsum(counts) - counts, counts)
    items = ei[np.repeat(lo, counts) + offset]  # (R,)
    if exclude is not None:
        drop = items == exclude[pos]
        pos, items = pos[~drop], items[~drop]

    # ---- typicality score per row
    score = np.zeros(len(pos), dtype=np.float32)
    if vectors is not None:
        zu, zi = _as_array(vectors.user), _as_array(vectors.item)
        if zu.ndim != 2 or zi.ndim != 2 or zu.shape[1] != zi.shape[1]:
            raise ValueError(f"vectors must be user (U, D) and item (I, D), got {zu.shape} and {zi.shape}")
        if zu.shape[0] < ds.n_users or zi.shape[0] < ds.n_items:
            raise ValueError(f"vectors cover {zu.shape[0]} users / {zi.shape[0]} items, the dataset has "
                             f"{ds.n_users} / {ds.n_items}")
        zu, zi = _unit_rows(zu), _unit_rows(zi)
        req_u = users[pos]
        for a in range(0, len(pos), _CHUNK):
            b = a + _CHUNK
            score[a:b] = np.einsum("rd,rd->r", zu[req_u[a:b]], zi[items[a:b]])  # (chunk,) cosines

    # ---- rank inside each request: position asc, cosine desc, degree desc, item id asc
    order = np.lexsort((items, -degree[items], -score, pos))
    pos, items = pos[order], items[order]
    first = np.searchsorted(pos, np.arange(m))  # (m,) first row of each request
    rank = np.arange(len(pos)) - first[pos]
    top = rank < n
    pos, items = pos[top], items[top]
    bounds = np.searchsorted(pos, np.arange(m + 1))
    item_ids = [items[bounds[k]:bounds[k + 1]].tolist() for k in range(m)]
    out_titles = [title_of[items[bounds[k]:bounds[k + 1]]].tolist() for k in range(m)]
    sizes = np.diff(bounds)
    return HistoryTitles(
        titles=out_titles,
        item_ids=item_ids,
        share_with_any=float((sizes > 0).mean()) if m else 0.0,
        mean_titles=float(sizes.mean()) if m else 0.0,
    )


def format_history(titles: list[str]) -> str:
    """Titles as prompt text: ``["The Silent Dragon", "The Lost Kiss"]`` -> ``"The Silent Dragon"; "The Lost
    Kiss"`` (each title in double quotes, joined by ``"; "``); an empty list -> :data:`NO_HISTORY`."""
    if not titles:
        return NO_HISTORY
    return "; ".join(f'"{t.strip()}"' for t in titles)
