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
        max_items: most items one ``POST /v1/users`` may give (more: 413).
        max_calls: model calls other than explanations (recommend, profile, attention, fold-in, tokens) waiting for
            the model worker; more: 429 with ``Retry-After``.
        max_body_bytes: largest request body (more: 413, refused before it is read in full).
        request_timeout_s: a request still unanswered after this long gets 504; queued pairs older than this are
            dropped, not generated (their requester has its answer).
        drain_s: on shutdown, how long queued and decoding pairs may still finish; the rest are answered 503.
        retry_after_s: the ``Retry-After`` of a 429.
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
    max_items: int = 1000
    max_calls: int = 64
    max_body_bytes: int = 65536
    request_timeout_s: float = 300.0
    drain_s: float = 30.0
    retry_after_s: int = 2
    threads: int = 0
    semantic: bool = False
    top_terms: int = 6

    def validate(self) -> None:
        for name in ("max_batch", "queue_size", "max_pairs", "max_k", "max_new_users", "top_terms", "max_items",
                     "max_calls", "retry_after_s"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.max_body_bytes >= 1024, f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        check(self.request_timeout_s > 0, f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        check(self.drain_s >= 0, f"drain_s must be >= 0, got {self.drain_s}")
        # a request larger than the queue could never be queued: it would get "retry shortly" forever
        check(self.max_pairs <= self.queue_size,
              f"max_pairs ({self.max_pairs}) must be <= queue_size ({self.queue_size}): such a request never fits")
        check(self.max_k <= self.queue_size,
              f"max_k ({self.max_k}) must be <= queue_size ({self.queue_size}): recommend with explain=true queues "
              "k pairs, which would never fit")
        check(self.batching in BATCHING, f"batching must be one of {BATCHING}, got {self.batching!r}")
        check(self.wait_ms >= 0, f"wait_ms must be >= 0, got {self.wait_ms}")
        check(self.cache_size >= 0, f"cache_size must be >= 0, got {self.cache_size}")
        check(self.threads >= 0, f"threads must be >= 0, got {self.threads}")
