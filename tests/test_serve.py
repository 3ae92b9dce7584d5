"""``beatrec serve``: the API over a tiny trained run (FastAPI TestClient / httpx on the ASGI app, no sockets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from beatrec.cli import main
from beatrec.serve.app import create_app
from beatrec.serve.config import ServeConfig
from beatrec.serve.engine import Engine


@pytest.fixture(scope="module")
def engine(served: tuple[Path, Path]) -> Engine:
    return Engine(served[1], ServeConfig(max_batch=8, wait_ms=50))


def client(engine: Engine, **kw) -> TestClient:  # noqa: ANN003
    return TestClient(create_app(engine, **kw))


def test_health_metrics_and_page(engine: Engine) -> None:
    with client(engine) as c:
        h = c.get("/health").json()
        assert h["status"] == "ok" and h["users"] == engine.n_users and h["items"] == engine.n_items
        assert h["model_version"] == engine.version and len(h["model_version"]) == 12 and h["auth"] is False
        assert h["batching"] == "continuous"
        page = c.get("/")
        assert page.status_code == 200 and "beatrec" in page.text and "/static/app.js" in page.text
        assert "textContent" in c.get("/static/app.js").text and ".innerHTML" not in c.get("/static/app.js").text
        m = c.get("/metrics").text
        assert 'beatrec_requests_total{route="/health",status="200"} 1.0' in m
        assert 'beatrec_request_seconds_count{route="/health"} 1.0' in m and "beatrec_request_seconds_bucket" in m
        assert "beatrec_request_seconds_sum" in m and "beatrec_queue_depth 0.0" in m
        assert "/v1/explain" in c.get("/openapi.json").json()["paths"]
        docs = c.get("/docs").text  # Swagger UI from local files, no CDN
        js = next(x.split('"')[0] for x in docs.split('src="')[1:] if "swagger-ui-bundle.js" in x)
        assert js.startswith("/") and "cdn" not in docs.lower() and c.get(js).status_code == 200


def test_a_request_may_ask_for_greedy_decoding(served: tuple[Path, Path]) -> None:
    """``decoding: greedy`` decodes that request's pairs with one beam (the run decodes with 3), the others keep
    the run's beam search, and the cache keeps the two apart."""
    from beatrec.align.explain import explain

    eng = Engine(served[1], ServeConfig(max_batch=8, wait_ms=50), ["generate.num_beams=3", "generate.max_new_tokens=8"])
    pairs = [{"user": 1, "item": 2}, {"user": 4, "item": 5}]
    with client(eng) as c:
        beam = c.post("/v1/explain", json={"pairs": pairs}).json()["explanations"]
        greedy = c.post("/v1/explain", json={"pairs": pairs, "decoding": "greedy"}).json()["explanations"]
        bad = c.post("/v1/explain", json={"pairs": pairs, "decoding": "sampling"})
        rec = c.post("/v1/recommend", json={"user": 1, "k": 2, "explain": True, "decoding": "greedy"}).json()
    direct = [eng.pair(1, 2), eng.pair(4, 5)]
    assert [e["explanation"] for e in beam] == explain(eng.a, direct)
    assert [e["explanation"] for e in greedy] == explain(eng.a, direct, generate=eng.greedy)
    assert eng.greedy.num_beams == 1 and eng.a.cfg.generate.num_beams == 3
    assert not any(e["cached"] for e in greedy)  # a beam explanation is not a greedy one
    assert bad.status_code == 422 and "decoding" in bad.text
    mixed = eng.explain([eng.pair(1, 2, "greedy"), eng.pair(1, 2)])  # one batch, two decodings
    assert mixed == [greedy[0]["explanation"], beam[0]["explanation"]]
    assert all(it["explanation"] for it in rec["items"])


def test_recommend_ranks_unseen_items_by_quantised_vectors(engine: Engine) -> None:
    uid = 3
    with client(engine) as c:
        r = c.post("/v1/recommend", json={"user": uid, "k": 5}).json()
    got = [it["item"] for it in r["items"]]
    v = engine.vocab
    qu = v.vectors("user", torch.tensor([uid])).flatten(1)[0]
    qi = v.vectors("item", torch.arange(v.n_items)).flatten(1)
    scores = (qi @ qu).numpy().astype(np.float64)
    seen = set(engine.ds.interactions.loc[engine.ds.interactions["user"] == uid, "item"].tolist())
    assert seen and not seen & set(got)
    expect = [i for i in np.argsort(-scores, kind="stable") if i not in seen][:5]
    assert np.allclose([it["score"] for it in r["items"]], scores[expect], atol=1e-5)
    assert all(it["explanation"] is None for it in r["items"])


