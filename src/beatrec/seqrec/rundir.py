"""The seqrec run directory: ``run.json`` (what a run was trained on), the dataset it reads, the resumable
checkpoint, and the per-user test rankings (``test_top10.csv``) every model writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from beatrec.errors import RunError
from beatrec.seqrec.data import SeqDataset, load_seq_dataset

RANKINGS = "test_top10.csv"  # written by training; evaluation writes <out stem>_test_top10.csv


CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint


def load_checkpoint(path: Path, key: str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file: say which, keep it for inspection
        raise RunError(f"{path}: corrupt checkpoint ({type(e).__name__}); move it away to train from scratch") from e
    if state.get("key") != key:
        raise RunError(f"{path}: this checkpoint belongs to another configuration or dataset; use the same config "
                       "and --set options to resume, or move the checkpoint away to train from scratch")
    return state


def dataset_fingerprint(ds: SeqDataset) -> str:
    """16 hex digits identifying the dataset's items (their raw ids, in order)."""
    return hashlib.sha256(ds.item_raw_ids.astype(np.int64).tobytes()).hexdigest()[:16]


def load_run_dataset(data: str | Path, max_users: int = 0, subset_seed: int = 0) -> SeqDataset:
    """The dataset a run reads: all users, or the seeded subset of ``max_users`` (smoke runs)."""
    ds = load_seq_dataset(data)
    return ds.subset_users(max_users, subset_seed) if max_users else ds


def write_run_json(out: Path, data: str | Path, model: str, ds: SeqDataset, **extra: Any) -> Path:
    """``RUN/run.json``, one schema for every model: ``data`` (resolved path), ``model``, ``n_items``, ``n_users``,
    ``items_fingerprint``, then the model's own keys (``extra``, e.g. LLM-BS's ``first_new_id``)."""
    body = {"data": str(Path(data).resolve()), "model": model, "n_items": ds.n_items, "n_users": ds.n_users,
            "items_fingerprint": dataset_fingerprint(ds), **extra}
    (out / "run.json").write_text(json.dumps(body, indent=2))
    return out / "run.json"


def read_run_json(run: Path) -> dict[str, Any]:
    """``RUN/run.json``, or a one-line RunError naming what is wrong."""
    p = run / "run.json"
    if not p.is_file():
        raise RunError(f"{run}: not a seqrec run directory (run.json missing)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{p}: corrupt ({e.msg})") from e



def write_rankings(path: Path, ds: SeqDataset, users: np.ndarray, top: np.ndarray) -> Path:
    """``user,rank1..rank10`` in raw ids for internal users (U,) and their ranked internal items (U, k);
    -1 (a slot the model left empty) is written as an empty cell."""
    top = np.asarray(top, dtype=np.int64)
    df = pd.DataFrame(ds.item_raw_ids[np.maximum(top, 0)], columns=[f"rank{r + 1}" for r in range(top.shape[1])]
                      ).astype("Int64").mask(top < 0)
    df.insert(0, "user", ds.user_raw_ids[np.asarray(users, dtype=np.int64)])
    df.to_csv(path, index=False)
    return path
