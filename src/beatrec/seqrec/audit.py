"""Order audit of a sequential dataset: are users' sequences suspiciously ordered by item id or by ASIN?

Leave-one-out evaluation assumes each user's items are in time order. Widely used preprocessed Amazon files
(and the authors' code of some generative recommenders) keep same-day items, or every item, in the order of
their product code (ASIN); then "the next item" is partly predictable from the code alone, and a model that
learns codes learns the leak. The audit measures it two ways:

- **increasing pairs**: the share f of consecutive pairs (a, b) of a user's sequence with key(b) > key(a)
  (pairs of the same item are left out). Under a within-user shuffle f is 1/2 in expectation (reversing a
  permutation turns increasing pairs into decreasing ones); the p-value is that of a permutation test with
  R within-user shuffles: p = (1 + #{f_shuffled >= f}) / (1 + R).
- **next-key heuristic**: for each user, recommend the 10 items whose keys follow the last history item's key;
  NDCG@10 / Recall@10 of the held-out last item (DESIGN.md's leave-one-out), beside popularity and beside the
  same heuristic on a within-user shuffle of the data. No training is involved.

The data are *flagged* when f exceeds 1/2 by at least :data:`FLAG_EXCESS` with p < :data:`FLAG_P`.

A caveat for ``key="id"``: files such as S3Rec's number items in order of first appearance, which alone makes
increasing ids common (a user's new items get new, larger ids); the report says when ids look numbered so.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from beatrec.errors import ConfigError, DataError
from beatrec.seqrec.data import SeqDataset
from beatrec.seqrec.evaluate import metrics_from_topk, popularity_topk

KEYS = ("auto", "id", "asin")
FLAG_EXCESS = 0.05  # f - 1/2 at least this ...
FLAG_P = 0.01  # ... with a permutation p-value below this
ASIN_FILES = ("item_text.tsv", "item_id2asin.tsv")  # item_id<TAB>asin[<TAB>title], header optional


class OrderAudit(NamedTuple):
    """The audit of one dataset under one key (see the module docstring)."""

    dataset: str
    key: str  # "id" | "asin"
    n_users: int
    n_pairs: int  # consecutive pairs of distinct items
    increasing: float  # f
    shuffled_mean: float  # mean f over the R within-user shuffles
    shuffled_std: float
    p_value: float
    n_shuffles: int
    flagged: bool
    next_key_ndcg10: float
    next_key_recall10: float
    next_key_shuffled_ndcg10: float  # the heuristic on one within-user shuffle of the same data
    popularity_ndcg10: float
    ids_by_first_appearance: float  # share of items whose id order equals their first-appearance order

    def summary(self) -> str:
        """One line: the verdict and its figures."""
        verdict = "FLAGGED: sequences look ordered by " + self.key if self.flagged else "not flagged"
        return (f"{self.dataset} ({self.key} order): {verdict}; {100 * self.increasing:.1f}% of consecutive pairs "
                f"increase (within-user shuffles {100 * self.shuffled_mean:.1f}% ± {100 * self.shuffled_std:.1f}, "
                f"p {self.p_value:.3g}, {self.n_shuffles} shuffles); next-{self.key} heuristic NDCG@10 "
                f"{self.next_key_ndcg10:.4f} (shuffled {self.next_key_shuffled_ndcg10:.4f}, popularity "
                f"{self.popularity_ndcg10:.4f})")


def read_item_asins(root: Path) -> dict[int, str] | None:
    """{raw item id: ASIN} from the dataset's ``item_text.tsv`` or ``item_id2asin.tsv``; None when neither exists."""
    for name in ASIN_FILES:
        path = root / name
        if not path.is_file():
            continue
        out: dict[int, str] = {}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            cols = line.split("\t")
            if n == 1 and not cols[0].strip().isdigit():
                continue  # header
            if len(cols) < 2 or not cols[0].strip().isdigit() or not cols[1].strip():
                raise DataError(path, f"expected item_id<TAB>asin, got {line[:60]!r}", n)
            out[int(cols[0])] = cols[1].strip()
        return out
    return None


def key_ranks(ds: SeqDataset, key: str) -> tuple[str, np.ndarray]:
    """(resolved key, (n_items,) int64 rank of each internal item under the key). ``auto``: ASIN when the dataset
    has an ASIN file, else the item id."""
    if key not in KEYS:
        raise ConfigError(f"--key must be one of {KEYS}, got {key!r}")
    asins = read_item_asins(ds.root) if key in ("auto", "asin") else None
    if key == "asin" and asins is None:
        raise DataError(ds.root, f"no ASINs: the audit by ASIN needs one of {ASIN_FILES}")
    if asins is None:
        return "id", np.arange(ds.n_items, dtype=np.int64)  # internal ids ascend with raw ids
    missing = [int(r) for r in ds.item_raw_ids if int(r) not in asins]
    if missing:
        raise DataError(ds.root, f"{len(missing)} items have no ASIN (e.g. item {missing[0]})")
    codes = np.asarray([asins[int(r)] for r in ds.item_raw_ids])
    return "asin", np.unique(codes, return_inverse=True)[1].astype(np.int64)


