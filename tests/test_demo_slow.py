"""The README's main job end to end with the packaged SmolLM2 (slow: minutes on 2 CPU cores)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from beatrec.cli import main


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = time.perf_counter()
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    wall = time.perf_counter() - t
    out = capsys.readouterr().out
    assert out.count("beatrec:") == 5 and out.count("reference:") == 5
    run = tmp_path / "demo" / "run"
    assert (run / "user_tokens.parquet").is_file() and (run / "align" / "weights.safetensors").is_file()
    m = json.loads((run / "align" / "metrics.json").read_text())
    assert m["steps"] == 30 and m["val_nll"][-1] < 3.0
    assert wall < 600, wall
