"""benchmarks/explanations.py end to end on the tiny synthetic dataset with a tiny random LM.

Marked slow: ~22 s on 2 busy cores (the house limit for the fast suite is 20 s); run with ``-m slow``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench_script import load_benchmark, tiny_xrec
from tiny_lm import save_tiny_lm

from beatrec.cli import main as cli
from beatrec.data.dataset import load_dataset
from beatrec.data.split import ZeroShotSplit
from beatrec.evaluate import evaluation_pairs
from beatrec.predictions import write_predictions


@pytest.mark.slow
def test_benchmark_end_to_end_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATREC_CACHE", os.environ.get("BEATREC_CACHE", str(tmp_path / "cache")))
    root, data, stage1 = tiny_xrec(tmp_path)
    ds = load_dataset(data)
    test = evaluation_pairs(ds, ZeroShotSplit.load(stage1 / "split.json"), 6, seed=0)  # the script's subset
    write_predictions(data / "xrec_predictions.jsonl", test.uid.tolist()[:3], test.iid.tolist()[:3], ["xrec"] * 3)
    lm = save_tiny_lm(tmp_path / "lm")
    report = tmp_path / "explanations.md"
    argv = ["--data-root", str(root), "--datasets", "amazon", "--out", str(tmp_path / "runs"), "--report", str(report),
            "--stage1", f"amazon={stage1}", "--lm", str(lm), "--max-train-pairs", "8", "--max-test-pairs", "6",
            "--align-set", "train.batch_size=4", "--align-set", "train.val_pairs=4", "--align-set",
            "model.projector_hidden=16", "--align-set", "generate.max_new_tokens=4",
            "--baseline-set", "idgen.epochs=1", "--baseline-set", "idgen.hidden=16", "--baseline-set",
            "itemtext.max_new_tokens=4"]
    assert load_benchmark("explanations").main(argv) == 0
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
    paired = json.loads((tmp_path / "runs" / "amazon" / "results.json").read_text())["paired"]
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
    assert "test pairs scored: 6 of" in md and "3 of 6 test pairs have no prediction" in md and "command:" in md
    res = json.loads((tmp_path / "runs" / "amazon" / "results.json").read_text())
    assert res["n_test_pairs"] == 6 and all(r["n_scored"] == 6 for k, r in res["reports"].items() if k != "xrec")
    assert not (stage1 / "align").exists()  # the reused stage-1 run is not modified
    preds = {k: [json.loads(x) for x in (tmp_path / "runs" / "amazon" / "predictions" / f"{k}.jsonl").open()]
             for k in ("beat", "beat_untitled")}
    assert [(p["uid"], p["iid"]) for p in preds["beat"]] == [(p["uid"], p["iid"]) for p in preds["beat_untitled"]]
    # --resume reads finished datasets back from results.json: the same tables without re-running anything
    report2 = tmp_path / "resumed.md"
    assert load_benchmark("explanations").main([*argv[:argv.index("--report")], "--report", str(report2), *argv[argv.index("--report") + 2:],
                               "--resume", "--lm", "/nonexistent"]) == 0
    body = lambda text: text[text.index("## amazon"):]  # noqa: E731
    assert body(report2.read_text()) == body(md)
    run = tmp_path / "runs" / "amazon"
    # a dataset with some methods missing keeps its stage 1 and the finished methods and runs only the rest
    res_path = run / "results.json"
    partial = json.loads(res_path.read_text())
    del partial["reports"]["retrieval"], partial["timings"]["retrieval"]
    partial["timings"]["beat: train"] = 12345.0  # a re-trained BEAT would overwrite this
    res_path.write_text(json.dumps(partial))
    report3 = tmp_path / "partial.md"
    assert load_benchmark("explanations").main([*argv[:argv.index("--report")], "--report", str(report3),
                               *argv[argv.index("--report") + 2:], "--resume"]) == 0
    rows = lambda text: {r.split("|")[1].strip(): r.split("|")[3:] for r in text.splitlines()  # noqa: E731
                         if r.startswith("| ") and "method" not in r}
    assert rows(report3.read_text()) == rows(md)  # same numbers, retrieval re-scored in its place
    resumed = json.loads(res_path.read_text())
    assert list(resumed["reports"]) == list(res["reports"]) and resumed["timings"]["beat: train"] == 12345.0
    # `beatrec evaluate` with no predictions file generates BEAT's explanations with the run's aligned model
    assert cli(["evaluate", "--data", str(data), "--run", str(run), "--no-bertscore", "--no-lm-score", "--quiet",
                "--set", "max_test_pairs=4"]) == 0
    m = json.loads((run / "eval" / "beat" / "metrics.json").read_text())
    assert m["n_scored"] == 4 and (run / "eval" / "beat" / "predictions.jsonl").is_file()
