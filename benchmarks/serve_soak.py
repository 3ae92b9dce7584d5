"""A bounded soak of ``beatrec serve``: mixed routes at a fixed rate with faults injected, on loopback only.

    python benchmarks/serve_soak.py --run runs/demo/run --minutes 10

The server runs in this process (uvicorn on 127.0.0.1, a free port, its own thread) from ``--run``; one pair is
designated to fail inside the model (its generation raises), the *model error* fault. For ``--minutes`` the
client sends ``--rate`` requests per second, each drawn from a fixed mix: cheap routes (``/health``, ``/metrics``,
item and user lookups, item search), recommendations, explanations (greedy, distinct zero-shot pairs), and faults
(malformed JSON, an oversized body, unknown ids, the model-error pair, a client that cancels its explain request
after 50 ms). Every request is accounted for: answered with the status its kind expects, refused with 429/504, or
cancelled by the client -- a request with no answer is *lost*. Reported: counts by kind and status, lost requests,
unexplained 500s (a 500 other than the model-error pair's), the process's resident memory after a one-minute
warm-up against the end, the p99 of the cheap routes per two-minute window, and ``/health``'s answers
(probed every 5 s).

Writes the ``## Soak`` section of ``benchmarks/serve.md`` (replacing an earlier one; ``benchmarks/serve.py`` keeps
it) and ``benchmarks/serve_soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOAK_HEAD = "## Soak"
MIX = {  # kind -> share of requests
    "health": 0.12, "metrics": 0.04, "item": 0.14, "user": 0.08, "search": 0.08, "recommend": 0.12, "explain": 0.12,
    "malformed": 0.06, "oversized": 0.05, "unknown": 0.07, "model_error": 0.06, "cancelled": 0.06,
}
CHEAP = ("health", "metrics", "item", "user", "search")
EXPECTED = {"malformed": {400}, "oversized": {413}, "unknown": {404}, "model_error": {500}}  # others: 200
REFUSED = {429, 504}  # bounded admission and deadlines: an answer, not a failure


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run with stages 1 and 2")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=4.0, help="requests per second")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="ServeConfig / align.* overrides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "serve.md")
    return ap.parse_args(argv)


def rss_mb() -> float:
    """This process's resident memory (Linux /proc), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(run: Path, overrides: list[str], threads: int):  # noqa: ANN201 - (uvicorn.Server, url, thread, bad)
    """The app on a free loopback port in a thread, one designated pair failing inside the model."""
    import uvicorn

    from beatrec.config import load_yaml
    from beatrec.serve.app import create_app
    from beatrec.serve.config import ServeConfig
    from beatrec.serve.engine import Engine
    from beatrec.serve.server import bind

    cfg = load_yaml(ServeConfig, None, [f"threads={threads}", *[o for o in overrides if not o.startswith("align.")]])
    engine = Engine(run, cfg, [o[len("align."):] for o in overrides if o.startswith("align.")])
    bad = (0, engine.n_items - 1)  # the model-error pair
    explain, step = engine.explain, engine.stream_step

    def failing(pairs):  # noqa: ANN001, ANN202
        if any((p["uid"], p["iid"]) == bad for p in pairs):
            raise RuntimeError("injected model error")
        return explain(pairs)

    def failing_step(new):  # noqa: ANN001, ANN202
        if any((p["uid"], p["iid"]) == bad for _, p in new):
            raise RuntimeError("injected model error")
        return step(new)

    engine.explain, engine.stream_step = failing, failing_step  # before the app binds them
    app = create_app(engine)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    host, port = sock.getsockname()[:2]
    return server, f"http://{host}:{port}", thread, engine, bad


