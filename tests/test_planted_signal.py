"""Tests of the planted-structure signal rates (does a text name the pair's genre / shared intents?)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beatrec.data.dataset import load_dataset
from beatrec.data.planted_signal import (
    Planted,
    chance_rates,
    load_planted,
    mentions,
    signal_rates,
)
from beatrec.data.synthetic import SyntheticConfig, write_dataset
from beatrec.errors import DataError


@pytest.fixture(scope="module")
def all_genres(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 12 genres (including "science fiction" and "children's") and the full intent pool."""
    cfg = SyntheticConfig(n_users=300, n_items=240, n_genres=12, n_intents=30, seed=5)
    return write_dataset(cfg, tmp_path_factory.mktemp("planted12"))


@pytest.mark.parametrize("which", ["default", "all_genres"])
def test_references_name_their_planted_structure(which: str, synthetic_dir: Path, all_genres: Path) -> None:
    data = synthetic_dir if which == "default" else all_genres
    planted = load_planted(data)
    tx = load_dataset(data).texts
    r = signal_rates(planted, tx["uid"].to_numpy(), tx["iid"].to_numpy(), tx["explanation"].tolist())
    # every template names the item genre ({g} or {ag}); pairs sharing intents use templates naming 1-3 of them
    assert r.n == len(tx)
    assert r.genre == 1.0
    assert r.shared_intent == 1.0
    assert r.any_intent == 1.0  # pairs without a shared intent still name an item attribute
    u_int = np.asarray(planted.user_intents)[tx["uid"].to_numpy()]
    i_int = np.asarray(planted.item_intents)[tx["iid"].to_numpy()]
    n_shared = sum(bool(set(a) & set(b)) for a, b in zip(u_int, i_int, strict=True))
    assert r.n_with_shared == n_shared > 0


def test_chance_rates_of_references(all_genres: Path) -> None:
    planted = load_planted(all_genres)
    tx = load_dataset(all_genres).texts
    uids, iids, texts = tx["uid"].to_numpy(), tx["iid"].to_numpy(), tx["explanation"].tolist()
    c = chance_rates(planted, uids, iids, texts, seed=0, n_perm=200)
    # exact expectation under a uniform permutation: (1/n^2) sum_g #pairs(item genre g) * #texts naming g
    n = len(texts)
    lower = [t.lower() for t in texts]
    pair_genre = planted.item_genre[iids]
    expected = sum(np.sum(pair_genre == g) * sum(name in t for t in lower)
                   for g, name in enumerate(planted.genre_names)) / n**2
    n_genres = len(planted.genre_names)
    assert 1 / n_genres <= expected < 2 / n_genres  # own genre, plus the user's genre in off-genre templates
    assert c.genre == pytest.approx(expected, abs=0.01)
    assert c.shared_intent < 0.5
    assert c.any_intent == 1.0 and c.n == n
    assert c.n_with_shared == signal_rates(planted, uids, iids, texts).n_with_shared
    assert chance_rates(planted, uids, iids, texts, seed=0, n_perm=20) == chance_rates(
        planted, uids, iids, texts, seed=0, n_perm=20)  # seeded


def test_constant_text_scores_zero(synthetic_dir: Path) -> None:
    planted = load_planted(synthetic_dir)
    tx = load_dataset(synthetic_dir).texts
    texts = ["The user would enjoy this book because it matches their taste."] * len(tx)
    r = signal_rates(planted, tx["uid"].to_numpy(), tx["iid"].to_numpy(), texts)
    assert r.shared_intent == 0.0 and r.genre == 0.0 and r.any_intent == 0.0 and r.n_with_shared > 0
    c = chance_rates(planted, tx["uid"].to_numpy(), tx["iid"].to_numpy(), texts, n_perm=5)
    assert c.shared_intent == 0.0 and c.genre == 0.0


def small() -> Planted:
    """2 users, 2 items; user 0 and item 0 share intent 1 (\"great value\"); user 1 and item 1 share none."""
    return Planted(
        genre_names=["science fiction", "children's"],
        intent_phrases=["ease of use", "great value", "durability", "short chapters"],
        user_genre=np.array([0, 1]),
        user_intents=np.array([[0, 1], [2, 0]]),
        item_genre=np.array([0, 1]),
        item_intents=np.array([[1, 3], [1, 3]]),
        item_titles=["The Starship", "The Kite"],
    )


