"""benchmarks/serve.py end to end on the tiny served run: real servers on loopback ports, every fault answered
with its status and a healthy server afterwards, batched (continuous), window and one-at-a-time levels measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_serve_benchmark_on_the_tiny_run(served: tuple[Path, Path], tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import serve as bench
    finally:
        sys.path.pop(0)
    out = tmp_path / "serve.md"
    assert bench.main(["--run", str(served[1]), "--requests", "6", "--requests-c1", "2", "--levels", "1", "4",
                       "--threads", "1", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert set(res["levels"]) == {f"{m} c{c}" for m in ("today", "batched", "window", "one-at-a-time") for c in (1, 4)}
    for r in res["levels"].values():
        assert r["ok"] == r["requests"] > 0 and r["p50"] <= r["p95"] <= r["p99"]
    assert res["levels"]["one-at-a-time c4"]["batch_size_max"] == 1
    assert res["cache"]["hit"]["p50"] < res["cache"]["miss"]["p50"]
    status = {f["fault"].split(" (")[0]: f["status"] for f in res["faults"]}
    assert status["malformed JSON"] == 400 and status["unknown user"] == 404 and status["unknown item"] == 404
    assert status["oversized batch"] == 413 and status["wrong types"] == 422
    # whether the burst overflows the queue depends on how fast the server drains it against how fast the client
    # sends (it did not on a CI machine loaded by other jobs); tests/test_serve.py checks the 429 deterministically.
    # Here: every burst request is answered or refused with 429, at least one is answered, the server stays up.
    burst = dict(part.split("x") for part in status["burst above the queue bound"].split(", "))
    assert set(burst) <= {"200", "429"} and int(burst.get("200", 0)) > 0
    assert all(f["healthy"] for f in res["faults"])
    text = out.read_text()
    assert "batched vs one-at-a-time at concurrency 4" in text and "FAILED" not in text
    assert "batched vs today's decode, concurrency 4" in text
    assert "continuous batching (batched) vs the wait window, concurrency 4" in text
