"""Service counters for ``GET /metrics``: requests by route and status, latency percentiles over a sliding
window, batch sizes, cache hits. Rendered in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable

import numpy as np

QUANTILES = (0.5, 0.95, 0.99)


class ServeStats:
    """Thread-safe counters (the event loop and the model worker both write).

    Args:
        window: latencies kept per route for the percentiles.
    """

    def __init__(self, window: int = 2048) -> None:
        self._lock = threading.Lock()
        self.window = window
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, deque[float]] = {}
        self.batches: list[int] = []  # sizes of the batched generate calls (bounded below)
        self.batch_count = 0
        self.batch_pairs = 0
        self.cache = Counter()  # hit / miss / coalesced
        self.gauges: dict[str, Callable[[], float]] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency.setdefault(route, deque(maxlen=self.window)).append(seconds)

    def batch(self, size: int) -> None:
        with self._lock:
            self.batch_count += 1
            self.batch_pairs += size
            self.batches.append(size)
            del self.batches[: -self.window]

    def cached(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.cache[kind] += n

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
                   "batch_size_max": max(sizes, default=0), "cache": dict(self.cache)}
        out["latency_s"] = {r: {f"p{round(q * 100)}": v for q, v in self.percentiles(r).items()} for r in routes}
        out["gauges"] = {k: float(f()) for k, f in self.gauges.items()}
        return out

    def prometheus(self) -> str:
        """The counters in Prometheus text format."""
        lines = ["# HELP beatrec_requests_total HTTP requests by route and status.",
                 "# TYPE beatrec_requests_total counter"]
        with self._lock:
            reqs = sorted(self.requests.items())
            count, pairs, cache = self.batch_count, self.batch_pairs, dict(self.cache)
            sizes = list(self.batches)
        lines += [f'beatrec_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in reqs]
        lines += ["# HELP beatrec_request_latency_seconds Request latency over the last requests per route.",
                  "# TYPE beatrec_request_latency_seconds summary"]
        for r in sorted({r for (r, _), _ in reqs}):
            for q, v in self.percentiles(r).items():
                lines.append(f'beatrec_request_latency_seconds{{route="{r}",quantile="{q}"}} {v:.6f}')
        lines += ["# HELP beatrec_generate_batches_total Batched generate calls.",
                  "# TYPE beatrec_generate_batches_total counter", f"beatrec_generate_batches_total {count}",
                  "# HELP beatrec_generate_pairs_total Pairs explained by batched generate calls.",
                  "# TYPE beatrec_generate_pairs_total counter", f"beatrec_generate_pairs_total {pairs}",
                  "# HELP beatrec_generate_batch_size_max Largest batch in the recent window.",
                  "# TYPE beatrec_generate_batch_size_max gauge", f"beatrec_generate_batch_size_max {max(sizes, default=0)}",
                  "# HELP beatrec_explain_cache_total Explanation lookups by outcome (hit, miss, coalesced).",
                  "# TYPE beatrec_explain_cache_total counter"]
        lines += [f'beatrec_explain_cache_total{{outcome="{k}"}} {cache.get(k, 0)}' for k in ("hit", "miss", "coalesced")]
        for name, f in sorted(self.gauges.items()):
            lines += [f"# TYPE beatrec_{name} gauge", f"beatrec_{name} {float(f())}"]
        return "\n".join(lines) + "\n"
