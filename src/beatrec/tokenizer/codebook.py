"""Vector-quantisation codebook with k-means initialisation, dead-code restarts and usage statistics.

BEAT eq. 4 assigns each (projected) vector x to its nearest codeword c_k, k = argmin_k ‖x − c_k‖²; eq. 5 trains
the codebook and the encoder with ‖sg[x] − c‖² + η‖x − sg[c]‖² (η = 0.5) and passes gradients straight through
(q = x + sg[c − x]).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from beatrec.distributed import any_process_, broadcast_from_main_


class VQOutput(NamedTuple):
    quantized: torch.Tensor  # (..., d) straight-through quantised vectors
    codes: torch.Tensor  # (...,) long codeword indices
    loss: torch.Tensor  # () codebook + η·commitment loss


def kmeans(x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None,
           max_points: int = 65536) -> torch.Tensor:
    """Plain Lloyd k-means with k-means++-style seeding. x (n, d) -> centroids (k, d).

    At most ``max_points`` rows of x are used (a seeded random sample beyond that). When n < k, the missing
    centroids are copies of random points plus small noise.
    """
    x = x.detach().float()
    if x.shape[0] > max_points:  # a seeded sample of a very large first batch (k-means cost and memory ∝ n·k)
        x = x[torch.randperm(x.shape[0], generator=generator)[:max_points]]
    x = torch.unique(x, dim=0)  # duplicates (a user twice in a batch) carry no information
    n = x.shape[0]
    if n == 0:
        raise ValueError("kmeans needs at least one point")
    if n <= k:
        extra = x[torch.randint(n, (k - n,), generator=generator)]
        extra = extra + 0.01 * x.std() * torch.randn(extra.shape, generator=generator)
        return torch.cat([x, extra])[:k].clone()
    # k-means++ seeding (greedy on squared distances).
    first = torch.randint(n, (1,), generator=generator)
    cent = [x[first]]
    d2 = ((x - cent[0]) ** 2).sum(-1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.ones_like(d2)
        idx = torch.multinomial(probs, 1, generator=generator)
        cent.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(-1))
    c = torch.cat(cent)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        moved = counts > 0
        c[moved] = sums[moved] / counts[moved, None]
    return c


class VQCodebook(nn.Module):
    """A codebook of ``n_codes`` vectors of width ``dim``.

    Args:
        n_codes: codebook size K (512 in BEAT).
        dim: codeword width.
        eta: weight η of the commitment term (eq. 5).
        dead_after: a code unused for this many consecutive training calls is re-seeded from the batch.

    Under DDP (several processes), the k-means initialisation and the restarts are rank 0's and broadcast, and a
    code counts as used when any process's batch used it, so every process holds the same codebook.
    """

    def __init__(self, n_codes: int, dim: int, eta: float = 0.5, dead_after: int = 50) -> None:
        super().__init__()
        self.n_codes, self.dim, self.eta, self.dead_after = n_codes, dim, eta, dead_after
        self.weight = nn.Parameter(torch.randn(n_codes, dim) * 0.1)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("idle_steps", torch.zeros(n_codes, dtype=torch.long))
        self.restarts = 0  # dead codes re-seeded during training steps
        self.revived = 0  # unused codes re-seeded at evaluations (:meth:`reseed`)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means initialisation from the first batch (rank 0's, under DDP). x: (n, dim)."""
        self.weight.data.copy_(kmeans(x.reshape(-1, self.dim), self.n_codes, generator=generator))
        broadcast_from_main_(self.weight.data)
        self.initialized.fill_(True)

    def nearest(self, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Eq. 4: index of the nearest codeword, argmin_k ‖c_k‖² − 2·x·c_k (‖x‖² is the same for every k), one
        fused matmul ``chunk`` vectors at a time: the (chunk, K) block stays small enough (16 MiB at K=512) to be
        reused by the allocator instead of page-faulted afresh, and a sampled step's 10⁶ vectors never need their
        whole (n, K) distance matrix. x (..., dim) -> (...,) long."""
        flat = x.reshape(-1, self.dim)  # (n, d)
        w = self.weight.detach()
        w2 = w.pow(2).sum(1)  # (K,)
        out = torch.empty(flat.shape[0], dtype=torch.long)
        for s in range(0, flat.shape[0], chunk):
            torch.argmin(torch.addmm(w2, flat[s : s + chunk], w.t(), alpha=-2), 1, out=out[s : s + chunk])  # (c,)
        return out.reshape(x.shape[:-1])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codeword vectors. codes (...,) -> (..., dim)."""
        return self.weight[codes]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VQOutput:
        """Quantise x (..., dim) with straight-through gradients and the eq. 5 loss."""
        if self.training and not bool(self.initialized):
            self.init_from(x, generator)
        codes = self.nearest(x.detach())  # (...,)
        c = self.weight[codes]  # (..., d)
        loss = (x.detach() - c).pow(2).sum(-1).mean() + self.eta * (x - c.detach()).pow(2).sum(-1).mean()
        quantized = x + (c - x).detach()  # straight-through estimator
        if self.training:
            self._restart_dead(x.detach().reshape(-1, self.dim), codes.reshape(-1), generator)
        return VQOutput(quantized, codes, loss)

    @torch.no_grad()
    def _restart_dead(self, x: torch.Tensor, codes: torch.Tensor, generator: torch.Generator | None) -> None:
        used = torch.zeros(self.n_codes, dtype=torch.bool)
        used[codes] = True
        any_process_(used)  # under DDP: used by any process's batch, so every process counts the same idle steps
        self.idle_steps[used] = 0
        self.idle_steps[~used] += 1
        dead = (self.idle_steps >= self.dead_after).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        # Re-seed dead codes at batch points far from their codeword (poorly served), plus a little noise.
        d_own = (x - self.weight[codes]).pow(2).sum(1)
        probs = d_own / d_own.sum().clamp_min(1e-12) if d_own.sum() > 0 else torch.ones_like(d_own)
        pick = torch.multinomial(probs, dead.numel(), replacement=True, generator=generator)
        noise = 0.01 * x.std() * torch.randn((dead.numel(), self.dim), generator=generator)
        self.weight.data[dead] = x[pick] + noise
        broadcast_from_main_(self.weight.data)  # rank 0's restarts win: every process holds the same codebook
        self.idle_steps[dead] = 0
        self.restarts += int(dead.numel())


    @torch.no_grad()
    def reseed(self, codes: torch.Tensor, vectors: torch.Tensor) -> None:
        """Set codewords ``codes`` (m,) to ``vectors`` (m, dim) and reset their idle count. Under DDP the whole
        codebook is broadcast from rank 0, also when m = 0 (a collective every process must reach)."""
        self.weight.data[codes] = vectors
        broadcast_from_main_(self.weight.data)
        self.idle_steps[codes] = 0
        self.revived += int(codes.numel())


class CodebookUsage(NamedTuple):
    used_fraction: float  # share of the K codes assigned to at least one vector
    perplexity: float  # exp(entropy of the code distribution); K when uniform, 1 when collapsed
    n_used: int


def codebook_usage(codes: torch.Tensor, n_codes: int) -> CodebookUsage:
    """Usage statistics of a set of assignments (any shape) into a codebook of size n_codes."""
    counts = torch.bincount(codes.reshape(-1).long(), minlength=n_codes).double()
    p = counts / counts.sum().clamp_min(1)
    ent = -(p[p > 0] * p[p > 0].log()).sum()
    n_used = int((counts > 0).sum())
    return CodebookUsage(n_used / n_codes, float(ent.exp()), n_used)
