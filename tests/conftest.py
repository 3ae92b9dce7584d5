"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from beatrec.data.synthetic import SyntheticConfig, write_dataset


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic XRec-layout dataset (300 users, 200 items), written once per test session."""
    return write_dataset(SyntheticConfig(n_users=300, n_items=200), tmp_path_factory.mktemp("synthetic"))


def tiny_stage1(factory: pytest.TempPathFactory, seed: int) -> tuple[Path, Path, Path]:
    """(data dir, tokenized run dir, tiny LM dir): a 120-user synthetic dataset tokenized in seconds with
    8-code books and the phrase splitter, plus a tiny random causal LM (for stage-2 and baseline tests)."""
    import os

    from tiny_lm import save_tiny_lm

    from beatrec.config import from_dict
    from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

    os.environ.setdefault("BEATREC_CACHE", str(factory.mktemp("cache")))
    data = write_dataset(SyntheticConfig(n_users=120, n_items=80, seed=seed), factory.mktemp("data"))
    run = factory.mktemp("run")
    cfg = from_dict(TokenizeConfig, {"model": {"n_codes": 8, "part_dim": 8, "code_dim": 8},
                                     "train": {"max_epochs": 2, "batch_size": 512},
                                     "extractor": {"kind": "splitter"}})
    run_tokenize(data, run, cfg, progress=False)
    return data, run, save_tiny_lm(factory.mktemp("lm") / "tiny")
