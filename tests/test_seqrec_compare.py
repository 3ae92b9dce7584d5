"""Per-user rankings and the paired comparison of two runs (beatrec.seqrec.compare)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beatrec.errors import RunError
from beatrec.seqrec.compare import (
    compare_runs,
    format_comparison,
    format_p,
    paired_test,
    per_user_metrics,
    read_rankings,
    target_ranks,
)
from beatrec.seqrec.data import load_seq_dataset
from beatrec.seqrec.evaluate import metrics_from_topk
from beatrec.seqrec.rundir import write_rankings
from beatrec.seqrec.synthetic import SyntheticSeqConfig, write_seq_dataset


def test_target_ranks_and_per_user_metrics_by_hand() -> None:
    top = np.array([[7, 3, 9, 1, 2, 4, 5, 6, 8, 0],     # target 3 at rank 2
                    [1, 2, 4, 5, 6, 8, 0, 11, 12, 3],   # target 3 at rank 10
                    [1, 2, 4, 5, 6, 8, 0, 11, 12, -1]])  # target 3 missed (one empty slot)
    tgt = np.array([3, 3, 3])
    r = target_ranks(top, tgt)
    assert r.tolist() == [2, 10, 0]
    m = per_user_metrics(r)
    assert m["recall@5"].tolist() == [1, 0, 0] and m["recall@10"].tolist() == [1, 1, 0]
    np.testing.assert_allclose(m["ndcg@10"], [1 / np.log2(3), 1 / np.log2(11), 0])
    np.testing.assert_allclose(m["ndcg@5"], [1 / np.log2(3), 0, 0])
    agg = metrics_from_topk(top, tgt)  # the per-user values average to the evaluator's metrics
    assert agg.ndcg10 == pytest.approx(m["ndcg@10"].mean()) and agg.recall5 == pytest.approx(m["recall@5"].mean())


def test_paired_test_identical_shifted_and_seeded() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(500)
    diff, low, high, p = paired_test(a, a, n_resamples=300)
    assert (diff, low, high, p) == (0.0, 0.0, 0.0, 1.0)  # no difference: every flip is as extreme
    b = a + 0.05 + 0.01 * rng.standard_normal(500)
    diff, low, high, p = paired_test(a, b, n_resamples=300)
    assert diff == pytest.approx(0.05, abs=0.002) and low < diff < high and low > 0
    assert p == pytest.approx(1 / 301)  # no sign flip reaches the observed mean
    assert paired_test(a, b, n_resamples=300, seed=3) == paired_test(a, b, n_resamples=300, seed=3)
    noise = rng.standard_normal(2000)  # a zero-mean difference: the interval covers 0, p is not small
    _, low, high, p = paired_test(np.zeros(2000), noise - noise.mean(), n_resamples=500)
    assert low < 0 < high and p > 0.5
    with pytest.raises(ValueError, match="equal-length"):
        paired_test(np.zeros(3), np.zeros(4))


def _fake_run(root: Path, name: str, data: Path, top: np.ndarray, fingerprint: str = "fp") -> Path:
    ds = load_seq_dataset(data)
    run = root / name
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"data": str(data), "items_fingerprint": fingerprint}))
    write_rankings(run / "test_top10.csv", ds, np.arange(ds.n_users), top)
    return run


def test_compare_runs_hand_built_rankings_and_errors(tmp_path: Path) -> None:
    data = write_seq_dataset(SyntheticSeqConfig(n_users=30, with_text=False), tmp_path / "data")
    ds = load_seq_dataset(data)
    last = np.array([s[-1] for s in ds.sequences])
    others = np.array([[j for j in range(ds.n_items) if j != t][:10] for t in last])
    first = np.column_stack([last, others[:, :9]])  # A: the target first for everyone
    third = np.column_stack([others[:, :2], last, others[:, 2:8], np.full(len(last), -1)])  # B: third, one empty
    a = _fake_run(tmp_path, "a", data, first)
    b = _fake_run(tmp_path, "b", data, third)
    users, top = read_rankings(b / "test_top10.csv")  # round trip in raw ids, the empty slot kept empty
    assert users.tolist() == ds.user_raw_ids.tolist() and (top[:, 9] == -1).all()
    assert (top[:, 2] == ds.item_raw_ids[last]).all()
    c = compare_runs(a, b, n_resamples=100)
    got = {r.metric: r for r in c.rows}
    assert c.n_users == 30
    assert got["recall@5"].diff == 0 and got["recall@5"].p_value == 1.0
    assert got["ndcg@10"].a == pytest.approx(1.0) and got["ndcg@10"].b == pytest.approx(0.5)
    assert got["ndcg@10"].diff == pytest.approx(-0.5) and got["ndcg@10"].p_value == pytest.approx(1 / 101)
    assert "| ndcg@10 | 1.0000 | 0.5000 | -0.5000 |" in format_comparison(c)
    assert format_p(0.0421) == "0.042" and format_p(1 / 2001) == "5.0e-04"
    # only the users both runs scored are compared
    (b / "test_top10.csv").write_text("\n".join((b / "test_top10.csv").read_text().splitlines()[:11]) + "\n")
    assert compare_runs(a, b, n_resamples=10).n_users == 10
    # errors name the problem
    c_run = _fake_run(tmp_path, "c", data, first, fingerprint="other")
    with pytest.raises(RunError, match="different items"):
        compare_runs(a, c_run)
    (c_run / "test_top10.csv").unlink()
    (c_run / "run.json").write_text(json.dumps({"data": str(data), "items_fingerprint": "fp"}))
    with pytest.raises(RunError, match="beatrec seqrec evaluate"):
        compare_runs(a, c_run)
    (c_run / "test_top10.csv").write_text("")
    with pytest.raises(RunError, match="unreadable"):
        compare_runs(a, c_run)
    with pytest.raises(RunError, match="run.json missing"):
        compare_runs(a, tmp_path / "nowhere")
    (c_run / "run.json").write_text("{not json")
    with pytest.raises(RunError, match="corrupt"):
        compare_runs(a, c_run)
