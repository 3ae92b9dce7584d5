"""The reference-signal check (:mod:`beatrec.data.reference_signal`): user-dependent references are flagged,
item-only references are not; hand-computed values; the CLI."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from beatrec.cli import main
from beatrec.data.dataset import load_dataset
from beatrec.data.reference_signal import (
    effect,
    explanation_signal,
    profile_signal,
    reference_signal,
    verdict,
)
from beatrec.data.synthetic import SyntheticConfig, write_dataset


class BagOfWords:
    """A deterministic stand-in for a sentence encoder: hashed word counts (512 dims)."""

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), 512))
        for r, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[r, int(hashlib.md5(w.encode()).hexdigest(), 16) % 512] += 1
        return out


def test_effect_is_mean_with_normal_half_width():
    e = effect([1.0, 2.0, 3.0, 4.0])
    assert e.mean == pytest.approx(2.5)
    assert e.half_width == pytest.approx(1.959964 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-5)
    assert e.n == 4 and e.present
    assert not effect([-1.0, 1.0]).present and effect([]).n == 0


def test_explanation_signal_by_hand():
    # users 0, 1; items 10, 11. Anchor (0, 10): the same user's (0, 11) against the other user's (1, 11).
    uid, iid = np.array([0, 0, 1, 1]), np.array([10, 11, 10, 11])
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
    s = explanation_signal(uid, iid, emb)
    sim = emb @ emb.T
    u0 = np.mean([sim[0, 1] - sim[0, 3], sim[1, 0] - sim[1, 2]])  # user 0's two anchors
    u1 = np.mean([sim[2, 3] - sim[2, 1], sim[3, 2] - sim[3, 0]])
    assert s.user_effect.n == 2 and s.user_effect.mean == pytest.approx((u0 + u1) / 2)
    # item effect of anchor 0: same item other user (2) minus the only other-user other-item pair (3)
    items = [sim[0, 2] - sim[0, 3], sim[1, 3] - sim[1, 2], sim[2, 0] - sim[2, 1], sim[3, 1] - sim[3, 0]]
    assert s.item_effect.mean == pytest.approx(np.mean(items)) and s.item_effect.n == 4


def test_profile_signal_picks_the_most_shared_neighbour():
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    shared = sp.csr_matrix(np.array([[5, 3, 1], [3, 5, 0], [1, 0, 5]]))
    s = profile_signal(np.array([0, 1, 2]), emb, shared)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = e @ e.T
    rand = [(sim[a].sum() - 1) / 2 for a in range(3)]
    want = [sim[0, 1] - rand[0], sim[1, 0] - rand[1], sim[2, 0] - rand[2]]
    assert s.graph_effect.n == 3 and s.graph_effect.mean == pytest.approx(np.mean(want))


def _dataset(tmp: Path, item_only: bool) -> Path:
    d = write_dataset(SyntheticConfig(n_users=300, n_items=120, pairs_per_text_user=4, seed=3), tmp)
    if item_only:  # references that depend on the item alone: the item's summary and a random filler word
        rows = pd.read_json(d / "explanations.jsonl", lines=True)
        rng = np.random.default_rng(0)
        filler = np.array(["indeed", "surely", "truly", "clearly"])
        rows["explanation"] = [f'"{t}" is {s.lower()} {w}' for t, s, w in
                               zip(rows["title"], rows["item_summary"], rng.choice(filler, len(rows)), strict=True)]
        rows.to_json(d / "explanations.jsonl", orient="records", lines=True)
    return d


def test_user_dependent_references_are_flagged(tmp_path):
    sig = reference_signal(load_dataset(_dataset(tmp_path, item_only=False)), BagOfWords())
    # the synthetic explanations name intents the user and the item share: user signal by construction
    assert sig.explanations.user_effect.present
    assert sig.user_profiles.graph_effect.present  # the graph holds each user's genre, the profile names it
    assert "carry user signal" in verdict(sig)[0]


def test_item_only_references_are_not_flagged(tmp_path):
    sig = reference_signal(load_dataset(_dataset(tmp_path, item_only=True)), BagOfWords())
    assert not sig.explanations.user_effect.present
    assert abs(sig.explanations.user_effect.mean) < sig.explanations.user_effect.half_width + 0.01
    assert sig.explanations.item_effect.present
    assert "carry no user signal" in verdict(sig)[0] and "cannot be beaten" in verdict(sig)[0]


def test_cli_prints_the_verdict_and_writes_json(tmp_path, capsys, monkeypatch):
    import beatrec.text_encoder as te

    monkeypatch.setattr(te, "TextEncoder", lambda cfg: BagOfWords())
    d = _dataset(tmp_path / "d", item_only=True)
    assert main(["signal", "--data", str(d), "--out", str(tmp_path / "sig.json"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "carry no user signal" in out and "| explanations |" in out
    js = json.loads((tmp_path / "sig.json").read_text())
    assert js["explanations"]["user_effect"]["present"] is False
    assert js["verdict"][0].startswith("These references carry no user signal")


def test_cli_names_a_missing_dataset(tmp_path, capsys):
    assert main(["signal", "--data", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
