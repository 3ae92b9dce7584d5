"""Does an explanation name the planted structure of the synthetic dataset?

:func:`beatrec.data.synthetic.write_dataset` writes ``planted.json``, the ground truth of its macro level
(one genre per user and item) and micro level (a pool of intent phrases, a few per user and per item). For a
pair ``(u, i)`` with text ``x`` this module measures

- **genre**: ``x`` names the genre of item ``i``;
- **shared intent**: for pairs where ``u`` and ``i`` share at least one intent, ``x`` names at least one of
  the shared intents;
- **any intent**: ``x`` names any phrase of the intent pool;

and the *chance* level of each rate: the same rates with the texts shuffled across the pairs, i.e. what a
text that ignores who and what it is about would score.

"Names" means a case-insensitive whole-phrase match: the phrase (``"science fiction"``, ``"children's"``,
``"ease of use"``) occurs with no letter, digit or underscore directly before or after it; runs of
whitespace count as one space and a typographic apostrophe (U+2019) as ``'``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from beatrec.errors import DataError

PLANTED = "planted.json"
_KEYS = ("genre_names", "intent_phrases", "user_genre", "user_intents", "item_genre", "item_intents",
         "item_titles")


class Planted(NamedTuple):
    """Ground truth of a synthetic dataset (``planted.json``).

    Attributes:
        genre_names: ``G`` genre names (index = genre id), e.g. ``"science fiction"``.
        intent_phrases: ``K`` intent phrases (index = intent id), e.g. ``"great value"``.
        user_genre: ``(U,)`` int64 genre id per user.
        user_intents: ``(U, k_u)`` int64 intent ids per user, ranked (first = strongest).
        item_genre: ``(I,)`` int64 genre id per item.
        item_intents: ``(I, k_i)`` int64 intent ids per item (its attributes).
        item_titles: ``I`` item titles.
    """

    genre_names: list[str]
    intent_phrases: list[str]
    user_genre: np.ndarray
    user_intents: np.ndarray
    item_genre: np.ndarray
    item_intents: np.ndarray
    item_titles: list[str]


class SignalRates(NamedTuple):
    """How often texts name the planted structure of their pairs.

    Attributes:
        n: number of (pair, text) rows scored.
        genre: share of texts naming the item's genre (NaN when ``n == 0``).
        shared_intent: among the ``n_with_shared`` pairs whose user and item share >= 1 intent, the share
            whose text names at least one shared intent (NaN when ``n_with_shared == 0``).
        n_with_shared: number of pairs with >= 1 shared intent.
        any_intent: share of texts naming any intent of the pool (NaN when ``n == 0``).
    """

    n: int
    genre: float
    shared_intent: float
    n_with_shared: int
    any_intent: float


def _int_matrix(path: Path, key: str, value: object, ndim: int) -> np.ndarray:
    """``value`` as an int64 array of ``ndim`` dimensions, or a DataError naming ``key``."""
    shape = "a list of integers" if ndim == 1 else "a list of equal-length lists of integers"
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nested lists
        raise DataError(path, f"'{key}' must be {shape}") from None
    if arr.size == 0 and isinstance(value, list):
        return np.zeros((0,) * ndim, dtype=np.int64)
    if arr.ndim != ndim or arr.dtype.kind not in "iu":
        raise DataError(path, f"'{key}' must be {shape}")
    return arr.astype(np.int64)


def _str_list(path: Path, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(path, f"'{key}' must be a list of strings")
    return list(value)


def load_planted(data_dir: str | Path) -> Planted:
    """Read and check ``planted.json`` of a synthetic dataset folder.

    Raises:
        DataError: the file is missing (only synthetic datasets have one), is not a JSON object, lacks a key,
            holds values of the wrong type, lengths that disagree, or ids out of range.
    """
    path = Path(data_dir) / PLANTED
    if not path.is_file():
        raise DataError(path, "file not found (only synthetic datasets written by beatrec.data.synthetic "
                              "carry planted ground truth)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(path, "top level must be a JSON object")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise DataError(path, f"missing key(s) {', '.join(repr(k) for k in missing)}")
    genres = _str_list(path, "genre_names", data["genre_names"])
    intents = _str_list(path, "intent_phrases", data["intent_phrases"])
    titles = _str_list(path, "item_titles", data["item_titles"])
    user_genre = _int_matrix(path, "user_genre", data["user_genre"], 1)
    item_genre = _int_matrix(path, "item_genre", data["item_genre"], 1)
    user_intents = _int_matrix(path, "user_intents", data["user_intents"], 2)
    item_intents = _int_matrix(path, "item_intents", data["item_intents"], 2)
    if len(user_intents) != len(user_genre):
        raise DataError(path, f"'user_intents' has {len(user_intents)} rows, 'user_genre' {len(user_genre)}")
    if not len(item_intents) == len(item_genre) == len(titles):
        raise DataError(path, f"'item_intents', 'item_genre' and 'item_titles' disagree in length "
                              f"({len(item_intents)}, {len(item_genre)}, {len(titles)})")
    for key, arr, size in (("user_genre", user_genre, len(genres)), ("item_genre", item_genre, len(genres)),
                           ("user_intents", user_intents, len(intents)),
                           ("item_intents", item_intents, len(intents))):
        if arr.size and (arr.min() < 0 or arr.max() >= size):
            raise DataError(path, f"'{key}' holds ids outside 0..{size - 1}")
    return Planted(genres, intents, user_genre, user_intents, item_genre, item_intents, titles)


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u2019", "'")).strip().lower()


def mentions(texts: list[str], phrases: list[str]) -> np.ndarray:
    """``(T, P)`` bool: text ``t`` names phrase ``p`` (case-insensitive whole-phrase match, module docstring)."""
    out = np.zeros((len(texts), len(phrases)), dtype=bool)
    norm = [_normalize(t) for t in texts]
    for j, phrase in enumerate(phrases):
        pat = re.compile(r"(?<!\w)" + re.escape(_normalize(phrase)) + r"(?!\w)")
        out[:, j] = [pat.search(t) is not None for t in norm]
    return out


class _Scorer(NamedTuple):
    """Per-pair truth and per-text mentions, so permutations only re-index rows."""

    item_genre: np.ndarray  # (n,) genre id of each pair's item
    shared: np.ndarray  # (n, K) bool: intent shared by the pair's user and item
    genre_hit: np.ndarray  # (n, G) bool: text names genre
    intent_hit: np.ndarray  # (n, K) bool: text names intent

    def rates(self, text_of: np.ndarray) -> SignalRates:
        """Rates when pair ``j`` is scored with text ``text_of[j]`` (``(n,)`` int)."""
        n = len(text_of)
        has_shared = self.shared.any(axis=1)
        n_shared = int(has_shared.sum())
        intent = self.intent_hit[text_of]  # (n, K)
        genre = self.genre_hit[text_of, self.item_genre]  # (n,)
        named_shared = (intent & self.shared).any(axis=1)[has_shared]
        return SignalRates(
            n=n,
            genre=float(genre.mean()) if n else float("nan"),
            shared_intent=float(named_shared.mean()) if n_shared else float("nan"),
            n_with_shared=n_shared,
            any_intent=float(intent.any(axis=1).mean()) if n else float("nan"),
        )


def _scorer(planted: Planted, uids: np.ndarray, iids: np.ndarray, texts: list[str]) -> _Scorer:
    uids = np.asarray(uids, dtype=np.int64).reshape(-1)
    iids = np.asarray(iids, dtype=np.int64).reshape(-1)
    texts = [str(t) for t in texts]
    if not len(uids) == len(iids) == len(texts):
        raise ValueError(f"uids, iids and texts differ in length ({len(uids)}, {len(iids)}, {len(texts)})")
    n_users, n_items = len(planted.user_genre), len(planted.item_genre)
    if len(uids) and (uids.min() < 0 or uids.max() >= n_users or iids.min() < 0 or iids.max() >= n_items):
        raise ValueError(f"ids outside the planted ground truth ({n_users} users, {n_items} items)")
    k = len(planted.intent_phrases)
    user_hot = np.zeros((n_users, k), dtype=bool)  # (U, K)
    np.put_along_axis(user_hot, planted.user_intents, True, axis=1)
    item_hot = np.zeros((n_items, k), dtype=bool)  # (I, K)
    np.put_along_axis(item_hot, planted.item_intents, True, axis=1)
    return _Scorer(
        item_genre=planted.item_genre[iids],
        shared=user_hot[uids] & item_hot[iids],
        genre_hit=mentions(texts, planted.genre_names),
        intent_hit=mentions(texts, planted.intent_phrases),
    )


def signal_rates(planted: Planted, uids: np.ndarray, iids: np.ndarray, texts: list[str]) -> SignalRates:
    """How often ``texts[j]`` names the planted genre / shared intents of pair ``(uids[j], iids[j])``.

    Args:
        planted: the ground truth (:func:`load_planted`).
        uids / iids: ``(n,)`` int user / item ids.
        texts: ``n`` texts (explanations, generated or reference).

    Raises:
        ValueError: lengths differ, or an id is outside the ground truth.
    """
    sc = _scorer(planted, uids, iids, texts)
    return sc.rates(np.arange(len(sc.item_genre)))


def chance_rates(planted: Planted, uids: np.ndarray, iids: np.ndarray, texts: list[str], seed: int = 0,
                 n_perm: int = 200) -> SignalRates:
    """:func:`signal_rates` with the texts shuffled across the pairs, averaged over ``n_perm`` seeded
    permutations: the rates of texts that ignore who and what they are about. ``any_intent`` is
    permutation-invariant and equals the unshuffled rate; ``n`` and ``n_with_shared`` are unchanged.

    Raises:
        ValueError: as :func:`signal_rates`, or ``n_perm < 1``.
    """
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    sc = _scorer(planted, uids, iids, texts)
    n = len(sc.item_genre)
    rng = np.random.default_rng(seed)
    runs = [sc.rates(rng.permutation(n)) for _ in range(n_perm)]
    return SignalRates(
        n=n,
        genre=float(np.mean([r.genre for r in runs])),
        shared_intent=float(np.mean([r.shared_intent for r in runs])),
        n_with_shared=runs[0].n_with_shared,
        any_intent=float(np.mean([r.any_intent for r in runs])),
    )


class ProfileRates(NamedTuple):
    """How often profiles of users name their own planted structure.

    Attributes:
        n: profiles scored.
        intent_recall: mean over users of the share of the user's planted intents its profile names.
        intent_precision: among profiles naming any intent, the mean share of named intents that are the user's.
        genre: share of profiles naming the user's genre.
    """

    n: int
    intent_recall: float
    intent_precision: float
    genre: float


def profile_rates(planted: Planted, uids: np.ndarray, texts: list[str]) -> ProfileRates:
    """How often ``texts[j]`` (a profile of user ``uids[j]``) names that user's planted intents and genre.

    Raises:
        ValueError: lengths differ, or an id is outside the ground truth.
    """
    uids = np.asarray(uids, dtype=np.int64).reshape(-1)
    if len(uids) != len(texts):
        raise ValueError(f"uids and texts differ in length ({len(uids)}, {len(texts)})")
    if len(uids) and (uids.min() < 0 or uids.max() >= len(planted.user_genre)):
        raise ValueError(f"ids outside the planted ground truth ({len(planted.user_genre)} users)")
    own = np.zeros((len(uids), len(planted.intent_phrases)), dtype=bool)  # (n, K)
    np.put_along_axis(own, planted.user_intents[uids], True, axis=1)
    hit = mentions([str(t) for t in texts], planted.intent_phrases)  # (n, K)
    named = hit.sum(1)
    right = (hit & own).sum(1)
    nan = float("nan")
    return ProfileRates(
        n=len(uids),
        intent_recall=float((right / own.sum(1)).mean()) if len(uids) else nan,
        intent_precision=float((right[named > 0] / named[named > 0]).mean()) if (named > 0).any() else nan,
        genre=float(mentions([str(t) for t in texts], planted.genre_names)[np.arange(len(uids)),
                                                                           planted.user_genre[uids]].mean())
        if len(uids) else nan,
    )
