"""LLM-BS training through Accelerate with two processes (torchrun, gloo on CPU): the multi-GPU code path.

Marked slow (two interpreters start, ~30 s). Each process trains on half of every epoch's batches with DDP
gradient averaging; only the main process evaluates and writes the run, which then reloads and ranks alike.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from tiny_lm import save_tiny_lm

from beatrec.cli import main
from beatrec.seqrec.synthetic import SyntheticSeqConfig, write_seq_dataset


@pytest.mark.slow
def test_two_process_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    data = write_seq_dataset(SyntheticSeqConfig(n_users=30), tmp_path)
    lm = save_tiny_lm(tmp_path / "lm")
    run = tmp_path / "run"
    sets = [f"lm.name={lm}", "index.k=4", "tasks.preference=10", "train.batch_size=4", "behavior_train.max_epochs=1",
            "beam=10", "anneal_users=10", "eval_batch_size=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BEATREC_CACHE": str(tmp_path / "cache")}
    cmd = [torchrun, "--nproc_per_node", "2", "-m", "beatrec", "seqrec", "train", "--data", str(data), "--model",
           "llmbs", "--out", str(run), "--quiet", *[a for s in sets for a in ("--set", s)]]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    n_batches = -(-m["n_examples"] // 4)
    assert m["stage1"]["steps"] == n_batches // 2  # each process took half of the batches
    capsys.readouterr()
    assert main(["seqrec", "evaluate", "--run", str(run), "--quiet"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(run / "evaluation_test_top10.csv"), pd.read_csv(run / "test_top10.csv"))
