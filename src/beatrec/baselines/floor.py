"""The floor: a random training explanation for every pair (seeded).

Reference explanations share so much phrasing ("The user would enjoy ... because ...") that a random one
already scores BLEU-1 ≈ 0.35–0.38 on the XRec data (DESIGN.md); every result is read beside this floor.
"""

from __future__ import annotations

import numpy as np

from beatrec.data.dataset import XRecDataset
from beatrec.data.split import ZeroShotSplit, training_texts
from beatrec.errors import RunError


def floor_predictions(ds: XRecDataset, split: ZeroShotSplit, n: int, seed: int = 0) -> list[str]:
    """``n`` explanations drawn uniformly with replacement from training users' explanations
    (``numpy.random.default_rng(seed).integers``)."""
    pool = training_texts(ds, split)["explanation"].tolist()
    if not pool:
        raise RunError(f"{ds.root}: no training explanations to draw the floor from")
    pick = np.random.default_rng(seed).integers(0, len(pool), n)
    return [pool[int(i)] for i in pick]
