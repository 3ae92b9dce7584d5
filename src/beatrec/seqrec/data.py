"""Sequential-recommendation datasets: readers, the leave-one-out split and sliding training windows.

Layouts read (``../shared/data/seqrec``):

- ``<Name>/<Name>.txt``: one user a line, ``user_id item_id item_id ...``, ids from 1, items in time order;
  optional ``<Name>/item_text.tsv`` (tab-separated ``item_id, asin, title``, header line optional).
- ``<Name>/<Name>.inter.json``: ``{user_index: [item_index, ...]}``, ids from 0, time order (LETTER/LC-Rec).

Items are mapped to contiguous internal ids ``0..n_items-1`` in ascending order of their raw ids; the map is
explicit (:attr:`SeqDataset.item_raw_ids`, :meth:`SeqDataset.internal_ids`). Users with fewer than 3 items
cannot give a training, a validation and a test item: they are dropped and counted
(:attr:`SeqDataset.n_dropped_users`). Malformed lines, non-integer tokens, users with no items, repeated user
ids and titles of unknown items are errors (:class:`beatrec.errors.DataError` naming file and line).

Leave-one-out (DESIGN.md "Evaluation protocol"): for a user sequence s_1..s_n, s_n is the test target,
s_{n-1} the validation target and s_1..s_{n-2} the training part; training samples are all prefixes of the
training part, each truncated to its last ``max_len`` items, predicting the next item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from beatrec.errors import DataError

PAD = -1  # padding value of history matrices (histories are right-aligned: the latest item is last)
MIN_ITEMS = 3


@dataclass
class SeqDataset:
    """User sequences over contiguous internal item ids.

    Attributes:
        name: dataset name (the directory name).
        root: the dataset directory.
        sequences: per user, an int64 array of internal item ids in time order (every one has >= 3 items).
        user_raw_ids: (n_users,) raw user id of each row of ``sequences``.
        item_raw_ids: (n_items,) raw id of each internal item id (ascending).
        titles: per internal item id, its title (``None`` when the dataset has no item text).
        n_dropped_users: users dropped for having fewer than 3 items.
        n_missing_titles: items with text file present but no (or an empty) title.
    """

    name: str
    root: Path
    sequences: list[np.ndarray]
    user_raw_ids: np.ndarray
    item_raw_ids: np.ndarray
    titles: list[str] | None = None
    n_dropped_users: int = 0
    n_missing_titles: int = 0

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_items(self) -> int:
        return len(self.item_raw_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def has_text(self) -> bool:
        return self.titles is not None

    def internal_ids(self, raw: np.ndarray) -> np.ndarray:
        """Raw item ids -> internal ids (-1 where a raw id is unknown)."""
        raw = np.asarray(raw, dtype=np.int64)
        pos = np.searchsorted(self.item_raw_ids, raw)
        pos = np.clip(pos, 0, max(self.n_items - 1, 0))
        ok = self.item_raw_ids[pos] == raw if self.n_items else np.zeros(raw.shape, bool)
        return np.where(ok, pos, -1)

    def subset_users(self, n: int, seed: int = 0) -> SeqDataset:
        """A seeded random subset of ``n`` users (items re-indexed to those the subset uses). For smoke runs."""
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(self.n_users, size=min(n, self.n_users), replace=False))
        used = np.unique(np.concatenate([self.sequences[u] for u in keep]))
        remap = np.full(self.n_items, -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        return SeqDataset(
            name=f"{self.name}[{len(keep)} users]",
            root=self.root,
            sequences=[remap[self.sequences[u]] for u in keep],
            user_raw_ids=self.user_raw_ids[keep],
            item_raw_ids=self.item_raw_ids[used],
            titles=[self.titles[i] for i in used] if self.titles is not None else None,
            n_dropped_users=0,
            n_missing_titles=sum(1 for i in used if self.titles is not None and not self.titles[i]),
        )


def _int(token: str, file: Path, row: int | None, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataError(file, f"non-integer {what} {token!r}", row) from None


def read_txt_sequences(path: Path) -> tuple[list[int], list[list[int]]]:
    """``user item item ...`` lines -> (raw user ids, raw item sequences). Blank lines are skipped."""
    if not path.is_file():
        raise DataError(path, "file not found")
    users: list[int] = []
    seqs: list[list[int]] = []
    seen: set[int] = set()
    with path.open() as f:
        for n, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            user = _int(tokens[0], path, n, "user id")
            items = [_int(t, path, n, "item id") for t in tokens[1:]]
            if not items:
                raise DataError(path, f"user {user} has no items (empty sequence)", n)
            if user in seen:
                raise DataError(path, f"user {user} appears on more than one line", n)
            if min(items) < 0 or user < 0:
                raise DataError(path, "negative id", n)
            seen.add(user)
            users.append(user)
            seqs.append(items)
    if not users:
        raise DataError(path, "no user sequences (the file is empty)")
    return users, seqs


def read_json_sequences(path: Path) -> tuple[list[int], list[list[int]]]:
    """``{user_index: [item_index, ...]}`` -> (raw user ids, raw item sequences), users in ascending order."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg})", e.lineno) from None
    if not isinstance(data, dict) or not data:
        raise DataError(path, "top level must be a non-empty mapping {user_index: [item_index, ...]}")
    pairs = []
    for key, items in data.items():
        user = _int(str(key), path, None, "user id")
        if not isinstance(items, list) or not items:
            raise DataError(path, f"user {key}: expected a non-empty list of item ids, got {items!r:.60}")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items):
            bad = next(i for i in items if not (isinstance(i, int) and not isinstance(i, bool) and i >= 0))
            raise DataError(path, f"user {key}: item id {bad!r} is not a non-negative integer")
        pairs.append((user, items))
    pairs.sort(key=lambda p: p[0])
    return [p[0] for p in pairs], [p[1] for p in pairs]


