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
        assert 'beatrec_requests_total{route="/health",status="200"} 1' in m
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
        await app.state.batcher.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                rs = await asyncio.gather(*[c.post("/v1/explain", json={"pairs": [{"user": u, "item": 7}]})
                                            for u in range(10)])
                return [r.status_code for r in rs], app.state.stats.snapshot()
        finally:
            await app.state.batcher.stop()

    codes, snap = asyncio.run(go())
    assert codes == [200] * 10
    assert snap["batched_pairs"] == 10 and snap["batches"] < 10 and snap["batch_size_max"] > 1


def test_a_request_joins_the_running_decode_between_steps(served: tuple[Path, Path]) -> None:
    """Continuous batching: a pair that arrives while another decodes is admitted at a later step, before the first
    one ends, and both get the explanation they get alone; a failing step fails the pairs decoding, then the
    batcher serves again."""
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
    b = app.state.batcher
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
            with pytest.raises(RuntimeError, match="model failed"):
                await b.explain([(ka, pa)])
            return a, bb, (await b.explain([(ka, pa)]))[0][0]
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
    b = app.state.batcher
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
    eng = Engine(served[1], ServeConfig(max_pairs=4, queue_size=2, max_k=10, max_new_users=1))
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
        (lambda c: c.post("/v1/explain", json={"pairs": [{"user": 1, "item": i} for i in range(3)]}), 429, "queue"),
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