def test_explain_batches_caches_and_matches_direct_generation(engine: Engine) -> None:
    pairs = [{"user": 1, "item": 2}, {"user": 4, "item": 5}, {"user": 1, "item": 2}]
    with client(engine) as c:
        first = c.post("/v1/explain", json={"pairs": pairs}).json()
        again = c.post("/v1/explain", json={"pairs": pairs[:2]}).json()
        snap = c.get("/metrics?format=json").json()
    texts = [e["explanation"] for e in first["explanations"]]
    direct = engine.explain([engine.pair(1, 2), engine.pair(4, 5)])
    assert texts == [direct[0], direct[1], direct[0]]  # the duplicate is generated once
    assert [e["cached"] for e in first["explanations"]] == [False, False, False]
    assert [e["cached"] for e in again["explanations"]] == [True, True]
    assert [e["explanation"] for e in again["explanations"]] == direct
    assert first["explanations"][0]["user_tokens"] == engine.codes("user", 1)
    assert snap["cache"] == {"hit": 2, "coalesced": 1, "miss": 2} and snap["batches"] == 1


def test_concurrent_requests_are_gathered_into_batches(served: tuple[Path, Path]) -> None:
    import httpx

    eng = Engine(served[1], ServeConfig(max_batch=16, wait_ms=300, cache_size=0))
    app = create_app(eng)

    async def go() -> tuple[list[int], dict]:
        await app.state.service.batcher.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                rs = await asyncio.gather(*[c.post("/v1/explain", json={"pairs": [{"user": u, "item": 7}]})
                                            for u in range(10)])
                return [r.status_code for r in rs], app.state.service.stats.snapshot()
        finally:
            await app.state.service.batcher.stop()

    codes, snap = asyncio.run(go())
    assert codes == [200] * 10
    assert snap["batched_pairs"] == 10 and snap["batches"] < 10 and snap["batch_size_max"] > 1


def test_a_request_joins_the_running_decode_between_steps(served: tuple[Path, Path]) -> None:
    """Continuous batching: a pair that arrives while another decodes is admitted at a later step, before the first
    one ends, and both get the explanation they get alone; after a failing step the pairs decoding are generated
    one by one (and still answered), and the batcher serves on."""
    eng = Engine(served[1], ServeConfig(wait_ms=0, cache_size=0),
                 ["generate.num_beams=2", "generate.max_new_tokens=20", "generate.min_new_tokens=20"])
    calls: list[tuple[list, list]] = []
    step, fail = eng.stream_step, []

    def spy(new):  # noqa: ANN001, ANN202
        if fail:
            fail.pop()
            raise RuntimeError("model failed")
        ended = step(new)
        calls.append(([k for k, _ in new], [k for k, _ in ended]))
        return ended

    eng.stream_step = spy  # type: ignore[method-assign]
    app = create_app(eng)
    b = app.state.service.batcher
    pa, pb = eng.pair(1, 2), eng.pair(4, 5, "greedy")
    ka, kb = eng.cache_key(pa), eng.cache_key(pb)

    async def go() -> tuple[str, str, str]:
        await b.start()
        try:
            ta = asyncio.create_task(b.explain([(ka, pa)]))
            while not calls:
                await asyncio.sleep(0)
            tb = asyncio.create_task(b.explain([(kb, pb)]))
            (a, _), (bb, _) = (await ta)[0], (await tb)[0]
            fail.append(1)
            alone = (await b.explain([(ka, pa)]))[0][0]
            assert not fail  # the step did fail
            return a, bb, alone
        finally:
            await b.stop()

    a, bb, again = asyncio.run(go())
    admitted = next(i for i, (new, _) in enumerate(calls) if kb in new)
    ended_a = next(i for i, (_, ended) in enumerate(calls) if ka in ended)
    assert 0 < admitted < ended_a  # b joined while a was decoding
    assert a == again == eng.explain([pa])[0] and bb == eng.explain([pb])[0]
    assert [len(ended) for _, ended in calls].count(1) >= 2 and eng.batching == "continuous"