def read_item_text(path: Path) -> dict[int, str]:
    """``item_id<TAB>asin<TAB>title`` (header optional) -> {raw item id: title}. Titles may be empty."""
    titles: dict[int, str] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            cols = line.split("\t")
            if n == 1 and cols[0].strip().lower() in ("item_id", "item", "id"):
                continue  # header
            if len(cols) < 2:
                raise DataError(path, f"expected tab-separated item_id, asin, title; got {line[:60]!r}", n)
            item = _int(cols[0].strip(), path, n, "item id")
            if item in titles:
                raise DataError(path, f"item {item} listed twice", n)
            titles[item] = cols[2].strip() if len(cols) > 2 else ""
    return titles


def _find_sequence_file(root: Path) -> Path:
    for cand in (root / f"{root.name}.txt", root / f"{root.name}.inter.json"):
        if cand.is_file():
            return cand
    found = sorted(root.glob("*.inter.json")) or sorted(p for p in root.glob("*.txt"))
    if len(found) == 1:
        return found[0]
    raise DataError(root, f"no sequence file: expected {root.name}.txt or {root.name}.inter.json"
                    + (f" (found several candidates: {[p.name for p in found]})" if found else ""))


def load_seq_dataset(path: str | Path) -> SeqDataset:
    """Read a dataset directory (or a ``.txt`` / ``.inter.json`` file directly) into a :class:`SeqDataset`.

    Titles are read from ``item_text.tsv`` beside the sequence file when it exists; every item id there must
    occur in the sequences. Items without a title get an empty string (counted in ``n_missing_titles``).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(p, "dataset path not found")
    file = p if p.is_file() else _find_sequence_file(p)
    root = file.parent
    users, raw = read_json_sequences(file) if file.name.endswith(".json") else read_txt_sequences(file)
    keep = [i for i, s in enumerate(raw) if len(s) >= MIN_ITEMS]
    n_dropped = len(raw) - len(keep)
    if not keep:
        raise DataError(file, f"no user has at least {MIN_ITEMS} items (needed for a leave-one-out split)")
    item_raw = np.unique(np.concatenate([np.asarray(raw[i], dtype=np.int64) for i in keep]))
    lookup = {int(r): j for j, r in enumerate(item_raw)}
    sequences = [np.fromiter((lookup[x] for x in raw[i]), dtype=np.int64, count=len(raw[i])) for i in keep]
    titles = None
    n_missing = 0
    text_file = root / "item_text.tsv"
    if text_file.is_file():
        by_raw = read_item_text(text_file)
        unknown = sorted(set(by_raw) - set(lookup))
        if unknown:
            # Items of dropped short users may legitimately be absent; only ids no sequence ever had are errors.
            all_raw = {x for s in raw for x in s}
            really = [u for u in unknown if u not in all_raw]
            if really:
                raise DataError(text_file, f"{len(really)} item id(s) not in {file.name}, e.g. {really[:5]}")
        titles = [by_raw.get(int(r), "") for r in item_raw]
        n_missing = sum(1 for t in titles if not t)
    name = root.name if p.is_dir() else file.stem.split(".")[0]
    return SeqDataset(name, root, sequences, np.asarray([users[i] for i in keep], dtype=np.int64), item_raw,
                      titles, n_dropped, n_missing)


class Samples(NamedTuple):
    """Next-item samples: histories (N, max_len) int64 right-aligned, padded with PAD; targets (N,); users (N,)."""

    history: np.ndarray
    target: np.ndarray
    user: np.ndarray


class LeaveOneOut(NamedTuple):
    train: Samples  # sliding windows over every training part
    val: Samples  # one per user: s_1..s_{n-2} -> s_{n-1}
    test: Samples  # one per user: s_1..s_{n-1} -> s_n


def _pad_rows(rows: list[np.ndarray], max_len: int) -> np.ndarray:
    out = np.full((len(rows), max_len), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        r = r[-max_len:]
        if len(r):
            out[i, max_len - len(r):] = r
    return out


def sliding_windows(seq: np.ndarray, max_len: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Every prefix -> next item of ``seq``: ([seq[max(0,t-max_len):t] for t in 1..n-1], seq[1:])."""
    return [seq[max(0, t - max_len):t] for t in range(1, len(seq))], seq[1:]


