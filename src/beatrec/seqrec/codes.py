"""Item codes by balanced hierarchical k-means (EAGER §3.2, arXiv 2406.14017), collision-free.

Level 1 clusters all item embeddings into ``k`` groups; level 2 clusters each group again into ``k`` groups,
and so on for ``levels`` levels. Every level is *balanced*: a group of n items is split into k clusters of at
most ceil(n / k) items each (capacity-constrained assignment: points go to their nearest non-full centroid,
closest points first; centroids are then re-estimated, a few rounds). Centroids are seeded with
:func:`beatrec.tokenizer.codebook.kmeans`.

Items that still share the whole k-means prefix get one more, disambiguating level: their rank (by item id)
inside the prefix group. So every item has a distinct code of the same length, and the explicit maps
item -> code (:attr:`ItemCodes.codes`) and code -> item (:meth:`ItemCodes.decode`) are bijections.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from beatrec.config import check
from beatrec.errors import RunError
from beatrec.tokenizer.codebook import codebook_usage, kmeans


@dataclass
class CodesConfig:
    """Balanced hierarchical k-means settings (shared by the behavior and the semantic codes)."""

    k: int = 128  # clusters per level
    levels: int = 1  # k-means levels; a disambiguation level is appended when prefixes collide (EAGER default:
    # 128 clusters, then the item's index in its cluster, the two-level tree of the authors' code)
    iters: int = 10  # Lloyd iterations of the centroid seeding (tokenizer.codebook.kmeans)
    rounds: int = 5  # balanced assignment / centroid re-estimation rounds per split
    balanced: bool = True  # capacity-constrained assignment (False: plain nearest-centroid)
    seed: int = 0

    def validate(self) -> None:
        check(self.k >= 2, "codes.k must be >= 2")
        check(self.levels >= 1, "codes.levels must be >= 1")
        check(self.iters >= 1 and self.rounds >= 1, "codes.iters and codes.rounds must be >= 1")


def balanced_assign(x: torch.Tensor, centroids: torch.Tensor, capacity: int) -> torch.Tensor:
    """Assign each row of x (n, d) to a centroid (k, d), at most ``capacity`` rows per centroid.

    Rounds of proposals: every unassigned point proposes to its nearest centroid that still has room; each
    centroid accepts its closest proposers up to its remaining room. -> (n,) long.
    """
    n, k = x.shape[0], centroids.shape[0]
    if capacity * k < n:
        raise ValueError(f"capacity {capacity} x {k} centroids < {n} points")
    dist = torch.cdist(x.double(), centroids.double()).numpy()  # (n, k)
    assign = np.full(n, -1, dtype=np.int64)
    room = np.full(k, capacity, dtype=np.int64)
    while (todo := np.flatnonzero(assign < 0)).size:
        d = dist[todo].copy()
        d[:, room <= 0] = np.inf
        choice = d.argmin(1)
        dbest = d[np.arange(len(todo)), choice]
        order = np.lexsort((todo, dbest, choice))  # by centroid, then distance, then point id
        ch = choice[order]
        first = np.searchsorted(ch, ch, side="left")
        rank = np.arange(len(order)) - first  # position among the proposers of the same centroid
        ok = rank < room[ch]
        assign[todo[order[ok]]] = ch[ok]
        room -= np.bincount(ch[ok], minlength=k)
    return torch.from_numpy(assign)


def _split(x: torch.Tensor, cfg: CodesConfig, gen: torch.Generator) -> torch.Tensor:
    """Cluster x (n, d) into at most cfg.k groups -> (n,) labels in 0..k-1."""
    n, k = x.shape[0], cfg.k
    if n <= k:
        return torch.arange(n)  # every item its own code
    cent = kmeans(x, k, iters=cfg.iters, generator=gen).double()
    xd = x.double()
    labels = torch.cdist(xd, cent).argmin(1)
    for _ in range(cfg.rounds if cfg.balanced else 0):
        labels = balanced_assign(xd, cent, -(-n // k))
        sums = torch.zeros_like(cent).index_add_(0, labels, xd)
        counts = torch.bincount(labels, minlength=k).double()
        cent = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], cent)
    return labels


class CodeReport(NamedTuple):
    n_items: int
    depth: int  # code length including a disambiguation level
    vocab_sizes: tuple[int, ...]
    unique_prefix_fraction: float  # distinct k-means prefixes / items, before disambiguation
    max_collision: int  # largest group of items sharing a k-means prefix
    level_used_fraction: tuple[float, ...]  # per level: codes used / vocabulary size
    level_perplexity: tuple[float, ...]  # per level: exp(entropy) of the code distribution

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._asdict().items()}


class ItemCodes:
    """A bijection between items 0..n-1 and code sequences of equal length.

    Args:
        codes: (n_items, depth) int64, row i = the code of item i; all rows distinct.
        vocab_sizes: size of each level's code alphabet (defaults to max + 1 per level).
        n_kmeans_levels: how many leading levels come from k-means (the rest disambiguate).
    """

    def __init__(self, codes: np.ndarray, vocab_sizes: tuple[int, ...] | None = None,
                 n_kmeans_levels: int | None = None) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] == 0 or codes.min() < 0:
            raise ValueError("codes must be a non-empty (n_items, depth) array of non-negative ints")
        self.codes = codes
        self.vocab_sizes = tuple(int(v) for v in (vocab_sizes or (codes.max(0) + 1)))
        if len(self.vocab_sizes) != self.depth or any(codes.max(0) >= np.asarray(self.vocab_sizes)):
            raise ValueError("vocab_sizes must give, per level, a size above every code of that level")
        self.n_kmeans_levels = self.depth if n_kmeans_levels is None else n_kmeans_levels
        self._radix = np.cumprod((1,) + self.vocab_sizes[:0:-1])[::-1].astype(np.int64)  # mixed radix
        keys = codes @ self._radix
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        if len(np.unique(keys)) != len(keys):
            raise ValueError("codes are not collision-free: two items share a code")

    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def depth(self) -> int:
        return int(self.codes.shape[1])

    def encode(self, items: np.ndarray | torch.Tensor) -> np.ndarray:
        """Item ids (...,) -> codes (..., depth)."""
        return self.codes[np.asarray(items, dtype=np.int64)]

    def decode(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """Codes (..., depth) -> item ids (...,), -1 where a row is not the code of any item."""
        c = np.asarray(codes, dtype=np.int64)
        flat = c.reshape(-1, self.depth)
        in_range = ((flat >= 0) & (flat < np.asarray(self.vocab_sizes))).all(1)
        keys = np.where(in_range, flat @ self._radix, -1)
        pos = np.clip(np.searchsorted(self._sorted, keys), 0, self.n_items - 1)
        hit = in_range & (self._sorted[pos] == keys)
        return np.where(hit, self._order[pos], -1).reshape(c.shape[:-1])

    def code_to_item(self) -> dict[tuple[int, ...], int]:
        """The explicit map code tuple -> item id."""
        return {tuple(int(v) for v in row): i for i, row in enumerate(self.codes)}

    def report(self) -> CodeReport:
        prefix = self.codes[:, : self.n_kmeans_levels]
        _, counts = np.unique(prefix, axis=0, return_counts=True)
        used, perp = [], []
        for lvl, v in enumerate(self.vocab_sizes):
            u = codebook_usage(torch.from_numpy(self.codes[:, lvl]), v)
            used.append(u.used_fraction)
            perp.append(u.perplexity)
        return CodeReport(self.n_items, self.depth, self.vocab_sizes, len(counts) / self.n_items,
                          int(counts.max()), tuple(used), tuple(perp))

    def save(self, path: str | Path, item_raw_ids: np.ndarray | None = None) -> None:
        """CSV: ``item`` (internal id), ``raw_item`` (dataset id), ``c0..c{depth-1}``; sizes in the header comment."""
        cols: dict[str, np.ndarray] = {"item": np.arange(self.n_items)}
        cols["raw_item"] = np.asarray(item_raw_ids) if item_raw_ids is not None else np.arange(self.n_items)
        for lvl in range(self.depth):
            cols[f"c{lvl}"] = self.codes[:, lvl]
        with Path(path).open("w") as f:
            f.write(f"# vocab_sizes={','.join(map(str, self.vocab_sizes))} kmeans_levels={self.n_kmeans_levels}\n")
            pd.DataFrame(cols).to_csv(f, index=False)

    @classmethod
    def load(cls, path: str | Path) -> ItemCodes:
        p = Path(path)
        if not p.is_file():
            raise RunError(f"{p}: item codes file not found")
        try:
            with p.open() as f:
                meta = dict(kv.split("=") for kv in f.readline().lstrip("# ").split())
            df = pd.read_csv(p, comment="#")
            cols = sorted((c for c in df.columns if c.startswith("c")), key=lambda c: int(c[1:]))
            return cls(df.sort_values("item")[cols].to_numpy(np.int64),
                       tuple(int(v) for v in meta["vocab_sizes"].split(",")), int(meta["kmeans_levels"]))
        except (KeyError, ValueError) as e:
            raise RunError(f"{p}: corrupt item codes file ({e})") from e


def build_codes(emb: np.ndarray | torch.Tensor, cfg: CodesConfig) -> ItemCodes:
    """Balanced hierarchical k-means codes of item embeddings (n_items, d), made collision-free."""
    cfg.validate()
    x = torch.as_tensor(np.asarray(emb, dtype=np.float32))
    n = x.shape[0]
    gen = torch.Generator().manual_seed(cfg.seed)
    codes = np.zeros((n, cfg.levels), dtype=np.int64)
    groups = [np.arange(n)]
    for lvl in range(cfg.levels):
        nxt = []
        for g in groups:
            labels = _split(x[g], cfg, gen).numpy()
            codes[g, lvl] = labels
            nxt.extend(g[labels == c] for c in np.unique(labels))
        groups = [g for g in nxt if len(g) > 1]
    return disambiguate(codes, (cfg.k,) * cfg.levels)


def disambiguate(codes: np.ndarray, vocab: tuple[int, ...]) -> ItemCodes:
    """Make (n_items, L) codes collision-free: when prefixes collide, append a level ranking the items of each
    colliding group by item id (0, 1, ...); ``vocab`` gives the alphabet size of each of the L levels."""
    n = codes.shape[0]
    vocab = list(vocab)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    levels = codes.shape[1]
    if counts.max() > 1:  # disambiguation level: rank by item id inside each prefix group
        order = np.lexsort((np.arange(n), inverse))
        first = np.searchsorted(inverse[order], inverse[order], side="left")
        suffix = np.empty(n, dtype=np.int64)
        suffix[order] = np.arange(n) - first
        codes = np.concatenate([codes, suffix[:, None]], axis=1)
        vocab.append(int(counts.max()))
    return ItemCodes(codes, tuple(vocab), levels)
