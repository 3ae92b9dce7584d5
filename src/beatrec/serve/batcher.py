"""Gather concurrent explain requests into batched generation, and answer repeats from an LRU cache.

Every pair a request needs is looked up in the cache (keyed by user tokens, item tokens, title and model
version); a pair already being generated is shared (coalesced); the rest go into one bounded queue. A single
consumer feeds the model worker thread, so the event loop (``/health``) stays responsive, in one of two ways:

- **continuous** (``stream`` given, :class:`StreamHooks`): pairs join the running decode between decode steps
  (:mod:`beatrec.align.stream`); each executor call admits what is waiting (up to ``max_batch`` pairs decoding)
  and runs one step, so a new request never waits for a batch to finish and other model calls (recommend,
  profile) run between steps. When nothing is decoding, the first pair waits up to ``wait_ms`` for company.
- **window**: the consumer takes the first waiting pair, waits up to ``wait_ms`` for more (up to ``max_batch``),
  and runs one ``generate`` call over them.

A request whose pairs would overflow the queue is refused whole (:class:`QueueFull`, answered 429) before anything
is queued; a request cancelled while it waits leaves the shared work running for the others and the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import NamedTuple

from cachetools import LRUCache

from beatrec.serve.stats import ServeStats


class QueueFull(Exception):
    """More pairs waiting than the queue holds."""


class StreamHooks(NamedTuple):
    """The model side of continuous batching (all called on the model worker thread)."""

    step: Callable[[list[tuple[Hashable, dict]]], list[tuple[Hashable, str]]]  # admit new pairs, one step -> ended
    reset: Callable[[], None]  # drop every live decode (after a failure)


class ExplainBatcher:
    """Batches pair explanations.

    Args:
        generate: ``pairs -> texts`` (runs on ``executor``: the model worker).
        executor: the single model worker.
        max_batch, wait_ms, queue_size, cache_size: see :class:`beatrec.serve.config.ServeConfig`.
        stats: counters (batch sizes -- with ``stream``, the pairs admitted together --, cache outcomes).
        stream: continuous batching (module docstring); None: the window batcher over ``generate``.
    """

    def __init__(self, generate: Callable[[list[dict]], list[str]], executor: Executor, max_batch: int,
                 wait_ms: float, queue_size: int, cache_size: int, stats: ServeStats,
                 stream: StreamHooks | None = None) -> None:
        self.generate = generate
        self.stream = stream
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
        consume = self._consume if self.stream is None else self._consume_stream
        self.task = asyncio.create_task(consume(), name="beatrec-batcher")

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

    async def _gather(self, batch: list, limit: int) -> list:
        """Add waiting pairs to ``batch`` (which holds the first one) for up to ``wait_ms``, at most ``limit``."""
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while len(batch) < limit:
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
        return batch

    def _finish(self, key: Hashable, fut: asyncio.Future, text: str) -> None:
        if self.cache is not None:
            self.cache[key] = text
        self.inflight.pop(key, None)
        if not fut.done():
            fut.set_result(text)

    async def _consume_stream(self) -> None:
        """Continuous batching: admit what waits, run one decode step, answer the pairs that ended; repeat."""
        assert self.queue is not None and self.stream is not None
        loop = asyncio.get_running_loop()
        decoding: dict[Hashable, asyncio.Future] = {}
        while True:
            new: list = []
            if not decoding:  # idle: wait for a pair, then briefly for company
                new = await self._gather([await self.queue.get()], self.max_batch)
            while len(decoding) + len(new) < self.max_batch:
                try:
                    new.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            decoding.update({key: fut for key, _, fut in new})
            self.busy_since = self.busy_since or time.monotonic()
            try:
                ended = await loop.run_in_executor(self.executor, self.stream.step, [(k, p) for k, p, _ in new])
            except Exception as e:  # the model failed: every pair decoding gets the error, the loop keeps serving
                for key, fut in decoding.items():
                    self.inflight.pop(key, None)
                    if not fut.done():
                        fut.set_exception(e)
                decoding.clear()
                self.busy_since = None
                await loop.run_in_executor(self.executor, self.stream.reset)
                continue
            if new:
                self.stats.batch(len(new))
            for key, text in ended:
                self._finish(key, decoding.pop(key), text)
            if not decoding:
                self.busy_since = None

    async def _consume(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather([await self.queue.get()], self.max_batch)
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
                self._finish(key, fut, text)
