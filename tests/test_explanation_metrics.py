"""ROUGE-L, BERTScore-MiniLM, LM-score, distinct-n, average length and the one-call scorer: hand-worked values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tiny_lm import save_tiny_lm

from beatrec.lm import LMConfig, load_causal_lm
from beatrec.metrics.bertscore import bertscore_from_embeddings, greedy_match
from beatrec.metrics.diversity import average_words, distinct_n
from beatrec.metrics.explanations import ExplanationScores, markdown_table, score_explanations
from beatrec.metrics.lm_score import lm_log_likelihoods, lm_score, pair_token_ids
from beatrec.metrics.rouge import lcs_length, rouge_l, rouge_l_pair


def test_rouge_l_hand_worked() -> None:
    # cand tokens: the cat sat on mat (5); ref: the cat is on the mat (6); LCS = the cat on mat = 4
    # P = 4/5, R = 4/6, F1 = 2PR/(P+R) = (16/15)/(22/15) = 8/11
    assert lcs_length("the cat sat on mat".split(), "the cat is on the mat".split()) == 4
    p = rouge_l_pair("The cat sat on mat", "the cat is on the mat")
    assert (p.precision, p.recall) == pytest.approx((0.8, 2 / 3))
    assert p.f1 == pytest.approx(8 / 11)
    # a pair with nothing in common scores 0; the mean over the two pairs is 4/11
    assert rouge_l(["The cat sat on mat", "a b"], ["the cat is on the mat", "c d"]) == pytest.approx(4 / 11)
    # punctuation is a token (same tokenization as BLEU): "good!" vs "good." -> LCS 1 of 2, F1 = 0.5
    assert rouge_l(["good!"], ["good."]) == pytest.approx(0.5)
    assert rouge_l(["x"], ["x"]) == 1.0
    with pytest.raises(ValueError):
        rouge_l([], [])


def test_distinct_and_length_hand_worked() -> None:
    texts = ["a b a", "a b c", "Hi, there!"]
    # unigram tokens: [a b a] [a b c] [hi , there !] -> 10 in all, unique {a b c hi , there !} = 7
    assert distinct_n(texts, 1) == pytest.approx(7 / 10)
    # bigrams: (a b)(b a) | (a b)(b c) | (hi ,)(, there)(there !) -> 7 in all, 6 unique; none spans two texts
    assert distinct_n(texts, 2) == pytest.approx(6 / 7)
    # whitespace words: 3 + 3 + 2
    assert average_words(texts) == pytest.approx(8 / 3)
    assert distinct_n(["one"], 2) == 0.0 and average_words([]) == 0.0


def test_bertscore_greedy_matching_hand_worked() -> None:
    cand = np.array([[1.0, 0.0], [0.0, 1.0]])
    ref = np.array([[1.0, 0.0]])
    # sim = [[1], [0]]: P = mean(1, 0) = 0.5, R = max(1, 0) = 1, F1 = 2·0.5·1/1.5 = 2/3
    s = greedy_match(cand, ref)
    assert (s.precision, s.recall, s.f1) == pytest.approx((0.5, 1.0, 2 / 3))
    # mean over pairs: (2/3 + 1) / 2; an empty candidate scores 0
    assert bertscore_from_embeddings([cand, ref], [ref, ref]).f1 == pytest.approx(5 / 6)
    assert greedy_match(np.zeros((0, 2)), ref).f1 == 0.0


def test_bertscore_minilm() -> None:
    from beatrec.metrics.bertscore import bertscore, token_embeddings
    from beatrec.text_encoder import TextEncoder, TextEncoderConfig

    enc = TextEncoder(TextEncoderConfig(), cache=False)
    toks = token_embeddings(enc, ["a cozy mystery", ""])
    assert toks[0].shape == (3, 384) and toks[1].shape == (0, 384)  # [CLS]/[SEP] dropped
    assert np.allclose(np.linalg.norm(toks[0], axis=1), 1.0, atol=1e-5)
    ref = ["The user would enjoy this cozy mystery for its clever plot."]
    assert bertscore(ref, ref, enc).f1 == pytest.approx(1.0, abs=1e-5)
    close = bertscore(["The user will like this mystery for the clever plot."], ref, enc).f1
    far = bertscore(["Great kitchen knife, sharp and sturdy."], ref, enc).f1
    assert 1.0 > close > far > 0.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    return load_causal_lm(LMConfig(name=str(save_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny"))))


def test_lm_score_uniform_model_hand_worked(tiny: tuple, tmp_path: Path) -> None:
    import torch

    lm, tok = load_causal_lm(LMConfig(name=str(save_tiny_lm(tmp_path / "u"))))
    with torch.no_grad():
        lm.lm_head.weight.zero_()  # all logits 0: every token has probability 1/V
    v = lm.config.vocab_size
    vals = lm_log_likelihoods(["good book", "x"], ["The user likes it.", "Short."], lm, tok)
    assert vals == pytest.approx([-math.log(v)] * 2, abs=1e-5)
    assert lm_score(["good book"], ["The user likes it."], lm, tok) == pytest.approx(-math.log(v), abs=1e-5)


def test_lm_score_batching_and_reference_positions(tiny: tuple) -> None:
    import torch

    lm, tok = tiny
    cands = ["The user would buy this book.", "cozy", "a b c d e f g h"]
    refs = ["They love cozy mysteries and strong characters.", "fast pacing", "twist endings"]
    batched = lm_log_likelihoods(cands, refs, lm, tok, batch_size=3)
    single = lm_log_likelihoods(cands, refs, lm, tok, batch_size=1)
    assert batched == pytest.approx(single, abs=1e-5)  # right padding never leaks into the score
    # by hand for pair 0: sum of log p(ref token t | everything before) over the reference tokens / their count
    ctx, ref = pair_token_ids(tok, cands[0], refs[0])
    ids = torch.tensor([ctx + ref])
    with torch.no_grad():
        logp = torch.log_softmax(lm(input_ids=ids).logits[0].float(), -1)
    manual = sum(float(logp[len(ctx) + j - 1, t]) for j, t in enumerate(ref)) / len(ref)
    assert batched[0] == pytest.approx(manual, abs=1e-5)


def test_score_explanations_switches_and_table(tiny: tuple) -> None:
    preds = ["The user would enjoy the cat book.", "Nice."]
    refs = ["The user would enjoy the cat book because it is fun.", "The user likes dogs."]
    s = score_explanations(preds, refs, bertscore=False, lm_score=False, specificity=False)
    assert isinstance(s, ExplanationScores) and s.n == 2
    assert s.bertscore_f1 is None and s.lm_score is None and s.specificity is None
    assert s.rouge_l == pytest.approx(rouge_l(preds, refs)) and s.avg_words == pytest.approx(4.0)
    full = score_explanations(preds, refs, lm=tiny)
    assert full.lm_score is not None and full.lm_score < 0 and 0 < full.bertscore_f1 < 1
    assert full.specificity == pytest.approx(1.0)  # each prediction is closest to its own reference
    md = markdown_table([("a", s), ("b", full)])
    assert "BERTScore-MiniLM" in md and "LM-score" in md and md.count("\n") == 3
    assert "LM-score" not in markdown_table([("a", s)])