def test_continuous_batching_falls_back_and_says_why(served: tuple[Path, Path]) -> None:
    assert Engine(served[1], ServeConfig(batching="window")).batching == "window (serve batching=window)"
    lean = Engine(served[1], ServeConfig(), ["generate.decoder=lean"])
    assert lean.batching.startswith("window (generate.decoder=lean")
    with client(lean) as c:
        assert c.get("/health").json()["batching"] == lean.batching
        r = c.post("/v1/explain", json={"pairs": [{"user": 1, "item": 2}]}).json()
    assert r["explanations"][0]["explanation"] == lean.explain([lean.pair(1, 2)])[0]
    with pytest.raises(Exception, match="batching must be one of"):
        ServeConfig(batching="orca").validate()


def test_cancelled_request_leaves_the_work_for_others(served: tuple[Path, Path]) -> None:
    eng = Engine(served[1], ServeConfig(wait_ms=50))
    app = create_app(eng)
    b = app.state.service.batcher
    key_pair = [(eng.cache_key(eng.pair(2, 3)), eng.pair(2, 3))]

    async def go() -> tuple[str, bool]:
        await b.start()
        try:
            t = asyncio.create_task(b.explain(key_pair))
            await asyncio.sleep(0.01)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            return (await b.explain(key_pair))[0]
        finally:
            await b.stop()

    text, _ = asyncio.run(go())
    assert text == eng.explain([eng.pair(2, 3)])[0]


