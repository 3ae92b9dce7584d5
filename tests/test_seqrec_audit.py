"""The order audit (`beatrec seqrec audit`) on planted data: ASIN-sorted, partly sorted and shuffled sequences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beatrec.cli import main
from beatrec.seqrec.audit import audit_order, increasing_fraction, next_key_topk, warn_if_ordered
from beatrec.seqrec.data import load_seq_dataset

N_ITEMS = 300


def planted(root: Path, order: str, seed: int = 0) -> Path:
    """200 users with 8-15 distinct random items each, random ASINs (their order unrelated to the ids); items in
    random order (``"random"``), sorted by ASIN (``"asin"``), or sorted for every other user (``"half"``)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    asins = ["B0" + "".join(rng.choice(letters, 8)) for _ in range(N_ITEMS)]
    rank = np.argsort(np.argsort(asins))
    d = root / order / "Planted"
    d.mkdir(parents=True)
    lines = []
    for u in range(200):
        seq = rng.choice(N_ITEMS, size=int(rng.integers(8, 16)), replace=False)
        if order == "asin" or (order == "half" and u % 2 == 0):
            seq = seq[np.argsort(rank[seq])]
        lines.append(" ".join(map(str, [u + 1, *(seq + 1)])))
    (d / "Planted.txt").write_text("\n".join(lines) + "\n")
    (d / "item_text.tsv").write_text("item_id\tasin\ttitle\n" + "".join(f"{i + 1}\t{a}\titem {i + 1}\n"
                                                                        for i, a in enumerate(asins)))
    return d


def test_increasing_fraction_and_next_key_by_hand() -> None:
    items, users = np.array([1, 3, 2, 4, 5, 5]), np.array([0, 0, 0, 0, 1, 1])
    # user 0: 1<3 up, 3>2 down, 2<4 up; user 1: (5, 5) is the same item and is left out; no cross-user pair
    assert increasing_fraction(items, users, np.arange(6)) == (pytest.approx(2 / 3), 3)
    top = next_key_topk([np.array([4, 1, 2])], np.array([3, 2, 1, 0, 4]), k=3)  # key order: 3, 2, 1, 0, 4
    assert top.tolist() == [[0, 4, -1]]  # after item 1 (second to last) come items 0 and 4, then nothing


def test_audit_flags_sorted_and_partly_sorted_but_not_shuffled(tmp_path: Path) -> None:
    got = {o: audit_order(load_seq_dataset(planted(tmp_path, o)), "asin", n_shuffles=100)
           for o in ("asin", "half", "random")}
    assert got["asin"].flagged and got["asin"].increasing == 1.0 and got["asin"].p_value == pytest.approx(1 / 101)
    assert got["half"].flagged and 0.65 < got["half"].increasing < 0.85
    assert not got["random"].flagged and abs(got["random"].increasing - 0.5) < 0.04
    for r in got.values():
        assert r.key == "asin" and abs(r.shuffled_mean - 0.5) < 0.01
    # the next-ASIN heuristic finds held-out items only where the order leaks them
    assert got["asin"].next_key_ndcg10 > 5 * max(got["random"].next_key_ndcg10, got["asin"].popularity_ndcg10, 0.01)
    assert got["asin"].next_key_shuffled_ndcg10 < got["asin"].next_key_ndcg10 / 3
    # the id order of the same sorted file is not suspicious (ASINs are unrelated to ids)
    assert not audit_order(load_seq_dataset(tmp_path / "asin" / "Planted"), "id", n_shuffles=100).flagged


def test_cli_audit_and_train_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sorted_dir = planted(tmp_path, "asin")
    assert main(["seqrec", "audit", "--data", str(sorted_dir), "--out", str(tmp_path / "a.json")]) == 0
    assert "FLAGGED" in capsys.readouterr().out
    assert json.loads((tmp_path / "a.json").read_text())["flagged"] is True
    warn_if_ordered(load_seq_dataset(sorted_dir))
    assert capsys.readouterr().err.startswith("warning: Planted (asin order): FLAGGED")
    warn_if_ordered(load_seq_dataset(planted(tmp_path, "random")))
    assert capsys.readouterr().err == ""
    no_asin = tmp_path / "noasin" / "Planted"
    no_asin.mkdir(parents=True)
    (no_asin / "Planted.txt").write_text((sorted_dir / "Planted.txt").read_text())
    assert main(["seqrec", "audit", "--data", str(no_asin), "--key", "asin"]) == 2
    assert "no ASINs" in capsys.readouterr().err
    assert main(["seqrec", "audit", "--data", str(no_asin), "--shuffles", "0"]) == 2
    assert "at least 1 shuffle" in capsys.readouterr().err
