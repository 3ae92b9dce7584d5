"""Balanced hierarchical k-means codes, the prefix trie, constrained beam search and the stream merge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from beatrec.seqrec.beam import BeamResult, constrained_beam_search, merge_streams
from beatrec.seqrec.codes import CodesConfig, ItemCodes, balanced_assign, build_codes
from beatrec.seqrec.trie import Trie


def _emb(n: int = 200, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # skewed clusters: plain k-means would give very unequal sizes
    centers = rng.normal(size=(3, d)) * 5
    which = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    return (centers[which] + rng.normal(size=(n, d))).astype(np.float32)


def test_balanced_assign_respects_capacity() -> None:
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    cent = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    lab = balanced_assign(x, cent, capacity=13)
    assert (lab >= 0).all() and torch.bincount(lab, minlength=4).max() <= 13


def test_codes_balanced_collision_free_round_trip(tmp_path: Path) -> None:
    emb = _emb()
    codes = build_codes(emb, CodesConfig(k=4, levels=2))
    n = len(emb)
    # level-1 clusters hold at most ceil(200/4) = 50 items each despite the skewed data
    assert np.bincount(codes.codes[:, 0], minlength=4).max() <= 50
    assert codes.depth == 3 and codes.vocab_sizes[:2] == (4, 4)  # 2 k-means levels + a disambiguation level
    assert len({tuple(r) for r in codes.codes}) == n  # collision-free
    items = np.arange(n)
    assert (codes.decode(codes.encode(items)) == items).all()  # round trip
    assert codes.code_to_item()[tuple(codes.codes[17])] == 17
    assert codes.decode(np.array([[3, 3, codes.vocab_sizes[2]], [9, 0, 0]])).tolist() == [-1, -1]
    rep = codes.report()
    assert 0 < rep.unique_prefix_fraction <= 16 / n and rep.max_collision == codes.vocab_sizes[2]
    assert rep.level_used_fraction[:2] == (1.0, 1.0)
    codes.save(tmp_path / "c.csv")
    again = ItemCodes.load(tmp_path / "c.csv")
    assert (again.codes == codes.codes).all() and again.vocab_sizes == codes.vocab_sizes


def test_codes_are_seeded() -> None:
    emb = _emb(seed=3)
    a = build_codes(emb, CodesConfig(k=4, levels=2, seed=1)).codes
    b = build_codes(emb, CodesConfig(k=4, levels=2, seed=1)).codes
    assert (a == b).all()


def test_no_disambiguation_level_when_prefixes_are_unique() -> None:
    codes = build_codes(_emb(n=12), CodesConfig(k=4, levels=2))
    assert codes.depth == 2 and codes.report().unique_prefix_fraction == 1.0


def test_duplicate_codes_are_rejected() -> None:
    with pytest.raises(ValueError, match="collision"):
        ItemCodes(np.array([[0, 1], [0, 1]]))


def test_trie_admits_exactly_the_valid_codes() -> None:
    seqs = [(0, 1, 2), (0, 1, 0), (2, 0, 1), (1, 1, 1)]
    trie = Trie(seqs, values=[10, 11, 12, 13], vocab_size=3)
    for s, v in zip(seqs, [10, 11, 12, 13], strict=True):
        assert trie.lookup(s) == v and s in trie
    every = [(a, b, c) for a in range(3) for b in range(3) for c in range(3)]
    assert {s for s in every if s in trie} == set(seqs)
    assert (0, 1) not in trie and trie.walk((0, 1)) >= 0 and trie.walk((0, 2)) == -1
    assert trie.allowed(torch.tensor([0])).tolist() == [[True, True, True]]
    assert trie.allowed(torch.tensor([trie.walk((0,))])).tolist() == [[False, True, False]]
    assert trie.allowed(torch.tensor([-1])).tolist() == [[False, False, False]]
    assert sorted(trie.sequences()) == sorted(zip(seqs, [10, 11, 12, 13], strict=True))
    with pytest.raises(ValueError, match="duplicate"):
        Trie([(0, 1), (0, 1)])


def _random_logits_fn(v: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(64, v, generator=gen) * 3

    def fn(prefix: torch.Tensor) -> torch.Tensor:  # deterministic in the prefix
        b, nb, t = prefix.shape
        key = (prefix * torch.tensor([7, 3, 1][:t]).view(1, 1, -1)).sum(-1) + t * 11 if t else torch.zeros(b, nb)
        return table[(key.long() + torch.arange(b)[:, None] * 5) % 64]

    return fn


def test_beam_search_returns_only_valid_items() -> None:
    codes = build_codes(_emb(n=60), CodesConfig(k=4, levels=2))
    trie = Trie(codes.codes, vocab_size=max(codes.vocab_sizes))
    res = constrained_beam_search(_random_logits_fn(trie.vocab_size, 0), trie, batch_size=5, beam_size=12)
    assert res.values.shape == (5, 12) and (res.values >= 0).all()
    for row_items, row_tokens in zip(res.values, res.tokens, strict=True):
        assert len(set(row_items.tolist())) == 12  # distinct items
        assert (codes.decode(row_tokens.numpy()) == row_items.numpy()).all()  # tokens are those items' codes
    assert (res.scores[:, :-1] >= res.scores[:, 1:]).all()  # best first
    assert (res.scores <= 0).all()
    # probabilities of ALL items under the renormalised constrained distribution sum to one
    full = constrained_beam_search(_random_logits_fn(trie.vocab_size, 0), trie, batch_size=5, beam_size=200)
    assert torch.allclose(full.scores.exp().sum(1), torch.ones(5), atol=1e-5)
    assert (full.values[:, 60:] == -1).all()  # only 60 items exist: the rest are empty slots


def test_merge_is_deterministic_and_deduplicated() -> None:
    a = BeamResult(torch.tensor([[1, 2, 3]]), torch.log(torch.tensor([[0.5, 0.3, 0.1]])), torch.zeros(1, 3, 2))
    b = BeamResult(torch.tensor([[2, 4, -1]]), torch.log(torch.tensor([[0.6, 0.3, 0.0]])), torch.zeros(1, 3, 2))
    out = merge_streams([a, b], k=5)
    assert out.tolist() == [[2, 1, 4, 3, -1]]  # 0.6, 0.5, 0.3 (stream b's 4) ties 0.3 (a's 2, deduped), 0.1
    for _ in range(3):
        assert torch.equal(merge_streams([a, b], k=5), out)
    # entropy merge: b's beam (2/3, 1/3) is more peaked than a's (5/9, 3/9, 1/9), so b's list comes first
    ent = merge_streams([a, b], k=5, how="entropy")
    assert ent.tolist() == [[2, 4, 1, 3, -1]]
    assert torch.equal(merge_streams([a, b], k=5, how="entropy"), ent)
    # ties go to the first stream
    c = BeamResult(torch.tensor([[7]]), torch.log(torch.tensor([[0.5]])), torch.zeros(1, 1, 2))
    d = BeamResult(torch.tensor([[8]]), torch.log(torch.tensor([[0.5]])), torch.zeros(1, 1, 2))
    assert merge_streams([c, d], k=2).tolist() == [[7, 8]]
    assert merge_streams([d, c], k=2).tolist() == [[8, 7]]
