"""The FastAPI app of ``beatrec serve``: the routes (:mod:`beatrec.serve.routes`) over a
:class:`~beatrec.serve.service.Service`, with limits on every request and errors as JSON.

Limits: a request body over ``max_body_bytes`` is refused with 413 before it is read in full (:class:`BodyLimit`);
list lengths are bounded in the schemas and by ``max_pairs`` / ``max_items`` (413); model calls and explain pairs
beyond their queues get 429 with ``Retry-After``; a request unanswered after ``request_timeout_s`` gets 504; on
shutdown, queued work has ``drain_s`` to finish and the rest is answered 503.

Errors are JSON ``{"detail": ...}``: 400 malformed JSON, 401 missing or wrong API key, 404 unknown user or item,
413 too large, 422 wrong types or values, 429 queue full (or the new-user table), 503 shutting down, 504 timed
out, 500 an internal failure -- with a reference to the server log, never the exception's text.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beatrec.errors import BeatrecError
from beatrec.serve.batcher import ModelFailure, QueueFull, ShuttingDown
from beatrec.serve.engine import Engine, UnknownEntity
from beatrec.serve.routes import STATIC, public, v1
from beatrec.serve.service import Busy, Service

log = logging.getLogger("beatrec.serve")


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, from its Content-Length before anything is read, or as
    soon as a streamed body passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self.too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self.message())
            return msg

        await self.app(scope, limited, send)

    def message(self) -> str:
        return f"request body over {self.max_bytes} bytes (serve max_body_bytes)"

    async def too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": self.message()}, status_code=413)(scope, receive, send)


def create_app(engine: Engine, api_key: str | None = None) -> FastAPI:
    """The app for one loaded run. ``api_key``: when given, every ``/v1`` route needs header ``X-API-Key``."""
    svc = Service(engine, api_key)
    cfg = svc.cfg

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        await svc.start()
        yield
        await svc.stop()

    # FastAPIOffline: the /docs (Swagger UI) and /redoc pages with their assets served locally, no CDN
    app = FastAPIOffline(title="beatrec serve", version=engine.version, lifespan=lifespan,
                         description="BEAT recommendations with explanations from behavior tokens.")
    app.state.service = svc
    app.include_router(public)
    app.include_router(v1)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    add_error_handlers(app, cfg.retry_after_s)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)

    @app.middleware("http")
    async def bounded_and_counted(request: Request, call_next):  # noqa: ANN001, ANN202
        """A deadline on every request (504 after ``request_timeout_s``), and its status and latency counted."""
        t = time.perf_counter()
        try:
            async with asyncio.timeout(cfg.request_timeout_s):
                response = await call_next(request)
        except TimeoutError:
            response = JSONResponse({"detail": f"no answer within {cfg.request_timeout_s:g} s (serve "
                                               "request_timeout_s); queued work for it is dropped"}, status_code=504)
        except Exception:  # counted as a 500; the app's handler answers
            svc.stats.request(_route(request), 500, time.perf_counter() - t)
            raise
        svc.stats.request(_route(request), response.status_code, time.perf_counter() - t)
        return response

    return app


def add_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    """The exceptions of the engine, batcher and service as HTTP statuses with JSON bodies."""

    def answer(status: int, headers: dict | None = None):  # noqa: ANN202
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

        return handler

    retry = {"Retry-After": str(retry_after_s)}
    for exc_type, status, headers in ((UnknownEntity, 404, None), (OverflowError, 429, None),
                                      (QueueFull, 429, retry), (Busy, 429, retry), (ShuttingDown, 503, None),
                                      (TimeoutError, 504, None), (BeatrecError, 422, None),
                                      (ModelFailure, 500, None)):
        app.add_exception_handler(exc_type, answer(status, headers))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            return JSONResponse({"detail": f"malformed JSON: {errs[0].get('ctx', {}).get('error', errs[0]['msg'])}"},
                                status_code=400)
        msg = "; ".join(f"{'.'.join(str(x) for x in e['loc'] if x != 'body')}: {e['msg']}" for e in errs)
        return JSONResponse({"detail": msg, "errors": _plain(errs)}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error (reference {ref} in the server log)"}, status_code=500)


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _plain(errs: list[dict]) -> list[dict]:
    """Validation errors without the non-JSON parts (exception objects in ``ctx``)."""
    return [{"type": e.get("type"), "loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg")} for e in errs]