def _flat(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(items (N,), user index (N,)) of all sequences concatenated."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    return np.concatenate(sequences).astype(np.int64), np.repeat(np.arange(len(sequences)), lengths)


def increasing_fraction(items: np.ndarray, users: np.ndarray, rank: np.ndarray) -> tuple[float, int]:
    """(share of consecutive same-user pairs of distinct items whose key increases, number of such pairs)."""
    same = users[1:] == users[:-1]
    r = rank[items]
    a, b = r[:-1][same], r[1:][same]
    keep = a != b
    n = int(keep.sum())
    return (float((b[keep] > a[keep]).mean()) if n else 0.5), n


def shuffle_within_users(items: np.ndarray, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``items`` with each user's run permuted uniformly at random (``users`` must be grouped, as from _flat)."""
    return items[np.argsort(users + rng.random(len(items)))]  # user u's run: keys in [u, u+1), shuffled


def next_key_topk(sequences: list[np.ndarray], rank: np.ndarray, k: int = 10) -> np.ndarray:
    """(U, k): for each user the k items whose key follows that of the second-to-last item (-1 past the end)."""
    order = np.argsort(rank, kind="stable")  # items in key order
    pos = np.empty_like(order)
    pos[order] = np.arange(len(order))
    last = np.asarray([s[-2] for s in sequences], dtype=np.int64)
    idx = pos[last][:, None] + np.arange(1, k + 1)[None]  # (U, k) positions that follow
    return np.where(idx < len(order), order[np.minimum(idx, len(order) - 1)], -1)


def audit_order(ds: SeqDataset, key: str = "auto", n_shuffles: int = 200, seed: int = 0,
                sequences: list[np.ndarray] | None = None) -> OrderAudit:
    """Audit ``ds`` (or ``sequences`` over its items, e.g. a re-ordered copy) under ``key``; see the module doc."""
    if n_shuffles < 1:
        raise ConfigError(f"the audit needs at least 1 shuffle, got {n_shuffles}")
    seqs = ds.sequences if sequences is None else sequences
    resolved, rank = key_ranks(ds, key)
    items, users = _flat(seqs)
    f, n_pairs = increasing_fraction(items, users, rank)
    rng = np.random.default_rng(seed)
    null = np.asarray([increasing_fraction(shuffle_within_users(items, users, rng), users, rank)[0]
                       for _ in range(n_shuffles)])
    p = (1 + int((null >= f).sum())) / (1 + n_shuffles)
    targets = np.asarray([s[-1] for s in seqs], dtype=np.int64)
    nk = metrics_from_topk(next_key_topk(seqs, rank), targets)
    shuffled = shuffle_within_users(items, users, np.random.default_rng(seed + 1))
    starts = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    sh_seqs = [shuffled[starts[u]:starts[u + 1]] for u in range(len(seqs))]
    sh = metrics_from_topk(next_key_topk(sh_seqs, rank), np.asarray([s[-1] for s in sh_seqs], dtype=np.int64))
    pop = np.bincount(np.concatenate([s[:-2] for s in seqs]), minlength=ds.n_items).astype(np.float64)
    popm = metrics_from_topk(popularity_topk(pop, len(seqs)), targets)
    first = np.unique(items, return_index=True)[1]  # first position of each item id present
    present = np.unique(items)
    by_first = float(np.mean(np.argsort(first, kind="stable") == np.arange(len(present)))) if len(present) else 0.0
    flagged = bool(f - 0.5 >= FLAG_EXCESS and p < FLAG_P)
    return OrderAudit(ds.name, resolved, len(seqs), n_pairs, f, float(null.mean()), float(null.std()), p,
                      n_shuffles, flagged, nk.ndcg10, nk.recall10, sh.ndcg10, popm.ndcg10, by_first)


def warn_if_ordered(ds: SeqDataset, n_shuffles: int = 100) -> OrderAudit:
    """The audit ``seqrec train`` runs on its data: prints one ``warning:`` line to stderr when it flags the data."""
    import sys

    res = audit_order(ds, "auto", n_shuffles)
    if res.flagged:
        print(f"warning: {res.summary()}; next-item metrics on this file are inflated for models that can learn "
              f"the {res.key} order (`beatrec seqrec audit --data {ds.root}`)", file=sys.stderr)
    return res
