"""benchmarks/profiles.py (the profile table) end to end on a tiny synthetic dataset with a tiny random LM:
records without text, skipped when recorded, the report rebuilt from the records alone, and a resumed row
(its trained stage 2 kept, its record lost) giving the same record as the uninterrupted run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench_script import load_benchmark, tiny_xrec
from tiny_lm import save_tiny_lm


def test_profile_table_records_skip_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BEATREC_CACHE", os.environ.get("BEATREC_CACHE", str(tmp_path / "cache")))
    root, data, stage1 = tiny_xrec(tmp_path)
    lm = save_tiny_lm(tmp_path / "lm")
    records, report = tmp_path / "profiles.json", tmp_path / "profiles.md"
    argv = ["--data-root", str(root), "--datasets", "amazon", "--stage1", f"amazon={stage1}", "--lm", str(lm),
            "--split", "val", "--rows", "beat", "beat_shuffled_user", "floor", "retrieval", "--records", str(records),
            "--report", str(report), "--quiet", "--align-set", "train.batch_size=4", "--align-set",
            "train.max_steps=2", "--align-set", "model.projector_hidden=16", "--align-set",
            "generate.max_new_tokens=4", "--align-set", "model.finetune=frozen"]
    bench = load_benchmark("profiles")
    assert bench.main(argv) == 0
    recs = json.loads(records.read_text())["records"]
    assert [r["row"] for r in recs] == ["beat", "beat_shuffled_user", "floor", "retrieval"]
    val_users = json.loads((stage1 / "split.json").read_text())["val_users"]
    assert set(recs[0]["users"]) <= set(val_users)
    for r in recs:
        assert set(r["stats"]) == {"bleu1_match", "hyp_len", "ref_len", "bertscore", "specificity"}
        assert all(len(v) == len(r["users"]) for v in r["stats"].values())
    texts = (data / "explanations.jsonl").read_text()
    assert "user_summary" in texts and "This user enjoys" not in records.read_text()  # no text in the records
    md = report.read_text()
    for label in ("BEAT (behavior tokens", "another scored user's tokens (control)", "floor", "nearest training"):
        assert label in md
    assert "Paired on the same users" in md
    paired = md.split("Paired on the same users")[1]
    assert "| beat_shuffled_user |" not in paired  # a reference column names BEAT for the control's model
    assert paired.count("| beat |") == 3  # control (its model is BEAT), floor and retrieval
    rows = {r["row"]: r for r in recs}
    assert len(rows["beat"]["nll"]) == len(rows["beat"]["nll_neutral"]) == len(rows["beat"]["users"])
    assert len(rows["beat_shuffled_user"]["nll"]) == len(rows["beat"]["users"]) and "nll" not in rows["floor"]
    assert all(x > 0 for x in rows["beat"]["nll"])
    nll_rows = [x for x in md.split("Does the LM read the tokens?")[1].splitlines() if x.startswith("| BEAT")]
    assert len(nll_rows) == 1 and nll_rows[0].count("[") == 2  # own tokens vs the control's and vs neutral ones

    capsys.readouterr()
    assert bench.main(argv) == 0  # everything recorded: nothing runs again
    assert capsys.readouterr().out.count("recorded, skipped") == 4
    assert json.loads(records.read_text())["records"] == recs

    # an interrupted row: its record lost, its trained stage 2 kept -> the same record, no training
    records.write_text(json.dumps({"records": recs[1:]}))
    assert bench.main(argv) == 0
    assert "reusing the trained" in capsys.readouterr().out
    again = {r["row"]: r for r in json.loads(records.read_text())["records"]}
    assert again["beat"]["stats"] == recs[0]["stats"] and again["beat"]["key"] == recs[0]["key"]

    before = report.read_text().split("\n", 3)[3]
    assert bench.main([*argv, "--report-only"]) == 0
    assert report.read_text().split("\n", 3)[3] == before  # the report comes from the records alone