def leave_one_out(ds: SeqDataset, max_len: int = 20) -> LeaveOneOut:
    """The leave-one-out split with sliding training windows of at most ``max_len`` history items."""
    hist: list[np.ndarray] = []
    tgt: list[np.ndarray] = []
    usr: list[np.ndarray] = []
    for u, s in enumerate(ds.sequences):
        h, t = sliding_windows(s[:-2], max_len)
        hist.extend(h)
        tgt.append(t)
        usr.append(np.full(len(t), u, dtype=np.int64))
    users = np.arange(ds.n_users, dtype=np.int64)
    train = Samples(_pad_rows(hist, max_len), np.concatenate(tgt).astype(np.int64), np.concatenate(usr))
    val = Samples(_pad_rows([s[:-2] for s in ds.sequences], max_len),
                  np.asarray([s[-2] for s in ds.sequences], dtype=np.int64), users)
    test = Samples(_pad_rows([s[:-1] for s in ds.sequences], max_len),
                   np.asarray([s[-1] for s in ds.sequences], dtype=np.int64), users)
    return LeaveOneOut(train, val, test)


def subset_samples(samples: Samples, n: int, seed: int) -> Samples:
    """A seeded subset of ``n`` rows in their original order (``n`` = 0 or >= the rows: all of them)."""
    if n == 0 or n >= len(samples.target):
        return samples
    idx = np.sort(np.random.default_rng(seed).choice(len(samples.target), n, replace=False))
    return Samples(samples.history[idx], samples.target[idx], samples.user[idx])


def item_popularity(train: Samples, n_items: int) -> np.ndarray:
    """(n_items,) training-interaction counts: every item of a training part counted once per occurrence.

    The windows of one user overlap, so counts come from the targets plus each user's first history item.
    """
    counts = np.bincount(train.target, minlength=n_items).astype(np.float64)
    first = train.history[:, -1] != PAD
    # the first item of each training part is never a target: it is the one-item history of the first window
    starts = np.flatnonzero((train.history[:, :-1] == PAD).all(1) & first)
    np.add.at(counts, train.history[starts, -1], 1.0)
    return counts
