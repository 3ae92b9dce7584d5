"""The FastAPI app of ``beatrec serve``: typed routes over an :class:`~beatrec.serve.engine.Engine`, the
explain batcher, ``/health``, ``/metrics`` and the web page at ``/``.

Every model call runs on one worker thread (the engine is not thread-safe, and torch already uses the cores),
so the event loop keeps answering ``/health`` and ``/metrics`` while the LM generates. Errors are JSON
``{"detail": ...}``: 400 malformed JSON, 401 missing or wrong API key, 404 unknown user or item, 413 too
many pairs, 422 wrong types or values, 429 queue (or new-user table) full, 500 a model failure.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from beatrec.errors import BeatrecError
from beatrec.serve import schemas as S
from beatrec.serve.batcher import ExplainBatcher, QueueFull, StreamHooks
from beatrec.serve.engine import Engine, UnknownEntity
from beatrec.serve.stats import ServeStats

STATIC = Path(str(resources.files("beatrec.serve") / "static"))


def create_app(engine: Engine, api_key: str | None = None) -> FastAPI:
    """The app for one loaded run. ``api_key``: when given, every ``/v1`` route needs header ``X-API-Key``."""
    cfg = engine.cfg
    stats = ServeStats()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beatrec-model")
    stream = StreamHooks(engine.stream_step, engine.stream_reset) if engine.batching == "continuous" else None
    batcher = ExplainBatcher(engine.explain, worker, cfg.max_batch, cfg.wait_ms, cfg.queue_size, cfg.cache_size, stats,
                             stream)
    stats.gauges["queue_depth"] = batcher.depth
    stats.gauges["new_users"] = lambda: len(engine.new_users)
    stats.gauges["uptime_seconds"] = lambda: time.time() - engine.started

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        await batcher.start()
        yield
        await batcher.stop()
        worker.shutdown(wait=False, cancel_futures=True)

    # FastAPIOffline: the /docs (Swagger UI) and /redoc pages with their assets served locally, no CDN
    app = FastAPIOffline(title="beatrec serve", version=engine.version, lifespan=lifespan,
                         description="BEAT recommendations with explanations from behavior tokens.")
    app.state.engine, app.state.stats, app.state.batcher = engine, stats, batcher

    async def on_model(fn, *args):  # noqa: ANN001, ANN202
        """Run ``fn(*args)`` on the model worker, mapping the engine's errors to HTTP statuses."""
        try:
            return await asyncio.get_running_loop().run_in_executor(worker, partial(fn, *args))
        except UnknownEntity as e:
            raise HTTPException(404, str(e)) from None
        except OverflowError as e:
            raise HTTPException(429, str(e)) from None
        except BeatrecError as e:
            raise HTTPException(422, str(e)) from None

    def check(fn, *args):  # noqa: ANN001, ANN202
        """Cheap id checks on the event loop (no model work)."""
        try:
            return fn(*args)
        except UnknownEntity as e:
            raise HTTPException(404, str(e)) from None
        except BeatrecError as e:
            raise HTTPException(422, str(e)) from None

    @app.middleware("http")
    async def count(request: Request, call_next):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # recorded as a 500; the handler below answers
            stats.request(_route(request), 500, time.perf_counter() - t)
            raise
        stats.request(_route(request), response.status_code, time.perf_counter() - t)
        return response

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
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    def require_key(x_api_key: str | None = Header(None, description="needed when the server has an API key")) -> None:
        if api_key is not None and not (x_api_key and secrets.compare_digest(x_api_key, api_key)):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    @app.get("/health", response_model=S.Health)
    async def health() -> dict:
        return {"status": "ok", **engine.identity(), "auth": api_key is not None, "queue": batcher.depth()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(format: str = Query("prometheus", pattern="^(prometheus|json)$")):  # noqa: A002, ANN201
        if format == "json":
            return JSONResponse(stats.snapshot())
        return PlainTextResponse(stats.prometheus(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    async def explain_pairs(pairs: list[dict]) -> list[tuple[str, bool]]:
        try:
            return await batcher.explain([(engine.cache_key(p), p) for p in pairs])
        except QueueFull as e:
            raise HTTPException(429, str(e)) from None

    @v1.post("/recommend", response_model=S.RecommendResponse)
    async def recommend(req: S.RecommendRequest) -> dict:
        if req.k > cfg.max_k:
            raise HTTPException(422, f"k: at most {cfg.max_k} (serve max_k), got {req.k}")
        recs = await on_model(engine.recommend, req.user, req.k)
        items = [r._asdict() for r in recs]
        if req.explain and recs:
            pairs = [check(engine.pair, req.user, r.item, req.decoding) for r in recs]
            for it, (text, cached) in zip(items, await explain_pairs(pairs), strict=True):
                it.update(explanation=text, cached=cached)
        return {"user": req.user, "items": items, "model_version": engine.version}

    @v1.post("/explain", response_model=S.ExplainResponse)
    async def explain(req: S.ExplainRequest) -> dict:
        if len(req.pairs) > cfg.max_pairs:
            raise HTTPException(413, f"{len(req.pairs)} pairs in one request; at most {cfg.max_pairs} (serve max_pairs)")
        pairs = [check(engine.pair, p.user, p.item, req.decoding) for p in req.pairs]
        out = []
        for p, (text, cached) in zip(pairs, await explain_pairs(pairs), strict=True):
            out.append({"user": p["uid"], "item": p["iid"], "title": p["title"], "explanation": text, "cached": cached,
                        "user_tokens": engine.codes("user", p["uid"]), "item_tokens": engine.codes("item", p["iid"])})
        return {"explanations": out, "model_version": engine.version}

    @v1.post("/users", response_model=S.NewUserResponse)
    async def new_user(req: S.NewUserRequest) -> dict:
        uid, prov = await on_model(engine.fold_user, req.items)
        return {"user": uid, "items": prov["interactions"], "tokens": await on_model(engine.tokens, "user", uid),
                "provenance": prov}

    @v1.get("/users", response_model=S.UserList)
    async def list_users(limit: int = Query(20, ge=1, le=1000)) -> dict:
        return {"users": await on_model(engine.user_ids, limit)}

    @v1.get("/users/{uid}", response_model=S.Entity)
    async def user(uid: int, profile: bool = False) -> dict:
        check(engine.check_user, uid)
        out = {"side": "user", "id": uid, "new": uid in engine.new_users, "interactions": len(engine.user_items(uid)),
               "tokens": await on_model(engine.tokens, "user", uid)}
        if profile:
            out["profile"] = await on_model(engine.profile, uid)
        return out

    @v1.get("/items", response_model=S.ItemSearch)
    async def search_items(q: str = Query("", max_length=200), limit: int = Query(20, ge=1, le=200)) -> dict:
        return {"items": engine.search_items(q, limit)}

    @v1.get("/items/{iid}", response_model=S.Entity)
    async def item(iid: int) -> dict:
        check(engine.check_item, iid)
        return {"side": "item", "id": iid, "title": engine.title(iid), "interactions": int(engine.degree["item"][iid]),
                "tokens": await on_model(engine.tokens, "item", iid)}

    @v1.get("/attention", response_model=S.Attention)
    async def attention(user: int, item: int) -> dict:
        check(engine.pair, user, item)
        return await on_model(engine.attention, user, item)

    app.include_router(v1)
    return app


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _plain(errs: list[dict]) -> list[dict]:
    """Validation errors without the non-JSON parts (exception objects in ``ctx``)."""
    return [{"type": e.get("type"), "loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg")} for e in errs]
