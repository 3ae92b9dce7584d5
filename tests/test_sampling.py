"""Sampled-subgraph stage-1 training (``train.graph=sampled``): the sampler, its propagation and gradients, lazy
Adam, chunked full-graph inference, and the training loop on planted data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from beatrec.data.graphs import genre_block_graph
from beatrec.tokenizer.graph import adjacency_csr, index_dtype, to_torch
from beatrec.tokenizer.lazy_adam import LazyAdam
from beatrec.tokenizer.lightgcn import LightGCN
from beatrec.tokenizer.sampling import NeighborSampler, layer_blocks
from beatrec.tokenizer.train import eval_subset


def small_graph(seed: int = 0) -> tuple[sp.csr_matrix, int, int]:
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 40
    return adjacency_csr(rng.integers(0, n_users, 400), rng.integers(0, n_items, 400), n_users, n_items), \
        n_users, n_items


def test_large_fanouts_reproduce_full_propagation_at_the_seeds() -> None:
    adj, nu, ni = small_graph()
    gcn = LightGCN(nu, ni, 8, n_layers=3)
    zu, zi = gcn(to_torch(adj))
    seeds = np.array([3, 7, 11, nu + 5, nu + 1])
    g = NeighborSampler(adj, (1000, 1000, 1000)).sample(seeds, np.random.default_rng(0))
    su, si = gcn(g)
    assert torch.allclose(su, zu[[3, 7, 11]], atol=1e-6) and torch.allclose(si, zi[[5, 1]], atol=1e-6)


def test_small_fanouts_are_capped_and_unbiased() -> None:
    adj, nu, ni = small_graph()
    gcn = LightGCN(nu, ni, 8, n_layers=2)
    zu, zi = gcn(to_torch(adj))
    seeds = np.array([0, 2, nu + 3])
    sampler = NeighborSampler(adj, (2, 2))
    rng = np.random.default_rng(1)
    g = sampler.sample(seeds, rng)
    assert list(g.nodes[:3]) == list(seeds) and len(np.unique(g.nodes)) == len(g.nodes)  # seeds first, unique
    assert np.diff(g.indptr).max() <= 2  # at most fanout neighbours per expanded node
    assert g.hop_sizes[0] == 3 and list(g.hop_sizes) == sorted(g.hop_sizes)
    assert (sampler._local == -1).all()  # scratch reset (no state leaks into the next batch)
    mean = torch.zeros(3, 8)
    n = 4000
    for _ in range(n):
        su, si = gcn(sampler.sample(seeds, rng))
        mean += torch.cat([su, si]).detach() / n
    full = torch.cat([zu[[0, 2]], zi[[3]]]).detach()
    assert (mean - full).abs().max() < 0.1 * full.abs().mean() + 2e-3


@pytest.mark.parametrize("user_ids", [True, False])
def test_sampled_gradient_is_sparse_and_matches_a_dense_computation(user_ids: bool) -> None:
    adj, nu, ni = small_graph()
    g = NeighborSampler(adj, (3, 3, 3)).sample(np.array([1, 4, nu + 2]), np.random.default_rng(0))
    gcn = LightGCN(nu, ni, 4, user_ids=user_ids)
    gcn.table.sparse = True
    zu, zi = gcn(g)
    (zu.pow(2).sum() + zi.sum()).backward()
    sparse_grad = gcn.embedding.grad
    rows = sparse_grad._indices()[0]
    assert sparse_grad.is_sparse and bool((rows[1:] > rows[:-1]).all())  # sorted, unique: no coalescing needed
    assert set(rows.tolist()) == set(g.nodes.tolist())
    # the same computation with dense matrices
    e = gcn.embedding.detach().clone().requires_grad_(True)
    h0 = (e if user_ids else e * gcn.keep)[torch.from_numpy(g.sorted_nodes)]
    acc, h = h0[torch.from_numpy(g.rank[: g.n_seeds])], h0
    for block, _ in layer_blocks(g):
        h = block.to_dense() @ h
        acc = acc + h[: g.n_seeds]
    z = acc / 4
    (z[:2].pow(2).sum() + z[2:].sum()).backward()
    assert torch.allclose(sparse_grad.to_dense(), e.grad, atol=1e-6)
    assert torch.allclose(torch.cat([zu, zi]), z, atol=1e-6)
    if not user_ids:
        assert not e.grad[:nu].any()  # held users' rows get no gradient
    # a dense table gets the same gradient, dense
    gcn.zero_grad(set_to_none=True)
    gcn.table.sparse = False
    zu, zi = gcn(g)
    (zu.pow(2).sum() + zi.sum()).backward()
    assert not gcn.embedding.grad.is_sparse and torch.allclose(gcn.embedding.grad, e.grad, atol=1e-6)


def test_lazy_adam_equals_sparse_adam() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(50, 4))
    b = torch.nn.Parameter(a.detach().clone())
    oa, ob = LazyAdam([a], lr=0.01, chunk=3), torch.optim.SparseAdam([b], lr=0.01)
    for _ in range(5):
        idx = torch.randint(0, 50, (20,))  # repeated rows: the gradient is coalesced first
        for p, o in ((a, oa), (b, ob)):
            o.zero_grad()
            torch.nn.functional.embedding(idx, p, sparse=True).pow(2).sum().backward()
            o.step()
    assert torch.allclose(a, b, atol=1e-6) and not torch.equal(a, torch.zeros_like(a))
    with pytest.raises(RuntimeError, match="sparse gradients only"):
        a.grad = torch.ones_like(a)
        oa.step()
    with pytest.raises(ValueError, match="invalid LazyAdam"):
        LazyAdam([a], lr=-1)


def test_chunked_inference_equals_the_differentiable_propagation() -> None:
    adj, nu, ni = small_graph()
    for user_ids in (True, False):
        gcn = LightGCN(nu, ni, 10, user_ids=user_ids)
        zu, zi = gcn(to_torch(adj))
        cu, ci = gcn.propagate_all(to_torch(adj), chunk=3)
        assert torch.allclose(zu, cu, atol=1e-6) and torch.allclose(zi, ci, atol=1e-6)


def test_eval_subset_keeps_a_seeded_sample_of_users() -> None:
    g = genre_block_graph(500, seed=0)
    held = sp.csr_matrix((np.ones((g.split == 1).sum()), (g.users[g.split == 1], g.items[g.split == 1])),
                         shape=(g.n_users, g.n_items))
    sub = eval_subset(held, 50, seed=0)
    kept = np.flatnonzero(np.diff(sub.indptr) > 0)
    assert len(kept) == 50 and (sub[kept] != held[kept]).nnz == 0
    assert (eval_subset(held, 0, 0) != held).nnz == 0 and (eval_subset(held, 10**6, 0) != held).nnz == 0
    assert np.array_equal(kept, np.flatnonzero(np.diff(eval_subset(held, 50, seed=0).indptr) > 0))


def test_genre_block_graph_holds_out_one_validation_and_one_test_edge_per_user() -> None:
    g = genre_block_graph(300, per_user=12, seed=3)
    assert np.array_equal(np.bincount(g.users[g.split == 1], minlength=300), np.ones(300))
    assert np.array_equal(np.bincount(g.users[g.split == 2], minlength=300), np.ones(300))
    assert len(np.unique(g.users * g.n_items + g.items)) == len(g.users)


def test_csr_indices_are_32_bit_when_they_fit() -> None:
    # torch's CPU CSR @ dense runs MKL's kernel for 32-bit indices only (64-bit: a slower, copying path)
    assert index_dtype(10, 10) is np.int32 and index_dtype(2**31 - 1, 2**31 - 1) is np.int32
    assert index_dtype(2**31, 5) is np.int64 and index_dtype(5, 2**31) is np.int64
    adj, nu, ni = small_graph()
    t = to_torch(adj)
    assert t.crow_indices().dtype == torch.int32 and t.col_indices().dtype == torch.int32
    x = torch.randn(nu + ni, 3)
    assert torch.allclose(t @ x, torch.from_numpy(adj.astype(np.float64) @ x.double().numpy()).float(), atol=1e-5)


@pytest.mark.parametrize("env, expected", [({}, "1"), ({"THP_MEM_ALLOC_ENABLE": "0"}, "0")])
def test_importing_beatrec_turns_on_torchs_huge_page_allocator_unless_set(env: dict, expected: str) -> None:
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", "import beatrec, os; print(os.environ['THP_MEM_ALLOC_ENABLE'])"],
                         env={**base, **env}, capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected
