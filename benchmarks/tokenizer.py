"""Benchmark of BEAT stage 1 (``beatrec tokenize``) on the XRec graphs and a scaling run on synthetic graphs.

    python benchmarks/tokenizer.py                       # amazon google yelp + scaling, writes benchmarks/tokenizer.md
    python benchmarks/tokenizer.py --datasets amazon --scaling 10000

Each dataset runs in its own process (so peak memory is that run's own) with the default config; the first
run of a dataset includes the one-time phrase extraction with the packaged SmolLM2, reported separately.
The scaling run builds random genre-block bipartite graphs (10 edges per user) and times training steps of
the same model at batch 1024; time per epoch = measured seconds per step x steps per epoch (a full epoch is
also run on the smallest graph to check the extrapolation).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
XREC = ROOT / ".." / "shared" / "data" / "xrec"


def run_one(dataset: str, out: Path, extra: list[str]) -> None:
    """Child mode: tokenize one dataset, print a JSON line with the metrics and peak RSS."""
    from beatrec.config import load_yaml
    from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

    cfg = load_yaml(TokenizeConfig, None, extra)
    t = time.perf_counter()
    res = run_tokenize(XREC / dataset, out, cfg, progress=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    print("RESULT " + json.dumps({"dataset": dataset, "wall_s": wall, "peak_mib": peak, "metrics": res.metrics}))


def scaling_one(n_users: int, steps: int, full_epoch: bool) -> dict:
    """Child mode: time training steps on a random genre-block graph with n_users users."""
    import numpy as np
    import torch

    from beatrec.metrics.ranking import interaction_matrix
    from beatrec.tokenizer.config import TokenizerModelConfig
    from beatrec.tokenizer.graph import normalized_adjacency
    from beatrec.tokenizer.model import BehaviorTokenizer
    from beatrec.tokenizer.train import sample_negatives

    rng = np.random.default_rng(0)
    n_items = max(1000, n_users // 2)
    per_user, n_genres = 10, 20
    ug = rng.integers(0, n_genres, n_users)
    block = n_items // n_genres
    users = np.repeat(np.arange(n_users), per_user)
    items = (np.repeat(ug, per_user) * block + rng.integers(0, block, len(users))) % n_items
    mix = rng.random(len(users)) < 0.2
    items[mix] = rng.integers(0, n_items, int(mix.sum()))
    key = np.unique(users * n_items + items)
    users, items = key // n_items, key % n_items
    t = time.perf_counter()
    adj = normalized_adjacency(users, items, n_users, n_items)
    train = interaction_matrix(users, items, n_users, n_items)
    build_s = time.perf_counter() - t
    model = BehaviorTokenizer(n_users, n_items, 384, TokenizerModelConfig())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bs = 1024

    def step() -> None:
        idx = rng.integers(0, len(users), bs)
        u = users[idx]
        neg = sample_negatives(u, train, rng)
        zu, zi = model.gcn(adj)
        b, vq = model.behave_loss(zu, zi, torch.from_numpy(u), torch.from_numpy(items[idx]),
                                  torch.from_numpy(neg), 1.0)
        opt.zero_grad(set_to_none=True)
        (b + vq).backward()
        opt.step()

    step()  # warm-up (k-means initialisation of the codebooks)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - t) / steps
    steps_per_epoch = int(np.ceil(len(users) / bs))
    full = None
    if full_epoch:
        t = time.perf_counter()
        for _ in range(steps_per_epoch):
            step()
        full = time.perf_counter() - t
    return {"n_users": n_users, "n_items": n_items, "n_edges": int(len(users)), "graph_build_s": build_s,
            "s_per_step": per_step, "steps_per_epoch": steps_per_epoch,
            "epoch_s_extrapolated": per_step * steps_per_epoch, "epoch_s_measured": full,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(cmd: list[str], log: Path) -> dict:
    with log.open("w") as f:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, cwd=ROOT)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"child failed ({p.returncode}): {' '.join(cmd)}; see {log}")
    return json.loads(lines[-1][len("RESULT "):])


def fmt(x: float) -> str:
    return f"{x:.4f}"


def plot_scaling(scaling: list[dict], path: Path) -> Path:
    """Log-log plot of seconds per epoch (and per step) against the number of edges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = [s["n_edges"] for s in scaling]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(e, [s["epoch_s_extrapolated"] for s in scaling], marker="o", label="s / epoch (steps x s/step)")
    ax.loglog(e, [s["s_per_step"] for s in scaling], marker="s", label="s / step (batch 1024)")
    meas = [(s["n_edges"], s["epoch_s_measured"]) for s in scaling if s.get("epoch_s_measured")]
    if meas:
        ax.scatter(*zip(*meas, strict=True), marker="x", s=60, color="k", zorder=3, label="s / epoch, measured")
    for s in scaling:
        ax.annotate(f"{s['n_users']:,} users", (s["n_edges"], s["epoch_s_extrapolated"]), fontsize=8,
                    textcoords="offset points", xytext=(4, -10))
    ax.margins(x=0.2)
    ax.set_xlabel("training edges")
    ax.set_ylabel("seconds (2 CPU cores)")
    ax.set_title("BEAT stage 1: training time against graph size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: list[dict], scaling: list[dict], path: Path, command: str, overrides: list[str]) -> None:
    k = 20
    out = [
        "# BEAT stage 1 — behavior tokenizer benchmark",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {platform.processor() or 'x86_64'}, "
        f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}, torch {__import__('torch').__version__}",
        f"- command: `{command}`",
        "- config: defaults (`beatrec tokenize --data ../shared/data/xrec/<name> --out runs/bench/<name>`):"
        " 1 macro + 5 micro parts of 32 dims, 512 codes per codebook, batch 1024, Adam 1e-3, early stopping on"
        " validation HR@20 (patience 5)" + (f"; overrides: `{' '.join(overrides)}`" if overrides else "") + ".",
        "- HR/NDCG: full ranking over all items of each user's XRec *test* edges, training and validation edges"
        " excluded; users with at least one test edge.",
        "",
        "## XRec graphs",
        "",
        "| dataset | users | items | train edges | epochs (best) | s/epoch | tokenize total s | phrase extraction s"
        " (entities, failed) | peak MiB | HR@20 quant | HR@20 cont | HR@20 pop | quant/cont | NDCG@20 quant |"
        " NDCG@20 cont | NDCG@20 pop | micro usage u/i | macro usage u/i | micro perplexity u/i |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["metrics"]
        t = m["ranking"]["test"]
        cb = m["codebooks"]
        ph = m["phrases"]
        n_ent = ph["users"]["n_entities"] + ph["items"]["n_entities"]
        n_fail = ph["users"]["n_failed"] + ph["items"]["n_failed"]
        extract_s = m["timings"]["phrase_extraction_s"]
        tok_s = m["timings"]["total_s"] - extract_s
        out.append(
            f"| {r['dataset']} | {m['n_users']} | {m['n_items']} | {m['n_train_edges']} | "
            f"{m['training']['epochs_run']} ({m['training']['best_epoch']}) | {m['training']['mean_epoch_s']:.1f} | "
            f"{tok_s:.0f} | {extract_s:.0f} ({n_ent}, {n_fail}) | {r['peak_mib']:.0f} | "
            f"{fmt(t[f'quantized_hr@{k}'])} | {fmt(t[f'continuous_hr@{k}'])} | {fmt(t[f'popularity_hr@{k}'])} | "
            f"{t['quantized_over_continuous_hr']:.2f} | {fmt(t[f'quantized_ndcg@{k}'])} | "
            f"{fmt(t[f'continuous_ndcg@{k}'])} | {fmt(t[f'popularity_ndcg@{k}'])} | "
            f"{cb['user_micro']['used_fraction']:.2f}/{cb['item_micro']['used_fraction']:.2f} | "
            f"{cb['user_macro']['used_fraction']:.2f}/{cb['item_macro']['used_fraction']:.2f} | "
            f"{cb['user_micro']['perplexity']:.0f}/{cb['item_micro']['perplexity']:.0f} |"
        )
    out += ["", "`tokenize total s` excludes the phrase extraction (its cached, one-time cost is the next column;"
            " a second run reads it from the cache).", ""]
    if scaling:
        out += ["## Scaling (synthetic genre-block graphs, 10 edges per user, default model, batch 1024)", "",
                "| users | items | edges | s/step | steps/epoch | s/epoch (extrapolated) | s/epoch (measured) | peak MiB |",
                "|---|---|---|---|---|---|---|---|"]
        for s in scaling:
            meas = f"{s['epoch_s_measured']:.1f}" if s["epoch_s_measured"] else "—"
            out.append(f"| {s['n_users']} | {s['n_items']} | {s['n_edges']} | {s['s_per_step']:.3f} | "
                       f"{s['steps_per_epoch']} | {s['epoch_s_extrapolated']:.1f} | {meas} | {s['peak_mib']:.0f} |")
        out += ["", f"![seconds per epoch against edges]({plot_scaling(scaling, path.with_name('tokenizer_scaling.png')).name})",
                "", "Every step propagates the whole graph (LightGCN), so time per step grows linearly with the"
                " number of edges and time per epoch quadratically; at 1M users a full epoch at batch 1024 is"
                " impractical on 2 cores (these rows train with `train.graph=full`; sampled training at scale:"
                " `benchmarks/tokenizer_scale.md`).", ""]
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=["amazon", "google", "yelp"])
    ap.add_argument("--scaling", nargs="*", type=int, default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "tokenizer.md")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--reuse", action="store_true",
                    help="take a dataset's result from RUNS/<name>.result.json when an earlier run left one")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--scale-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--full-epoch", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(args.one, args.runs / args.one, args.overrides)
        return
    if args.scale_one:
        print("RESULT " + json.dumps(scaling_one(args.scale_one, args.steps, args.full_epoch)))
        return
    if args.datasets and not XREC.is_dir():
        raise SystemExit(f"{XREC} not found: the XRec data must sit in ../shared/data/xrec beside the repository")
    command = "python benchmarks/tokenizer.py " + " ".join(sys.argv[1:])
    args.runs.mkdir(parents=True, exist_ok=True)
    results, scaling = [], []
    me = [sys.executable, str(Path(__file__).resolve())]
    for ds in args.datasets:
        sets = [x for o in args.overrides for x in ("--set", o)]
        saved = args.runs / f"{ds}.result.json"
        if args.reuse and saved.is_file():
            results.append(json.loads(saved.read_text()))
            continue
        results.append(child(me + ["--one", ds, "--runs", str(args.runs)] + sets, args.runs / f"{ds}.log"))
        (args.runs / f"{ds}.result.json").write_text(json.dumps(results[-1]))
        write_report(results, scaling, args.out, command, args.overrides)
    for i, n in enumerate(sorted(args.scaling)):
        extra = ["--full-epoch"] if i == 0 else []
        scaling.append(child(me + ["--scale-one", str(n), "--steps", str(args.steps)] + extra,
                             args.runs / f"scale_{n}.log"))
        write_report(results, scaling, args.out, command, args.overrides)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
