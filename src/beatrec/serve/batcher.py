"""Gather concurrent explain requests into batched ``generate`` calls, and answer repeats from an LRU cache.

Every pair a request needs is looked up in the cache (keyed by user tokens, item tokens, title and model
version); a pair already being generated is shared (coalesced); the rest go into one bounded queue. A single
consumer takes the first waiting pair, waits up to ``wait_ms`` for more (up to ``max_batch``), and runs one
``generate`` call on the model worker thread, so the event loop (``/health``) stays responsive. A request
whose pairs would overflow the queue is refused whole (:class:`QueueFull`, answered 429) before anything is
queued; a request cancelled while it waits leaves the shared work running for the others and the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor

from cachetools import LRUCache

from beatrec.serve.stats import ServeStats


class QueueFull(Exception):
    """More pairs waiting than the queue holds."""


class ExplainBatcher:
    """Batches pair explanations.

    Args:
        generate: ``pairs -> texts`` (runs on ``executor``: the model worker).
        executor: the single model worker.
        max_batch, wait_ms, queue_size, cache_size: see :class:`beatrec.serve.config.ServeConfig`.
        stats: counters (batch sizes, cache outcomes).
    """

    def __init__(self, generate: Callable[[list[dict]], list[str]], executor: Executor, max_batch: int,
                 wait_ms: float, queue_size: int, cache_size: int, stats: ServeStats) -> None:
        self.generate = generate
        self.executor = executor
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.queue_size = queue_size
        self.cache: LRUCache | None = LRUCache(cache_size) if cache_size else None
        self.stats = stats
        self.queue: asyncio.Queue | None = None
        self.inflight: dict[Hashable, asyncio.Future] = {}
        self.task: asyncio.Task | None = None
        self.busy_since: float | None = None

    def depth(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._consume(), name="beatrec-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def explain(self, items: list[tuple[Hashable, dict]]) -> list[tuple[str, bool]]:
        """Explanations of ``(key, pair)`` items, each with whether it came from the cache.

        Raises:
            QueueFull: the new pairs do not fit in the queue (nothing was queued).
        """
        assert self.queue is not None, "start() the batcher first"
        loop = asyncio.get_running_loop()
        slots: list[tuple[str, str | asyncio.Future]] = []  # ("hit", text) | ("wait", future)
        pending: dict[Hashable, asyncio.Future] = {}
        new: list[tuple[Hashable, dict, asyncio.Future]] = []
        outcome = {"hit": 0, "coalesced": 0, "miss": 0}
        for key, pair in items:
            if self.cache is not None and key in self.cache:
                slots.append(("hit", self.cache[key]))
                outcome["hit"] += 1
            elif key in self.inflight or key in pending:
                slots.append(("wait", self.inflight.get(key) or pending[key]))
                outcome["coalesced"] += 1
            else:
                fut = loop.create_future()
                pending[key] = fut
                new.append((key, pair, fut))
                slots.append(("wait", fut))
                outcome["miss"] += 1
        if self.queue.qsize() + len(new) > self.queue_size:
            raise QueueFull(f"{self.queue.qsize()} pairs are waiting and this request adds {len(new)}; the queue "
                            f"holds {self.queue_size} (retry shortly)")
        for key, pair, fut in new:
            self.inflight[key] = fut
            self.queue.put_nowait((key, pair, fut))
        for kind, n in outcome.items():
            self.stats.cached(kind, n)
        out: list[tuple[str, bool]] = []
        for kind, v in slots:
            out.append((v, True) if kind == "hit" else (await asyncio.shield(v), False))  # type: ignore[arg-type]
        return out

    async def _consume(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            pairs = [p for _, p, _ in batch]
            self.busy_since = time.monotonic()
            try:
                texts = await loop.run_in_executor(self.executor, self.generate, pairs)
            except Exception as e:  # the model failed: every waiter gets the error, the loop keeps serving
                for key, _, fut in batch:
                    self.inflight.pop(key, None)
                    if not fut.done():
                        fut.set_exception(e)
                continue
            finally:
                self.busy_since = None
            self.stats.batch(len(batch))
            for (key, _, fut), text in zip(batch, texts, strict=True):
                if self.cache is not None:
                    self.cache[key] = text
                self.inflight.pop(key, None)
                if not fut.done():
                    fut.set_result(text)
