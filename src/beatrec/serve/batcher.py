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

Failures stay with the pair that caused them: when a batch (or a decode step) fails, each of its pairs is generated
alone, and only a pair that fails alone gets the error. The consumer is supervised: if it crashes it is restarted
(counted in ``/metrics``), and :meth:`ExplainBatcher.healthy` says whether it is running. A pair older than
``deadline_s`` when its turn comes is dropped, not generated (its request has timed out). A request whose pairs
would overflow the queue is refused whole (:class:`QueueFull`, answered 429) before anything is queued; a request
cancelled while it waits leaves the shared work running for the others and the cache. :meth:`stop` lets queued
and decoding pairs finish for up to ``drain_s`` and answers the rest with :class:`ShuttingDown`. When the queue goes
idle, freed heap memory is given back to the system (:func:`beatrec.serve.memory.release_memory`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import NamedTuple

from cachetools import LRUCache

from beatrec.serve.memory import release_memory
from beatrec.serve.stats import ServeStats

log = logging.getLogger("beatrec.serve")


class QueueFull(Exception):
    """More pairs waiting than the queue holds."""


class ShuttingDown(Exception):
    """The server stopped before the pair's turn came."""


class ModelFailure(Exception):
    """Generating a pair failed (answered 500); the message names a reference to the server log, not the error."""


def model_failure(pair: dict, e: BaseException) -> ModelFailure:
    """Log ``e`` with a fresh reference; -> the exception the pair's waiters get."""
    import uuid

    ref = uuid.uuid4().hex[:12]
    log.error("generating pair (user %s, item %s) failed, reference %s", pair.get("uid"), pair.get("iid"), ref,
              exc_info=e)
    return ModelFailure(f"generating the explanation failed (reference {ref} in the server log)")


class StreamHooks(NamedTuple):
    """The model side of continuous batching (all called on the model worker thread)."""

    step: Callable[[list[tuple[Hashable, dict]]], list[tuple[Hashable, str]]]  # admit new pairs, one step -> ended
    reset: Callable[[], None]  # drop every live decode (after a failure)


class Queued(NamedTuple):
    key: Hashable
    pair: dict
    fut: asyncio.Future
    since: float  # loop time it was queued


class ExplainBatcher:
    """Batches pair explanations.

    Args:
        generate: ``pairs -> texts`` (runs on ``executor``: the model worker).
        executor: the single model worker.
        max_batch, wait_ms, queue_size, cache_size: see :class:`beatrec.serve.config.ServeConfig`.
        stats: counters (batch sizes -- with ``stream``, the pairs admitted together --, cache outcomes, restarts).
        stream: continuous batching (module docstring); None: the window batcher over ``generate``.
        deadline_s: a queued pair older than this is dropped (``request_timeout_s``).
    """

    def __init__(self, generate: Callable[[list[dict]], list[str]], executor: Executor, max_batch: int,
                 wait_ms: float, queue_size: int, cache_size: int, stats: ServeStats,
                 stream: StreamHooks | None = None, deadline_s: float = float("inf")) -> None:
        self.generate = generate
        self.stream = stream
        self.executor = executor
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.queue_size = queue_size
        self.deadline_s = deadline_s
        self.cache: LRUCache | None = LRUCache(cache_size) if cache_size else None
        self.stats = stats
        self.queue: asyncio.Queue[Queued] | None = None
        self.inflight: dict[Hashable, asyncio.Future] = {}
        self.decoding: dict[Hashable, Queued] = {}  # continuous batching: pairs in the running decode
        self.taken: dict[Hashable, Queued] = {}  # pairs out of the queue and not yet answered
        self.task: asyncio.Task | None = None
        self.closing = False

    def depth(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    def running(self) -> bool:
        """The consumer task is alive (or restarting after a crash)."""
        return self.task is not None and not self.task.done()

    def healthy(self) -> bool:
        """The consumer is running and the batcher takes pairs."""
        return self.running() and not self.closing

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.closing = False
        self.task = asyncio.create_task(self._supervise(), name="beatrec-batcher")

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop taking pairs; let queued and decoding ones finish for up to ``drain_s``; answer the rest with
        :class:`ShuttingDown`."""
        self.closing = True
        loop = asyncio.get_running_loop()
        end = loop.time() + drain_s
        while self.inflight and loop.time() < end and self.running():
            await asyncio.sleep(0.05)
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        for fut in self.inflight.values():
            if not fut.done():
                fut.set_exception(ShuttingDown("the server is shutting down; the pair was not generated"))
        self.inflight.clear()
        self.decoding.clear()
        self.taken.clear()

    async def explain(self, items: list[tuple[Hashable, dict]]) -> list[tuple[str, bool]]:
        """Explanations of ``(key, pair)`` items, each with whether it came from the cache.

        Raises:
            QueueFull: the new pairs do not fit in the queue (nothing was queued).
            ShuttingDown: the server is stopping.
        """
        assert self.queue is not None, "start() the batcher first"
        if self.closing:
            raise ShuttingDown("the server is shutting down")
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
        now = loop.time()
        for key, pair, fut in new:
            self.inflight[key] = fut
            self.queue.put_nowait(Queued(key, pair, fut, now))
        for kind, n in outcome.items():
            self.stats.cached(kind, n)
        out: list[tuple[str, bool]] = []
        for kind, v in slots:
            out.append((v, True) if kind == "hit" else (await asyncio.shield(v), False))  # type: ignore[arg-type]
        return out

    # ---- the consumer -------------------------------------------------------------------------------------------
    async def _supervise(self) -> None:
        """Run the consumer; restart it after a crash (counted), failing only the pairs it held."""
        consume = self._consume if self.stream is None else self._consume_stream
        while True:
            try:
                await consume()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in the consumer itself, not a model failure (those are handled per pair)
                log.exception("explain batcher crashed; restarting it")
                self.stats.restarted()
                for q in list(self.taken.values()):  # the pairs it held are answered, not lost
                    self._fail(q, model_failure(q.pair, RuntimeError("the explain batcher crashed")))
                self.decoding.clear()
                if self.stream is not None:
                    await asyncio.get_running_loop().run_in_executor(self.executor, self.stream.reset)
                await asyncio.sleep(0.05)

    async def _take(self, first: Queued | None, limit: int) -> list[Queued]:
        """Queued pairs for the next batch: ``first`` (else none is waited for) plus up to ``limit`` in all, waiting
        up to ``wait_ms`` for company after the first; pairs past their deadline are dropped on the way."""
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        batch: list[Queued] = []
        deadline = loop.time() + self.wait_s

        def add(q: Queued) -> None:
            self._took(q)
            if loop.time() - q.since > self.deadline_s:
                self._fail(q, TimeoutError(f"dropped after {self.deadline_s:.0f} s in the queue"))
            else:
                batch.append(q)

        if first is not None:
            add(first)
        while len(batch) < limit:
            try:
                add(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if first is None or left <= 0:
                break
            try:
                add(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return batch

    def _took(self, q: Queued) -> Queued:
        """Note ``q`` as out of the queue (a crashed consumer answers the pairs it held)."""
        self.taken[q.key] = q
        return q

    def _finish(self, q: Queued, text: str) -> None:
        if self.cache is not None:
            self.cache[q.key] = text
        self.inflight.pop(q.key, None)
        self.taken.pop(q.key, None)
        if not q.fut.done():
            q.fut.set_result(text)

    def _fail(self, q: Queued, e: BaseException) -> None:
        self.inflight.pop(q.key, None)
        self.taken.pop(q.key, None)
        if not q.fut.done():
            q.fut.set_exception(e)

    async def _alone(self, batch: list[Queued]) -> None:
        """Generate each pair of a failed batch by itself: a pair that fails alone gets its error."""
        loop = asyncio.get_running_loop()
        for q in batch:
            try:
                text = (await loop.run_in_executor(self.executor, self.generate, [q.pair]))[0]
            except Exception as e:
                self._fail(q, model_failure(q.pair, e))
            else:
                self._finish(q, text)

    async def _consume_stream(self) -> None:
        """Continuous batching: admit what waits, run one decode step, answer the pairs that ended; repeat."""
        assert self.queue is not None and self.stream is not None
        loop = asyncio.get_running_loop()
        while True:
            first = None if self.decoding else self._took(await self.queue.get())  # idle: wait for a pair
            new = await self._take(first, self.max_batch - len(self.decoding))
            self.decoding.update({q.key: q for q in new})
            try:
                ended = await loop.run_in_executor(self.executor, self.stream.step, [(q.key, q.pair) for q in new])
            except Exception as e:  # a pair broke the step: reset, then every pair decoding is generated alone
                log.warning("a decode step failed (%r); generating its %d pairs one by one", e, len(self.decoding))
                failed = list(self.decoding.values())
                self.decoding.clear()
                await loop.run_in_executor(self.executor, self.stream.reset)
                await self._alone(failed)
                continue
            if new:
                self.stats.batch(len(new))
            for key, text in ended:
                self._finish(self.decoding.pop(key), text)
            if not self.decoding and self.queue.empty():  # idle: give the burst's freed memory back
                loop.run_in_executor(self.executor, release_memory)

    async def _consume(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._take(self._took(await self.queue.get()), self.max_batch)
            if not batch:
                continue
            try:
                texts = await loop.run_in_executor(self.executor, self.generate, [q.pair for q in batch])
            except Exception as e:  # the batch failed: its pairs one by one, so only a failing pair fails
                if len(batch) == 1:
                    self._fail(batch[0], model_failure(batch[0].pair, e))
                else:
                    await self._alone(batch)
                continue
            self.stats.batch(len(batch))
            for q, text in zip(batch, texts, strict=True):
                self._finish(q, text)
            if self.queue.empty():  # idle: give the burst's freed memory back
                loop.run_in_executor(self.executor, release_memory)
