"""Tests of the zero-shot user-disjoint explanation split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beatrec.config import from_dict
from beatrec.data.dataset import load_dataset
from beatrec.data.split import (
    SplitConfig,
    ZeroShotSplit,
    eval_pairs,
    make_zero_shot_split,
    text_users,
    training_texts,
)
from beatrec.errors import ConfigError, DataError, RunError


def row(uid: int, iid: int) -> dict:
    return {"uid": uid, "iid": iid, "title": f"T{iid}", "user_summary": f"U{uid}", "item_summary": f"I{iid}",
            "explanation": f"User {uid} would enjoy item {iid}."}


def write(root: Path, n_users: int, text_users: list[int], test_users: list[int] | None = None) -> Path:
    """Users 0..n-1 each with edges to items u % 7 and (u + 1) % 7; texts for ``text_users`` (2 rows each)."""
    root.mkdir(parents=True)
    edges = [(u, i) for u in range(n_users) for i in sorted({u % 7, (u + 1) % 7})]
    (root / "interactions.csv").write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in edges))
    (root / "explanations.jsonl").write_text(
        "".join(json.dumps(row(u, i)) + "\n" for u in text_users for i in sorted({u % 7, (u + 1) % 7})))
    if test_users is not None:
        (root / "test.jsonl").write_text("".join(json.dumps(row(u, u % 7)) + "\n" for u in test_users))
    return root


@pytest.fixture
def ds(tmp_path: Path):
    return load_dataset(write(tmp_path / "d", 60, list(range(0, 60, 2))))


def test_split_is_disjoint_and_covers_text_users(ds) -> None:
    sp = make_zero_shot_split(ds, SplitConfig())
    assert sp.source == "seeded" and sp.is_disjoint()
    assert (len(sp.test_users), len(sp.val_users), len(sp.train_users)) == (3, 3, 24)
    allu = np.sort(np.concatenate([sp.train_users, sp.val_users, sp.test_users]))
    assert (allu == text_users(ds)).all()
    for arr in (sp.train_users, sp.val_users, sp.test_users):
        assert arr.dtype == np.int64 and (np.diff(arr) > 0).all()


def test_split_deterministic_and_seed_dependent(ds) -> None:
    a, b = make_zero_shot_split(ds, SplitConfig(seed=5)), make_zero_shot_split(ds, SplitConfig(seed=5))
    c = make_zero_shot_split(ds, SplitConfig(seed=6))
    assert all((getattr(a, k) == getattr(b, k)).all() for k in ("train_users", "val_users", "test_users"))
    assert not (np.array_equal(a.test_users, c.test_users) and np.array_equal(a.val_users, c.val_users))


def test_training_texts_exclude_val_and_test_users(ds) -> None:
    sp = make_zero_shot_split(ds, SplitConfig(val_frac=0.2, test_frac=0.2))
    tr = training_texts(ds, sp)
    held = np.concatenate([sp.val_users, sp.test_users])
    assert len(tr) > 0 and not np.isin(tr["uid"], held).any()
    val, test = eval_pairs(ds, sp, "val"), eval_pairs(ds, sp, "test")
    assert set(val["uid"]) == set(sp.val_users) and set(test["uid"]) == set(sp.test_users)
    assert len(tr) + len(val) + len(test) == len(ds.texts)
    with pytest.raises(ValueError):
        eval_pairs(ds, sp, "train")


def test_test_jsonl_defines_test_users(tmp_path: Path) -> None:
    # users 1 and 3 are test users; user 4 also has rows in explanations.jsonl (overlap is allowed)
    ds = load_dataset(write(tmp_path / "d", 40, list(range(0, 40, 2)), test_users=[1, 3, 4]))
    sp = make_zero_shot_split(ds, SplitConfig(seed=1))
    assert sp.source == "test.jsonl" and sp.is_disjoint()
    assert sp.test_users.tolist() == [1, 3, 4]
    assert len(sp.val_users) == 2 and len(sp.train_users) == 17  # 19 other text users
    tr = training_texts(ds, sp)
    assert not np.isin(tr["uid"], np.concatenate([sp.val_users, sp.test_users])).any()
    test_rows = set(zip(ds.test_texts["uid"], ds.test_texts["iid"], strict=True))
    assert not test_rows & set(zip(tr["uid"], tr["iid"], strict=True))
    assert eval_pairs(ds, sp, "test").equals(ds.test_texts.reset_index(drop=True))
    assert not np.isin(eval_pairs(ds, sp, "val")["uid"], sp.test_users).any()


def test_minimum_one_user_per_set(tmp_path: Path) -> None:
    ds = load_dataset(write(tmp_path / "d", 10, [0, 1, 2]))
    sp = make_zero_shot_split(ds, SplitConfig(val_frac=0.01, test_frac=0.01))
    assert (len(sp.train_users), len(sp.val_users), len(sp.test_users)) == (1, 1, 1)
    ds4 = load_dataset(write(tmp_path / "e", 10, [0, 1, 2, 3]))
    sp4 = make_zero_shot_split(ds4, SplitConfig(val_frac=0.49, test_frac=0.49))
    assert len(sp4.train_users) >= 1 and len(sp4.val_users) >= 1 and len(sp4.test_users) >= 1


def test_too_few_text_users(tmp_path: Path) -> None:
    ds = load_dataset(write(tmp_path / "d", 10, [0, 1]))
    with pytest.raises(DataError, match="too few text users") as info:
        make_zero_shot_split(ds, SplitConfig())
    assert "explanations.jsonl" in str(info.value)
    ds2 = load_dataset(write(tmp_path / "e", 10, [0, 1, 2], test_users=[0, 1]))
    with pytest.raises(DataError, match="too few text users"):
        make_zero_shot_split(ds2, SplitConfig())


def test_save_load_round_trip(ds, tmp_path: Path) -> None:
    sp = make_zero_shot_split(ds, SplitConfig(seed=3))
    sp.save(tmp_path / "split.json")
    back = ZeroShotSplit.load(tmp_path / "split.json")
    assert back.seed == 3 and back.source == "seeded"
    for k in ("train_users", "val_users", "test_users"):
        assert np.array_equal(getattr(back, k), getattr(sp, k)) and getattr(back, k).dtype == np.int64


@pytest.mark.parametrize("content,words", [
    (None, "not found"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"train_users": [1], "val_users": [2], "seed": 0, "source": "seeded"}', "test_users"),
    ('{"train_users": [1], "val_users": ["a"], "test_users": [3], "seed": 0, "source": "seeded"}', "integers"),
    ('{"train_users": [1, 2], "val_users": [2], "test_users": [3], "seed": 0, "source": "seeded"}', "overlap"),
])
def test_load_corrupt_split(tmp_path: Path, content: str | None, words: str) -> None:
    path = tmp_path / "split.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RunError, match=words) as info:
        ZeroShotSplit.load(path)
    assert "split.json" in str(info.value)


@pytest.mark.parametrize("bad", [{"val_frac": 0.0}, {"test_frac": 1.0}, {"val_frac": 0.5, "test_frac": 0.5},
                                 {"seed": 1.5}, {"valfrac": 0.1}])
def test_split_config_validation(bad: dict) -> None:
    with pytest.raises(ConfigError):
        from_dict(SplitConfig, bad)


def test_split_on_synthetic(synthetic_dir: Path) -> None:
    ds = load_dataset(synthetic_dir)
    sp = make_zero_shot_split(ds, SplitConfig())
    n = len(text_users(ds))
    assert sp.is_disjoint() and len(sp.test_users) == round(0.1 * n) == len(sp.val_users)
    # zero-shot users keep their graph edges, including train edges
    test_edges = ds.interactions[ds.interactions["user"].isin(sp.test_users)]
    assert set(test_edges["user"]) == set(sp.test_users) and (test_edges["split"] == "train").any()


def test_role_of(ds) -> None:
    sp = make_zero_shot_split(ds, SplitConfig())
    roles = sp.role_of(np.array([sp.train_users[0], sp.val_users[0], sp.test_users[0], 1]))
    assert roles.tolist() == ["train", "val", "test", ""]
