"""``beatrec tokenize`` with sampled-subgraph training and with two processes (torchrun, DDP over gloo): the
same artifacts, tokens of the same quality as full-graph / one-process training on planted data, and codebooks
that stay identical across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from beatrec.config import from_dict
from beatrec.data.synthetic import SyntheticConfig, write_dataset
from beatrec.text_encoder import TextEncoder, TextEncoderConfig
from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

SETS = {"model": {"n_codes": 16, "part_dim": 16, "code_dim": 16},
        "train": {"batch_size": 64, "max_epochs": 12, "patience": 12, "seed": 0, "beta": 5.0, "threads": 1},
        "extractor": {"kind": "splitter"}}


def config(**train: object) -> TokenizeConfig:
    d = json.loads(json.dumps(SETS))
    d["train"].update(train)
    return from_dict(TokenizeConfig, d)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(SyntheticConfig(n_users=400, n_items=240, seed=1), tmp_path_factory.mktemp("scale_data"))


@pytest.fixture(scope="module")
def full_run(planted: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    os.environ.setdefault("BEATREC_CACHE", str(tmp_path_factory.mktemp("cache")))
    run = tmp_path_factory.mktemp("full")
    run_tokenize(planted, run, config(), progress=False, encoder=TextEncoder(TextEncoderConfig(), cache=False))
    return {**json.loads((run / "metrics.json").read_text()), "files": sorted(f.name for f in run.iterdir())}


def hr(m: dict, split: str = "test") -> float:
    return m["ranking"][split]["quantized_hr@20"]


def test_sampled_training_matches_full_graph_training(planted: Path, full_run: dict, tmp_path: Path) -> None:
    enc = TextEncoder(TextEncoderConfig(), cache=False)
    a = run_tokenize(planted, tmp_path / "a", config(graph="sampled", fanouts=[5, 5, 5]), progress=False,
                     encoder=enc).metrics
    assert a["training"]["graph"] == "sampled" and full_run["training"]["graph"] == "full"
    pop = a["ranking"]["test"]["popularity_hr@20"]
    assert hr(full_run) > 2 * pop and hr(a) > 2 * pop  # both learn the planted genres
    assert hr(a) >= 0.97 * hr(full_run), (hr(a), hr(full_run))
    # codebook usage as high (train.revive_unused: auto = on when sampled); the repairs are logged per epoch
    for side in ("user_macro", "user_micro", "item_macro", "item_micro"):
        assert a["codebooks"][side]["used_fraction"] >= full_run["codebooks"][side]["used_fraction"], side
    assert "revived" in pd.read_csv(tmp_path / "a" / "history.csv").columns


def test_sampled_training_is_deterministic_under_a_seed(planted: Path, tmp_path: Path) -> None:
    enc = TextEncoder(TextEncoderConfig(), cache=False)
    cfg = config(graph="sampled", fanouts=[3, 3, 3], max_epochs=2, min_steps=0)  # short: the draws, not quality
    for run in ("a", "b"):
        run_tokenize(planted, tmp_path / run, cfg, progress=False, encoder=enc)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "user_tokens.parquet"),
                                  pd.read_parquet(tmp_path / "b" / "user_tokens.parquet"))
    assert (tmp_path / "a" / "tokenizer.safetensors").read_bytes() == (tmp_path / "b" / "tokenizer.safetensors").read_bytes()


def test_two_processes_train_one_run_of_the_same_quality(planted: Path, full_run: dict, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    sets = ["model.n_codes=16", "model.part_dim=16", "model.code_dim=16", "train.batch_size=64",
            "train.max_epochs=12", "train.patience=12", "train.beta=5", "extractor.kind=splitter"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "beatrec",
           "tokenize", "--data", str(planted), "--out", str(run), "--quiet", *[a for s in sets for a in ("--set", s)]]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["training"]["processes"] == 2
    assert sorted(f.name for f in run.iterdir()) == full_run["files"]  # the one-process run's layout
    assert pd.read_parquet(run / "user_tokens.parquet").shape[0] == 400
    assert hr(m) >= 0.97 * hr(full_run), (hr(m), hr(full_run))


def _codebook_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from beatrec.tokenizer.codebook import VQCodebook

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # different batches and generators in the two processes
    cb = VQCodebook(8, 3, dead_after=1)
    cb.train()
    for _ in range(6):
        cb(torch.randn(5, 3) + 3 * rank)  # few points: most codes go idle and are restarted every call
    # an evaluation's repair (train.revive_unused): rank 0 re-seeds code 0, rank 1 nothing; both reach the broadcast
    mine = torch.tensor([0]) if rank == 0 else torch.zeros(0, dtype=torch.long)
    cb.reseed(mine, torch.full((len(mine), 3), 10.0 + rank))
    torch.save({"weight": cb.weight.detach(), "restarts": cb.restarts}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_codebook_restarts_and_repairs_are_rank_zeros_under_ddp(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    out = str(tmp_path / "cb")
    mp.spawn(_codebook_worker, args=(str(tmp_path / "store"), out), nprocs=2, join=True)
    a, b = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert a["restarts"] > 0 and a["restarts"] == b["restarts"]
    assert torch.equal(a["weight"], b["weight"])
    assert a["weight"][0].tolist() == [10.0, 10.0, 10.0]  # rank 0's repair, in both processes
