"""benchmarks/explanations.py end to end on the tiny synthetic dataset with a tiny random LM.

Marked slow: ~22 s on 2 busy cores (the house limit for the fast suite is 20 s); run with ``-m slow``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from bench_script import load_benchmark, tiny_xrec
from tiny_lm import save_tiny_lm

from beatrec.cli import main as cli
from beatrec.data.dataset import load_dataset
from beatrec.data.split import ZeroShotSplit
from beatrec.evaluate import evaluation_pairs
from beatrec.predictions import write_predictions


def untimed(text: str) -> list[str]:
    """The report's lines with its timings masked (seconds, the pairs/s column, the per-stage wall-time line): a
    re-run row's timings differ, and a reused model has no training time."""
    out, speed = [], False
    for line in text.splitlines():
        if line.startswith("Wall time per stage"):
            continue
        speed = "| pairs/s |" in line or (speed and line.startswith("|"))
        line = re.sub(r"\d+(\.\d+)? s\b", "_ s", line)
        out.append(re.sub(r"[\d.]+ \|$", "_ |", line) if speed else line)
    return out


@pytest.mark.slow
def test_benchmark_end_to_end_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATREC_CACHE", os.environ.get("BEATREC_CACHE", str(tmp_path / "cache")))
    root, data, stage1 = tiny_xrec(tmp_path)
    ds = load_dataset(data)
    test = evaluation_pairs(ds, ZeroShotSplit.load(stage1 / "split.json"), 6, seed=0)  # the script's subset
    write_predictions(data / "xrec_predictions.jsonl", test.uid.tolist()[:3], test.iid.tolist()[:3], ["xrec"] * 3)
    lm = save_tiny_lm(tmp_path / "lm")
    report, records = tmp_path / "explanations.md", tmp_path / "explanations.json"
    argv = ["--data-root", str(root), "--datasets", "amazon", "--out", str(tmp_path / "runs"), "--report", str(report),
            "--records", str(records),
            "--stage1", f"amazon={stage1}", "--lm", str(lm), "--max-train-pairs", "8", "--max-test-pairs", "6",
            "--align-set", "train.batch_size=4", "--align-set", "train.val_pairs=4", "--align-set",
            "model.projector_hidden=16", "--align-set", "generate.max_new_tokens=4",
            "--baseline-set", "idgen.epochs=1", "--baseline-set", "idgen.hidden=16", "--baseline-set",
            "itemtext.max_new_tokens=4"]
    bench = load_benchmark("explanations")
    assert bench.main(argv) == 0
    md = report.read_text()
    for label in ("BEAT (behavior tokens", "BEAT, frozen LM", "BEAT w/o micro tokens", "BEAT w/o macro tokens", "BEAT w/o SAR",
                  "retrieval", "ID-based GRU", "item-text prompting", "continuous injection", "XRec published",
                  "random training explanation (floor)", "floor on the XRec-covered pairs", "history prompting",
                  "BEAT + history titles", "BEAT, another test user's tokens (control)",
                  "BEAT, another test item's tokens (control)", "another test user's history (control)",
                  "BEAT, title withheld (the item's tokens", "title withheld, another test item's tokens (control)",
                  "get a different explanation for each of their items"):
        assert label in md, label
    assert "Each row against BEAT on the same test pairs" in md and "prompt tokens" in md
    recs = {r["row"]: r for r in json.loads(records.read_text())["records"]}
    assert set(recs) == set(bench.all_keys())
    text = records.read_text()
    for e in ds.texts["explanation"].head(20):  # no reference text in the records
        assert json.dumps(e)[1:-1] not in text
    run = tmp_path / "runs" / "amazon"
    for k in ("beat", "beat_untitled"):  # nor generated text
        for line in (run / "predictions" / f"{k}.jsonl").open():
            pred = json.loads(line)["prediction"]
            assert len(pred) < 12 or json.dumps(pred)[1:-1] not in text
    res = bench.dataset_result("amazon", bench.current_records(list(recs.values()))["amazon"])
    paired = res["paired"]
    assert set(paired) >= {"beat_shuffled_user", "history", "beat_history", "xrec"}
    assert paired["xrec"][0]["n"] == 3 and paired["history"][0]["n"] == 6  # XRec paired on its covered pairs
    assert paired["history_shuffled_user"][0]["against"] == "history"  # a control against the model it shuffles
    assert paired["beat_shuffled_item"][0]["against"] == "beat"
    assert paired["beat_untitled_shuffled_item"][0]["against"] == "beat_untitled"
    for rows in paired.values():
        assert [r["metric"] for r in rows] == ["bleu1", "bertscore_f1", "specificity"]
        assert all(r["low"] <= r["diff"] <= r["high"] for r in rows)
    for metric in ("BLEU-1", "BLEU-4", "ROUGE-L", "BERTScore-MiniLM", "LM-score", "specificity", "distinct-2"):
        assert metric in md
    assert "test pairs scored: 6 of" in md and "3 of 6 test pairs have no prediction" in md and "Recorded " in md
    assert recs["beat"]["report"]["n_test_pairs"] == 6
    assert all(r["report"]["n_scored"] == 6 for k, r in recs.items() if k != "xrec")
    assert not (stage1 / "align").exists()  # the reused stage-1 run is not modified
    preds = {k: [json.loads(x) for x in (run / "predictions" / f"{k}.jsonl").open()] for k in ("beat", "beat_untitled")}
    assert [(p["uid"], p["iid"]) for p in preds["beat"]] == [(p["uid"], p["iid"]) for p in preds["beat_untitled"]]

    # everything recorded: nothing runs again, and the report comes from the records alone
    body = lambda text: text[text.index("## amazon"):]  # noqa: E731
    assert bench.main(argv) == 0
    assert json.loads(records.read_text())["records"] == list(recs.values())
    assert bench.main([*argv, "--report-only", "--lm", "/nonexistent"]) == 0
    assert body(report.read_text()) == body(md)

    # an interrupted row: its record lost, its trained stage 2 kept -> the same record, no training
    kept = [r for k, r in recs.items() if k not in ("beat", "retrieval")]
    records.write_text(json.dumps({"records": kept}))
    t_train = recs["beat"]["timings"]["beat: train"]
    assert bench.main(argv) == 0
    again = {r["row"]: r for r in json.loads(records.read_text())["records"]}
    assert set(again) == set(recs)
    for k in ("beat", "retrieval"):
        assert again[k]["key"] == recs[k]["key"] and again[k]["stats"] == recs[k]["stats"]
        assert again[k]["report"]["metrics"] == recs[k]["report"]["metrics"]
    assert "beat: train" not in again["beat"]["timings"] and t_train > 0  # reused, not trained again
    assert untimed(body(report.read_text())) == untimed(body(md))
    # `beatrec evaluate` with no predictions file generates BEAT's explanations with the run's aligned model
    assert cli(["evaluate", "--data", str(data), "--run", str(run), "--no-bertscore", "--no-lm-score", "--quiet",
                "--set", "max_test_pairs=4"]) == 0
    m = json.loads((run / "eval" / "beat" / "metrics.json").read_text())
    assert m["n_scored"] == 4 and (run / "eval" / "beat" / "predictions.jsonl").is_file()
