"""Explanation prediction files: jsonl with one ``{"uid", "iid", "prediction"}`` object per line.

Every explanation method of beatrec (BEAT, its ablations, each baseline) writes this format, and the
evaluation harness (:mod:`beatrec.evaluate`) reads it, so all of them are scored by the same code on the
same pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from beatrec.data.jsonl import json_objects
from beatrec.errors import DataError

COLUMNS = ("uid", "iid", "prediction")


def write_predictions(path: str | Path, uids: list[int], iids: list[int], preds: list[str]) -> Path:
    """Write row-aligned ids and predictions as jsonl (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for u, i, p in zip(uids, iids, preds, strict=True):
            f.write(json.dumps({"uid": int(u), "iid": int(i), "prediction": p}) + "\n")
    return path


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions file -> frame with columns uid, iid (int64), prediction (str), in file order.

    Raises:
        DataError: the file is missing or empty, a line is not a JSON object, lacks a column, has a non-integer
            id or a non-string prediction, or a (uid, iid) pair occurs twice (file, line and problem named).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "predictions file not found")
    rows: list[dict] = []
    seen: dict[tuple[int, int], int] = {}
    for n, obj in json_objects(path):
        for key in COLUMNS:
            if key not in obj:
                raise DataError(path, f"missing column {key!r}", n)
        for key in ("uid", "iid"):
            v = obj[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise DataError(path, f"{key} must be an integer id >= 0, got {v!r}", n)
        if not isinstance(obj["prediction"], str):
            raise DataError(path, f"prediction must be a string, got {type(obj['prediction']).__name__}", n)
        key = (obj["uid"], obj["iid"])
        if key in seen:
            raise DataError(path, f"pair uid={key[0]}, iid={key[1]} occurs twice (first on line {seen[key]})", n)
        seen[key] = n
        rows.append({"uid": obj["uid"], "iid": obj["iid"], "prediction": obj["prediction"]})
    if not rows:
        raise DataError(path, "no predictions (the file is empty)")
    return pd.DataFrame(rows).astype({"uid": "int64", "iid": "int64"})


class Matched(NamedTuple):
    """Predictions aligned with the expected pairs.

    Attributes:
        rows: the expected pairs that have a prediction (their columns plus ``prediction``), in expected order.
        missing: (uid, iid) of expected pairs without a prediction.
        extra: (uid, iid) of predictions for pairs that are not expected.
    """

    rows: pd.DataFrame
    missing: list[tuple[int, int]]
    extra: list[tuple[int, int]]


def match_predictions(expected: pd.DataFrame, preds: pd.DataFrame) -> Matched:
    """Join predictions (uid, iid, prediction) onto the expected pairs (uid, iid, ...) without dropping silently."""
    exp_cols = [c for c in expected.columns if c != "prediction"]
    m = expected[exp_cols].merge(preds[list(COLUMNS)], on=["uid", "iid"], how="left", indicator=True)
    missing = [(int(u), int(i)) for u, i in m.loc[m["_merge"] == "left_only", ["uid", "iid"]].to_numpy()]
    rows = m.loc[m["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    keys = set(zip(expected["uid"].astype(int), expected["iid"].astype(int), strict=True))
    extra = [(int(u), int(i)) for u, i in preds[["uid", "iid"]].to_numpy() if (int(u), int(i)) not in keys]
    return Matched(rows, missing, extra)
