"""What the routes of ``beatrec serve`` share: the engine, the model worker, the explain batcher, the counters, and
bounded admission to the worker.

Every model call runs on one worker thread (torch already uses the cores), so the event loop keeps answering
``/health`` and ``/metrics`` while the LM works. Calls other than explanations (recommend, profile, attention,
fold-in, user lists) are admitted while fewer than ``max_calls`` wait for the worker; beyond that they get
:class:`Busy` (429 with ``Retry-After``), as explanations beyond ``queue_size`` pairs do.

Engine access from the event loop: the loop only reads (id checks, titles, token codes and their meanings from the
vocabulary report loaded at start, cache keys); the worker's
only mutation at run time, a cold-start fold-in, appends to the token table by swapping in a new tensor and then
publishes the new id, so a read on the loop sees either the old state or the complete new one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from fastapi import Request

from beatrec.serve.batcher import ExplainBatcher, StreamHooks
from beatrec.serve.config import ServeConfig
from beatrec.serve.engine import Engine
from beatrec.serve.stats import ServeStats

T = TypeVar("T")


class Busy(Exception):
    """Too many model calls waiting (answered 429 with ``Retry-After``)."""


class Service:
    """One loaded run being served.

    Args:
        engine: the loaded run.
        api_key: when given, every ``/v1`` route needs header ``X-API-Key``.
    """

    def __init__(self, engine: Engine, api_key: str | None = None) -> None:
        self.engine = engine
        self.cfg: ServeConfig = engine.cfg
        self.api_key = api_key.encode() if api_key is not None else None
        self.stats = ServeStats()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beatrec-model")
        stream = StreamHooks(engine.stream_step, engine.stream_reset) if engine.batching == "continuous" else None
        c = self.cfg
        self.batcher = ExplainBatcher(engine.explain, self.worker, c.max_batch, c.wait_ms, c.queue_size, c.cache_size,
                                      self.stats, stream, deadline_s=c.request_timeout_s)
        self.calls = 0  # model calls admitted and not yet finished (explanations aside)
        self.stats.gauge("queue_depth", "Pairs waiting for generation.", self.batcher.depth)
        self.stats.gauge("model_calls_waiting", "Model calls (not explanations) admitted and unfinished.",
                         lambda: self.calls)
        self.stats.gauge("new_users", "Cold-start users folded in since start.", lambda: len(engine.new_users))
        self.stats.gauge("uptime_seconds", "Seconds since the run was loaded.", lambda: time.time() - engine.started)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the model worker, if fewer than ``max_calls`` calls wait for it.

        Raises:
            Busy: the worker has ``max_calls`` calls waiting.
        """
        if self.calls >= self.cfg.max_calls:
            raise Busy(f"{self.calls} model calls are waiting (serve max_calls); retry shortly")
        self.calls += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.worker, partial(fn, *args))
        finally:
            self.calls -= 1

    def key_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the API key (always, without one): a constant-time comparison of bytes (the header's
        raw bytes against the key's UTF-8), so any header value, however malformed, is just a wrong key."""
        import secrets

        if self.api_key is None:
            return True
        if given is None:
            return False
        try:
            raw = given.encode("latin-1")  # the header's bytes (ASGI servers decode headers as latin-1)
        except UnicodeEncodeError:
            raw = given.encode("utf-8", "surrogateescape")
        return secrets.compare_digest(raw, self.api_key)

    def status(self) -> tuple[str, str | None]:
        """("ok", None) or ("degraded", why)."""
        if not self.batcher.healthy():
            return "degraded", "the explain batcher is not running"
        return "ok", None

    async def start(self) -> None:
        """Load the vocabulary report on the worker (token lookups then only read it, on the loop) and start the
        batcher."""
        await asyncio.get_running_loop().run_in_executor(self.worker, self.engine.report)
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop(self.cfg.drain_s)
        self.worker.shutdown(wait=False, cancel_futures=True)


def get_service(request: Request) -> Service:
    """The app's :class:`Service` (a dependency: tests override it with a fake)."""
    return request.app.state.service
