"""XRec's published predictions (``DATA/xrec_predictions.jsonl``), restricted to the pairs asked for.

XRec trained on its own (random, not user-disjoint) split, so its predictions for our zero-shot test users are
not zero-shot; they are a peer's real output shown side by side. They cover only some test pairs: the harness
reports the coverage (missing pairs) rather than hiding it.
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from beatrec.data.dataset import XRecDataset
from beatrec.errors import DataError
from beatrec.predictions import read_predictions

XREC_FILE = "xrec_predictions.jsonl"


class Covered(NamedTuple):
    predictions: pd.DataFrame  # uid, iid, prediction of the covered pairs, in the order of ``pairs``
    n_asked: int
    n_covered: int


def xrec_predictions(ds: XRecDataset, pairs: pd.DataFrame) -> Covered:
    """XRec's predictions for those of ``pairs`` (uid, iid) that it covers.

    Raises:
        DataError: the dataset has no ``xrec_predictions.jsonl`` (or it is malformed).
    """
    path = ds.root / XREC_FILE
    if not path.is_file():
        raise DataError(path, "XRec's predictions are not in this dataset folder")
    pub = read_predictions(path)
    got = pairs[["uid", "iid"]].merge(pub, on=["uid", "iid"], how="inner")
    return Covered(got.reset_index(drop=True), len(pairs), len(got))
