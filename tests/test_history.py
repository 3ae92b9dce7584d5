"""Tests of the titled interaction history (history-prompting baseline input)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from beatrec.data.dataset import XRecDataset, load_dataset
from beatrec.data.history import (
    NO_HISTORY,
    format_history,
    history_titles,
    item_titles_from_training,
)
from beatrec.data.split import SplitConfig, ZeroShotSplit, make_zero_shot_split
from beatrec.data.synthetic import GENRES, SyntheticConfig, generate, write_dataset
from beatrec.tokenizer.embeddings import GraphEmbeddings

# ---- a hand-built dataset: 5 users, 6 items
#   user 0: items 0 (train), 1 (train), 2 (val), 3 (train)      user 3 (train text user): 0, 1 (train)
#   user 1 (test text user): 1 (train), 4 (test)                 user 4 (train text user): 2, 4 (train)
#   user 2 (val text user): 5 (train)
# Titles from train users: 0 Alpha, 1 Beta, 2 Gamma. Item 4's and 5's only rows belong to test / val users.
# Train degrees: item 0 -> 2, item 1 -> 3, items 2..5 -> 1.
EDGES = [(0, 0, "train"), (0, 1, "train"), (0, 2, "val"), (0, 3, "train"), (1, 1, "train"), (1, 4, "test"),
         (2, 5, "train"), (3, 0, "train"), (3, 1, "train"), (4, 2, "train"), (4, 4, "train")]
ROWS = [(3, 0, "Alpha"), (3, 1, "Beta"), (4, 2, "Gamma"), (1, 4, "Delta"), (2, 5, "Epsilon"),
        (1, 0, "Leaked Alpha")]


def tiny(root: Path) -> tuple[XRecDataset, ZeroShotSplit]:
    root.mkdir(parents=True)
    (root / "interactions.csv").write_text("user,item,split\n" + "".join(f"{u},{i},{s}\n" for u, i, s in EDGES))
    (root / "explanations.jsonl").write_text("".join(
        json.dumps({"uid": u, "iid": i, "title": t, "user_summary": "", "item_summary": "",
                    "explanation": f"User {u} likes {t}."}) + "\n" for u, i, t in ROWS))
    split = ZeroShotSplit(train_users=np.array([3, 4]), val_users=np.array([2]), test_users=np.array([1]),
                          seed=0, source="seeded")
    return load_dataset(root), split


@pytest.fixture(scope="module")
def synthetic(synthetic_dir: Path) -> tuple[XRecDataset, ZeroShotSplit]:
    ds = load_dataset(synthetic_dir)
    return ds, make_zero_shot_split(ds, SplitConfig())


def test_titles_only_from_training_users(tmp_path: Path) -> None:
    ds, split = tiny(tmp_path / "d")
    assert item_titles_from_training(ds, split) == {0: "Alpha", 1: "Beta", 2: "Gamma"}


def test_no_val_or_test_title_leaks(synthetic: tuple[XRecDataset, ZeroShotSplit]) -> None:
    ds, split = synthetic
    titles = item_titles_from_training(ds, split)
    tx = ds.texts
    train_items = set(tx.loc[tx["uid"].isin(split.train_users), "iid"])
    held_only = set(tx.loc[~tx["uid"].isin(split.train_users), "iid"]) - train_items
    assert held_only, "the fixture should have items titled only by val/test users"
    assert set(titles) == train_items
    assert not held_only & set(titles)
    hist = history_titles(ds, split, np.arange(ds.n_users), n=1000)
    seen = {i for row in hist.item_ids for i in row}
    assert not seen & held_only
    held_titles = set(tx.loc[tx["iid"].isin(held_only), "title"])
    assert not held_titles & {t for row in hist.titles for t in row}


def test_history_is_train_edges_with_titles(synthetic: tuple[XRecDataset, ZeroShotSplit]) -> None:
    ds, split = synthetic
    titles = item_titles_from_training(ds, split)
    users = np.arange(ds.n_users)
    hist = history_titles(ds, split, users, n=1000)
    inter = ds.interactions
    tr = inter[inter["split"] == "train"]
    train_of = tr.groupby("user")["item"].apply(set).to_dict()
    held = inter[inter["split"] != "train"]
    assert len(held)
    for u, items, ts in zip(users, hist.item_ids, hist.titles, strict=True):
        expected = {i for i in train_of.get(u, set()) if i in titles}
        assert set(items) == expected and len(items) == len(expected)  # all of them, nothing else
        assert ts == [titles[i] for i in items]
    # degree ranking without vectors: degree descending, then id ascending
    degree = tr["item"].value_counts().to_dict()
    for items in hist.item_ids:
        keys = [(-degree[i], i) for i in items]
        assert keys == sorted(keys)


def genre_of_title(title: str) -> int:
    noun = title.split(", Volume")[0].split(" ", 2)[2]  # "The {Adjective} {Noun}[, Volume k]"
    return next(g for g, genre in enumerate(GENRES) if noun in genre.nouns)


@pytest.mark.parametrize("kind", ["degree", "planted_vectors"])
def test_history_carries_planted_genre(tmp_path: Path, kind: str) -> None:
    cfg = SyntheticConfig(n_users=300, n_items=200, seed=3)
    data = generate(cfg)
    ds = load_dataset(write_dataset(cfg, tmp_path / "d"))
    split = make_zero_shot_split(ds, SplitConfig())
    vectors = None
    if kind == "planted_vectors":
        eye = torch.eye(cfg.n_genres)
        vectors = GraphEmbeddings(eye[data.user_genre], eye[data.item_genre])
    n = 5
    hist = history_titles(ds, split, np.arange(cfg.n_users), n=n, vectors=vectors)
    shares = [np.mean([genre_of_title(t) == data.user_genre[u] for t in ts])
              for u, ts in enumerate(hist.titles) if ts]
    assert len(shares) > 0.9 * cfg.n_users
    chance = 1 / cfg.n_genres
    floor = 0.6 if kind == "degree" else 0.95
    assert np.mean(shares) > max(floor, 4 * chance)
    if kind == "planted_vectors":  # in-genre items (cosine 1) come before out-of-genre ones (cosine 0)
        for u, ts in enumerate(hist.titles):
            same = [genre_of_title(t) == data.user_genre[u] for t in ts]
            assert same == sorted(same, reverse=True)


def test_exclude(tmp_path: Path, synthetic: tuple[XRecDataset, ZeroShotSplit]) -> None:
    ds, split = synthetic
    users = np.arange(ds.n_users)
    full = history_titles(ds, split, users, n=4)
    target = np.array([row[0] if row else -1 for row in full.item_ids])
    cut = history_titles(ds, split, users, n=3, exclude=target)
    for row, short, t in zip(full.item_ids, cut.item_ids, target, strict=True):
        assert t not in short
        assert short == row[1:4]
    # an id the user has no edge to leaves the history unchanged
    same = history_titles(ds, split, users, n=4, exclude=np.full(len(users), -1))
    assert same.item_ids == full.item_ids
    with pytest.raises(ValueError, match="exclude"):
        history_titles(ds, split, users, n=4, exclude=target[:3])


def test_coverage_hand_checked(tmp_path: Path) -> None:
    ds, split = tiny(tmp_path / "d")
    users = np.arange(5)
    h = history_titles(ds, split, users, n=2)
    assert h.titles == [["Beta", "Alpha"], ["Beta"], [], ["Beta", "Alpha"], ["Gamma"]]
    assert h.item_ids == [[1, 0], [1], [], [1, 0], [2]]
    assert h.share_with_any == pytest.approx(4 / 5) and h.mean_titles == pytest.approx(6 / 5)
    h1 = history_titles(ds, split, users, n=1)
    assert h1.share_with_any == pytest.approx(4 / 5) and h1.mean_titles == pytest.approx(4 / 5)
    hx = history_titles(ds, split, users, n=2, exclude=np.array([1, -1, -1, 0, 2]))
    assert hx.titles == [["Alpha"], ["Beta"], [], ["Beta"], []]
    assert hx.share_with_any == pytest.approx(3 / 5) and hx.mean_titles == pytest.approx(3 / 5)
    # repeated and reordered requests; an empty request
    hr = history_titles(ds, split, np.array([4, 0, 4]), n=2)
    assert hr.item_ids == [[2], [1, 0], [2]]
    empty = history_titles(ds, split, np.array([], dtype=np.int64), n=2)
    assert empty.titles == [] and empty.share_with_any == 0.0 and empty.mean_titles == 0.0


def test_vectors_override_degree(tmp_path: Path) -> None:
    ds, split = tiny(tmp_path / "d")
    user = torch.zeros(5, 2)
    user[0] = torch.tensor([1.0, 0.0])
    item = torch.zeros(6, 2)
    item[0] = torch.tensor([3.0, 0.1])  # cosine ~1 with user 0
    item[1] = torch.tensor([0.0, 1.0])  # cosine 0
    h = history_titles(ds, split, np.array([0, 3]), n=2, vectors=GraphEmbeddings(user, item))
    assert h.item_ids[0] == [0, 1]  # typicality beats degree
    assert h.item_ids[1] == [1, 0]  # zero user vector: all cosines 0 -> degree order
    with pytest.raises(ValueError, match="vectors"):
        history_titles(ds, split, np.array([0]), n=2, vectors=GraphEmbeddings(user[:2], item))


def test_bad_arguments(tmp_path: Path) -> None:
    ds, split = tiny(tmp_path / "d")
    with pytest.raises(ValueError, match="n must be"):
        history_titles(ds, split, np.array([0]), n=0)
    with pytest.raises(ValueError, match="user ids"):
        history_titles(ds, split, np.array([5]), n=1)


def test_format_history() -> None:
    assert format_history(["The Silent Dragon", "The Lost Kiss"]) == '"The Silent Dragon"; "The Lost Kiss"'
    assert format_history(["One"]) == '"One"'
    assert format_history([]) == NO_HISTORY == "(no titled items)"
