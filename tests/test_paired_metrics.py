"""Paired comparison of two explanation-prediction sets (beatrec.metrics.paired, beatrec.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tiny_lm import save_tiny_lm

from beatrec.metrics.bertscore import bertscore, bertscore_pairs_from_embeddings
from beatrec.metrics.explanations import ScoreConfig, Scorer
from beatrec.metrics.paired import (
    PairStats,
    bleu1_from_sums,
    corpus_bleu1,
    format_paired,
    pair_stats,
    paired_comparison,
)
from beatrec.metrics.text import bleu, reciprocal_ranks_from_embeddings, specificity
from beatrec.stats import paired_test

BLEU_ONLY = Scorer(ScoreConfig(bertscore=False, lm_score=False, specificity=False))
WORDS = ("the user would enjoy this book for its cozy mystery clever plot strong characters fast pacing dark "
         "humour kitchen knife sharp sturdy light compact reliable , . !").split()


def _texts(rng: np.random.Generator, n: int, lo: int = 4, hi: int = 14) -> list[str]:
    return [" ".join(rng.choice(WORDS, rng.integers(lo, hi))) for _ in range(n)]


def test_bleu1_stats_hand_worked() -> None:
    preds = ["The cat sat", "the the the the"]
    refs = ["the cat sat on the mat", "the cat is on the mat"]
    s = pair_stats(preds, refs, BLEU_ONLY)
    # pair 0: 3 of 3 unigrams match; pair 1: "the" x4 clipped at its 2 reference counts
    assert s.bleu1_match.tolist() == [3, 2] and s.hyp_len.tolist() == [3, 4] and s.ref_len.tolist() == [6, 6]
    assert s.bertscore is None and s.specificity is None
    # corpus: p1 = 5 / 7, c = 7 < r = 12 -> BP = exp(1 - 12/7)
    assert corpus_bleu1(s) == pytest.approx(math.exp(1 - 12 / 7) * 5 / 7, abs=1e-12)
    assert corpus_bleu1(s) == pytest.approx(bleu(preds, refs, 1), abs=1e-9)
    # vectorised over resamples; no match -> 0; longer than the references -> BP = 1
    got = bleu1_from_sums(np.array([5, 0, 3]), np.array([7, 4, 4]), np.array([7, 4, 4]), np.array([12, 6, 2]))
    np.testing.assert_allclose(got, [math.exp(1 - 12 / 7) * 5 / 7, 0.0, 0.75])


@pytest.mark.parametrize("case", ["real", "no_match", "empty_hypothesis", "longer_than_refs", "one_pair"])
def test_corpus_bleu1_from_stats_equals_nltk(case: str) -> None:
    rng = np.random.default_rng(0)
    preds, refs = {
        "real": (_texts(rng, 30), _texts(rng, 30)),
        "no_match": (["great kitchen knife", "sharp !"], ["the user likes cozy mysteries .", "clever plot"]),
        # NLTK floors an empty hypothesis' precision denominator at 1 (Σ max(1, c_i) = 3, not 2)
        "empty_hypothesis": (["", "the cat"], ["a dog", "the cat sat"]),
        "longer_than_refs": (["the user would enjoy this cozy book a lot", "clever , clever plot"],
                             ["a cozy book", "clever plot"]),
        "one_pair": (["The user would enjoy the cat book."], ["The user would enjoy the cat book because it is fun."]),
    }[case]
    s = pair_stats(preds, refs, BLEU_ONLY)
    assert corpus_bleu1(s) == pytest.approx(bleu(preds, refs, 1), abs=1e-9)
    if case == "no_match":
        assert corpus_bleu1(s) == 0.0  # NLTK returns 0 before smoothing: method1 never applies to BLEU-1


def test_per_pair_bertscore_and_reciprocal_ranks_average_to_the_corpus_values() -> None:
    cand, ref = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0]])
    assert bertscore_pairs_from_embeddings([cand, ref], [ref, ref]).f1 == pytest.approx([2 / 3, 1.0])
    c, r = np.array([[1.0, 0.1], [0.0, 1.0]]), np.array([[1.0, 0.1], [1.0, 0.0]])
    assert reciprocal_ranks_from_embeddings(c, r) == pytest.approx([1.0, 0.5])


def test_identical_sets_give_zero_difference_and_p_one() -> None:
    rng = np.random.default_rng(1)
    refs, preds = _texts(rng, 25), _texts(rng, 25)
    s = pair_stats(preds, refs, BLEU_ONLY)
    (row,) = paired_comparison(s, s, n_resamples=200)
    assert row.metric == "bleu1" and row.a == row.b == pytest.approx(bleu(preds, refs, 1), abs=1e-9)
    assert (row.diff, row.low, row.high, row.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_references_as_b_are_clearly_better_seeded_and_formatted() -> None:
    rng = np.random.default_rng(2)
    refs, preds = _texts(rng, 40), _texts(rng, 40)
    a, b = pair_stats(preds, refs, BLEU_ONLY), pair_stats(refs, refs, BLEU_ONLY)
    (row,) = paired_comparison(a, b, n_resamples=1999)
    assert row.b == pytest.approx(1.0) and row.diff == pytest.approx(1.0 - row.a)
    assert 0 < row.low <= row.diff <= row.high  # the interval excludes 0 and contains the difference
    assert row.p_value == pytest.approx(1 / 2000)  # the floor: no random swap is as extreme
    assert paired_comparison(a, b, n_resamples=300, seed=4) == paired_comparison(a, b, n_resamples=300, seed=4)
    assert paired_comparison(a, b, n_resamples=300, seed=4) != paired_comparison(a, b, n_resamples=300, seed=5)
    lines = format_paired([row])
    assert lines[0] == "| metric | A | B | B - A | 95% interval | p |" and len(lines) == 3
    assert lines[2].startswith(f"| BLEU-1 | {row.a:.4f} | 1.0000 | {row.diff:+.4f} |")
    assert lines[2].endswith("| 5.0e-04 |")


def test_similar_sets_interval_contains_difference_and_errors() -> None:
    rng = np.random.default_rng(3)
    refs = _texts(rng, 60)
    a, b = pair_stats(_texts(rng, 60), refs, BLEU_ONLY), pair_stats(_texts(rng, 60), refs, BLEU_ONLY)
    (row,) = paired_comparison(a, b, n_resamples=500, alpha=0.1)
    assert row.low <= row.diff <= row.high and row.low < 0 < row.high and row.p_value > 0.05
    with pytest.raises(ValueError, match="same references"):
        paired_comparison(a, pair_stats(_texts(rng, 60), _texts(rng, 60), BLEU_ONLY))
    with pytest.raises(ValueError, match="same references"):
        paired_comparison(a, PairStats(*(x[:10] for x in b[:3]), None, None))


def test_sum_statistic_of_a_mean_agrees_with_the_mean_path() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.random(200), rng.random(200) + 0.02
    mean = paired_test(a, b, n_resamples=400, seed=1)
    sums = paired_test(a, b, n_resamples=400, seed=1, statistic=lambda s: s / 200)
    assert sums == pytest.approx(mean, abs=1e-12)  # same draws, same statistic, another evaluation order
    with pytest.raises(ValueError, match="equal-length"):
        paired_test(a[:, None], b[:, None])  # 2-D values need a statistic of their sums


@pytest.fixture(scope="module")
def tiny_scorer(tmp_path_factory: pytest.TempPathFactory) -> Scorer:
    """A Scorer whose text encoder is a tiny random 2-layer Llama (no MiniLM load)."""
    from beatrec.text_encoder import TextEncoder, TextEncoderConfig

    path = save_tiny_lm(tmp_path_factory.mktemp("enc") / "tiny")
    enc = TextEncoder(TextEncoderConfig(name=str(path), device="cpu"), cache=False)
    return Scorer(ScoreConfig(lm_score=False), encoder=enc)


def test_pair_stats_with_an_encoder_and_all_metrics(tiny_scorer: Scorer) -> None:
    rng = np.random.default_rng(5)
    refs, preds = _texts(rng, 12), _texts(rng, 12)
    s = pair_stats(preds, refs, tiny_scorer)
    enc = tiny_scorer.encoder
    assert s.bertscore.shape == s.specificity.shape == (12,)
    assert s.bertscore.mean() == pytest.approx(bertscore(preds, refs, enc).f1, abs=1e-12)
    assert s.specificity.mean() == pytest.approx(specificity(preds, refs, enc), abs=1e-12)
    b = pair_stats(refs, refs, tiny_scorer)
    rows = paired_comparison(s, b, n_resamples=200)
    assert [r.metric for r in rows] == ["bleu1", "bertscore_f1", "specificity"]
    assert rows[1].b == pytest.approx(1.0, abs=1e-5) and rows[1].diff > 0
    for r in paired_comparison(s, s, n_resamples=50):
        assert r.diff == 0.0 and r.p_value == 1.0
    no_bs = s._replace(bertscore=None)  # a metric missing from either set is left out
    assert [r.metric for r in paired_comparison(no_bs, b, n_resamples=50)] == ["bleu1", "specificity"]
    assert [ln.split(" | ")[0] for ln in format_paired(rows)[2:]] == ["| BLEU-1", "| BERTScore-MiniLM",
                                                                      "| specificity"]