def test_cold_start_user_then_recommend_and_inspect(engine: Engine, served: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with client(engine) as c:
        r = c.post("/v1/users", json={"items": [1, 2, 3]})
        assert r.status_code == 200
        new = r.json()
        uid = new["user"]
        assert uid >= engine.n_users and new["items"] == [1, 2, 3]
        assert main(["tokens", "--run", str(served[1]), "--items", "1,2,3", "--no-semantic",
                     "--out", str(tmp_path / "t.json")]) == 0
        assert [t["code"] for t in new["tokens"]] == json.loads((tmp_path / "t.json").read_text())["tokens"]
        assert [t["token"] for t in new["tokens"]][0] == f"<user_macro_{new['tokens'][0]['code']}>"
        recs = c.post("/v1/recommend", json={"user": uid, "k": 4, "explain": True}).json()["items"]
        assert not {1, 2, 3} & {it["item"] for it in recs} and all(isinstance(it["explanation"], str) for it in recs)
        u = c.get(f"/v1/users/{uid}").json()
        assert u["new"] is True and u["interactions"] == 3
        assert isinstance(c.get("/v1/users/5?profile=true").json()["profile"], str)
        item = c.get("/v1/items/3").json()
        assert item["side"] == "item" and len(item["tokens"]) == 1 + engine.vocab.n_micro
        assert any(t["terms"] for t in item["tokens"])
        hits = c.get("/v1/items", params={"q": engine.title(3)[:6]}).json()["items"]
        assert 3 in [h["item"] for h in hits] and c.get("/v1/items", params={"q": "3"}).json()["items"][0]["item"] == 3
        a = c.get("/v1/attention", params={"user": 1, "item": 2}).json()
        share = np.array(a["slot_share"])
        assert share.shape == (len(a["words"]), len(a["token_labels"]))
        assert np.allclose(share.sum(1) + np.array(a["text_share"]), 1.0, atol=1e-4)


def test_faults_answer_json_and_leave_the_server_healthy(served: tuple[Path, Path]) -> None:
    eng = Engine(served[1], ServeConfig(max_pairs=4, queue_size=16, max_k=10, max_new_users=1, max_items=3))
    faults = [
        (lambda c: c.post("/v1/explain", content=b"{not json", headers={"content-type": "application/json"}), 400,
         "malformed JSON"),
        (lambda c: c.post("/v1/explain", json={"pairs": [{"user": 10**6, "item": 1}]}), 404, "unknown user"),
        (lambda c: c.post("/v1/explain", json={"pairs": [{"user": 1, "item": -1}]}), 404, "unknown item"),
        (lambda c: c.get("/v1/users/99999"), 404, "unknown user"),
        (lambda c: c.post("/v1/explain", json={"pairs": [{"user": 1, "item": i} for i in range(5)]}), 413, "at most 4"),
        (lambda c: c.post("/v1/explain", json={"pairs": [{"user": "abc", "item": 1}]}), 422, "pairs.0.user"),
        (lambda c: c.post("/v1/explain", json={"pairs": []}), 422, "pairs"),
        (lambda c: c.post("/v1/recommend", json={"user": 1, "k": 11}), 422, "at most 10"),
        (lambda c: c.post("/v1/recommend", json={"user": 1, "kk": 3}), 422, "kk"),
        (lambda c: c.post("/v1/users", json={"items": [1, 2, 3, 4]}), 413, "at most 3"),
        (lambda c: c.post("/v1/users", json={"items": list(range(2000))}), 422, "items"),
        (lambda c: c.post("/v1/explain", content=b"x" * 70000, headers={"content-type": "application/json"}), 413,
         "max_body_bytes"),
        (lambda c: c.post("/v1/explain", content=(b"x" * 1000 for _ in range(70)),
                          headers={"content-type": "application/json"}), 413, "max_body_bytes"),  # streamed, no length
        (lambda c: c.post("/v1/users", json={"items": []}), 422, "items"),
        (lambda c: c.post("/v1/users", json={"items": [10**6]}), 404, "unknown item"),
    ]
    with client(eng) as c:
        for send, status, words in faults:
            r = send(c)
            assert r.status_code == status, (status, r.text)
            assert words in r.json()["detail"], r.text
            assert c.get("/health").status_code == 200
        assert c.post("/v1/users", json={"items": [1]}).status_code == 200
        r = c.post("/v1/users", json={"items": [2]})
        assert r.status_code == 429 and "new users" in r.json()["detail"]
        assert eng.new_users and len(eng.new_users) == 1


def test_api_key_guards_v1_only(engine: Engine) -> None:
    with client(engine, api_key="s3cret") as c:
        assert c.get("/health").json()["auth"] is True
        r = c.get("/v1/items/1")
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        assert c.get("/v1/items/1", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/items/1", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_serve_cli_errors_are_one_line(served: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["serve", "--run", str(tmp_path / "nope"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no stage-1 artifacts" in err and "\n" not in err
    monkeypatch.delenv("BEATREC_TEST_KEY", raising=False)
    assert main(["serve", "--run", str(served[1]), "--port", "0", "--api-key-env", "BEATREC_TEST_KEY"]) == 2
    assert "BEATREC_TEST_KEY" in capsys.readouterr().err
    assert main(["serve", "--run", str(served[1]), "--port", "0", "--set", "max_batch=many"]) == 2
    assert "max_batch" in capsys.readouterr().err


def run_app(app, body) -> object:  # noqa: ANN001
    """``body(client)`` against the app over httpx's ASGI transport, with the app's service started and stopped."""
    import httpx

    async def go():  # noqa: ANN202
        await app.state.service.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await body(c)
        finally:
            await app.state.service.stop()

    return asyncio.run(go())


def test_a_failing_pair_fails_alone(served: tuple[Path, Path]) -> None:
    """A pair that breaks generation gets a 500 without the exception's text; the pairs batched or decoding with it
    are answered, in both batching modes."""
    bad = 6
    for batching in ("continuous", "window"):
        eng = Engine(served[1], ServeConfig(batching=batching, wait_ms=200, cache_size=0))
        explain, step = eng.explain, eng.stream_step

        def broken(pairs, explain=explain):  # noqa: ANN001, ANN202
            if any(p["uid"] == bad for p in pairs):
                raise ValueError("secret internals")
            return explain(pairs)

        def broken_step(new, step=step):  # noqa: ANN001, ANN202
            if any(p["uid"] == bad for _, p in new):
                raise ValueError("secret internals")
            return step(new)

        eng.explain, eng.stream_step = broken, broken_step  # type: ignore[method-assign]
        app = create_app(eng)

        async def go(c):  # noqa: ANN001, ANN202
            return await asyncio.gather(*[c.post("/v1/explain", json={"pairs": [{"user": u, "item": 3}]})
                                          for u in (1, bad, 2)])

        ok1, failed, ok2 = run_app(app, go)
        assert ok1.status_code == ok2.status_code == 200, batching
        assert failed.status_code == 500 and "secret" not in failed.text and "reference" in failed.json()["detail"]
        assert ok1.json()["explanations"][0]["explanation"] == explain([eng.pair(1, 3)])[0]
        assert app.state.service.stats.snapshot()["requests"]["/v1/explain 500"] == 1


def test_model_calls_beyond_the_queue_get_429_with_retry_after(served: tuple[Path, Path]) -> None:
    import threading

    eng = Engine(served[1], ServeConfig(max_calls=1, max_batch=1, batching="window", queue_size=4, max_pairs=3, max_k=4,
                                        retry_after_s=7, wait_ms=0))
    app = create_app(eng)
    gate = threading.Event()
    recommend = eng.recommend
    eng.recommend = lambda *a: (gate.wait(5), recommend(*a))[1]  # type: ignore[method-assign]

    async def go(c):  # noqa: ANN001, ANN202
        slow = asyncio.create_task(c.post("/v1/recommend", json={"user": 1, "k": 2}))
        while app.state.service.calls == 0:
            await asyncio.sleep(0.005)
        busy = await c.post("/v1/recommend", json={"user": 2, "k": 2})
        # explanations: the worker is held, so the first pair of a 3-pair request waits in the batch and two in
        # the queue; 3 more do not fit in a queue of 4
        first = asyncio.create_task(c.post("/v1/explain", json={"pairs": [{"user": 1, "item": i} for i in (1, 2, 3)]}))
        while app.state.service.batcher.depth() < 2:
            await asyncio.sleep(0.005)
        full = await c.post("/v1/explain", json={"pairs": [{"user": 2, "item": i} for i in (1, 2, 3)]})
        gate.set()
        return busy, full, await slow, await first

    busy, full, slow, first = run_app(app, go)
    assert busy.status_code == 429 and busy.headers["retry-after"] == "7" and "max_calls" in busy.json()["detail"]
    assert full.status_code == 429 and full.headers["retry-after"] == "7" and "queue" in full.json()["detail"]
    assert slow.status_code == 200 and first.status_code == 200


def test_timeouts_answer_504_and_drop_stale_pairs(served: tuple[Path, Path]) -> None:
    import threading
    import time

    eng = Engine(served[1], ServeConfig(request_timeout_s=0.3, batching="window", max_batch=1, wait_ms=0,
                                        cache_size=0))
    gate = threading.Event()
    explain = eng.explain
    generated: list[int] = []

    def slow(pairs):  # noqa: ANN001, ANN202
        generated.extend(p["uid"] for p in pairs)
        if pairs[0]["uid"] == 1:
            gate.wait(5)
        return explain(pairs)

    eng.explain = slow  # type: ignore[method-assign]
    profile = eng.profile
    eng.profile = lambda uid: (time.sleep(1.0), profile(uid))[1]  # type: ignore[method-assign]
    app = create_app(eng)  # after the patches: the batcher holds the engine's explain

    async def go(c):  # noqa: ANN001, ANN202
        late = await c.get("/v1/users/1?profile=true")
        # pair (1, 3) holds the worker past the deadline; pair (2, 3) waits in the queue meanwhile
        a = asyncio.create_task(c.post("/v1/explain", json={"pairs": [{"user": 1, "item": 3}]}))
        await asyncio.sleep(0.05)
        b = await c.post("/v1/explain", json={"pairs": [{"user": 2, "item": 3}]})
        gate.set()
        await a
        await asyncio.sleep(0.3)  # the consumer reaches the stale pair and drops it
        health = await c.get("/health")
        return late, b, health

    late, b, health = run_app(app, go)
    assert late.status_code == 504 and "request_timeout_s" in late.json()["detail"]
    assert b.status_code == 504
    assert 2 not in generated  # dropped, not generated: its request had its answer
    assert health.status_code == 200


def test_a_crashed_consumer_is_restarted_and_counted(served: tuple[Path, Path]) -> None:
    eng = Engine(served[1], ServeConfig(wait_ms=0, cache_size=0))
    app = create_app(eng)
    b = app.state.service.batcher
    take, crashes = b._take, [1]

    async def crashing(*a):  # noqa: ANN002, ANN202
        if crashes:
            crashes.pop()
            raise KeyError("a bug in the consumer")
        return await take(*a)

    b._take = crashing

    async def go(c):  # noqa: ANN001, ANN202
        lost = await c.post("/v1/explain", json={"pairs": [{"user": 3, "item": 2}]})  # held by the crashed consumer
        assert lost.status_code == 500 and "reference" in lost.json()["detail"]
        r = await c.post("/v1/explain", json={"pairs": [{"user": 1, "item": 2}]})
        ok = await c.get("/health")
        b.task.cancel()  # the consumer is gone for good: /health says so
        await asyncio.sleep(0.01)
        down = await c.get("/health")
        return r, ok, down

    r, ok, down = run_app(app, go)
    assert r.status_code == 200 and r.json()["explanations"][0]["explanation"] == eng.explain([eng.pair(1, 2)])[0]
    assert app.state.service.stats.snapshot()["batcher_restarts"] == 1
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    assert down.status_code == 503 and down.json()["status"] == "degraded" and "batcher" in down.json()["reason"]


def test_shutdown_drains_then_answers_503(served: tuple[Path, Path]) -> None:
    import threading

    eng = Engine(served[1], ServeConfig(batching="window", max_batch=1, wait_ms=0, drain_s=0.2, cache_size=0))
    gate = threading.Event()
    explain = eng.explain
    eng.explain = lambda pairs: (gate.wait(2), explain(pairs))[1]  # type: ignore[method-assign]
    app = create_app(eng)
    svc = app.state.service
    key = (eng.cache_key(eng.pair(1, 2)), eng.pair(1, 2))
    key2 = (eng.cache_key(eng.pair(2, 2)), eng.pair(2, 2))

    async def go():  # noqa: ANN202
        await svc.start()
        first = asyncio.create_task(svc.batcher.explain([key]))
        queued = asyncio.create_task(svc.batcher.explain([key2]))
        await asyncio.sleep(0.05)
        await svc.stop()  # drains for 0.2 s; the worker is held, so both are answered ShuttingDown
        gate.set()
        return await asyncio.gather(first, queued, return_exceptions=True)

    from beatrec.serve.batcher import ShuttingDown

    got = asyncio.run(go())
    assert all(isinstance(g, ShuttingDown) for g in got)


def test_impossible_limits_are_refused(served: tuple[Path, Path]) -> None:
    from beatrec.errors import ConfigError

    for bad, words in (({"max_pairs": 300, "queue_size": 256}, "max_pairs (300) must be <= queue_size"),
                       ({"max_k": 500}, "max_k (500) must be <= queue_size"),
                       ({"max_body_bytes": 10}, "max_body_bytes"), ({"request_timeout_s": 0}, "request_timeout_s")):
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
            ServeConfig(**bad).validate()


def test_routes_take_the_service_by_dependency(engine: Engine) -> None:
    """The routes reach the run only through ``get_service``: a fake service answers them, no model needed."""
    from types import SimpleNamespace

    from beatrec.serve.service import get_service

    async def run(fn, *args):  # noqa: ANN001, ANN202
        return fn(*args)

    fake_engine = SimpleNamespace(identity=lambda: {"run": "/x", "dataset": "d", "lm": "m", "finetune": "f",
                                                    "model_version": "v", "users": 1, "items": 2, "new_users": 0,
                                                    "tokens_per_entity": 3, "uptime_s": 0.0, "batching": "window"},
                                  search_items=lambda q, limit: [{"item": 5, "title": q, "interactions": 1}])
    fake = SimpleNamespace(engine=fake_engine, api_key=None, key_ok=lambda k: True, run=run,
                           status=lambda: ("degraded", "a fake"), batcher=SimpleNamespace(depth=lambda: 0))
    app = create_app(engine)
    app.dependency_overrides[get_service] = lambda: fake
    c = TestClient(app)  # no lifespan: the real service is never started
    h = c.get("/health")
    assert h.status_code == 503 and h.json()["reason"] == "a fake" and h.json()["users"] == 1
    assert c.get("/v1/items", params={"q": "hello"}).json()["items"] == [{"item": 5, "title": "hello",
                                                                         "interactions": 1}]


def test_heavy_engine_reads_run_on_the_model_worker(served: tuple[Path, Path]) -> None:
    """Item search scans every title: it runs off the event loop, and not behind generation on the model worker."""
    import threading

    eng = Engine(served[1], ServeConfig())
    seen: list[str] = []
    search = eng.search_items

    def spy(q, limit):  # noqa: ANN001, ANN202
        seen.append(threading.current_thread().name)
        return search(q, limit)

    eng.search_items = spy  # type: ignore[method-assign]
    with client(eng) as c:
        assert c.get("/v1/items", params={"q": eng.title(2)[:4]}).status_code == 200
    assert seen and seen[0] != "MainThread" and not seen[0].startswith("beatrec-model")


def test_freed_memory_is_given_back_at_most_every_interval() -> None:
    import ctypes.util

    from beatrec.serve import memory

    ran = memory.release_memory(min_interval_s=0)
    assert ran is bool(ctypes.util.find_library("c"))  # glibc here: it runs
    assert memory.release_memory(min_interval_s=60) is False  # within the interval: not again
