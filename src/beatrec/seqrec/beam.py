"""Trie-constrained beam search over code sequences, batched over users, and the two-stream merge.

Decoding (EAGER §3.5 inference; TIGER; LLM-BS): at every step the next-code distribution is restricted to the
codes that continue a valid item code (the prefix :class:`~beatrec.seqrec.trie.Trie`) and renormalised over
them, log p(c_t | c_<t) = log_softmax(masked logits). The score of a complete code is the sum of its step
log-probabilities, so within one stream the scores are log-probabilities of a distribution over valid
items, comparable across streams. Ties are broken by a stable sort (lower beam, then lower token first),
so the search is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from beatrec.seqrec.trie import Trie

LogitsFn = Callable[[torch.Tensor], torch.Tensor]  # prefix tokens (B, b, t) -> next-token logits (B, b, V)
MERGES = ("likelihood", "entropy", "joint")  # joint: needs the model (Eager._joint_merge)


class BeamResult(NamedTuple):
    values: torch.Tensor  # (B, beam) payloads (item ids), best first; -1 in empty slots
    scores: torch.Tensor  # (B, beam) log-probabilities of the decoded sequences; -inf in empty slots
    tokens: torch.Tensor  # (B, beam, depth) the decoded code sequences


@torch.no_grad()
def constrained_beam_search(logits_fn: LogitsFn, trie: Trie, batch_size: int, beam_size: int) -> BeamResult:
    """Beam search in which every hypothesis stays a prefix of a sequence stored in ``trie``.

    Args:
        logits_fn: maps the current prefixes (B, b, t) (b = 1 at t = 0) to logits (B, b, V), V = trie.vocab_size.
        trie: the valid sequences; they must all have the same length (trie.max_len steps are decoded).
        batch_size: B.
        beam_size: hypotheses kept per row. Fewer valid sequences than ``beam_size`` leave empty slots.
    """
    if trie.min_len != trie.max_len:
        raise ValueError("constrained_beam_search decodes fixed-length codes; the trie holds several lengths")
    b, v, dev = batch_size, trie.vocab_size, trie.children.device  # the search runs where the trie lives
    nodes = torch.zeros(b, 1, dtype=torch.long, device=dev)
    scores = torch.zeros(b, 1, device=dev)
    tokens = torch.zeros(b, 1, 0, dtype=torch.long, device=dev)
    for _ in range(trie.max_len):
        logits = logits_fn(tokens)  # (B, b_t, V)
        if logits.shape != (b, nodes.shape[1], v):
            raise ValueError(f"logits_fn returned {tuple(logits.shape)}, expected {(b, nodes.shape[1], v)}")
        allowed = trie.allowed(nodes)  # (B, b_t, V)
        masked = logits.float().masked_fill(~allowed, float("-inf"))
        logp = torch.log_softmax(masked, dim=-1)
        logp = torch.where(allowed, logp, torch.full_like(logp, float("-inf")))  # dead rows: all -inf, not NaN
        cand = (scores[..., None] + logp).reshape(b, -1)  # (B, b_t·V)
        top, idx = torch.sort(cand, dim=1, descending=True, stable=True)
        top, idx = top[:, :beam_size], idx[:, :beam_size]  # (B, beam)
        src, tok = idx // v, idx % v
        nodes = trie.advance(torch.gather(nodes, 1, src), tok)
        nodes = torch.where(torch.isinf(top), torch.full_like(nodes, -1), nodes)
        prev = torch.gather(tokens, 1, src[..., None].expand(-1, -1, tokens.shape[2]))
        tokens = torch.cat([prev, tok[..., None]], dim=2)
        scores = top
    return BeamResult(trie.values_at(nodes), scores, tokens)


def stream_entropy(result: BeamResult) -> torch.Tensor:
    """(B,) entropy of each row's beam distribution (scores renormalised over the beam's valid slots)."""
    p = torch.softmax(result.scores, dim=1)  # -inf slots get 0
    p = torch.nan_to_num(p, nan=0.0)
    return -(p * torch.log(p.clamp_min(1e-30))).sum(1)


def merge_streams(results: list[BeamResult], k: int, how: str = "likelihood") -> torch.Tensor:
    """Merge per-stream ranked lists into one top-k list per row -> (B, k) item ids (-1 in empty slots).

    ``how``:
      - ``"likelihood"``: rank every candidate item by its probability exp(score) in the stream that proposed
        it; an item proposed by several streams keeps its highest probability (each stream's scores are
        normalised log-probabilities over valid items, so they are comparable).
      - ``"entropy"``: per row, the stream whose beam distribution has the lowest entropy (the most confident
        one) wins: its items come first, by probability, then the other streams' items, by probability.
    Ties go to the earlier stream in ``results``, then to the earlier beam slot: deterministic.
    """
    if how not in MERGES or how == "joint":
        raise ValueError(f"merge must be one of {MERGES[:2]} (joint rescoring needs the decoders), got {how!r}")
    items = torch.cat([r.values for r in results], dim=1)  # (B, M)
    prob = torch.cat([r.scores.exp() for r in results], dim=1)  # (B, M) in [0, 1]
    if how == "entropy" and len(results) > 1:
        ent = torch.stack([stream_entropy(r) for r in results], dim=1)  # (B, S)
        winner = ent.argmin(1)  # ties -> first stream
        stream_of = torch.cat([torch.full_like(r.values, s) for s, r in enumerate(results)], dim=1)
        prob = prob + (stream_of == winner[:, None]).float()  # winner's items all rank above the others
    return rank_distinct(items, prob, k)


def rank_distinct(items: torch.Tensor, key: torch.Tensor, k: int) -> torch.Tensor:
    """items (B, M) candidates (-1 = empty), key (B, M) higher = better -> (B, k) distinct items by key.

    An item listed several times keeps its best key; ties go to the earlier column; -1 fills missing slots.
    """
    key = torch.where(items >= 0, key.float(), torch.full_like(key, float("-inf"), dtype=torch.float))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    items, key = torch.gather(items, 1, order), torch.gather(key, 1, order)
    # Drop repeats: sort by item (stable keeps the key order within an item) and blank all but the first.
    by_item = torch.sort(items, dim=1, stable=True).indices
    sorted_items = torch.gather(items, 1, by_item)
    repeat = torch.zeros_like(sorted_items, dtype=torch.bool)
    repeat[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    dup = torch.zeros_like(repeat).scatter(1, by_item, repeat)
    drop = dup | (items < 0)
    rank = torch.where(drop, torch.full_like(key, float("inf")), torch.zeros_like(key))  # kept first, in order
    order = torch.sort(rank, dim=1, stable=True).indices[:, :k]
    out = torch.gather(items, 1, order)
    out = torch.where(torch.gather(drop, 1, order), torch.full_like(out, -1), out)
    if out.shape[1] < k:
        out = torch.cat([out, out.new_full((out.shape[0], k - out.shape[1]), -1)], dim=1)
    return out