def test_whole_phrase_case_insensitive_matching() -> None:
    p = small()
    texts = [
        "A SCIENCE  Fiction book of GREAT VALUE.",  # genre + shared intent (case, whitespace)
        "A children\u2019s book with durability.",  # genre (typographic apostrophe) + a pool intent
        "Sciencefiction, great values and ease of user",  # no whole-phrase match at all
        "A children's book.",  # wrong genre for item 0, no intent
    ]
    hits = mentions(texts, p.genre_names)
    assert hits.tolist() == [[True, False], [False, True], [False, False], [False, True]]
    r = signal_rates(p, np.array([0, 1, 0, 0]), np.array([0, 1, 0, 0]), texts)
    # genre: texts 0, 1 -> 2/4; shared pairs: rows 0, 2, 3 (user 0, item 0), named in row 0 only -> 1/3
    assert r.n == 4 and r.genre == 0.5
    assert r.n_with_shared == 3 and r.shared_intent == pytest.approx(1 / 3)
    assert r.any_intent == 0.5
    # any_intent is permutation-invariant; n_with_shared depends on the pairs only
    c = chance_rates(p, np.array([0, 1, 0, 0]), np.array([0, 1, 0, 0]), texts, seed=1, n_perm=50)
    assert 0.0 <= c.genre <= 1.0 and c.any_intent == 0.5 and c.n_with_shared == 3


def test_empty_and_bad_inputs() -> None:
    p = small()
    r = signal_rates(p, np.array([1]), np.array([1]), ["A children's book."])
    assert r.genre == 1.0 and r.n_with_shared == 0 and np.isnan(r.shared_intent)
    with pytest.raises(ValueError, match="differ in length"):
        signal_rates(p, np.array([0, 1]), np.array([0]), ["x"])
    with pytest.raises(ValueError, match="outside"):
        signal_rates(p, np.array([2]), np.array([0]), ["x"])
    with pytest.raises(ValueError, match="n_perm"):
        chance_rates(p, np.array([0]), np.array([0]), ["x"], n_perm=0)


def test_load_planted_matches_generator(synthetic_dir: Path) -> None:
    p = load_planted(synthetic_dir)
    raw = json.loads((synthetic_dir / "planted.json").read_text())
    assert p.genre_names == raw["genre_names"] and p.intent_phrases == raw["intent_phrases"]
    assert p.item_titles == raw["item_titles"]
    assert p.user_intents.shape == (300, 3) and p.item_intents.shape == (200, 3)
    assert p.user_genre.dtype == np.int64 and p.user_genre.tolist() == raw["user_genre"]


def test_missing_planted_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="planted.json: file not found") as e:
        load_planted(tmp_path)
    assert e.value.file.endswith("planted.json")


@pytest.mark.parametrize("edit, problem", [
    (lambda d: "{not json", "not valid JSON"),
    (lambda d: [1, 2], "JSON object"),
    (lambda d: {k: v for k, v in d.items() if k != "item_genre"}, "missing key"),
    (lambda d: {**d, "genre_names": "mystery"}, "'genre_names' must be a list of strings"),
    (lambda d: {**d, "user_intents": [[0, 1], [2]]}, "'user_intents' must be"),
    (lambda d: {**d, "item_genre": [0.5] * len(d["item_genre"])}, "'item_genre' must be"),
    (lambda d: {**d, "item_genre": d["item_genre"][:-1]}, "disagree in length"),
    (lambda d: {**d, "user_genre": [99] + d["user_genre"][1:]}, "'user_genre' holds ids outside"),
])
def test_malformed_planted_is_data_error(tmp_path: Path, synthetic_dir: Path, edit, problem: str) -> None:
    data = json.loads((synthetic_dir / "planted.json").read_text())
    new = edit(data)
    (tmp_path / "planted.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(DataError, match=problem):
        load_planted(tmp_path)
