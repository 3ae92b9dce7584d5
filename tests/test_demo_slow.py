"""The README's main job end to end with the packaged SmolLM2 (slow: minutes on 2 CPU cores)."""

from __future__ import annotations

import json
import re
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
    shown = re.findall(r"beatrec:\s+(.*)", out)
    assert len(set(shown)) == 5  # five different sentences for five different pairs
    run = tmp_path / "demo" / "run"
    assert (run / "user_tokens.parquet").is_file() and (run / "align" / "weights.safetensors").is_file()
    m = json.loads((run / "align" / "metrics.json").read_text())
    assert m["kept"]["val_nll"] < 1.0  # the LoRA recipe learns the explanation style (frozen: ~2.8)
    sig = json.loads((run / "demo_signal.json").read_text())["rows"]
    beat, chance = sig["BEAT (own tokens)"], sig["chance (explanations shuffled)"]
    assert beat["genre"] > chance["genre"] + 0.15  # the item's genre, named well above chance
    assert sig["reference explanations"]["genre"] == 1.0 and sig["reference explanations"]["shared_intent"] == 1.0
    for row in sig.values():
        assert 0 <= row["genre"] <= 1 and 0 <= row["shared_intent"] <= 1
    assert "planted signal in zero-shot explanations" in out
    assert wall < 600, wall
