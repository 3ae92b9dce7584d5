"""The routes of ``beatrec serve``: ``public`` (``/health``, ``/metrics``, the page) and ``v1`` (the API, behind the
API key when the server has one). Each reaches the run through the :class:`~beatrec.serve.service.Service`
dependency; errors are raised as the engine's, the batcher's and the service's exceptions and mapped to statuses by
the app's exception handlers (:mod:`beatrec.serve.app`)."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from beatrec.serve import schemas as S
from beatrec.serve.service import Service, get_service

STATIC = Path(str(resources.files("beatrec.serve") / "static"))

public = APIRouter()
ServiceDep = Annotated[Service, Depends(get_service)]


def require_key(svc: ServiceDep,
                x_api_key: str | None = Header(None, description="needed when the server has an API key")) -> None:
    if not svc.key_ok(x_api_key):
        raise HTTPException(401, "missing or wrong X-API-Key header")


v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])


@public.get("/health", response_model=S.Health, responses={503: {"model": S.Health}})
async def health(svc: ServiceDep, x_api_key: str | None = Header(None)) -> JSONResponse:
    status, why = svc.status()
    body = {"status": status, "reason": why, **svc.engine.identity(), "auth": svc.api_key is not None,
            "queue": svc.batcher.depth()}
    if not svc.key_ok(x_api_key):  # nothing about the host's files without the key
        body["run"] = None
    return JSONResponse(S.Health(**body).model_dump(), status_code=200 if status == "ok" else 503)


@public.get("/metrics", response_class=PlainTextResponse)
async def metrics(svc: ServiceDep,
                  format: str = Query("prometheus", pattern="^(prometheus|json)$")):  # noqa: A002, ANN201
    if format == "json":
        return JSONResponse(svc.stats.snapshot())
    return PlainTextResponse(svc.stats.prometheus(), media_type="text/plain; version=0.0.4")


@public.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


async def explain_pairs(svc: Service, pairs: list[dict]) -> list[tuple[str, bool]]:
    return await svc.batcher.explain([(svc.engine.cache_key(p), p) for p in pairs])


@v1.post("/recommend", response_model=S.RecommendResponse)
async def recommend(svc: ServiceDep, req: S.RecommendRequest) -> dict:
    eng = svc.engine
    if req.k > svc.cfg.max_k:
        raise HTTPException(422, f"k: at most {svc.cfg.max_k} (serve max_k), got {req.k}")
    recs = await svc.run(eng.recommend, req.user, req.k)
    items = [r._asdict() for r in recs]
    if req.explain and recs:
        pairs = [eng.pair(req.user, r.item, req.decoding) for r in recs]
        for it, (text, cached) in zip(items, await explain_pairs(svc, pairs), strict=True):
            it.update(explanation=text, cached=cached)
    return {"user": req.user, "items": items, "model_version": eng.version}


@v1.post("/explain", response_model=S.ExplainResponse)
async def explain(svc: ServiceDep, req: S.ExplainRequest) -> dict:
    eng = svc.engine
    if len(req.pairs) > svc.cfg.max_pairs:
        raise HTTPException(413, f"{len(req.pairs)} pairs in one request; at most {svc.cfg.max_pairs} (serve max_pairs)")
    pairs = [eng.pair(p.user, p.item, req.decoding) for p in req.pairs]
    out = []
    for p, (text, cached) in zip(pairs, await explain_pairs(svc, pairs), strict=True):
        out.append({"user": p["uid"], "item": p["iid"], "title": p["title"], "explanation": text, "cached": cached,
                    "user_tokens": eng.codes("user", p["uid"]), "item_tokens": eng.codes("item", p["iid"])})
    return {"explanations": out, "model_version": eng.version}


@v1.post("/users", response_model=S.NewUserResponse)
async def new_user(svc: ServiceDep, req: S.NewUserRequest) -> dict:
    if len(req.items) > svc.cfg.max_items:
        raise HTTPException(413, f"{len(req.items)} items for one new user; at most {svc.cfg.max_items} "
                                 "(serve max_items)")
    uid, prov = await svc.run(svc.engine.fold_user, req.items)
    return {"user": uid, "items": prov["interactions"], "tokens": await svc.run(svc.engine.tokens, "user", uid),
            "provenance": prov}


@v1.get("/users", response_model=S.UserList)
async def list_users(svc: ServiceDep, limit: int = Query(20, ge=1, le=1000)) -> dict:
    return {"users": await svc.run(svc.engine.user_ids, limit)}


@v1.get("/users/{uid}", response_model=S.Entity)
async def user(svc: ServiceDep, uid: int, profile: bool = False) -> dict:
    eng = svc.engine
    eng.check_user(uid)
    out = {"side": "user", "id": uid, "new": uid in eng.new_users, "interactions": len(eng.user_items(uid)),
           "tokens": eng.tokens("user", uid)}  # reads only (the vocabulary report is loaded at start)
    if profile:
        out["profile"] = await svc.run(eng.profile, uid)
    return out


@v1.get("/items", response_model=S.ItemSearch)
async def search_items(svc: ServiceDep, q: str = Query("", max_length=200),
                       limit: int = Query(20, ge=1, le=200)) -> dict:
    # scans every title: off the loop, on a helper thread (it reads only immutable titles and degrees), so it never
    # waits behind generation on the model worker
    return {"items": await asyncio.to_thread(svc.engine.search_items, q, limit)}


@v1.get("/items/{iid}", response_model=S.Entity)
async def item(svc: ServiceDep, iid: int) -> dict:
    eng = svc.engine
    eng.check_item(iid)
    return {"side": "item", "id": iid, "title": eng.title(iid), "interactions": int(eng.degree["item"][iid]),
            "tokens": eng.tokens("item", iid)}  # reads only: no wait behind generation


@v1.get("/attention", response_model=S.Attention)
async def attention(svc: ServiceDep, user: int, item: int) -> dict:
    svc.engine.pair(user, item)
    return await svc.run(svc.engine.attention, user, item)

