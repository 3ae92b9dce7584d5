"""ROUGE-L: sentence-level LCS F1 (β = 1), averaged over pairs.

The variant: for each (candidate, reference) pair, on the same lower-cased word/punctuation tokens as BLEU
(:func:`beatrec.metrics.text.tokenize`), with L = |LCS(candidate, reference)|,
P = L / |candidate|, R = L / |reference| and F1 = 2PR / (P + R) (0 when L = 0); the score is the mean F1
over pairs. This is the formula of the "rougeL" (not "rougeLsum") of Google's ``rouge-score`` package with β = 1
and no stemming, the variant XRec and PETER report as ROUGE-L F, but *not* its tokens: rouge-score drops every
non-alphanumeric character, while here punctuation marks are tokens (shared with BLEU), so a period both texts
end with counts as a match and scores are not interchangeable with rouge-score's.
"""

from __future__ import annotations

from typing import NamedTuple

from beatrec.metrics.text import tokenize


class RougeL(NamedTuple):
    precision: float
    recall: float
    f1: float


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(|a|·|b|) dynamic programme)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l_pair(candidate: str, reference: str) -> RougeL:
    """Sentence-level ROUGE-L precision, recall and F1 of one pair."""
    c, r = tokenize(candidate), tokenize(reference)
    n = lcs_length(c, r)
    if n == 0:
        return RougeL(0.0, 0.0, 0.0)
    p, rec = n / len(c), n / len(r)
    return RougeL(p, rec, 2 * p * rec / (p + rec))


def rouge_l(candidates: list[str], references: list[str]) -> float:
    """Mean sentence-level ROUGE-L F1 over row-aligned pairs."""
    if len(candidates) != len(references) or not candidates:
        raise ValueError(f"need equally many candidates and references (> 0), got {len(candidates)}/{len(references)}")
    return sum(rouge_l_pair(c, r).f1 for c, r in zip(candidates, references, strict=True)) / len(candidates)
