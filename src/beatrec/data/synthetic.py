"""A seeded synthetic explainable-recommendation dataset with planted structure (the embedded default).

The generator plants exactly the two levels of preference that BEAT's tokenizer is meant to recover:

- **macro** — every user and every item has one *genre* (``"mystery"``, ``"science fiction"``, ...);
  about 80% of a user's interactions are items of its genre;
- **micro** — a shared pool of ``n_intents`` preference phrases (``"durability"``, ``"great value"``, ...).
  Each user has ``intents_per_user`` distinct intents (ranked) and each item ``intents_per_item`` (its
  attributes); within its genre a user picks items sharing k of its intents with weight ``4**k``.

Texts follow the XRec format: for ``text_user_frac`` of the users, ``pairs_per_text_user`` of their
interactions (preferring items that share an intent) get a title, a templated user summary (genre +
intents), a templated item summary (genre + attributes) and a templated explanation naming the item
title, the item's genre and 1-3 intents shared by user and item (under 50 words).

:func:`write_dataset` writes ``interactions.csv``, ``explanations.jsonl`` (loadable with
:func:`beatrec.data.dataset.load_dataset`) and ``planted.json`` with the ground truth. Output is a
deterministic function of the config (byte-identical files for the same seed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from beatrec.config import check, to_dict
from beatrec.data.dataset import TEXT_COLUMNS, assign_edge_split


class _Genre(NamedTuple):
    name: str
    adjective: str  # describes a good book of the genre: "a gripping mystery book"
    nouns: tuple[str, ...]  # title nouns, disjoint across genres so titles are unique


GENRES: tuple[_Genre, ...] = (
    _Genre("mystery", "gripping", ("Harbor", "Alibi", "Witness", "Cipher", "Inspector", "Locket", "Ledger",
                                   "Footprint", "Suspect", "Keyhole")),
    _Genre("science fiction", "imaginative", ("Starship", "Android", "Nebula", "Colony", "Orbit", "Reactor",
                                              "Signal", "Quasar", "Outpost", "Singularity")),
    _Genre("cooking", "practical", ("Kitchen", "Skillet", "Pantry", "Feast", "Oven", "Harvest Table",
                                    "Spice Jar", "Supper", "Bakery", "Broth")),
    _Genre("romance", "heartwarming", ("Kiss", "Promise", "Wedding", "Heart", "Valentine", "Rose",
                                       "Sweetheart", "Vow", "Waltz", "Proposal")),
    _Genre("history", "illuminating", ("Empire", "Dynasty", "Crusade", "Revolution", "Monarch", "Treaty",
                                       "Legion", "Republic", "Archive", "Frontier")),
    _Genre("fantasy", "enchanting", ("Dragon", "Wizard", "Kingdom", "Sword", "Sorceress", "Amulet",
                                     "Unicorn", "Citadel", "Prophecy", "Griffin")),
    _Genre("travel", "inspiring", ("Road", "Passport", "Voyage", "Island", "Compass", "Journey", "Coastline",
                                   "Caravan", "Lighthouse", "Trail")),
    _Genre("horror", "chilling", ("Crypt", "Phantom", "Asylum", "Shadow", "Coffin", "Specter", "Cellar",
                                  "Bones", "Scream", "Graveyard")),
    _Genre("poetry", "lyrical", ("Sonnet", "Verse", "Elegy", "Ballad", "Psalm", "Refrain", "Hymn", "Ode",
                                 "Stanza", "Lullaby")),
    _Genre("biography", "candid", ("Life", "Memoir", "Portrait", "Legacy", "Diary", "Testament",
                                   "Chronicle", "Confession", "Pilgrim", "Autobiography")),
    _Genre("gardening", "hands-on", ("Garden", "Greenhouse", "Orchard", "Seedling", "Meadow", "Trellis",
                                     "Hedgerow", "Blossom", "Compost", "Vineyard")),
    _Genre("children's", "playful", ("Puppy", "Balloon", "Treehouse", "Teddy Bear", "Rainbow", "Kite",
                                     "Pirate Ship", "Dinosaur", "Lunchbox", "Robot Friend")),
)

TITLE_ADJECTIVES: tuple[str, ...] = (
    "Silent", "Hidden", "Golden", "Last", "Forgotten", "Crimson", "Distant", "Broken", "Secret", "Winter",
    "Midnight", "Little", "Wild", "Lost", "Burning", "Quiet", "Silver", "Hollow", "Bright", "Endless",
)

INTENT_PHRASES: tuple[str, ...] = (
    "durability", "great value", "ease of use", "beautiful illustrations", "fast shipping",
    "memorable characters", "fast pacing", "clever plot twists", "emotional depth", "vivid settings",
    "practical tips", "short chapters", "witty dialogue", "accurate research", "lyrical prose",
    "happy endings", "dark atmosphere", "clear explanations", "original ideas", "gorgeous photography",
    "strong heroines", "family-friendly content", "step-by-step instructions", "large print",
    "realistic details", "thoughtful themes", "gentle humor", "gift-worthy packaging", "compact size",
    "an engaging narrator",
)

# Explanation templates, {t}=title, {g}=item genre, {ag}="a gripping mystery", {i}=shared intents,
# {ug}=user genre. In-genre pairs use _IN, other pairs _OUT, pairs sharing no intent _NONE ({i}=item attrs).
_IN = (
    'The user would enjoy "{t}" because it is {ag} book and they value {i}.',
    'The user would buy "{t}" since they love {g} books and this one delivers {i}.',
    '"{t}" suits this user well: {ag} book offering {i}, which they care about.',
    'Because they value {i}, the user would like "{t}", {ag} book.',
    'As a fan of {g} books, the user would appreciate "{t}" for its {i}.',
    'The user would enjoy "{t}", {ag} book with {i}, exactly what they look for.',
)
_OUT = (
    'Although they usually read {ug} books, the user would enjoy "{t}", {ag} book, because they value {i}.',
    'The user would try "{t}", {ag} book outside their usual {ug} reading, drawn by its {i}.',
    '"{t}" is {ag} book rather than one of their usual {ug} books, but the user would like its {i}.',
)
_NONE = (
    'The user would enjoy "{t}" because it is {ag} book, and they might appreciate its {i}.',
    'The user would give "{t}" a try, {ag} book known for {i}.',
)


@dataclass
class SyntheticConfig:
    """Size and seed of the synthetic dataset (defaults generate in well under a second).

    Attributes:
        n_users / n_items: number of users / items (ids ``0..n-1``).
        n_genres: number of genres (at most ``len(GENRES)`` = 12).
        n_intents: size of the micro-intent phrase pool (at most ``len(INTENT_PHRASES)`` = 30).
        intents_per_user / intents_per_item: distinct intents per user / item.
        interactions_per_user: mean edges per user (drawn uniformly in +-40% of it).
        text_user_frac: fraction of users that get text rows.
        pairs_per_text_user: text rows per text user (fewer if the user has fewer edges).
        seed: RNG seed.
    """

    n_users: int = 600
    n_items: int = 400
    n_genres: int = 8
    n_intents: int = 20
    intents_per_user: int = 3
    intents_per_item: int = 3
    interactions_per_user: int = 25
    text_user_frac: float = 0.5
    pairs_per_text_user: int = 3
    seed: int = 0
    in_genre: float = 0.8
    intent_weight: float = 4.0
    intent_across_genres: bool = False

    def validate(self) -> None:
        for name in ("n_users", "n_items", "n_genres", "n_intents", "intents_per_user", "intents_per_item",
                     "interactions_per_user", "pairs_per_text_user"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                  f"synthetic.{name} must be an integer >= 1, got {v!r}")
        check(self.n_genres <= len(GENRES), f"synthetic.n_genres must be <= {len(GENRES)}, got {self.n_genres}")
        check(self.n_items >= self.n_genres and self.n_users >= self.n_genres,
              "synthetic.n_users and synthetic.n_items must be >= n_genres (every genre needs an entity)")
        check(self.n_intents <= len(INTENT_PHRASES),
              f"synthetic.n_intents must be <= {len(INTENT_PHRASES)}, got {self.n_intents}")
        check(self.intents_per_user <= self.n_intents and self.intents_per_item <= self.n_intents,
              "synthetic.intents_per_user and intents_per_item must be <= n_intents")
        check(self.interactions_per_user <= self.n_items,
              f"synthetic.interactions_per_user must be <= n_items ({self.n_items})")
        check(0.0 < self.text_user_frac <= 1.0,
              f"synthetic.text_user_frac must be in (0, 1], got {self.text_user_frac}")
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool),
              f"synthetic.seed must be an integer, got {self.seed!r}")


class SyntheticData(NamedTuple):
    """A generated dataset and its ground truth.

    Attributes:
        interactions: ``(E, 3)`` frame ``user, item`` (int64), ``split`` (str), sorted by (user, item).
        texts: ``(T, 6)`` frame with columns :data:`~beatrec.data.dataset.TEXT_COLUMNS`.
        user_genre: ``(n_users,)`` int64 genre index per user.
        user_intents: ``(n_users, intents_per_user)`` int64 intent indices, ranked (first = strongest).
        item_genre: ``(n_items,)`` int64 genre index per item.
        item_intents: ``(n_items, intents_per_item)`` int64 intent indices (the item's attributes).
        item_titles: ``n_items`` unique titles.
        genre_names: ``n_genres`` genre names (index = genre id).
        intent_phrases: ``n_intents`` intent phrases (index = intent id).
    """

    interactions: pd.DataFrame
    texts: pd.DataFrame
    user_genre: np.ndarray
    user_intents: np.ndarray
    item_genre: np.ndarray
    item_intents: np.ndarray
    item_titles: list[str]
    genre_names: list[str]
    intent_phrases: list[str]


def _join(phrases: list[str]) -> str:
    """``["a"]`` -> ``"a"``; ``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``(n,)`` labels in ``0..k-1``, each used ``n // k`` or ``n // k + 1`` times, in random order."""
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def _distinct_choices(rng: np.random.Generator, n: int, pool: int, k: int) -> np.ndarray:
    """``(n, k)`` rows of ``k`` distinct values from ``0..pool-1`` (random order = rank)."""
    return np.argsort(rng.random((n, pool)), axis=1)[:, :k].astype(np.int64)


def _titles(rng: np.random.Generator, item_genre: np.ndarray, n_genres: int) -> list[str]:
    """Unique genre-flavoured titles: "The {Adjective} {Noun}", numbered volumes when combinations run out."""
    titles = [""] * len(item_genre)
    for g in range(n_genres):
        combos = [f"The {a} {n}" for a in TITLE_ADJECTIVES for n in GENRES[g].nouns]
        order = rng.permutation(len(combos))
        for j, item in enumerate(np.flatnonzero(item_genre == g)):
            base = combos[order[j % len(combos)]]
            vol = j // len(combos)
            titles[item] = base if vol == 0 else f"{base}, Volume {vol + 1}"
    return titles


def generate(cfg: SyntheticConfig) -> SyntheticData:
    """Generate the synthetic dataset of ``cfg`` (deterministic under ``cfg.seed``)."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    genres = GENRES[: cfg.n_genres]
    intents = INTENT_PHRASES[: cfg.n_intents]

    user_genre = _balanced_labels(rng, cfg.n_users, cfg.n_genres)
    item_genre = _balanced_labels(rng, cfg.n_items, cfg.n_genres)
    user_intents = _distinct_choices(rng, cfg.n_users, cfg.n_intents, cfg.intents_per_user)
    item_intents = _distinct_choices(rng, cfg.n_items, cfg.n_intents, cfg.intents_per_item)
    titles = _titles(rng, item_genre, cfg.n_genres)

    item_onehot = np.zeros((cfg.n_items, cfg.n_intents), dtype=np.int64)  # (I, K)
    np.put_along_axis(item_onehot, item_intents, 1, axis=1)
    genre_items = [np.flatnonzero(item_genre == g) for g in range(cfg.n_genres)]
    other_items = [np.flatnonzero(item_genre != g) for g in range(cfg.n_genres)]

    # ---- interactions: ~80% in-genre (weighted 4**shared intents), the rest uniform out of genre
    k = cfg.interactions_per_user
    lo, hi = max(1, round(0.6 * k)), min(cfg.n_items, max(1, round(1.4 * k)))
    degree = rng.integers(lo, hi + 1, size=cfg.n_users)
    n_in = rng.binomial(degree, cfg.in_genre)
    edges_u: list[np.ndarray] = []
    edges_i: list[np.ndarray] = []
    for u in range(cfg.n_users):
        g = user_genre[u]
        cand = genre_items[g]
        shared = item_onehot[cand][:, user_intents[u]].sum(axis=1)  # (|cand|,)
        keys = shared * np.log(cfg.intent_weight) + rng.gumbel(size=len(cand))  # Gumbel top-k = weighted, no replacement
        take_in = min(int(n_in[u]), len(cand))
        take_out = min(int(degree[u]) - take_in, len(other_items[g]))
        if take_in == 0 and take_out == 0:
            take_in = 1
        chosen_in = cand[np.argsort(-keys, kind="stable")[:take_in]]
        if cfg.intent_across_genres and take_out:  # out of genre, the intents choose too
            out = other_items[g]
            out_keys = item_onehot[out][:, user_intents[u]].sum(axis=1) * np.log(cfg.intent_weight) + \
                rng.gumbel(size=len(out))
            chosen_out = out[np.argsort(-out_keys, kind="stable")[:take_out]]
        else:
            chosen_out = rng.choice(other_items[g], size=take_out, replace=False) if take_out else chosen_in[:0]
        items_u = np.concatenate([chosen_in, chosen_out])
        edges_u.append(np.full(len(items_u), u, dtype=np.int64))
        edges_i.append(items_u.astype(np.int64))
    users_e = np.concatenate(edges_u)
    items_e = np.concatenate(edges_i)
    # every item gets an edge: link each uncovered item to a random user of its genre
    covered = np.zeros(cfg.n_items, dtype=bool)
    covered[items_e] = True
    lonely = np.flatnonzero(~covered)
    if len(lonely):
        genre_users = [np.flatnonzero(user_genre == g) for g in range(cfg.n_genres)]
        extra_u = np.array([rng.choice(genre_users[item_genre[i]]) for i in lonely], dtype=np.int64)
        users_e = np.concatenate([users_e, extra_u])
        items_e = np.concatenate([items_e, lonely.astype(np.int64)])
    order = np.lexsort((items_e, users_e))
    users_e, items_e = users_e[order], items_e[order]
    split = assign_edge_split(users_e, seed=int(rng.integers(2**31)))
    interactions = pd.DataFrame({"user": users_e, "item": items_e})
    interactions["split"] = pd.array(split, dtype="str")

    # ---- texts
    n_text = max(1, round(cfg.text_user_frac * cfg.n_users))
    text_users = np.sort(rng.choice(cfg.n_users, size=n_text, replace=False))
    starts = np.searchsorted(users_e, np.arange(cfg.n_users + 1))
    user_summaries = [
        f"This user enjoys {genres[user_genre[u]].name} books and values "
        f"{_join([intents[j] for j in user_intents[u]])}."
        for u in range(cfg.n_users)
    ]
    item_summaries = [
        f"{_article(genres[item_genre[i]].adjective).capitalize()} {genres[item_genre[i]].name} book "
        f"known for {_join([intents[j] for j in item_intents[i]])}."
        for i in range(cfg.n_items)
    ]
    rows = []
    for u in text_users:
        its = items_e[starts[u]:starts[u + 1]]
        shared = item_onehot[its][:, user_intents[u]].sum(axis=1)
        keys = (shared > 0) * 10.0 + rng.random(len(its))  # prefer items sharing an intent
        for i in its[np.argsort(-keys, kind="stable")[: cfg.pairs_per_text_user]]:
            gi, gu = genres[item_genre[i]], genres[user_genre[u]]
            common = [j for j in user_intents[u] if item_onehot[i, j]]  # in the user's rank order
            if common:
                n_say = int(rng.integers(1, min(3, len(common)) + 1))
                said = [intents[j] for j in common[:n_say]]
                pool = _IN if item_genre[i] == user_genre[u] else _OUT
            else:
                said = [intents[item_intents[i][0]]]
                pool = _NONE
            template = pool[int(rng.integers(len(pool)))]
            explanation = template.format(t=titles[i], g=gi.name, ag=_article(gi.adjective) + " " + gi.name,
                                          i=_join(said), ug=gu.name)
            rows.append((int(u), int(i), titles[i], user_summaries[u], item_summaries[i], explanation))
    texts = pd.DataFrame(rows, columns=list(TEXT_COLUMNS))
    texts["uid"] = texts["uid"].astype("int64")
    texts["iid"] = texts["iid"].astype("int64")
    return SyntheticData(
        interactions=interactions,
        texts=texts,
        user_genre=user_genre,
        user_intents=user_intents,
        item_genre=item_genre,
        item_intents=item_intents,
        item_titles=titles,
        genre_names=[g.name for g in genres],
        intent_phrases=list(intents),
    )


def write_dataset(cfg: SyntheticConfig, out: str | Path) -> Path:
    """Generate and write the dataset of ``cfg`` into folder ``out`` (created if needed).

    Writes ``interactions.csv`` (``user,item,split``), ``explanations.jsonl`` and ``planted.json`` (ground
    truth: ``config``, ``genre_names``, ``intent_phrases``, ``user_genre``, ``user_intents``,
    ``item_genre``, ``item_intents``, ``item_titles``). Returns ``out`` as a Path.
    """
    data = generate(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data.interactions.to_csv(out / "interactions.csv", index=False, lineterminator="\n")
    with (out / "explanations.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        for row in data.texts.itertuples(index=False):
            rec = {k: (int(v) if k in ("uid", "iid") else str(v)) for k, v in zip(TEXT_COLUMNS, row, strict=True)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    planted = {
        "config": to_dict(cfg),
        "genre_names": data.genre_names,
        "intent_phrases": data.intent_phrases,
        "user_genre": data.user_genre.tolist(),
        "user_intents": data.user_intents.tolist(),
        "item_genre": data.item_genre.tolist(),
        "item_intents": data.item_intents.tolist(),
        "item_titles": data.item_titles,
    }
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in planted.items())
    (out / "planted.json").write_text("{\n" + body + "\n}\n", encoding="utf-8")
    return out
