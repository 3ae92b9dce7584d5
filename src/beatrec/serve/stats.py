"""Service counters for ``GET /metrics``: requests by route and status, request latency, batch sizes, cache
outcomes, batcher restarts and gauges. Kept in a per-app ``prometheus_client`` registry (so two apps in one process
never share counters) and rendered by it in the Prometheus text format; :meth:`ServeStats.snapshot` gives the same
numbers as JSON, with latency percentiles over a sliding window, for the load benchmark.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PCounter
from prometheus_client import Gauge as PGauge
from prometheus_client import Histogram as PHistogram

QUANTILES = (0.5, 0.95, 0.99)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServeStats:
    """Thread-safe counters (the event loop and the model worker both write).

    Args:
        window: latencies and batch sizes kept for :meth:`snapshot`'s percentiles and maxima.
    """

    def __init__(self, window: int = 2048) -> None:
        self._lock = threading.Lock()
        self.window = window
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, deque[float]] = {}
        self.batches: deque[int] = deque(maxlen=window)  # sizes of the recent batches
        self.batch_count = 0
        self.batch_pairs = 0
        self.cache: Counter[str] = Counter()  # hit / miss / coalesced
        self.restarts = 0  # batcher consumer restarts after a crash
        self.gauges: dict[str, Callable[[], float]] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = PCounter("beatrec_requests", "HTTP requests by route and status.", ["route", "status"],
                                  registry=r)
        self._latency = PHistogram("beatrec_request_seconds", "Request latency by route.", ["route"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self._batch = PHistogram("beatrec_generate_batch_size", "Pairs per batched generation (continuous "
                                 "batching: pairs admitted together).", buckets=BATCH_BUCKETS, registry=r)
        self._cache = PCounter("beatrec_explain_cache", "Explanation lookups by outcome (hit, miss, coalesced).",
                               ["outcome"], registry=r)
        self._restarts = PCounter("beatrec_batcher_restarts", "Batcher consumer restarts after a crash.", registry=r)

    def gauge(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        """A gauge read when scraped (queue depth, new users, uptime)."""
        self.gauges[name] = fn
        PGauge(f"beatrec_{name}", doc, registry=self.registry).set_function(fn)

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency.setdefault(route, deque(maxlen=self.window)).append(seconds)
        self._requests.labels(route, str(status)).inc()
        self._latency.labels(route).observe(seconds)

    def batch(self, size: int) -> None:
        with self._lock:
            self.batch_count += 1
            self.batch_pairs += size
            self.batches.append(size)
        self._batch.observe(size)

    def cached(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.cache[kind] += n
        self._cache.labels(kind).inc(n)

    def restarted(self) -> None:
        with self._lock:
            self.restarts += 1
        self._restarts.inc()

    def percentiles(self, route: str) -> dict[float, float]:
        with self._lock:
            xs = list(self.latency.get(route, ()))
        return {q: float(np.quantile(xs, q)) for q in QUANTILES} if xs else {}

    def snapshot(self) -> dict:
        """Everything as plain numbers (the load benchmark reads this)."""
        with self._lock:
            routes = sorted({r for r, _ in self.requests})
            sizes = list(self.batches)
            out = {"requests": {f"{r} {s}": n for (r, s), n in sorted(self.requests.items())},
                   "batches": self.batch_count, "batched_pairs": self.batch_pairs,
                   "batch_size_mean": self.batch_pairs / self.batch_count if self.batch_count else 0.0,
                   "batch_size_max": max(sizes, default=0), "cache": dict(self.cache),
                   "batcher_restarts": self.restarts}
        out["latency_s"] = {r: {f"p{round(q * 100)}": v for q, v in self.percentiles(r).items()} for r in routes}
        out["gauges"] = {k: float(f()) for k, f in self.gauges.items()}
        return out

    def prometheus(self) -> str:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry).decode()
