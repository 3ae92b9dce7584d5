"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from beatrec.data.synthetic import SyntheticConfig, write_dataset


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic XRec-layout dataset (300 users, 200 items), written once per test session."""
    return write_dataset(SyntheticConfig(n_users=300, n_items=200), tmp_path_factory.mktemp("synthetic"))
