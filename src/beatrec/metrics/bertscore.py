"""BERTScore-MiniLM: BERTScore F1 (Zhang et al., 2020) with the packaged all-MiniLM-L6-v2.

Each text goes through the frozen MiniLM transformer of a :class:`~beatrec.text_encoder.TextEncoder`; the
contextual token vectors of its **last layer** (special tokens [CLS]/[SEP] and padding excluded) are
L2-normalised. Greedy matching, as in BERTScore: precision = mean over candidate tokens of the best cosine
with any reference token; recall = the same from the reference side; F1 = 2PR / (P + R). Scores are the
mean over pairs (per-pair values: :func:`bertscore_pairs`). Not baseline-rescaled and no idf weighting, so values are not comparable with published
BERTScore numbers (those use roberta-large, layer 17): label them "BERTScore-MiniLM".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from beatrec.text_encoder import TextEncoder


class BertScore(NamedTuple):
    precision: float
    recall: float
    f1: float


def token_embeddings(encoder: TextEncoder, texts: list[str], batch_size: int = 64) -> list[np.ndarray]:
    """Last-layer token vectors of each text: a list of (n_i, d) float32 arrays with unit-norm rows.

    Special tokens and padding are dropped; a text with no token gives a (0, d) array.
    """
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[np.ndarray] = [np.zeros((0, encoder.dim), np.float32)] * len(texts)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = encoder.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                    max_length=encoder.cfg.max_length, return_tensors="pt",
                                    return_special_tokens_mask=True)
            special = enc.pop("special_tokens_mask").bool()  # (b, L)
            keep = enc["attention_mask"].bool() & ~special  # (b, L)
            hidden = encoder.model(**enc.to(encoder.device)).last_hidden_state.float().cpu()  # (b, L, d)
            hidden = torch.nn.functional.normalize(hidden, dim=-1)
            for b, i in enumerate(idx):
                out[i] = hidden[b, keep[b]].numpy()
    return out


def greedy_match(cand: np.ndarray, ref: np.ndarray) -> BertScore:
    """BERTScore of one pair from unit-norm token vectors cand (n, d) and ref (m, d); zeros if either is empty."""
    if len(cand) == 0 or len(ref) == 0:
        return BertScore(0.0, 0.0, 0.0)
    sim = cand @ ref.T  # (n, m) cosine
    p, r = float(sim.max(1).mean()), float(sim.max(0).mean())
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return BertScore(p, r, f)


class BertScorePairs(NamedTuple):
    """Per-pair scores, each (P,)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray


def bertscore_pairs_from_embeddings(cands: list[np.ndarray], refs: list[np.ndarray]) -> BertScorePairs:
    """Precision, recall and F1 of each row-aligned pair of token-vector arrays, (P,) each."""
    if len(cands) != len(refs) or not cands:
        raise ValueError(f"need equally many candidates and references (> 0), got {len(cands)}/{len(refs)}")
    scores = np.array([greedy_match(c, r) for c, r in zip(cands, refs, strict=True)])  # (P, 3)
    return BertScorePairs(*scores.T)


def bertscore_from_embeddings(cands: list[np.ndarray], refs: list[np.ndarray]) -> BertScore:
    """Mean precision, recall and F1 over row-aligned pairs of token-vector arrays."""
    scores = np.stack(bertscore_pairs_from_embeddings(cands, refs), axis=1)  # (P, 3), reduced as before
    return BertScore(*(float(x) for x in scores.mean(0)))


def bertscore_pairs(candidates: list[str], references: list[str], encoder: TextEncoder) -> BertScorePairs:
    """Per-pair BERTScore-MiniLM (P,) of row-aligned candidate and reference texts."""
    return bertscore_pairs_from_embeddings(token_embeddings(encoder, candidates), token_embeddings(encoder, references))


def bertscore(candidates: list[str], references: list[str], encoder: TextEncoder) -> BertScore:
    """BERTScore-MiniLM of row-aligned candidate and reference texts (see the module docstring)."""
    return bertscore_from_embeddings(token_embeddings(encoder, candidates), token_embeddings(encoder, references))
