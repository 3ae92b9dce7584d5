"""benchmarks/llmbs.py end to end on a synthetic dataset with a tiny random LM (slow: ~40 s)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench_script import load_benchmark
from tiny_lm import save_tiny_lm

from beatrec.seqrec.synthetic import SyntheticSeqConfig, write_seq_dataset


@pytest.mark.slow
def test_llmbs_benchmark_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATREC_CACHE", os.environ.get("BEATREC_CACHE", str(tmp_path / "cache")))
    data = write_seq_dataset(SyntheticSeqConfig(n_users=40), tmp_path)
    lm = save_tiny_lm(tmp_path / "lm")
    out = tmp_path / "llmbs.md"
    argv = ["--data", str(data), "--max-users", "30", "--eval-users", "20", "--rows", "eager", "dual", "unit",
            "--runs", str(tmp_path / "runs"), "--out", str(out), "--lm", str(lm), "--threads", "1",
            "--llmbs-set", "index.k=4", "--llmbs-set", "tasks.seqrec=40", "--llmbs-set", "tasks.semantic=10",
            "--llmbs-set", "tasks.preference=5", "--llmbs-set", "anneal_users=5", "--llmbs-set", "beam=10",
            "--seqrec-set", "train.max_epochs=1", "--seqrec-set", "codes.k=4", "--seqrec-set", "eager.d_model=16",
            "--seqrec-set", "eager.n_heads=2", "--seqrec-set", "eager.d_ff=32", "--seqrec-set", "sasrec.d_model=16",
            "--seqrec-set", "sasrec.d_ff=32"]
    assert load_benchmark("llmbs").main(argv) == 0
    md = out.read_text()
    for label in ("SASRec", "EAGER", "LLM-BS (dual-source", "w/o annealing adapter", "unit index"):
        assert label in md, label
    rows = [r for r in md.splitlines() if r.startswith("| ") and not r.startswith("| row")]
    assert len(rows) == 5 and all(r.split("|")[6].strip() == "20" for r in rows)  # same 20 users everywhere
    m = json.loads((tmp_path / "runs" / "dual" / "metrics.json").read_text())
    assert m["n_examples"] == 40 + 2 * 10 + 5 and "val" not in m and m["test"]["n_users"] == 20
    assert m["code_report"]["depth"] == 5 and json.loads((tmp_path / "runs" / "unit" / "metrics.json").read_text(
        ))["code_report"]["depth"] == 1
    assert "Partial" not in md and "Rows read back" not in md and "How this differs" in md
    # --resume reads every finished row back, also under another thread count: the same table, no training,
    # and the report names the command that trained the rows
    out2 = tmp_path / "again.md"
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/metrics.json")}
    argv2 = [*argv[: argv.index("--out")], "--out", str(out2), *argv[argv.index("--out") + 2:], "--resume"]
    argv2[argv2.index("--threads") + 1] = "2"
    assert load_benchmark("llmbs").main(argv2) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/metrics.json")}
    table = lambda t: [r.rsplit("|", 3)[0] for r in t.splitlines() if r.startswith("| ")]  # noqa: E731
    assert table(out2.read_text()) == table(md)  # (all but the wall-time and device columns)
    assert "Rows read back" in out2.read_text() and "--threads 1" in out2.read_text()


def test_resume_ignores_thread_count_only() -> None:
    from beatrec.config import load_yaml
    from beatrec.seqrec.config import load_seqrec_config

    same = load_benchmark("llmbs")._same_run
    a = load_seqrec_config("sasrec", None, ["train.threads=1"])
    assert same(a, load_seqrec_config("sasrec", None, ["train.threads=2"]))
    assert not same(a, load_seqrec_config("sasrec", None, ["train.threads=1", "train.lr=0.01"]))
    from beatrec.seqrec.llmbs.run import LLMBSConfig

    assert same(load_yaml(LLMBSConfig, None, []), load_yaml(LLMBSConfig, None, []))
    assert not same(load_yaml(LLMBSConfig, None, []), load_yaml(LLMBSConfig, None, ["index.kind=unit"]))
