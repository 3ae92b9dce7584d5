"""Sampled L-hop subgraphs for mini-batch LightGCN training (``train.graph=sampled``).

A full-graph step multiplies by Â (BEAT eq. 2) over every node; its cost grows with the graph. A sampled step
computes z (eq. 3) only for the batch's *seed* nodes: hop 1 draws up to ``fanouts[0]`` neighbours of every
seed, hop 2 up to ``fanouts[1]`` neighbours of every node first reached at hop 1, and so on (GraphSAGE-style
node-wise sampling, as PyG's ``NeighborLoader``). A node with at most ``fanout`` neighbours keeps all of them
with the full graph's weights Â_vu; a node with more gets ``fanout`` draws with replacement, each weighted
Â_vu · deg(v) / fanout, so that (Ŝh)_v is an unbiased estimate of (Âh)_v under the full graph's normalisation.

Nodes are numbered locally hop by hop (seeds first), so the rows of the nodes reached within h hops are a
prefix of the sampled matrix; layer l of an L-layer propagation only needs the rows within L−l hops of the
seeds, a row prefix of the same CSR matrix (:func:`propagate_sampled`).

PyG's ``NeighborLoader`` needs ``pyg-lib`` or ``torch-sparse``, which have no wheels for the pinned torch, and
DGL's last PyPI wheel targets torch 2.1 (see ``benchmarks/tokenizer_scale.md``): hence this small sampler.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from beatrec.tokenizer.graph import csr_tensor


class SampledGraph(NamedTuple):
    """An L-hop sampled neighbourhood of ``n_seeds`` seed nodes.

    nodes: (n_L,) global node ids (users 0..U-1, items U..U+I-1); the first n_seeds are the seeds.
    hop_sizes: (L+1,) number of local nodes within 0, 1, ..., L hops (a prefix of ``nodes`` each).
    indptr, indices, data: CSR rows of the nodes within L−1 hops (n_{L-1} rows, n_L columns, local ids).
    rank: (n_L,) position of each local node in ``sorted(nodes)``: E⁰ rows are read in sorted order (one
        contiguous-ish gather, and a sparse gradient whose indices are already sorted and unique).
    """

    nodes: np.ndarray
    hop_sizes: tuple[int, ...]
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    rank: np.ndarray

    @property
    def sorted_nodes(self) -> np.ndarray:
        """(n_L,) ``nodes`` in increasing order: the E⁰ rows :func:`propagate_sampled` expects, in this order."""
        out = np.empty_like(self.nodes)
        out[self.rank] = self.nodes
        return out

    @property
    def n_seeds(self) -> int:
        return self.hop_sizes[0]

    @property
    def n_edges(self) -> int:
        return int(len(self.indices))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s+n) for each (s, n), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offs = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return offs + np.arange(total, dtype=np.int64)


class NeighborSampler:
    """Node-wise neighbour sampling on the symmetric-normalised graph Â.

    Args:
        adj: (N, N) CSR Â (float32), e.g. from :func:`beatrec.tokenizer.graph.adjacency_csr`.
        fanouts: per-hop caps, hop 1 (the seeds' neighbours) first; ``len(fanouts)`` = LightGCN depth L.
    """

    def __init__(self, adj: sp.csr_matrix, fanouts: tuple[int, ...]) -> None:
        if not fanouts or min(fanouts) < 1:
            raise ValueError(f"fanouts must be >= 1 per hop, got {fanouts!r}")
        self.indptr = adj.indptr.astype(np.int64, copy=False)  # int64 copies of an int32 graph: index arithmetic
        self.indices = adj.indices.astype(np.int64, copy=False)
        self.data = adj.data.astype(np.float32, copy=False)
        self.deg = np.diff(self.indptr)
        self.fanouts = tuple(int(f) for f in fanouts)
        self._local = np.full(adj.shape[0], -1, np.int64)  # scratch: global -> local id (reset after each call)

    def sample(self, seeds: np.ndarray, rng: np.random.Generator) -> SampledGraph:
        """Sample the L-hop neighbourhood of ``seeds`` (unique global node ids, kept in the given order)."""
        nodes = [np.asarray(seeds, np.int64)]
        if len(np.unique(nodes[0])) != len(nodes[0]):
            raise ValueError("seeds must be unique")
        self._local[nodes[0]] = np.arange(len(nodes[0]))
        n = len(nodes[0])
        sizes = [n]
        rows_, cols_, vals_ = [], [], []
        frontier, first = nodes[0], 0  # nodes first reached at the previous hop; local ids first..first+len-1
        try:
            for fan in self.fanouts:
                deg = self.deg[frontier]
                local_rows = np.arange(first, first + len(frontier), dtype=np.int64)
                small = deg <= fan
                # all neighbours of low-degree nodes, with their Â weights
                e_small = _ranges(self.indptr[frontier[small]], deg[small])
                r_small = np.repeat(local_rows[small], deg[small])
                w_small = self.data[e_small]
                # fanout draws with replacement for the others, reweighted by deg / fanout
                big = np.flatnonzero(~small)
                draws = (rng.random((len(big), fan)) * deg[big, None]).astype(np.int64)
                e_big = (self.indptr[frontier[big], None] + draws).ravel()
                r_big = np.repeat(local_rows[big], fan)
                w_big = self.data[e_big] * np.repeat(deg[big] / fan, fan).astype(np.float32)
                nbr = self.indices[np.concatenate([e_small, e_big])]
                new = np.unique(nbr[self._local[nbr] < 0])
                if len(new):
                    new = rng.permutation(new)  # no id-order bias in the local numbering
                self._local[new] = np.arange(n, n + len(new))
                rows_.append(np.concatenate([r_small, r_big]))
                cols_.append(self._local[nbr])
                vals_.append(np.concatenate([w_small, w_big]))
                nodes.append(new)
                first, frontier = n, new
                n += len(new)
                sizes.append(n)
        finally:
            for part in nodes:
                self._local[part] = -1
        rows, cols, vals = np.concatenate(rows_), np.concatenate(cols_), np.concatenate(vals_)
        m = sp.csr_matrix((vals, (rows, cols)), shape=(sizes[-2], sizes[-1]))  # rows in local order
        allnodes = np.concatenate(nodes)
        rank = np.empty(len(allnodes), np.int64)
        rank[np.argsort(allnodes, kind="stable")] = np.arange(len(allnodes))
        return SampledGraph(allnodes, tuple(sizes), m.indptr.astype(np.int64), m.indices.astype(np.int64),
                            m.data.astype(np.float32), rank)


def layer_blocks(g: SampledGraph) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(B_l, B_lᵀ) for l = 1..L: B_l maps the nodes within L−l+1 hops to those within L−l hops; the columns
    of B_1 are in sorted-node order (``g.rank``), the order E⁰'s rows are read in."""
    L = len(g.hop_sizes) - 1
    out = []
    for layer in range(1, L + 1):
        r, c = g.hop_sizes[L - layer], g.hop_sizes[L - layer + 1]
        nnz = int(g.indptr[r])
        ip, ix, dv = g.indptr[: r + 1], g.indices[:nnz], g.data[:nnz]
        if layer == 1:
            ix = g.rank[ix]
        t = sp.csr_matrix((dv, ix, ip), shape=(r, c)).T.tocsr()
        out.append((csr_tensor(ip, ix, dv, (r, c)),
                    csr_tensor(t.indptr, t.indices, t.data, (c, r))))
    return out


class _SampledPropagation(torch.autograd.Function):
    """z = 1/(L+1) Σ_l (Ŝˡ E⁰)_seeds with the E⁰ rows gathered inside (eq. 3 on a sampled neighbourhood).

    The map is linear in E⁰, so nothing but the constant blocks is kept for the backward pass, which runs the
    layers in reverse (dH_{l-1} = B_lᵀ dH_l, plus the seeds' share of dz on their rows) into one (n_L, d)
    gradient over the gathered rows: as a sparse COO tensor over ``rows`` (sorted, unique: already coalesced)
    when ``sparse``, else dense. No intermediate slice or gather gradients of the table's size are allocated.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, rows: torch.Tensor, seed_rank: torch.Tensor,  # type: ignore[override]
                blocks: list[tuple[torch.Tensor, torch.Tensor]], keep: torch.Tensor | None,
                sparse: bool) -> torch.Tensor:
        h = weight.index_select(0, rows)  # (n_L, d) E⁰ rows in sorted-node order
        if keep is not None:
            h.mul_(keep)
        acc = h.index_select(0, seed_rank)  # (s, d) layer 0 of the seeds
        for block, _ in blocks:
            h = block @ h  # (n_{L-l}, d); the previous layer's buffer is freed here
            acc.add_(h[: acc.shape[0]])
        ctx.rows, ctx.seed_rank, ctx.blocks, ctx.keep, ctx.sparse = rows, seed_rank, blocks, keep, sparse
        ctx.shape = weight.shape
        return acc.div_(len(blocks) + 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None, None]:  # type: ignore[override]
        g = grad.contiguous() / (len(ctx.blocks) + 1)  # (s, d) dz/dacc
        s = g.shape[0]
        gh = g  # the last layer's rows are exactly the seeds
        for i, (_, block_t) in enumerate(reversed(ctx.blocks)):
            gh = block_t @ gh  # (n_{L-l+1}, d)
            if i < len(ctx.blocks) - 1:
                gh[:s] += g  # the seeds' rows of an inner layer are summed into z
        gh.index_add_(0, ctx.seed_rank, g)  # layer 0: the seeds' rows sit at their sorted positions
        if ctx.keep is not None:
            gh.mul_(ctx.keep)
        if ctx.sparse:
            out = torch.sparse_coo_tensor(ctx.rows[None], gh, ctx.shape, is_coalesced=True)
        else:
            out = torch.zeros(ctx.shape, dtype=gh.dtype).index_add_(0, ctx.rows, gh)
        return out, None, None, None, None, None


def propagate_sampled(weight: torch.Tensor, g: SampledGraph, sparse: bool,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3 on a sampled neighbourhood: z = 1/(L+1) Σ_l (Ŝˡ E⁰) restricted to the seeds.

    Args:
        weight: (N, d) the whole E⁰ table (only the rows of ``g.nodes`` are read).
        sparse: give ``weight`` a sparse gradient over those rows (``nn.Embedding(sparse=True)``), else a dense one.
        keep: (N, 1) optional 0/1 row mask (rows held at zero: inductive users).
    Returns:
        (n_seeds, d) propagated vectors of the seeds.
    """
    rows = torch.from_numpy(g.sorted_nodes)
    k = None if keep is None else keep.index_select(0, rows)  # (n_L, 1)
    return _SampledPropagation.apply(weight, rows, torch.from_numpy(g.rank[: g.n_seeds]), layer_blocks(g), k, sparse)
