"""Explainable-recommendation datasets (the XRec layout) loaded and validated.

A dataset is a folder (e.g. ``../shared/data/xrec/amazon``) holding

``interactions.csv``
    the user-item graph, header ``user,item[,split]``; ids are non-negative integers, ``split`` is one of
    ``train``/``val``/``test`` (XRec's random 8:1:1 edge split). Without a ``split`` column a seeded
    8:1:1 edge split is assigned (:func:`assign_edge_split`). Extra columns are ignored.
``explanations.jsonl``
    one JSON object per line with keys ``uid, iid, title, user_summary, item_summary, explanation``;
    ``uid``/``iid`` are ids of ``interactions.csv``. Extra keys are ignored.
``test.jsonl`` (optional)
    same format; when present its rows *define* the zero-shot test pairs (see :mod:`beatrec.data.split`).
    Pairs may also occur in ``explanations.jsonl``.

Validation is strict and fast (vectorised on the 400k-row graphs): every problem raises one
:class:`~beatrec.errors.DataError` naming the file, the 1-based line (the CSV header is line 1, the first
JSONL line is line 1) and the problem. The rules:

- the folder, ``interactions.csv`` and ``explanations.jsonl`` must exist and hold at least one row;
- ``user`` and ``item`` columns are required; ids must be integers >= 0; ``split`` values must be
  ``train``, ``val`` or ``test``; a ``(user, item)`` edge may appear only once; blank lines in the CSV are
  errors except at the end of the file;
- every non-blank JSONL line must be a JSON object holding all of :data:`TEXT_COLUMNS`; ``uid``/``iid``
  must be JSON integers >= 0 that occur as a user / an item of ``interactions.csv`` (the pair itself need
  not be an edge); ``title``, ``user_summary`` and ``item_summary`` must be strings but **may be empty**;
  ``explanation`` must be a non-empty, non-whitespace string; a ``(uid, iid)`` pair may appear only once
  per file. Blank JSONL lines are skipped (they still count for line numbers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from beatrec.data.jsonl import json_objects
from beatrec.errors import DataError

TEXT_COLUMNS = ("uid", "iid", "title", "user_summary", "item_summary", "explanation")
SPLITS = ("train", "val", "test")


@dataclass
class XRecDataset:
    """A validated explainable-recommendation dataset.

    Attributes:
        root: the dataset folder.
        interactions: ``(E, 3)`` frame, columns ``user`` (int64), ``item`` (int64), ``split`` (str, one of
            ``train``/``val``/``test``), in file order.
        texts: ``(T, 6)`` frame of ``explanations.jsonl``, columns :data:`TEXT_COLUMNS` (``uid``/``iid``
            int64, the rest str), in file order.
        test_texts: the rows of ``test.jsonl`` in the same format, or ``None`` when the file is absent.
        n_users: max user id + 1 over ``interactions`` (ids are used as embedding rows).
        n_items: max item id + 1 over ``interactions``.
    """

    root: Path
    interactions: pd.DataFrame
    texts: pd.DataFrame
    test_texts: pd.DataFrame | None
    n_users: int
    n_items: int

    @property
    def name(self) -> str:
        """The folder name (``amazon``, ``google``, ...)."""
        return self.root.name


def load_dataset(root: str | Path, edge_split_seed: int = 0) -> XRecDataset:
    """Load and validate the dataset folder ``root`` (layout in the module docstring).

    Args:
        root: the dataset folder.
        edge_split_seed: seed of the 8:1:1 edge split, used only when ``interactions.csv`` has no
            ``split`` column.

    Raises:
        DataError: the first problem found, naming file, line and problem.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset directory not found")
    interactions = read_interactions(root / "interactions.csv", edge_split_seed=edge_split_seed)
    users = np.unique(interactions["user"].to_numpy())
    items = np.unique(interactions["item"].to_numpy())
    texts = read_texts(root / "explanations.jsonl", users, items)
    test_path = root / "test.jsonl"
    test_texts = read_texts(test_path, users, items) if test_path.exists() else None
    return XRecDataset(
        root=root,
        interactions=interactions,
        texts=texts,
        test_texts=test_texts,
        n_users=int(users[-1]) + 1,
        n_items=int(items[-1]) + 1,
    )


