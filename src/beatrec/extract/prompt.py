"""The phrase-extraction prompt (BEAT micro supervision, eqs. 7-8) and a robust parser for its JSON answer.

The LLM reads an entity's training texts (a user's or an item's explanations/reviews) and answers with a JSON
object ``{"preferences": ["phrase", ...]}``: at most n short phrases (1-4 words), most important first, in
the spirit of the JSON prompt of the BEAT paper's appendix. Small local LMs are weak at JSON, so local
extractors prefill the assistant turn with ``PREFILL`` (the model only continues the list) and parse
``PREFILL + output``; ``parse_phrases`` also repairs truncated lists and accepts lists of objects.
"""

from __future__ import annotations

import json
import re
from typing import Any

PROMPT_VERSION = "p3"  # bump when the prompt changes: it is part of every extractor identity (cache keys)
PREFILL = '{"preferences": ["'
MAX_PHRASE_WORDS = 6
_MIN_WORDS_PER_TEXT = 20

SYSTEM = "You read reviews and extract short preference phrases. You answer with JSON only."

_QUESTION = {
    "user": "What does this user care about? List at most {n} short phrases (1 to 4 words each), most important "
    "first. Answer in JSON.",
    "item": "What does this item offer, and why do people like it? List at most {n} short phrases (1 to 4 words "
    "each), most important first. Answer in JSON.",
}
_HEADER = {"user": "Texts about one user's purchases:", "item": "Texts about one item:"}
# One hand-written demonstration per kind (a one-shot turn): the 135M default LM follows the format far more
# reliably with it than from the instruction alone (zero-shot it mostly echoes '"...", "..."'). It sometimes
# copies the demonstration answer instead of reading the texts; ``drop_demo_copies`` removes such phrases.
_DEMO_TEXTS = {
    "user": [
        "The user would buy this cookbook because they love quick vegetarian recipes and clear step-by-step "
        "instructions.",
        "The user would enjoy this thriller for its fast pacing and a twist ending they did not see coming.",
    ],
    "item": [
        "The user would buy this cookbook because its quick vegetarian recipes need only a few ingredients.",
        "Readers like the clear step-by-step instructions and the beautiful photos.",
    ],
}
_DEMO_PHRASES = {
    "user": [
        "vegetarian recipes",
        "quick meals",
        "clear instructions",
        "fast pacing",
        "twist endings",
        "easy cooking",
        "suspense",
    ],
    "item": [
        "quick vegetarian recipes",
        "few ingredients",
        "clear instructions",
        "beautiful photos",
        "easy cooking",
        "healthy meals",
        "step-by-step guidance",
    ],
}
_WORD = re.compile(r"[a-z0-9]+")


def drop_demo_copies(kind: str, phrases: list[str] | None, texts: list[str]) -> list[str] | None:
    """Remove phrases copied from the demonstration answer that the entity's own texts do not support.

    Small LMs sometimes repeat the one-shot example instead of reading the texts; a demonstration phrase is
    kept only when all its words occur in ``texts``. Returns None when nothing is left.
    """
    if not phrases:
        return None
    demo = set(_DEMO_PHRASES.get(kind, ()))
    words = set(_WORD.findall(" ".join(texts).lower()))
    kept = [p for p in phrases if p not in demo or set(_WORD.findall(p)) <= words]
    return kept or None


def budget_texts(texts: list[str], max_words: int) -> list[str]:
    """Shorten ``texts`` to about ``max_words`` words in all, giving every text a fair share.

    Each text keeps at most ``max(max_words // len(texts), 20)`` words; texts are kept in order until the
    budget is spent. Whitespace is collapsed; empty texts are dropped.
    """
    words = [t.split() for t in texts]
    words = [w for w in words if w]
    if not words:
        return []
    share = max(max_words // len(words), _MIN_WORDS_PER_TEXT)
    out: list[str] = []
    left = max_words
    for w in words:
        if left <= 0:
            break
        take = min(len(w), share, left)
        out.append(" ".join(w[:take]) + (" ..." if take < len(w) else ""))
        left -= take
    return out


def _ask(kind: str, texts: list[str], n: int) -> str:
    body = "\n".join(f"- {t}" for t in texts) or "- (no text)"
    return f"{_HEADER[kind]}\n{body}\n\n{_QUESTION[kind].format(n=n)}"


def build_messages(kind: str, texts: list[str], n: int, max_words: int = 200) -> list[dict[str, str]]:
    """Chat messages asking for a ranked JSON list of at most ``n`` phrases about a user or an item.

    The conversation is: system instruction, a one-shot demonstration (user turn with two hand-written
    texts, assistant turn ``{"preferences": [...]}``), then the entity's own texts with the same question.

    Args:
        kind: ``"user"`` (what the user cares about) or ``"item"`` (what the item offers / why people like it).
        texts: the entity's training texts; shortened to about ``max_words`` words in all.
        n: the most phrases to ask for.

    Returns:
        ``[{"role": ..., "content": ...}, ...]`` ending with the user turn to answer.
    """
    if kind not in _QUESTION:
        raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
    demo_answer = json.dumps({"preferences": _DEMO_PHRASES[kind][:n]})
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": _ask(kind, _DEMO_TEXTS[kind], n)},
        {"role": "assistant", "content": demo_answer},
        {"role": "user", "content": _ask(kind, budget_texts(texts, max_words), n)},
    ]


