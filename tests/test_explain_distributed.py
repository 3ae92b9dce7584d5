"""``beatrec explain --pairs`` split over two processes (torchrun, gloo on CPU): the file equals one process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_write_what_one_writes(served: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = served
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"uid": u, "iid": i}) + "\n" for u, i in
                             [(0, 1), (3, 4), (5, 2), (1, 7), (2, 9), (4, 4), (6, 3)]))
    sets = ["--set", "generate.decoder=lean", "--set", "generate.num_beams=2", "--set", "generate.batch_size=2",
            "--set", "generate.max_new_tokens=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    one = [sys.executable, "-m", "beatrec", "explain", "--run", str(run), "--pairs", str(pairs), "--quiet",
           "--out", str(tmp_path / "one.jsonl"), *sets]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "beatrec",
           "explain", "--run-dir", str(run), "--pairs", str(pairs), "--quiet", "--out", str(tmp_path / "two.jsonl"),
           *sets]
    for cmd in (one, two):
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
    assert "(2 processes)" in p.stdout
    a = (tmp_path / "one.jsonl").read_text().splitlines()
    b = (tmp_path / "two.jsonl").read_text().splitlines()
    assert len(a) == 7 and a == b
    assert [json.loads(x)["uid"] for x in b] == [0, 3, 5, 1, 2, 4, 6]  # the file's order
