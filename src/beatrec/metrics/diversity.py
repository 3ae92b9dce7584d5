"""Diversity and length of a set of generations: distinct-n and average length in words.

- distinct-n = (number of unique n-grams) / (total number of n-grams), counted over the *whole set* of
  generations (corpus-level, Li et al. 2016), on the BLEU tokens (:func:`beatrec.metrics.text.tokenize`);
  n-grams never span two generations. 0 when the set has no n-gram at all.
- average length = mean number of whitespace-separated words per generation (the unit of the 50-word cap).
"""

from __future__ import annotations

from beatrec.metrics.text import tokenize


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / total n-grams over all ``texts``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total = 0
    seen: set[tuple[str, ...]] = set()
    for t in texts:
        toks = tokenize(t)
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def average_words(texts: list[str]) -> float:
    """Mean number of whitespace-separated words per text (0 for an empty list)."""
    return sum(len(t.split()) for t in texts) / len(texts) if texts else 0.0