def list_is_done(continuation: str, n: int) -> bool:
    """Whether a generation after ``PREFILL`` can stop: the list closed, ``n`` phrases, or a repeated phrase.

    Small LMs often loop on one phrase until the token budget runs out; stopping at the first repeat saves
    that time and loses nothing (duplicates are dropped by ``parse_phrases``).
    """
    segs = continuation.split('"')
    done = [_clean(p) for p in segs[0 : len(segs) - 1 : 2]]  # strings whose closing quote has been generated
    seps = segs[1::2]
    if any("]" in sep or "}" in sep for sep in seps):
        return True
    return len(set(done)) >= n or len(set(done)) < len(done)


_WS = re.compile(r"\s+")
_STRIP = " \t\n\r\"'`.,;:!?-*•()[]{}"


def _clean(phrase: str) -> str:
    return _WS.sub(" ", phrase.lower()).strip(_STRIP).strip()


def _phrase_of(el: Any) -> str | None:
    """A list element -> its phrase: a string, or the 'name'/'phrase'/... (else first string) field of an object."""
    if isinstance(el, str):
        return el
    if isinstance(el, dict):
        for key in ("name", "phrase", "preference", "text", "value", "keyword"):
            if isinstance(el.get(key), str):
                return el[key]
        for v in el.values():
            if isinstance(v, str):
                return v
    return None


def _list_of(obj: Any) -> list[Any] | None:
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        for key in ("preferences", "phrases", "keywords", "features"):
            if isinstance(obj.get(key), list):
                return obj[key]
        for v in obj.values():
            if isinstance(v, list):
                return v
    return None


def _closings(s: str) -> list[str]:
    """Candidate repairs of a possibly truncated JSON object/list ``s``, most faithful first.

    A last element cut off mid-string is dropped (a phrase cut off by the token budget is not a phrase).
    """
    cands = [s]
    for tail in ("]}", "}]}", "]"):
        cands.append(s + tail)
    for sep in ('",', "},"):  # cut after the last complete element and close the list
        cut = s.rfind(sep)
        if cut > 0:
            cands.append(s[: cut + 1] + "]}")
            cands.append(s[: cut + 1] + "]")
    return cands


def _decode(raw: str) -> Any:
    """The first JSON object (or list) in ``raw``, repairing truncation; None if there is none."""
    dec = json.JSONDecoder()
    for opener in ("{", "["):
        start = raw.find(opener)
        while start >= 0:
            for cand in _closings(raw[start:]):
                try:
                    obj, _ = dec.raw_decode(cand)
                except json.JSONDecodeError:
                    continue
                if _list_of(obj) is not None:
                    return obj
            start = raw.find(opener, start + 1)
    return None


def parse_phrases(raw: str, n: int) -> list[str] | None:
    """Validate an LLM answer: the ranked phrases it lists, or None when it holds no usable phrase.

    Locates the first JSON object (or list) in ``raw`` (repairing a truncated end), takes its
    ``"preferences"`` list (or the first list in it), accepts strings or objects (their
    'name'/'phrase'/... or first string field), lower-cases and strips each phrase, and drops empties,
    duplicates and phrases longer than 6 words. Returns at most ``n`` phrases, in the model's order.
    """
    obj = _decode(raw)
    items = _list_of(obj) if obj is not None else None
    if not items:
        return None
    out: list[str] = []
    for el in items:
        p = _phrase_of(el)
        if p is None:
            continue
        p = _clean(p)
        if not p or p == "..." or len(p.split()) > MAX_PHRASE_WORDS or p in out:
            continue
        out.append(p)
        if len(out) >= n:
            break
    return out or None
