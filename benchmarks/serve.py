"""Load and fault benchmark of ``beatrec serve`` against servers on 127.0.0.1 only.

    python benchmarks/serve.py --run runs/serve/amazon

For one trained run, in one invocation:

1. **Throughput and latency** at concurrency 1, 4 and 16 (a fixed number of ``/v1/explain`` requests of one
   distinct zero-shot pair each, and a time limit per level), against two servers started side by side from
   the same run: *batched* (the defaults: continuous batching, up to ``max_batch`` pairs decoding at once, a new
   request joining between decode steps), *window* (one batched call per batch gathered within ``wait_ms``),
   *one-at-a-time* (``max_batch=1``) and *today* (the decode before issue #38), all with the cache off, so the
   ratios are the batching and the decoder alone (``--modes`` picks them).
2. **Cache**: the same pairs asked again from the batched server with its cache on: latency of hits vs misses.
3. **A single ``beatrec explain`` call** on one pair: the command's wall time (model load included) and the
   generation alone in-process, the bar the served p95 at concurrency 1 is held to.
4. **Faults**, against a server with a small queue: malformed JSON, unknown user, unknown item, oversized
   batch, wrong types, a request cancelled mid-generation, a burst above the queue bound; each with the status
   seen, the JSON message and whether ``/health`` answered right after.
5. Optionally a screenshot of the page (``--screenshot``; headless Debian chromium through Playwright).

Writes ``benchmarks/serve.md`` and ``benchmarks/serve.json`` (machine, date, command).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 4, 16)
# server modes (name -> --set lines on top of --set), each started from the same run in one invocation; "today"
# is the decode before issue #38 (Hugging Face generate, LoRA unmerged, float32), the "before" of its side-by-side
MODES: dict[str, list[str]] = {
    "today": ["cache_size=0", "align.generate.decoder=generate", "align.generate.merge_lora=false",
              "align.generate.dtype=float32", "align.generate.pack=false"],
    "batched": ["cache_size=0"],  # the defaults: continuous batching (requests join the decode between steps)
    "window": ["cache_size=0", "batching=window"],  # one batched call per batch gathered within wait_ms
    "one-at-a-time": ["cache_size=0", "max_batch=1"],
    "batched_int8": ["cache_size=0", "align.generate.fast_weights=int8"],
    "batched_fp32": ["cache_size=0", "align.generate.dtype=float32"],
    "batched_unpacked": ["cache_size=0", "align.generate.pack=false"],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run with stages 1 and 2")
    ap.add_argument("--requests", type=int, default=32, help="requests per concurrency level (1 pair each)")
    ap.add_argument("--requests-c1", type=int, default=8, help="requests at concurrency 1 (slowest level)")
    ap.add_argument("--time-limit", type=float, default=240.0, help="seconds per level; unsent requests are dropped")
    ap.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    ap.add_argument("--modes", nargs="+", default=["today", "batched", "window", "one-at-a-time"], choices=list(MODES),
                    help="servers measured side by side (MODES)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="passed to every server")
    ap.add_argument("--threads", type=int, default=2, help="OMP/torch threads of each server")
    ap.add_argument("--screenshot", type=Path, help="write a screenshot of the page here (needs chromium)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "serve.md")
    return ap.parse_args(argv)


class Server:
    """``beatrec serve --port 0`` in a subprocess (loopback only)."""

    def __init__(self, run: Path, sets: list[str], threads: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        args = [sys.executable, "-m", "beatrec", "serve", "--run", str(run), "--host", "127.0.0.1", "--port", "0",
                "--quiet", "--set", f"threads={threads}"]
        for s in sets:
            args += ["--set", s]
        t = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if "http://" not in line:
            err = self.proc.stderr.read()[-3000:]
            self.proc.kill()
            raise SystemExit(f"server did not start: {line!r}\n{err}")
        self.url = line.split(" on ", 1)[1].split(" ", 1)[0].rstrip("/")
        self.start_s = time.perf_counter() - t

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_pairs(run: Path, n: int, seed: int = 0) -> list[dict]:
    """``n`` distinct (zero-shot test user, item) pairs, seeded."""
    import numpy as np

    from beatrec.data.split import ZeroShotSplit

    meta = json.loads((run / "align" / "meta.json").read_text())
    from beatrec.data.dataset import load_dataset

    ds = load_dataset(meta["data"])
    users = ZeroShotSplit.load(run / "split.json").test_users
    rng = np.random.default_rng(seed)
    out: set[tuple[int, int]] = set()
    while len(out) < n:
        out.add((int(rng.choice(users)), int(rng.integers(ds.n_items))))
    return [{"user": u, "item": i} for u, i in sorted(out, key=lambda p: rng.random())]


async def load_level(url: str, pairs: list[dict], concurrency: int, limit_s: float) -> dict:
    """Send one request per pair, ``concurrency`` at a time, until done or ``limit_s``. -> stats."""
    import httpx
    import numpy as np

    lat: list[float] = []
    status: dict[int, int] = {}
    todo = list(pairs)
    t0 = time.perf_counter()

    async def worker(c: httpx.AsyncClient) -> None:
        while todo and time.perf_counter() - t0 < limit_s:
            p = todo.pop(0)
            t = time.perf_counter()
            r = await c.post(f"{url}/v1/explain", json={"pairs": [p]})
            lat.append(time.perf_counter() - t)
            status[r.status_code] = status.get(r.status_code, 0) + 1

    async with httpx.AsyncClient(timeout=None) as c:
        await asyncio.gather(*[worker(c) for _ in range(concurrency)])
        metrics = (await c.get(f"{url}/metrics", params={"format": "json"})).json()
    wall = time.perf_counter() - t0
    ok = status.get(200, 0)
    q = np.quantile(lat, [0.5, 0.95, 0.99]) if lat else [float("nan")] * 3
    return {"concurrency": concurrency, "requests": len(lat), "ok": ok, "status": status, "wall_s": wall,
            "per_s": ok / wall if wall else 0.0, "p50": float(q[0]), "p95": float(q[1]), "p99": float(q[2]),
            "batch_size_mean": metrics["batch_size_mean"], "batch_size_max": metrics["batch_size_max"]}


def single_call(run: Path, pair: dict, sets: list[str], threads: int) -> dict:
    """`beatrec explain` on one pair: the command's wall time, and the in-process generation alone."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    args = [sys.executable, "-m", "beatrec", "explain", "--run", str(run), "--user", str(pair["user"]),
            "--item", str(pair["item"]), "--quiet", *[x for s in sets if s.startswith("align.")
                                                   for x in ("--set", s[len("align."):])]]
    t = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=env)
    cli_s = time.perf_counter() - t
    import torch

    from beatrec.align.explain import check_pairs, explain, load_aligned

    torch.set_num_threads(threads)
    a = load_aligned(run, [s[len("align."):] for s in sets if s.startswith("align.")])
    rows = check_pairs(a, [{"uid": pair["user"], "iid": pair["item"]}], "pair")
    explain(a, rows)  # warm-up
    gen = []
    for _ in range(3):
        t = time.perf_counter()
        explain(a, rows)
        gen.append(time.perf_counter() - t)
    return {"cli_s": cli_s, "generate_s": float(sorted(gen)[1]), "generate_all_s": gen}


