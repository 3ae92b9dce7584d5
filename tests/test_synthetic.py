"""Tests of the synthetic dataset generator: determinism, validity, planted structure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beatrec.config import from_dict
from beatrec.data.dataset import TEXT_COLUMNS, load_dataset
from beatrec.data.synthetic import SyntheticConfig, generate, write_dataset
from beatrec.errors import ConfigError

FILES = ("interactions.csv", "explanations.jsonl", "planted.json")


@pytest.fixture(scope="module")
def data():
    return generate(SyntheticConfig())


def test_seed_changes_the_data_and_only_the_seed(data) -> None:  # noqa: ANN001
    other = generate(SyntheticConfig(seed=7))
    assert not other.interactions.equals(data.interactions)
    assert generate(SyntheticConfig(seed=7)).interactions.equals(other.interactions)
    assert len(other.genre_names) == len(data.genre_names) and other.user_intents.shape == data.user_intents.shape


def test_write_is_byte_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    cfg = SyntheticConfig(n_users=120, n_items=80)
    a, b = write_dataset(cfg, tmp_path / "a"), write_dataset(cfg, tmp_path / "b")
    c = write_dataset(SyntheticConfig(n_users=120, n_items=80, seed=1), tmp_path / "c")
    for f in FILES:
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / "interactions.csv").read_bytes() != (c / "interactions.csv").read_bytes()
    assert (a / "explanations.jsonl").read_bytes() != (c / "explanations.jsonl").read_bytes()


def test_written_dataset_loads(synthetic_dir: Path) -> None:
    ds = load_dataset(synthetic_dir)
    planted = json.loads((synthetic_dir / "planted.json").read_text())
    cfg = from_dict(SyntheticConfig, planted["config"])
    assert (cfg.n_users, cfg.n_items) == (300, 200)
    assert (ds.n_users, ds.n_items) == (300, 200)
    assert ds.interactions["user"].nunique() == 300 and ds.interactions["item"].nunique() == 200
    assert list(ds.texts.columns) == list(TEXT_COLUMNS)
    assert len(ds.texts) == 150 * 3 and ds.texts["uid"].nunique() == 150
    assert len(planted["user_intents"]) == 300 and len(planted["item_titles"]) == 200
    assert len(planted["genre_names"]) == 8 and len(planted["intent_phrases"]) == 20


def test_graph_invariants(data) -> None:
    ia = data.interactions
    assert list(ia.columns) == ["user", "item", "split"]
    assert not ia.duplicated(["user", "item"]).any()
    assert set(ia["user"]) == set(range(600)) and set(ia["item"]) == set(range(400))
    assert set(ia.loc[ia["split"] == "train", "user"]) == set(range(600))  # every user keeps a train edge
    frac = ia["split"].value_counts(normalize=True)
    assert abs(frac["train"] - 0.8) < 0.02 and abs(frac["val"] - 0.1) < 0.02
    assert 20 < len(ia) / 600 < 30


def test_entity_attributes(data) -> None:
    assert data.user_intents.shape == (600, 3) and data.item_intents.shape == (400, 3)
    for arr in (data.user_intents, data.item_intents):
        assert all(len(set(r)) == 3 for r in arr.tolist()) and arr.min() >= 0 and arr.max() < 20
    assert np.bincount(data.item_genre).min() == 400 // 8 and np.bincount(data.user_genre).min() == 600 // 8
    assert len(set(data.item_titles)) == 400 and all(t.startswith("The ") for t in data.item_titles)
    assert len(set(data.intent_phrases)) == 20 and len(set(data.genre_names)) == 8


def test_planted_structure_measurable(data) -> None:
    ia = data.interactions
    u, i = ia["user"].to_numpy(), ia["item"].to_numpy()
    in_genre = data.user_genre[u] == data.item_genre[i]
    per_user = np.bincount(u, weights=in_genre) / np.bincount(u)
    assert in_genre.mean() > 0.7 and np.median(per_user) > 0.6
    # within genre, items sharing a user intent are strongly over-represented (chance is ~40%)
    shared = (data.user_intents[u][:, :, None] == data.item_intents[i][:, None, :]).any(axis=(1, 2))
    assert shared[in_genre].mean() > 0.6


def test_texts_mention_title_genre_and_shared_intents(data) -> None:
    tx = data.texts
    assert not tx.duplicated(["uid", "iid"]).any()
    edges = set(zip(data.interactions["user"], data.interactions["item"], strict=True))
    assert all((u, i) in edges for u, i in zip(tx["uid"], tx["iid"], strict=True))
    n_shared_mentioned = 0
    for r in tx.itertuples(index=False):
        assert r.title == data.item_titles[r.iid] and f'"{r.title}"' in r.explanation
        assert data.genre_names[data.item_genre[r.iid]] in r.explanation
        assert len(r.explanation.split()) < 50
        assert data.genre_names[data.user_genre[r.uid]] in r.user_summary
        assert all(data.intent_phrases[k] in r.user_summary for k in data.user_intents[r.uid])
        assert all(data.intent_phrases[k] in r.item_summary for k in data.item_intents[r.iid])
        common = set(data.user_intents[r.uid]) & set(data.item_intents[r.iid])
        if common:
            said = [k for k in common if data.intent_phrases[k] in r.explanation]
            assert 1 <= len(said) <= 3
            n_shared_mentioned += 1
    assert n_shared_mentioned / len(tx) > 0.9
    assert tx["explanation"].str.split().str[:3].str.join(" ").nunique() >= 5  # several templates


@pytest.mark.parametrize("bad", [{"n_users": 0}, {"n_genres": 13}, {"n_intents": 31}, {"intents_per_user": 21},
                                 {"text_user_frac": 0.0}, {"interactions_per_user": 401}, {"n_items": 5},
                                 {"seed": "x"}, {"n_user": 3}])
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ConfigError):
        from_dict(SyntheticConfig, bad)


def test_extreme_small_config_is_valid(tmp_path: Path) -> None:
    cfg = SyntheticConfig(n_users=3, n_items=3, n_genres=1, n_intents=2, intents_per_user=2, intents_per_item=1,
                          interactions_per_user=1, text_user_frac=1.0, pairs_per_text_user=5)
    ds = load_dataset(write_dataset(cfg, tmp_path / "s"))
    assert ds.n_users == 3 and ds.n_items == 3 and len(ds.texts) >= 3
