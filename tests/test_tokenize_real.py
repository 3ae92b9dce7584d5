"""Slow: BEAT stage 1 on the real XRec Amazon graph (read in place from ../shared/data; skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from beatrec.config import from_dict
from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

XREC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "xrec"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATREC_CACHE", str(tmp_path_factory.mktemp("cache")))


def test_amazon_two_epochs(tmp_path: Path) -> None:
    if not (XREC / "amazon").is_dir():
        pytest.skip(f"{XREC / 'amazon'} not found: the shared XRec data is not beside the repository")
    cfg = from_dict(TokenizeConfig, {"train": {"max_epochs": 2}, "extractor": {"kind": "splitter"}})
    res = run_tokenize(XREC / "amazon", tmp_path / "run", cfg, progress=False)
    users = pd.read_parquet(res.run_dir / "user_tokens.parquet")
    assert len(users) == 15349 and users[["macro"] + [f"micro_{j}" for j in range(1, 6)]].max().max() < 512
    m = json.loads((res.run_dir / "metrics.json").read_text())["ranking"]["test"]
    assert m["quantized_hr@20"] > 1.5 * m["popularity_hr@20"]
    split = json.loads((res.run_dir / "split.json").read_text())
    assert not set(split["test_users"]) & set(split["train_users"])
