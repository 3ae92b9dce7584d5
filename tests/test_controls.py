"""Shuffled-token controls (derangement, pair rewriting), ``beatrec evaluate --controls``, the history-prompting
baselines from the registry and the demo's planted-signal table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_stage1
from test_align import align_cfg

from beatrec.align.controls import derangement, shuffled_pairs
from beatrec.cli import main


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tiny_stage1(tmp_path_factory, seed=4)


def test_derangement_has_no_fixed_point_and_is_seeded() -> None:
    for n in (2, 3, 10, 50):
        p = derangement(n, np.random.default_rng(n))
        assert sorted(p) == list(range(n)) and (p != np.arange(n)).all()
    assert np.array_equal(derangement(20, np.random.default_rng(1)), derangement(20, np.random.default_rng(1)))
    with pytest.raises(ValueError):
        derangement(1, np.random.default_rng(0))


def test_shuffled_pairs_swap_one_side_consistently() -> None:
    pairs = [{"uid": u, "iid": i, "title": f"t{i}"} for u, i in [(1, 10), (1, 11), (2, 10), (3, 12), (4, 13)]]
    out = shuffled_pairs(pairs, "user", seed=0)
    assert [p["iid"] for p in out] == [p["iid"] for p in pairs] and [p["title"] for p in out] == [p["title"] for p in pairs]
    assert all(o["uid"] != p["uid"] for o, p in zip(out, pairs, strict=True))  # nobody keeps their own tokens
    assert out[0]["uid"] == out[1]["uid"]  # both pairs of user 1 get the same stand-in
    assert {o["uid"] for o in out} == {1, 2, 3, 4}  # stand-ins are evaluated users
    items = shuffled_pairs(pairs, "item", seed=0)
    assert all(o["iid"] != p["iid"] for o, p in zip(items, pairs, strict=True))
    assert [o["uid"] for o in items] == [p["uid"] for p in pairs]
    with pytest.raises(ValueError, match="two distinct users"):
        shuffled_pairs(pairs[:2], "user")
    with pytest.raises(ValueError, match="side"):
        shuffled_pairs(pairs, "both")


def test_evaluate_controls_pairs_the_model_with_its_control(stage1: tuple[Path, Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import beatrec.align.train as T

    data, run, lm_dir = stage1
    T.train_align(run, data, align_cfg(lm_dir, max_steps=1), progress=False)
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(data), "--run", str(run), "--out", str(out), "--controls", "user", "item",
                 "--no-bertscore", "--no-lm-score", "--no-specificity", "--quiet", "--set", "resamples=99"]) == 0
    printed = capsys.readouterr().out
    assert "shuffled-user-token control" in printed and "shuffled-item-token control" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert [c["side"] for c in m["controls"]] == ["user", "item"]
    for c in m["controls"]:
        row = c["paired"]["bleu1"]
        assert row["a"] == pytest.approx(m["metrics"]["bleu1"], abs=1e-9)  # A = the model on the same pairs
        assert row["b"] == pytest.approx(c["metrics"]["bleu1"], abs=1e-9)
        assert row["low"] <= row["diff"] <= row["high"] and 0 < row["p_value"] <= 1
    ctrl = [json.loads(x) for x in (out / "predictions_shuffled_user.jsonl").read_text().splitlines()]
    own = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(c["uid"], c["iid"]) for c in ctrl] == [(o["uid"], o["iid"]) for o in own]  # scored on the own pairs
    assert "Shuffled-user-token control" in (out / "metrics.md").read_text()
    pred = tmp_path / "other.jsonl"
    pred.write_text((out / "predictions.jsonl").read_text())
    assert main(["evaluate", "--data", str(data), "--run", str(run), "--predictions", str(pred), "--controls",
                 "user"]) == 2
    assert "drop --predictions" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse refuses an unknown side
        main(["evaluate", "--data", str(data), "--run", str(run), "--controls", "users"])


def test_stale_predictions_are_not_reused(stage1: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import os

    import beatrec.align.train as T
    from beatrec.evaluate import EvaluateConfig, evaluate_run
    from beatrec.metrics.explanations import ScoreConfig

    data, run, lm_dir = stage1
    T.train_align(run, data, align_cfg(lm_dir, max_steps=1), progress=False)
    cfg = EvaluateConfig(score=ScoreConfig(bertscore=False, lm_score=False, specificity=False))
    first = evaluate_run(data, run, out=tmp_path / "a", cfg=cfg, progress=False)
    stale = run / "test_predictions.jsonl"
    assert stale.is_file() and first.predictions != stale
    stale.write_text("".join(json.dumps({"uid": int(u), "iid": int(i), "prediction": "stale"}) + "\n"
                             for u, i in [(json.loads(x)["uid"], json.loads(x)["iid"])
                                          for x in stale.read_text().splitlines()]))
    os.utime(stale, (1, 1))  # older than the stage-2 weights: regenerated, not reused
    again = evaluate_run(data, run, out=tmp_path / "b", cfg=cfg, progress=False)
    assert again.predictions != stale
    assert "stale" not in {json.loads(x)["prediction"] for x in again.predictions.read_text().splitlines()}


def test_history_baselines_from_the_registry(stage1: tuple[Path, Path, Path]) -> None:
    from beatrec.baselines.registry import BaselineConfig, run_baseline
    from beatrec.config import from_dict
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit, eval_pairs, training_texts

    data, run, lm_dir = stage1
    a = align_cfg(lm_dir, max_steps=1)
    from beatrec.config import to_dict

    cfg = from_dict(BaselineConfig, {"history": to_dict(a), "history_titles": 3})
    ds = load_dataset(data)
    split = ZeroShotSplit.load(run / "split.json")
    test = eval_pairs(ds, split, "test")
    for method, user_tokens in (("history", False), ("beat_history", True)):
        out = run_baseline(method, data, run, cfg)
        assert len(out.predictions) == len(test)
        cov = out.info["history_coverage"]
        assert cov["n_pairs"] == len(test) and 0 < cov["share_with_any"] <= 1 and 0 < cov["mean_titles"] <= 3
        saved = json.loads((Path(out.info["align_dir"]) / "meta.json").read_text())
        assert saved["source"] == "tokens"
        from beatrec.align.explain import load_aligned

        m = load_aligned(run, subdir=Path(out.info["align_dir"]).name)
        assert (m.model.n_user_slots > 0) == user_tokens and m.history is not None
        # the prompt of a test pair: titles of training-graph items only, never a test user's own text
        rows = test[["uid", "iid", "title"]].to_dict("records")
        m.history.attach(rows)
        train_titles = set(training_texts(ds, split)["title"])
        test_only = set(test["title"]) - train_titles
        for r in rows:
            text = m.tok.decode(m.builder.prompt(r["title"], r["history"]).ids)
            listed = [t.strip('"') for t in r["history"].split("; ")] if r["history"].startswith('"') else []
            assert all(t in train_titles for t in listed)
            assert not any(t in r["history"] for t in test_only)
            for col in ("explanation", "user_summary"):
                row_text = test.loc[(test.uid == r["uid"]) & (test.iid == r["iid"]), col].iloc[0]
                assert row_text not in text


def test_demo_signal_table_reads_rates() -> None:
    from beatrec.data.planted_signal import SignalRates
    from beatrec.demo import SignalRow, signal_table

    rows = [SignalRow("BEAT (own tokens)", SignalRates(90, 0.9, 0.5, 80, 1.0)),
            SignalRow("chance (explanations shuffled)", SignalRates(90, 0.12, 0.05, 80, 1.0))]
    text = signal_table(rows)
    assert "90 test pairs; 80 share an intent" in text
    assert "0.90" in text.splitlines()[2] and "0.05" in text.splitlines()[3]
