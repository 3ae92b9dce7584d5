"""Paired significance of explanation metrics: two prediction sets A and B scored on the same (user, item) pairs.

:func:`pair_stats` reduces a prediction set to per-pair sufficient statistics (:class:`PairStats`);
:func:`paired_comparison` reports, per metric, the value of A and of B, the difference B - A, a percentile
bootstrap interval over pairs and a two-sided paired permutation p-value (A and B swapped within each pair at
random), all from :func:`beatrec.stats.paired_test`.

- BLEU-1 is a corpus statistic, not a mean over pairs, so each resample recomputes it from summed counts
  (:func:`bleu1_from_sums`): BLEU-1 = BP · Σ match / Σ max(1, c_i), BP = 1 if c > r else exp(1 - r / c),
  c = Σ c_i hypothesis tokens, r = Σ r_i reference tokens; 0 when Σ match = 0 (NLTK ``corpus_bleu`` with
  weights (1,) returns 0 before smoothing, so method1 never applies to BLEU-1; ``max(1, c_i)`` is NLTK's floor
  of each pair's precision denominator, which only matters for an empty hypothesis).
- BERTScore-MiniLM F1 and specificity are means of per-pair values. Specificity is each set's reciprocal rank
  of its own reference among all references of the scored set (as in :func:`beatrec.metrics.text.specificity`);
  resampling keeps those ranks fixed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from beatrec.metrics.bertscore import bertscore_pairs
from beatrec.metrics.explanations import LABELS, Scorer
from beatrec.metrics.text import reciprocal_ranks, tokenize
from beatrec.stats import PairedDiff, format_rows, paired_test

PairedMetricDiff = PairedDiff  # metric | a | b | diff | low | high | p_value; one row per metric
METRICS = ("bleu1", "bertscore_f1", "specificity")


class PairStats(NamedTuple):
    """Per-pair sufficient statistics of one prediction set against its references, P pairs."""

    bleu1_match: np.ndarray  # (P,) clipped unigram matches
    hyp_len: np.ndarray  # (P,) candidate tokens (beatrec.metrics.text.tokenize)
    ref_len: np.ndarray  # (P,) reference tokens
    bertscore: np.ndarray | None  # (P,) BERTScore-MiniLM F1, None = not computed
    specificity: np.ndarray | None  # (P,) reciprocal rank of the own reference, None = not computed


def bleu1_from_sums(match: np.ndarray, denominator: np.ndarray, hyp_len: np.ndarray,
                    ref_len: np.ndarray) -> np.ndarray:
    """Corpus BLEU-1 from summed counts, vectorised: arrays (...) of Σ match, Σ max(1, c_i), Σ c_i, Σ r_i -> (...)."""
    match, den, c, r = (np.asarray(x, dtype=np.float64) for x in (match, denominator, hyp_len, ref_len))
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(c > r, 1.0, np.exp(1.0 - r / np.maximum(c, 1.0)))
        return np.where(match > 0, bp * match / np.maximum(den, 1.0), 0.0)


def _bleu1_columns(s: PairStats) -> np.ndarray:
    """(P, 4) per-pair [match, max(1, c_i), c_i, r_i], the summable inputs of :func:`bleu1_from_sums`."""
    return np.column_stack([s.bleu1_match, np.maximum(s.hyp_len, 1), s.hyp_len, s.ref_len]).astype(np.float64)


def _bleu1_of_sums(sums: np.ndarray) -> np.ndarray:  # (m, 4) -> (m,)
    return bleu1_from_sums(*np.moveaxis(sums, -1, 0))


def corpus_bleu1(s: PairStats) -> float:
    """Corpus BLEU-1 of a prediction set from its per-pair statistics (equals ``metrics.text.bleu(.., 1)``)."""
    return float(_bleu1_of_sums(_bleu1_columns(s).sum(0)))


def pair_stats(preds: list[str], refs: list[str], scorer: Scorer) -> PairStats:
    """Per-pair statistics of ``preds`` against row-aligned ``refs`` (P > 0 pairs).

    BERTScore and specificity use ``scorer.encoder`` and are None when ``scorer.cfg`` switches them off.
    """
    if len(preds) != len(refs) or not preds:
        raise ValueError(f"need equally many predictions and references (> 0), got {len(preds)}/{len(refs)}")
    hyp, ref = [tokenize(t) for t in preds], [tokenize(t) for t in refs]
    match = [sum((Counter(h) & Counter(r)).values()) for h, r in zip(hyp, ref, strict=True)]
    return PairStats(
        bleu1_match=np.asarray(match, dtype=np.int64),
        hyp_len=np.asarray([len(h) for h in hyp], dtype=np.int64),
        ref_len=np.asarray([len(r) for r in ref], dtype=np.int64),
        bertscore=bertscore_pairs(preds, refs, scorer.encoder).f1 if scorer.cfg.bertscore else None,
        specificity=reciprocal_ranks(preds, refs, scorer.encoder) if scorer.cfg.specificity else None,
    )


def paired_comparison(a: PairStats, b: PairStats, n_resamples: int = 2000, alpha: float = 0.05,
                      seed: int = 0) -> tuple[PairedMetricDiff, ...]:
    """B - A per metric (bleu1, bertscore_f1, specificity; a metric None in either set is left out).

    Each metric's interval and p-value use ``n_resamples`` resamples and the seed ``seed + its index in
    METRICS``, so a row does not depend on which other metrics were computed.
    """
    if len(a.hyp_len) != len(b.hyp_len) or not np.array_equal(a.ref_len, b.ref_len):
        raise ValueError(f"paired_comparison needs both sets scored on the same references, got "
                         f"{len(a.hyp_len)} and {len(b.hyp_len)} pairs")
    rows = [PairedMetricDiff("bleu1", corpus_bleu1(a), corpus_bleu1(b),
                             *paired_test(_bleu1_columns(a), _bleu1_columns(b), n_resamples, seed, alpha,
                                          statistic=_bleu1_of_sums))]
    for i, (name, va, vb) in enumerate([("bertscore_f1", a.bertscore, b.bertscore),
                                        ("specificity", a.specificity, b.specificity)], start=1):
        if va is not None and vb is not None:
            rows.append(PairedMetricDiff(name, float(np.mean(va)), float(np.mean(vb)),
                                         *paired_test(va, vb, n_resamples, seed + i, alpha)))
    return tuple(rows)


def format_paired(rows: Sequence[PairedMetricDiff], alpha: float = 0.05) -> list[str]:
    """Markdown table lines: metric label | A | B | B - A | interval | p (p at the 1/(R+1) floor as 5.0e-04)."""
    return format_rows([r._replace(metric=LABELS.get(r.metric, r.metric)) for r in rows], alpha)