def assign_edge_split(users: np.ndarray, seed: int, fracs: tuple[float, float] = (0.8, 0.1)) -> np.ndarray:
    """Seeded random train/val/test labels for ``E`` edges, every user keeping at least one train edge.

    A random permutation gives exactly ``round(0.8 E)`` train and ``round(0.1 E)`` val edges (the rest test);
    then each user left without a train edge gets its first edge in permutation order moved to train, so
    every user has a behavior embedding trained from its own edges.

    Args:
        users: ``(E,)`` int user id of each edge.
        seed: RNG seed; the labels are a deterministic function of ``(users, seed)``.
        fracs: ``(train, val)`` fractions.

    Returns:
        ``(E,)`` object array of ``"train"``/``"val"``/``"test"``.
    """
    users = np.asarray(users)
    n = len(users)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_train = round(fracs[0] * n)
    n_val = round(fracs[1] * n)
    labels = np.full(n, "test", dtype=object)
    labels[perm[:n_train]] = "train"
    labels[perm[n_train:n_train + n_val]] = "val"
    if n:
        has_train = np.zeros(int(users.max()) + 1, dtype=bool)
        has_train[users[labels == "train"]] = True
        cand = perm[~has_train[users[perm]]]  # edges of train-less users, in permutation order
        _, first = np.unique(users[cand], return_index=True)
        labels[cand[first]] = "train"
    return labels


def _first_true(mask: np.ndarray) -> int:
    """Index of the first True of a boolean array (caller guarantees one exists)."""
    return int(np.flatnonzero(mask)[0])


_ERR_LINE = re.compile(r"line (\d+)")


def _read_csv(path: Path, as_str: bool) -> pd.DataFrame:
    kwargs = dict(keep_default_na=False, skip_blank_lines=False)
    try:
        if as_str:
            return pd.read_csv(path, dtype=str, **kwargs)
        return pd.read_csv(path, dtype={"split": str}, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(path, "empty file (no header, no rows)") from None
    except pd.errors.ParserError as e:
        m = _ERR_LINE.search(str(e))
        raise DataError(path, f"malformed CSV row ({e})".replace("\n", " ").strip(),
                        row=int(m.group(1)) if m else None) from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e})") from None


def _check_id_strings(path: Path, col: str, values: pd.Series) -> np.ndarray:
    """Slow path: ``values`` (str) -> int64, raising on the first non-integer or negative value."""
    s = values.astype(str).str.strip()
    ok = s.str.fullmatch(r"[+-]?\d{1,18}").to_numpy(dtype=bool)
    if not ok.all():
        i = _first_true(~ok)
        raw = values.iloc[i]
        what = "missing value" if s.iloc[i] == "" else f"non-integer value {raw!r}"
        raise DataError(path, f"{what} in column '{col}' (ids must be integers >= 0)", row=i + 2)
    return s.astype("int64").to_numpy()


