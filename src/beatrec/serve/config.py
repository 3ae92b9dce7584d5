"""Typed config of ``beatrec serve`` (``--set KEY=VALUE``; stage-2 overrides go through ``--set align.KEY=VALUE``)."""

from __future__ import annotations

from dataclasses import dataclass

from beatrec.config import check

BATCHING = ("continuous", "window")


@dataclass
class ServeConfig:
    """Service limits and batching.

    Attributes:
        batching: "continuous" (default): requests join the running decode between decode steps
            (:mod:`beatrec.align.stream`; needs ``generate.decoder=fast`` on an LM it runs, no guidance or sampling,
            else the service falls back to "window" and says why in ``/health``); "window": one batched
            generation call per batch gathered within ``wait_ms``.
        max_batch: most explanation prompts decoding at once (per batched call for "window").
        wait_ms: how long the batcher waits for more requests after the first one of a batch (with "continuous":
            when nothing is decoding).
        queue_size: most pairs waiting for generation; a request that would overflow it gets 429.
        cache_size: explanations kept in the LRU cache (keyed by user tokens, item tokens, title, model).
        max_pairs: most pairs one ``/v1/explain`` request may ask for (more: 413).
        max_k: largest ``k`` of ``/v1/recommend``.
        max_new_users: cold-start users kept until restart (more: 429).
        threads: torch threads of the model worker (0 = torch's default).
        semantic: cold-start fold-in also borrows from semantic neighbours (loads the text encoder).
        top_terms: terms shown per token (from the vocabulary report).
    """

    batching: str = "continuous"
    max_batch: int = 16
    wait_ms: float = 10.0
    queue_size: int = 256
    cache_size: int = 4096
    max_pairs: int = 64
    max_k: int = 100
    max_new_users: int = 10000
    threads: int = 0
    semantic: bool = False
    top_terms: int = 6

    def validate(self) -> None:
        for name in ("max_batch", "queue_size", "max_pairs", "max_k", "max_new_users", "top_terms"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.batching in BATCHING, f"batching must be one of {BATCHING}, got {self.batching!r}")
        check(self.wait_ms >= 0, f"wait_ms must be >= 0, got {self.wait_ms}")
        check(self.cache_size >= 0, f"cache_size must be >= 0, got {self.cache_size}")
        check(self.threads >= 0, f"threads must be >= 0, got {self.threads}")