async def faults(url: str, pairs: list[dict], max_pairs: int, queue_size: int) -> list[dict]:
    import httpx

    rows = []
    async with httpx.AsyncClient(timeout=None) as c:
        async def healthy() -> bool:
            try:
                return (await c.get(f"{url}/health", timeout=10)).status_code == 200
            except httpx.HTTPError:
                return False

        async def one(name: str, send) -> None:  # noqa: ANN001
            r = await send()
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text[:80]
            rows.append({"fault": name, "status": r.status_code, "detail": str(detail)[:120], "healthy": await healthy()})

        await one("malformed JSON", lambda: c.post(f"{url}/v1/explain", content=b'{"pairs": [',
                                                   headers={"content-type": "application/json"}))
        await one("unknown user", lambda: c.post(f"{url}/v1/explain", json={"pairs": [{"user": 10**9, "item": 0}]}))
        await one("unknown item", lambda: c.post(f"{url}/v1/explain", json={"pairs": [{"user": pairs[0]["user"], "item": 10**9}]}))
        await one(f"oversized batch ({max_pairs + 1} pairs)",
                  lambda: c.post(f"{url}/v1/explain", json={"pairs": pairs[: max_pairs + 1]}))
        await one("wrong types (user is a string)",
                  lambda: c.post(f"{url}/v1/explain", json={"pairs": [{"user": "alice", "item": 1}]}))
        # a request cancelled mid-generation: the client gives up after 1 s
        t = time.perf_counter()
        try:
            await c.post(f"{url}/v1/explain", json={"pairs": pairs[:2]}, timeout=1.0)
            st = "answered within 1 s"
        except httpx.TimeoutException:
            st = "client cancelled"
        rows.append({"fault": "request cancelled mid-generation", "status": st, "detail": f"after {time.perf_counter() - t:.1f} s",
                     "healthy": await healthy()})
        # a burst above the queue bound: many requests of max_pairs distinct pairs at once
        n = 2 * queue_size // max_pairs + 2
        burst = [pairs[2 + k * max_pairs: 2 + (k + 1) * max_pairs] for k in range(n)]
        rs = await asyncio.gather(*[c.post(f"{url}/v1/explain", json={"pairs": b}) for b in burst])
        seen: dict[int, int] = {}
        for r in rs:
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
        msg = next((r.json()["detail"] for r in rs if r.status_code == 429), "")
        rows.append({"fault": f"burst above the queue bound ({n} requests x {max_pairs} pairs, queue {queue_size})",
                     "status": ", ".join(f"{k}x{v}" for k, v in sorted(seen.items())), "detail": msg[:120],
                     "healthy": await healthy()})
    return rows