def read_interactions(path: str | Path, edge_split_seed: int = 0) -> pd.DataFrame:
    """Read and validate ``interactions.csv``.

    Returns:
        ``(E, 3)`` frame with columns ``user`` (int64), ``item`` (int64), ``split`` (str), in file order.

    Raises:
        DataError: missing/empty file, missing column, bad id or split value, duplicate edge, blank line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    df = _read_csv(path, as_str=False)
    df.columns = [str(c).strip() for c in df.columns]
    for col in ("user", "item"):
        if col not in df.columns:
            raise DataError(path, f"missing required column '{col}' (found columns: {', '.join(df.columns)})",
                            row=1)
    has_split = "split" in df.columns
    cols = ["user", "item", "split"] if has_split else ["user", "item"]
    if not all(pd.api.types.is_integer_dtype(df[c]) for c in ("user", "item")):
        # Something is not a plain integer (a float, a word, a blank field or a blank line): re-read as
        # text so the exact offending line and value can be reported.
        df = _read_csv(path, as_str=True)
        df.columns = [str(c).strip() for c in df.columns]
        blank = (df[cols] == "").all(axis=1).to_numpy()
        if blank.any():
            n_keep = len(np.trim_zeros((~blank).astype(np.int8), "b"))  # drop trailing blank lines
            df = df.iloc[:n_keep]
            blank = blank[:n_keep]
            if blank.any():
                raise DataError(path, "blank line", row=_first_true(blank) + 2)
        if len(df) == 0:
            raise DataError(path, "empty file (header but no rows)")
        user = _check_id_strings(path, "user", df["user"])
        item = _check_id_strings(path, "item", df["item"])
    else:
        if len(df) == 0:
            raise DataError(path, "empty file (header but no rows)")
        user = df["user"].to_numpy(dtype=np.int64)
        item = df["item"].to_numpy(dtype=np.int64)
    for col, ids in (("user", user), ("item", item)):
        neg = ids < 0
        if neg.any():
            i = _first_true(neg)
            raise DataError(path, f"negative id {ids[i]} in column '{col}' (ids must be integers >= 0)",
                            row=i + 2)
    if has_split:
        split = df["split"].fillna("").astype(str).to_numpy(dtype=object)
        bad = ~np.isin(split, SPLITS)
        if bad.any():
            i = _first_true(bad)
            raise DataError(path, f"split value {split[i]!r} is not one of train/val/test", row=i + 2)
    else:
        split = assign_edge_split(user, edge_split_seed)
    out = pd.DataFrame({"user": user, "item": item})
    dup = out.duplicated(["user", "item"]).to_numpy()
    if dup.any():
        i = _first_true(dup)
        same = (user[:i] == user[i]) & (item[:i] == item[i])
        raise DataError(path, f"duplicate edge (user {user[i]}, item {item[i]}), first given on line "
                        f"{_first_true(same) + 2}", row=i + 2)
    out["split"] = pd.array(split, dtype="str")
    return out


def read_texts(path: str | Path, users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
    """Read and validate a JSONL text file (``explanations.jsonl`` or ``test.jsonl``).

    Args:
        path: the file.
        users: sorted ``(U,)`` user ids of the graph; every ``uid`` must be one of them.
        items: sorted ``(I,)`` item ids of the graph; every ``iid`` must be one of them.

    Returns:
        ``(T, 6)`` frame with columns :data:`TEXT_COLUMNS` (``uid``/``iid`` int64, the rest str), file order.

    Raises:
        DataError: missing/empty file, bad JSON, missing key, bad id, id not in the graph, bad text field,
            duplicate pair.
    """
    path = Path(path)
    rows: list[tuple] = []
    lines: list[int] = []
    for lineno, obj in json_objects(path):
        missing = [k for k in TEXT_COLUMNS if k not in obj]
        if missing:
            raise DataError(path, f"missing key(s) {', '.join(repr(k) for k in missing)}", row=lineno)
        for key in ("uid", "iid"):
            v = obj[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise DataError(path, f"'{key}' must be an integer >= 0, got {v!r}", row=lineno)
        for key in TEXT_COLUMNS[2:]:
            if not isinstance(obj[key], str):
                raise DataError(path, f"'{key}' must be a string, got {type(obj[key]).__name__}",
                                row=lineno)
        if not obj["explanation"].strip():
            raise DataError(path, "empty or whitespace-only 'explanation'", row=lineno)
        rows.append(tuple(obj[k] for k in TEXT_COLUMNS))
        lines.append(lineno)
    if not rows:
        raise DataError(path, "empty file (no rows)")
    df = pd.DataFrame(rows, columns=list(TEXT_COLUMNS))
    df["uid"] = df["uid"].astype("int64")
    df["iid"] = df["iid"].astype("int64")
    for col in TEXT_COLUMNS[2:]:
        df[col] = df[col].astype("str")
    line_of = np.asarray(lines)
    for key, ids, what in (("uid", users, "a user"), ("iid", items, "an item")):
        vals = df[key].to_numpy()
        bad = ~np.isin(vals, ids)
        if bad.any():
            i = _first_true(bad)
            raise DataError(path, f"{key} {vals[i]} never appears as {what} in interactions.csv",
                            row=int(line_of[i]))
    dup = df.duplicated(["uid", "iid"]).to_numpy()
    if dup.any():
        i = _first_true(dup)
        u, it = df["uid"].iat[i], df["iid"].iat[i]
        same = (df["uid"].to_numpy()[:i] == u) & (df["iid"].to_numpy()[:i] == it)
        raise DataError(path, f"duplicate pair (uid {u}, iid {it}), first given on line "
                        f"{line_of[_first_true(same)]}", row=int(line_of[i]))
    return df