async def soak(url: str, engine, bad: tuple[int, int], minutes: float, rate: float, seed: int) -> dict:  # noqa: ANN001
    import httpx

    from beatrec.data.split import ZeroShotSplit

    rng = random.Random(seed)
    users = [int(u) for u in ZeroShotSplit.load(engine.run / "split.json").test_users]
    kinds, weights = list(MIX), list(MIX.values())
    sent: Counter[str] = Counter()
    status: dict[str, Counter[int]] = defaultdict(Counter)
    no_answer: Counter[str] = Counter()  # transport errors: the request got no answer
    cancelled: Counter[str] = Counter()
    cheap_lat: dict[int, list[float]] = defaultdict(list)  # 2-minute window -> latencies of cheap routes
    health: Counter[str] = Counter()
    tasks: set[asyncio.Task] = set()
    t0 = time.perf_counter()
    end = t0 + 60 * minutes
    rss: dict[str, float] = {}
    trace: list[float] = []

    async def one(c: httpx.AsyncClient, kind: str) -> None:
        sent[kind] += 1
        item = rng.randrange(engine.n_items)
        user = rng.choice(users)
        send = {
            "health": lambda: c.get(f"{url}/health"),
            "metrics": lambda: c.get(f"{url}/metrics"),
            "item": lambda: c.get(f"{url}/v1/items/{item}"),
            "user": lambda: c.get(f"{url}/v1/users/{user}"),
            "search": lambda: c.get(f"{url}/v1/items", params={"q": engine.title(item)[:5]}),
            "recommend": lambda: c.post(f"{url}/v1/recommend", json={"user": user, "k": 5}),
            "explain": lambda: c.post(f"{url}/v1/explain", json={"pairs": [{"user": user, "item": item}],
                                                                  "decoding": "greedy"}),
            "malformed": lambda: c.post(f"{url}/v1/explain", content=b'{"pairs": [', headers={
                "content-type": "application/json"}),
            "oversized": lambda: c.post(f"{url}/v1/explain", content=b" " * (engine.cfg.max_body_bytes + 1),
                                        headers={"content-type": "application/json"}),
            "unknown": lambda: c.get(f"{url}/v1/items/{engine.n_items + rng.randrange(1000)}"),
            "model_error": lambda: c.post(f"{url}/v1/explain", json={"pairs": [{"user": bad[0], "item": bad[1]}]}),
            "cancelled": lambda: c.post(f"{url}/v1/explain", json={"pairs": [{"user": user, "item": item}]}),
        }[kind]
        t = time.perf_counter()
        try:
            if kind == "cancelled":
                try:
                    r = await asyncio.wait_for(send(), 0.05)
                except TimeoutError:
                    cancelled[kind] += 1
                    return
            else:
                r = await send()
        except httpx.HTTPError:  # no answer: lost
            no_answer[kind] += 1
            return
        status[kind][r.status_code] += 1
        if kind in CHEAP:
            cheap_lat[int((t - t0) // 120)].append(time.perf_counter() - t)

    async def probe(c: httpx.AsyncClient) -> None:
        while time.perf_counter() < end:
            try:
                r = await c.get(f"{url}/health", timeout=10)
                health[f"{r.status_code} {r.json().get('status')}"] += 1
            except httpx.HTTPError as e:
                health[f"error {type(e).__name__}"] += 1
            await asyncio.sleep(5)

    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=600, limits=limits) as c:
        prober = asyncio.create_task(probe(c))
        i = 0
        while (now := time.perf_counter()) < end:
            if now - t0 >= 60 * (len(trace) + 1):  # resident memory each minute
                trace.append(round(rss_mb(), 1))
                rss.setdefault("warm", trace[0])
            task = asyncio.create_task(one(c, rng.choices(kinds, weights)[0]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
        await prober
    rss["end"] = rss_mb()
    rss.setdefault("warm", rss["end"])
    half = trace[len(trace) // 2] if trace else rss["end"]
    lost = {k: sent[k] - sum(status[k].values()) - cancelled[k] for k in sent}  # includes no_answer
    unexplained = sum(n for k, v in status.items() if k != "model_error" for s, n in v.items() if s == 500)
    wrong = {k: {str(s): n for s, n in v.items() if s not in EXPECTED.get(k, {200}) | REFUSED}
             for k, v in status.items()}
    p99 = {f"{120 * w}-{120 * (w + 1)} s": float(sorted(xs)[int(0.99 * (len(xs) - 1))]) for w, xs in
           sorted(cheap_lat.items()) if xs}
    return {"seconds": time.perf_counter() - t0, "sent": dict(sent), "cancelled_by_client": dict(cancelled),
            "no_answer": dict(no_answer),
            "status": {k: {str(s): n for s, n in v.items()} for k, v in status.items()}, "lost": lost,
            "lost_total": sum(lost.values()), "unexplained_500": unexplained,
            "wrong_status": {k: v for k, v in wrong.items() if v}, "rss_mb": rss,
            "rss_growth": rss["end"] / rss["warm"] - 1, "rss_growth_second_half": rss["end"] / half - 1,
            "rss_per_minute_mb": trace, "cheap_p99_s": p99, "health": dict(health)}


def section(res: dict) -> list[str]:
    lines = [SOAK_HEAD, "",
             f"- date: {res['date']}; machine: {res['machine']}; command: `{res['command']}`",
             f"- run: `{res['run']}`; {res['minutes']:g} minutes at {res['rate']:g} requests/s, loopback only; server "
             "in the measuring process (RSS covers both); one pair made to fail inside the model",
             "", "| kind | sent | answers by status | cancelled by the client | lost |", "|---|---|---|---|---|"]
    for k in MIX:
        if res["sent"].get(k):
            st = ", ".join(f"{s}: {n}" for s, n in sorted(res["status"].get(k, {}).items()))
            lines.append(f"| {k} | {res['sent'][k]} | {st} | {res['cancelled_by_client'].get(k, 0)} | "
                         f"{res['lost'].get(k, 0)} |")
    r = res["rss_mb"]
    lines += ["", f"- lost requests: **{res['lost_total']}**; unexplained 500s: **{res['unexplained_500']}**; "
                  f"statuses other than expected: {res['wrong_status'] or 'none'}",
              f"- resident memory: {r['warm']:.0f} MB after the first minute, {r['end']:.0f} MB at the end "
              f"(**{100 * res['rss_growth']:+.1f}%**; {100 * res['rss_growth_second_half']:+.1f}% over the second "
              f"half); each minute: {', '.join(f'{x:.0f}' for x in res['rss_per_minute_mb'])} MB",
              "- p99 of the cheap routes per two-minute window: "
              + ", ".join(f"{w}: {1000 * v:.0f} ms" for w, v in res["cheap_p99_s"].items()),
              f"- `/health` every 5 s: {res['health']}", ""]
    return lines


def write_section(path: Path, lines: list[str]) -> None:
    """Replace (or append) the ``## Soak`` section of ``path``."""
    text = path.read_text() if path.is_file() else "# `beatrec serve` under load, and its faults\n"
    head, _, rest = text.partition(SOAK_HEAD)
    tail = rest.split("\n## ", 1)[1] if "\n## " in rest else ""
    path.write_text(head.rstrip("\n") + "\n\n" + "\n".join(lines) + ("\n## " + tail if tail else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.run / "align" / "meta.json").is_file():
        sys.exit(f"{args.run}: no stage-2 run there (train one with `beatrec align`, or `beatrec demo`)")
    import torch

    torch.set_num_threads(args.threads)
    server, url, thread, engine, bad = start_server(args.run, args.overrides, args.threads)
    print(f"soaking {url} for {args.minutes:g} min at {args.rate:g}/s", flush=True)
    try:
        res = asyncio.run(soak(url, engine, bad, args.minutes, args.rate, args.seed))
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    res.update(date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               machine=f"{platform.platform()}, {os.cpu_count()} cores", run=str(args.run), minutes=args.minutes,
               rate=args.rate, command="python benchmarks/serve_soak.py " + " ".join(
                   argv if argv is not None else sys.argv[1:]))
    args.out.with_name("serve_soak.json").write_text(json.dumps(res, indent=1) + "\n")
    write_section(args.out, section(res))
    print("\n".join(section(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
