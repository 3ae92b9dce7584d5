"""benchmarks/demo_profiles.py on a tiny planted dataset with a tiny random LM: one record per (variant, guidance)
with rates and no text, recorded units skipped, the report rebuilt from the records, and a clear error without a
demo folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench_script import load_benchmark, tiny_xrec
from tiny_lm import save_tiny_lm


def test_demo_profiles_records_and_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BEATREC_CACHE", os.environ.get("BEATREC_CACHE", str(tmp_path / "cache")))
    _, data, stage1 = tiny_xrec(tmp_path)
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "data").symlink_to(data)
    (demo / "run").symlink_to(stage1)
    lm = save_tiny_lm(tmp_path / "lm")
    records, report = tmp_path / "demo_profiles.json", tmp_path / "demo_profiles.md"
    argv = ["--demo", str(demo), "--records", str(records), "--report", str(report), "--guidance", "1", "0",
            "--variants", "lora", "anchor",
            "--align-set", f"lm.name={lm}", "--align-set", "train.max_steps=2", "--align-set", "train.batch_size=4",
            "--align-set", "model.projector_hidden=16", "--align-set", "generate.max_new_tokens=4"]
    bench = load_benchmark("demo_profiles")
    assert bench.main(argv) == 0
    recs = json.loads(records.read_text())["records"]
    assert [(r["variant"], r["guidance"]) for r in recs] == [("lora", 1.0), ("lora", 0.0), ("anchor", 1.0),
                                                            ("anchor", 0.0)]
    n_test = len(json.loads((stage1 / "split.json").read_text())["test_users"])
    for r in recs:
        assert r["n"] == n_test and 1 <= r["distinct"] <= n_test and 0.0 <= r["projected_probe"] <= 1.0
        assert r["stage1_sets"] == [] or all("=" in x for x in r["stage1_sets"])
        for side in ("own", "shuffled"):
            assert 0.0 <= r[side]["intent_recall"] <= 1.0 and 0.0 <= r[side]["genre"] <= 1.0
    assert [r["trained_here"] for r in recs] == [True, False, True, False]  # the second guidance reuses the model
    assert all(r["distinct"] == 1 for r in recs if r["guidance"] == 0.0)  # guidance 0 ignores the user's tokens
    assert "This user" not in records.read_text()  # rates only, no text
    md = report.read_text()
    assert "LoRA + word anchoring" in md and md.count("\n| ") == 5
    capsys.readouterr()
    assert bench.main(argv) == 0
    assert "recorded, skipped" in capsys.readouterr().out
    assert json.loads(records.read_text())["records"] == recs
    assert bench.main(["--records", str(records), "--report", str(report), "--report-only"]) == 0
    with pytest.raises(SystemExit, match="no demo run"):
        bench.main(["--demo", str(tmp_path / "nowhere"), "--records", str(records)])
