"""benchmarks/serve_soak.py, briefly, on the tiny served run: every request accounted for, the injected model
error a 500 and no other, the faults answered with their statuses, the section written into serve.md and kept."""

from __future__ import annotations

import json
from pathlib import Path

from bench_script import load_benchmark


def test_a_short_soak_loses_nothing(served: tuple[Path, Path], tmp_path: Path) -> None:
    bench = load_benchmark("serve_soak")
    out = tmp_path / "serve.md"
    out.write_text("# `beatrec serve` under load\n\nearlier text\n\n## Soak\n\nold soak\n\n## After\n\nkept\n")
    assert bench.main(["--run", str(served[1]), "--minutes", "0.25", "--rate", "25", "--threads", "1",
                       "--out", str(out)]) == 0
    res = json.loads(out.with_name("serve_soak.json").read_text())
    assert sum(res["sent"].values()) > 200 and res["lost_total"] == 0 and res["unexplained_500"] == 0
    assert res["wrong_status"] == {} and not res["no_answer"]
    assert res["status"]["model_error"] == {"500": res["sent"]["model_error"]}
    assert set(res["status"]["oversized"]) == {"413"} and set(res["status"]["malformed"]) == {"400"}
    assert set(res["health"]) == {"200 ok"}
    text = out.read_text()
    assert "earlier text" in text and "old soak" not in text and "## After\n\nkept" in text
    assert "lost requests: **0**" in text and text.count("## Soak") == 1
