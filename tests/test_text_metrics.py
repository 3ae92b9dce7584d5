"""Explanation metrics: hand-worked examples and DESIGN.md's calibration figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from beatrec.metrics.text import bleu, specificity_from_embeddings, tokenize

XREC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "xrec"


def test_tokenize() -> None:
    assert tokenize('The user\'s "Book", 2x!') == ["the", "user", "'", "s", '"', "book", '"', ",", "2x", "!"]


def test_bleu_hand_worked() -> None:
    # all 3 candidate unigrams match; brevity penalty exp(1 - 6/3)
    assert bleu(["The cat sat"], ["the cat sat on the mat"], 1) == pytest.approx(math.exp(-1), abs=1e-6)
    # identical texts score 1 on BLEU-4
    assert bleu(["a b c d e"], ["a b c d e"], 4) == pytest.approx(1.0)
    # 2 of 4 unigrams match, same length: BLEU-1 = 0.5
    assert bleu(["a b x y"], ["a b c d"], 1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        bleu(["a"], [], 1)


def test_specificity_hand_worked() -> None:
    cand = np.array([[1.0, 0.1], [0.0, 1.0]])
    ref = np.array([[1.0, 0.1], [1.0, 0.0]])
    # candidate 0 ranks its own reference first (1/1); candidate 1 ranks its own second (1/2)
    assert specificity_from_embeddings(cand, ref) == pytest.approx(0.75)
    assert specificity_from_embeddings(ref, ref) == pytest.approx(1.0)


@pytest.mark.parametrize("name,b1,b4", [("amazon", 0.4162, 0.1599), ("google", 0.4150, 0.1751),
                                        ("yelp", 0.3858, 0.1148)])
def test_calibration_xrec_predictions(name: str, b1: float, b4: float) -> None:
    pred = XREC / name / "xrec_predictions.jsonl"
    if not pred.is_file():
        pytest.skip(f"shared data absent: {pred} (calibration needs ../shared/data/xrec)")
    p = pd.read_json(pred, lines=True)
    e = pd.read_json(XREC / name / "explanations.jsonl", lines=True)
    m = p.merge(e, on=["uid", "iid"], how="inner")
    assert len(m) == len(p)
    assert round(bleu(m["prediction"].tolist(), m["explanation"].tolist(), 1), 4) == b1
    assert round(bleu(m["prediction"].tolist(), m["explanation"].tolist(), 4), 4) == b4
