"""Dual-source knowledge-rich item indices of LLM-BS (seed paper §3.1, eqs. 2–3) and their alternatives.

- **semantic** embedding of an item: the LM's mean last hidden state over the item's text (eq. 2), computed by
  :func:`lm_item_embeddings`;
- **behavior** embedding: the item vectors of a trained behavior encoder (SASRec, eq. 3);
- each is cut into hierarchical balanced k-means codes (:func:`beatrec.seqrec.codes.build_codes`), the first
  ``semantic_levels`` semantic levels and ``behavior_levels`` behavior levels are concatenated (default 2 + 2),
  and items that still share a code get a disambiguation level (:func:`beatrec.seqrec.codes.disambiguate`), so
  the index is conflict-free.

Alternatives for the paper's index study (its Fig. 5): ``semantic`` / ``behavior`` (one source, same total
depth), ``random`` (random codes of the same shape) and ``unit`` (one atomic token per item).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from beatrec.config import check
from beatrec.seqrec.codes import CodesConfig, ItemCodes, build_codes, disambiguate

KINDS = ("dual", "semantic", "behavior", "random", "unit")


@dataclass
class IndexConfig:
    """Item index settings.

    Attributes:
        kind: one of :data:`KINDS`.
        semantic_levels / behavior_levels: k-means levels taken from each source (``dual``); a single-source
            index uses their sum from its source.
        k: clusters per level; seed: k-means and ``random`` seed.
    """

    kind: str = "dual"
    semantic_levels: int = 2
    behavior_levels: int = 2
    k: int = 32
    seed: int = 0

    def validate(self) -> None:
        check(self.kind in KINDS, f"index.kind must be one of {KINDS}, got {self.kind!r}")
        check(self.semantic_levels >= 0 and self.behavior_levels >= 0, "index levels must be >= 0")
        check(self.semantic_levels + self.behavior_levels >= 1, "index needs at least one level")
        check(self.k >= 2, f"index.k must be >= 2, got {self.k}")


def _levels(emb: np.ndarray | torch.Tensor, levels: int, cfg: IndexConfig) -> np.ndarray:
    """The first ``levels`` k-means levels of an embedding table. -> (n, levels)."""
    codes = build_codes(emb, CodesConfig(k=cfg.k, levels=levels, seed=cfg.seed))
    return codes.codes[:, :levels]


def build_index(cfg: IndexConfig, n_items: int, semantic: np.ndarray | torch.Tensor | None = None,
                behavior: np.ndarray | torch.Tensor | None = None) -> ItemCodes:
    """Conflict-free item codes of the configured kind.

    Args:
        semantic: (n_items, d_s) LM mean hidden states (needed by ``dual`` and ``semantic``).
        behavior: (n_items, d_b) behavior-encoder item vectors (needed by ``dual`` and ``behavior``).
    Raises:
        ValueError: an embedding the kind needs is missing or has the wrong number of rows.
    """
    cfg.validate()
    depth = cfg.semantic_levels + cfg.behavior_levels
    need = {"dual": ("semantic", "behavior"), "semantic": ("semantic",), "behavior": ("behavior",)}.get(cfg.kind, ())
    given = {"semantic": semantic, "behavior": behavior}
    for name in need:
        e = given[name]
        if e is None or len(e) != n_items:
            raise ValueError(f"index.kind={cfg.kind} needs {name} embeddings of all {n_items} items")
    if cfg.kind == "unit":
        return ItemCodes(np.arange(n_items, dtype=np.int64)[:, None], (n_items,))
    if cfg.kind == "random":
        rng = np.random.default_rng(cfg.seed)
        return disambiguate(rng.integers(0, cfg.k, size=(n_items, depth)), (cfg.k,) * depth)
    if cfg.kind == "dual":
        parts = [p for p in (_levels(semantic, cfg.semantic_levels, cfg) if cfg.semantic_levels else None,
                             _levels(behavior, cfg.behavior_levels, cfg) if cfg.behavior_levels else None)
                 if p is not None]
        codes = np.concatenate(parts, axis=1)
    else:
        codes = _levels(given[cfg.kind], depth, cfg)
    return disambiguate(codes, (cfg.k,) * depth)


@torch.no_grad()
def lm_item_embeddings(lm, tok, texts: list[str], batch_size: int = 16, max_tokens: int = 64) -> torch.Tensor:  # noqa: ANN001
    """Eq. 2: the mean of the LM's last hidden states over each text's tokens (padding excluded). -> (n, d)."""
    out = []
    dev = next(lm.parameters()).device  # the vectors come back to the CPU
    side = tok.padding_side
    tok.padding_side = "right"
    try:
        for s in range(0, len(texts), batch_size):
            enc = tok(texts[s : s + batch_size], return_tensors="pt", padding=True, truncation=True,
                      max_length=max_tokens, add_special_tokens=False).to(dev)
            h = lm(**enc, output_hidden_states=True).hidden_states[-1].float()  # (B, L, d)
            m = enc["attention_mask"][..., None].float()  # (B, L, 1)
            out.append(((h * m).sum(1) / m.sum(1).clamp_min(1.0)).cpu())
    finally:
        tok.padding_side = side
    return torch.cat(out) if out else torch.zeros(0, lm.config.hidden_size)


def cached_lm_item_embeddings(lm, tok, texts: list[str], identity: str, max_tokens: int = 64,  # noqa: ANN001
                              cache: bool = True) -> torch.Tensor:
    """:func:`lm_item_embeddings` with an on-disk cache (``$BEATREC_CACHE/lm_item_emb``), keyed by
    sha256(``identity`` of the LM, ``max_tokens``, text): every run on the same items and LM (the index study
    trains several) embeds each title once. -> (n, d)."""
    import hashlib

    from beatrec.paths import cache_dir
    from beatrec.text_encoder import EmbeddingCache, slug

    dim = lm.config.hidden_size
    if not cache:
        return lm_item_embeddings(lm, tok, texts, max_tokens=max_tokens)
    tag = f"{slug(identity)}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}-L{max_tokens}"
    store = EmbeddingCache(cache_dir("lm_item_emb", tag), dim)
    prefix = f"{identity}\0{max_tokens}\0".encode()
    keys = [hashlib.sha256(prefix + t.encode("utf-8")).digest() for t in texts]
    todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in store}
    if todo:
        store.add(list(todo), lm_item_embeddings(lm, tok, list(todo.values()), max_tokens=max_tokens).numpy())
    return torch.from_numpy(np.stack([store.get(k) for k in keys])) if keys else torch.zeros(0, dim)
