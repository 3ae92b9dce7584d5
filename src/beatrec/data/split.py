"""The zero-shot, user-disjoint explanation split (DESIGN.md, "Evaluation protocol").

*Text users* are users with at least one row in ``explanations.jsonl`` or ``test.jsonl``. They are split
into disjoint train / val / test sets. Every text of a val or test user (explanation, title, summaries) is
kept out of every training stage; :func:`training_texts` is the only sanctioned source of training text.
The split concerns texts only: val and test users keep all their graph edges, so at test time they are
zero-shot users who have behavior but no text.

- With ``test.jsonl``: test users are its uids; ``val_frac`` of the remaining text users (seeded draw,
  at least 1) are val users; the rest are train users.
- Without it: a seeded permutation of the text users gives ``test_frac`` test users, ``val_frac`` val users
  (at least 1 each) and the rest train users.

Cross-fitting (``stage2_frac`` > 0): a seeded share of the train users becomes *stage-2 users*: stage 1 never
reads their texts (:func:`stage1_texts`), so their behavior tokens come from the graph alone, exactly as a
zero-shot user's do, and stage 2 can learn from their pairs (``align`` ``train.pairs=crossfit``).

The split is saved as JSON in the run directory (:meth:`ZeroShotSplit.save`) so later stages reuse it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from beatrec.config import check
from beatrec.data.dataset import XRecDataset
from beatrec.errors import DataError, RunError


@dataclass
class SplitConfig:
    """Zero-shot split settings.

    Attributes:
        val_frac: fraction of text users held out for validation (of the non-test text users when
            ``test.jsonl`` fixes the test users).
        test_frac: fraction of text users held out for test (ignored when ``test.jsonl`` exists).
        seed: RNG seed of the user draw.
        stage2_frac: share of the train users whose texts stage 1 does not see (cross-fitted stage-2 users;
            0 = none). Drawn from its own seeded stream: the train/val/test sets do not change with it.
    """

    val_frac: float = 0.1
    test_frac: float = 0.1
    seed: int = 0
    stage2_frac: float = 0.0

    def validate(self) -> None:
        check(0.0 < self.val_frac < 1.0, f"split.val_frac must be in (0, 1), got {self.val_frac}")
        check(0.0 < self.test_frac < 1.0, f"split.test_frac must be in (0, 1), got {self.test_frac}")
        check(self.val_frac + self.test_frac < 1.0,
              f"split.val_frac + split.test_frac must be < 1, got {self.val_frac + self.test_frac}")
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool),
              f"split.seed must be an integer, got {self.seed!r}")
        check(0.0 <= self.stage2_frac < 1.0, f"split.stage2_frac must be in [0, 1), got {self.stage2_frac}")


@dataclass
class ZeroShotSplit:
    """Disjoint sets of text users (sorted int64 arrays).

    Attributes:
        train_users: ``(U_tr,)`` users whose texts may be used for training.
        val_users: ``(U_va,)`` validation users (texts never trained on).
        test_users: ``(U_te,)`` test users (texts never trained on).
        seed: the seed that drew the split.
        source: ``"test.jsonl"`` when the test users come from that file, else ``"seeded"``.
        stage2_users: ``(U_s2,)`` the train users whose texts stage 1 does not read (cross-fitting; a subset
            of ``train_users``, empty by default).
    """

    train_users: np.ndarray
    val_users: np.ndarray
    test_users: np.ndarray
    seed: int
    source: str
    stage2_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def save(self, path: str | Path) -> None:
        """Write the split as a JSON file (keys: seed, source, train_users, val_users, test_users)."""
        data = {
            "seed": int(self.seed),
            "source": self.source,
            "train_users": [int(u) for u in self.train_users],
            "val_users": [int(u) for u in self.val_users],
            "test_users": [int(u) for u in self.test_users],
        }
        if len(self.stage2_users):
            data["stage2_users"] = [int(u) for u in self.stage2_users]
        Path(path).write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ZeroShotSplit:
        """Read a split written by :meth:`save`.

        Raises:
            RunError: the file is missing, not JSON, lacks a key, holds non-integer ids or overlapping sets.
        """
        path = Path(path)
        if not path.is_file():
            raise RunError(f"{path}: split file not found (run the split stage first)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{path}: corrupt split file, not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise RunError(f"{path}: corrupt split file, top level must be a JSON object")
        keys = ("train_users", "val_users", "test_users", "seed", "source")
        missing = [k for k in keys if k not in data]
        if missing:
            raise RunError(f"{path}: corrupt split file, missing key(s) {missing}")
        arrays = {}
        for k in keys[:3]:
            v = data[k]
            if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                raise RunError(f"{path}: corrupt split file, '{k}' must be a list of integers")
            arrays[k] = np.unique(np.asarray(v, dtype=np.int64))
        if not isinstance(data["seed"], int) or not isinstance(data["source"], str):
            raise RunError(f"{path}: corrupt split file, 'seed' must be an integer and 'source' a string")
        stage2 = data.get("stage2_users", [])
        if not isinstance(stage2, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in stage2):
            raise RunError(f"{path}: corrupt split file, 'stage2_users' must be a list of integers")
        split = cls(seed=data["seed"], source=data["source"], **arrays,
                    stage2_users=np.unique(np.asarray(stage2, dtype=np.int64)))
        if not split.is_disjoint():
            raise RunError(f"{path}: corrupt split file, train/val/test users overlap")
        if not np.isin(split.stage2_users, split.train_users).all():
            raise RunError(f"{path}: corrupt split file, stage2_users must be train users")
        return split

    def is_disjoint(self) -> bool:
        """True when no user is in two of the three sets."""
        allu = np.concatenate([self.train_users, self.val_users, self.test_users])
        return len(np.unique(allu)) == len(allu)

    def role_of(self, users: np.ndarray) -> np.ndarray:
        """``(n,)`` object array: ``"train"``/``"val"``/``"test"`` per user, ``""`` for non-text users."""
        users = np.asarray(users)
        out = np.full(len(users), "", dtype=object)
        for name, arr in (("train", self.train_users), ("val", self.val_users), ("test", self.test_users)):
            out[np.isin(users, arr)] = name
        return out


def text_users(ds: XRecDataset) -> np.ndarray:
    """Sorted ``(U_text,)`` int64 ids of users with a row in ``explanations.jsonl`` or ``test.jsonl``."""
    parts = [ds.texts["uid"].to_numpy()]
    if ds.test_texts is not None:
        parts.append(ds.test_texts["uid"].to_numpy())
    return np.unique(np.concatenate(parts)).astype(np.int64)


def _take(n: int, frac: float) -> int:
    return max(1, round(frac * n))


def make_zero_shot_split(ds: XRecDataset, cfg: SplitConfig) -> ZeroShotSplit:
    """Draw the user-disjoint zero-shot split of ``ds``'s text users (rules in the module docstring).

    Deterministic under ``cfg.seed``; val and test get at least one user each and train keeps at least one.

    Raises:
        DataError: fewer than 3 text users (or, with ``test.jsonl``, fewer than 2 outside it).
    """
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    users = text_users(ds)
    if ds.test_texts is not None:
        test = np.unique(ds.test_texts["uid"].to_numpy()).astype(np.int64)
        rest = np.setdiff1d(users, test)
        if len(rest) < 2:
            raise DataError(ds.root / "explanations.jsonl",
                            f"too few text users for a zero-shot split: {len(rest)} user(s) with text outside "
                            "test.jsonl, need at least 2 (one for val, one for train)")
        n_val = min(_take(len(rest), cfg.val_frac), len(rest) - 1)
        perm = rng.permutation(rest)
        val, train = perm[:n_val], perm[n_val:]
        source = "test.jsonl"
    else:
        n = len(users)
        if n < 3:
            raise DataError(ds.root / "explanations.jsonl",
                            f"too few text users for a zero-shot split: {n}, need at least 3 "
                            "(one each for train, val and test)")
        n_test, n_val = _take(n, cfg.test_frac), _take(n, cfg.val_frac)
        while n_test + n_val > n - 1:  # keep at least one train user
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        perm = rng.permutation(users)
        test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
        source = "seeded"
    train = np.sort(train).astype(np.int64)
    n2 = min(round(cfg.stage2_frac * len(train)), len(train) - 1) if cfg.stage2_frac > 0 else 0
    stage2 = np.random.default_rng([cfg.seed, 2]).choice(train, n2, replace=False) if n2 > 0 else train[:0]
    return ZeroShotSplit(
        train_users=train,
        val_users=np.sort(val).astype(np.int64),
        test_users=np.sort(test).astype(np.int64),
        seed=cfg.seed,
        source=source,
        stage2_users=np.sort(stage2).astype(np.int64),
    )


def training_texts(ds: XRecDataset, split: ZeroShotSplit) -> pd.DataFrame:
    """Rows of ``explanations.jsonl`` whose user is a train user (fresh index).

    Never holds a row of a val or test user, nor a row of ``test.jsonl`` (whose users are all test users).
    """
    keep = np.isin(ds.texts["uid"].to_numpy(), split.train_users)
    return ds.texts.loc[keep].reset_index(drop=True)


def stage1_texts(ds: XRecDataset, split: ZeroShotSplit) -> pd.DataFrame:
    """The training texts stage 1 reads: :func:`training_texts` minus the cross-fitted stage-2 users' rows."""
    rows = training_texts(ds, split)
    return rows.loc[~np.isin(rows["uid"].to_numpy(), split.stage2_users)].reset_index(drop=True)


def stage2_texts(ds: XRecDataset, split: ZeroShotSplit) -> pd.DataFrame:
    """The cross-fitted stage-2 training pairs: rows of the stage-2 users (texts stage 1 never read)."""
    rows = training_texts(ds, split)
    return rows.loc[np.isin(rows["uid"].to_numpy(), split.stage2_users)].reset_index(drop=True)


def eval_pairs(ds: XRecDataset, split: ZeroShotSplit, which: str) -> pd.DataFrame:
    """The evaluation rows (columns :data:`~beatrec.data.dataset.TEXT_COLUMNS`, fresh index).

    Args:
        which: ``"val"`` -> ``explanations.jsonl`` rows of val users; ``"test"`` -> the rows of
            ``test.jsonl`` when present, else ``explanations.jsonl`` rows of test users.
    """
    if which == "val":
        users, frame = split.val_users, ds.texts
    elif which == "test":
        if ds.test_texts is not None:
            return ds.test_texts.reset_index(drop=True)
        users, frame = split.test_users, ds.texts
    else:
        raise ValueError(f"which must be 'val' or 'test', got {which!r}")
    keep = np.isin(frame["uid"].to_numpy(), users)
    return frame.loc[keep].reset_index(drop=True)
