"""benchmarks/explain_speed.py on a tiny aligned run: the machine's limits, the profile of today's decode (prefill
vs decode, operators) and the side-by-side table with paired quality, written to the report; clear errors without
a run or a dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_script import load_benchmark


def test_explain_speed_report(served: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_benchmark("explain_speed")
    monkeypatch.setattr(bench, "best_of", lambda fn, repeat=5, min_s=0.2: (fn(), 1e-3)[1])  # one call, not seconds
    data, run = served
    out = tmp_path / "speed.md"
    assert bench.main(["--run", str(run), "--data", str(data), "--threads", "1", "--configs", "today", "lean",
                       "--single", "1", "--pairs", "4", "--op-configs", "lean", "--out", str(out)]) == 0
    text = out.read_text()
    for part in ("## The machine's limits", "memory read", "| one pair | 1 |", "| batch of 16 |",
                 "Operators of one pair's explanation, merged, lean decoder", "## Side by side",
                 "| today's decode (LoRA unmerged, HF generate) |", "BERTScore-MiniLM", "identical texts",
                 "bfloat16 matmul 2048³", "limit s (% reached)"):
        assert part in text, part
    today = next(x for x in text.splitlines() if x.startswith("| today's decode")).split("|")
    limit_s, share = today[4].split()
    assert float(limit_s) > 0 and share.startswith("(") and share.endswith("%)")
    row = next(x for x in text.splitlines() if x.startswith("| one pair |")).split("|")
    prefill, decode, total = float(row[4].split()[0]), float(row[5].split()[0]), float(row[3])
    assert 0 <= prefill and 0 <= decode and prefill + decode <= total + 0.01  # 2 decimals: a tiny LM shows 0.00
    assert int(row[8]) >= 1 and row[10].strip() == "1x" + row[10].strip().split("x")[1]  # steps; one prompt row
    with pytest.raises(SystemExit, match="no stage-2 run"):
        bench.main(["--run", str(tmp_path), "--data", str(data), "--out", str(out)])
    with pytest.raises(SystemExit, match="dataset not found"):
        bench.main(["--run", str(run), "--data", str(tmp_path / "none"), "--out", str(out)])
