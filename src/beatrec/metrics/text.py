"""Explanation text metrics, as DESIGN.md "Evaluation protocol" defines them.

- BLEU-1 / BLEU-4: NLTK ``corpus_bleu`` with smoothing method1 on lower-cased tokens from
  ``re.findall(r"\\w+|[^\\w\\s]", text.lower())``, one reference per candidate.
- Specificity: mean reciprocal rank of each generation's own reference among all references of the set, by
  cosine similarity of text-encoder (MiniLM) embeddings. A generic explanation scores ~1/len(set)·H.
"""

from __future__ import annotations

import re

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return _TOKEN.findall(text.lower())


def bleu(candidates: list[str], references: list[str], n: int) -> float:
    """Corpus BLEU-n (uniform weights over 1..n-grams), smoothing method1. One reference per candidate."""
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    if len(candidates) != len(references) or not candidates:
        raise ValueError(f"need equally many candidates and references (> 0), got {len(candidates)}/{len(references)}")
    weights = tuple([1.0 / n] * n)
    return float(corpus_bleu([[tokenize(r)] for r in references], [tokenize(c) for c in candidates],
                             weights=weights, smoothing_function=SmoothingFunction().method1))


def reciprocal_ranks_from_embeddings(cand: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Reciprocal rank (P,) of reference i for candidate i among all references (cosine; ties count against).

    Args:
        cand: (P, T) candidate embeddings; ref: (P, T) reference embeddings, row-aligned.
    """
    c = cand / np.linalg.norm(cand, axis=1, keepdims=True).clip(1e-12)
    r = ref / np.linalg.norm(ref, axis=1, keepdims=True).clip(1e-12)
    sim = c @ r.T  # (P, P)
    own = np.diag(sim)[:, None]
    rank = 1 + (sim >= own).sum(1) - 1  # references at least as similar as the own one, the own one included
    return 1.0 / rank


def specificity_from_embeddings(cand: np.ndarray, ref: np.ndarray) -> float:
    """Mean of :func:`reciprocal_ranks_from_embeddings`: cand (P, T), ref (P, T) -> MRR."""
    return float(np.mean(reciprocal_ranks_from_embeddings(cand, ref)))


def reciprocal_ranks(candidates: list[str], references: list[str], encoder) -> np.ndarray:  # noqa: ANN001
    """Per-pair reciprocal ranks (P,) with a :class:`~beatrec.text_encoder.TextEncoder`."""
    return reciprocal_ranks_from_embeddings(encoder.encode(candidates), encoder.encode(references))


def specificity(candidates: list[str], references: list[str], encoder) -> float:  # noqa: ANN001
    """:func:`specificity_from_embeddings` with a :class:`~beatrec.text_encoder.TextEncoder`."""
    return specificity_from_embeddings(encoder.encode(candidates), encoder.encode(references))