def screenshot(url: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("--screenshot needs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#user-suggestions button", timeout=120_000)
        page.click("#user-suggestions button >> nth=0")
        page.wait_for_function("document.querySelectorAll('#recs .explanation.pending').length === 0 && "
                               "document.querySelectorAll('#recs .explanation').length > 0", timeout=600_000)
        page.click("#recs li.rec >> nth=0 >> button")
        page.wait_for_selector("#attention table td.word", timeout=300_000)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        b.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.run / "align" / "meta.json").is_file():
        raise SystemExit(f"{args.run}: not a run with stage 2 (train it with `beatrec tokenize` + `beatrec align`)")
    import torch

    started = datetime.datetime.now().isoformat(timespec="seconds")
    t_all = time.perf_counter()
    n_need = args.requests * len(args.levels) * len(args.modes) + 200
    pairs = test_pairs(args.run, n_need)
    res: dict = {"date": started, "machine": f"{platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}",
                 "command": "python benchmarks/serve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "run": str(args.run), "levels": {}}
    meta = json.loads((args.run / "align" / "meta.json").read_text())
    res["model"] = {k: meta.get(k) for k in ("lm", "finetune", "data")}
    used = 0
    for mode in args.modes:
        sets = MODES[mode]
        srv = Server(args.run, [*args.overrides, *sets], args.threads)
        print(f"[{mode}] server up in {srv.start_s:.1f} s at {srv.url}", flush=True)
        try:
            for c in args.levels:
                n = args.requests_c1 if c == 1 else args.requests
                r = asyncio.run(load_level(srv.url, pairs[used:used + n], c, args.time_limit))
                used += n
                res["levels"][f"{mode} c{c}"] = {"mode": mode, **r}
                print(f"[{mode}] c={c}: {r['ok']} ok in {r['wall_s']:.1f} s = {r['per_s']:.2f}/s, "
                      f"p50 {r['p50']:.2f} s p95 {r['p95']:.2f} s, mean batch {r['batch_size_mean']:.1f}", flush=True)
        finally:
            srv.stop()
    # cache: the batched server with its cache on, the same pairs twice
    srv = Server(args.run, args.overrides, args.threads)
    try:
        cp = pairs[used:used + args.requests]
        used += args.requests
        miss = asyncio.run(load_level(srv.url, cp, 16, args.time_limit))
        hit = asyncio.run(load_level(srv.url, cp[: miss["requests"]], 16, args.time_limit))
        res["cache"] = {"miss": miss, "hit": hit}
        print(f"[cache] miss p50 {miss['p50']:.3f} s, hit p50 {hit['p50']:.4f} s", flush=True)
        if args.screenshot:
            try:
                screenshot(srv.url, args.screenshot)
                res["screenshot"] = str(args.screenshot)
            except Exception as e:  # the measurements above are kept; the report says why there is no picture
                res["screenshot_error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    finally:
        srv.stop()
    res["single"] = single_call(args.run, pairs[0], args.overrides, args.threads)
    print(f"[single] beatrec explain {res['single']['cli_s']:.1f} s (generation {res['single']['generate_s']:.2f} s)",
          flush=True)
    fsets = ["max_pairs=4", "queue_size=8", "max_k=8"]
    srv = Server(args.run, [*args.overrides, *fsets], args.threads)
    try:
        res["faults"] = asyncio.run(faults(srv.url, pairs[used:], 4, 8))
    finally:
        srv.stop()
    res["total_s"] = time.perf_counter() - t_all
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    soak = args.out.read_text().partition("\n## Soak")[2] if args.out.is_file() else ""
    args.out.write_text(report(res, fsets) + ("\n## Soak" + soak if soak else ""))  # serve_soak.py's section stays
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


def report(res: dict, fsets: list[str]) -> str:
    lv = res["levels"]
    lines = ["# `beatrec serve` under load, and its faults", "",
             f"- date: {res['date']}; total wall time {res['total_s']:.0f} s",
             f"- machine: {res['machine']}; server and client on the same machine, 127.0.0.1 only",
             f"- command: `{res['command']}`",
             f"- run: `{res['run']}` (LM `{res['model']['lm']}`, {res['model']['finetune']}; data `{res['model']['data']}`)",
             "- each request explains one distinct zero-shot test pair (`POST /v1/explain`); cache off for the load "
             "levels; every server started from the same run in this invocation (modes: `MODES` in `benchmarks/serve.py`)", "",
             "| server | concurrency | requests ok | explanations/s | p50 s | p95 s | p99 s | mean batch | max batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in lv.values():
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['ok']}/{r['requests']} | {r['per_s']:.3f} | {r['p50']:.2f} | "
                     f"{r['p95']:.2f} | {r['p99']:.2f} | {r['batch_size_mean']:.1f} | {r['batch_size_max']} |")
    s = res["single"]
    lines += ["", f"- a single `beatrec explain` call on one pair: {s['cli_s']:.1f} s wall (model load included); "
                  f"its generation alone, in-process: {s['generate_s']:.2f} s (median of 3)"]
    top = max((r for r in lv.values() if r["mode"] == "batched"), key=lambda r: r["concurrency"], default=None)
    one = [r for r in lv.values() if r["mode"] == "one-at-a-time" and top and r["concurrency"] == top["concurrency"]]
    if top and one and one[0]["per_s"]:
        lines.append(f"- batched vs one-at-a-time at concurrency {top['concurrency']}: "
                     f"**{top['per_s'] / one[0]['per_s']:.2f}x** the explanations/s")
    for mode in dict.fromkeys(r["mode"] for r in lv.values()):
        if mode == "today":
            continue
        for c in sorted({r["concurrency"] for r in lv.values()}):
            new, old = lv.get(f"{mode} c{c}"), lv.get(f"today c{c}")
            if new and old and new["ok"] and old["ok"]:
                lines.append(f"- {mode} vs today's decode, concurrency {c}: p50 **{old['p50'] / new['p50']:.2f}x** "
                             f"lower, **{new['per_s'] / old['per_s']:.2f}x** the explanations/s")
    for c in sorted({r["concurrency"] for r in lv.values()}):
        new, old = lv.get(f"batched c{c}"), lv.get(f"window c{c}")
        if new and old and new["ok"] and old["ok"]:
            lines.append(f"- continuous batching (batched) vs the wait window, concurrency {c}: p50 "
                         f"**{old['p50'] / new['p50']:.2f}x** lower, **{new['per_s'] / old['per_s']:.2f}x** the "
                         "explanations/s")
    c1 = lv.get("batched c1")
    if c1:
        lines.append(f"- batched server, concurrency 1: p95 {c1['p95']:.2f} s = **{c1['p95'] / s['generate_s']:.2f}x** "
                     f"the in-process generation of a single call ({c1['p95'] / s['cli_s']:.2f}x the whole command)")
    if "cache" in res:
        m, h = res["cache"]["miss"], res["cache"]["hit"]
        lines.append(f"- cache: the same {h['requests']} pairs again at concurrency 16: p50 {h['p50'] * 1000:.1f} ms "
                     f"(hit) vs {m['p50']:.2f} s (first time), {h['per_s']:.0f} vs {m['per_s']:.2f} explanations/s")
    if res.get("screenshot_error"):
        lines.append(f"- page screenshot failed: {res['screenshot_error']}")
    if res.get("screenshot"):
        lines.append(f"- page screenshot: `{res['screenshot']}`")
    lines += ["", f"Faults (a server started with `{' '.join('--set ' + f for f in fsets)}`); `/health` asked right after each:",
              "", "| fault | status | message | /health after |", "|---|---|---|---|"]
    for f in res["faults"]:
        lines.append(f"| {f['fault']} | {f['status']} | {f['detail'].replace('|', '/')} | {'200' if f['healthy'] else 'FAILED'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
