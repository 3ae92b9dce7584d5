"""Stage 1 at scale: full-graph against sampled-subgraph training, one against two processes.

    python benchmarks/tokenizer_scale.py            # every row, writes benchmarks/tokenizer_scale.md (+ .png)
    python benchmarks/tokenizer_scale.py --only synth-1000000-big   # one row (results are kept in a JSON
                                                                     # file and reused: the run is resumable)

Rows (each in its own process, so that peak RSS is that row's own):
  * synthetic genre-block graphs (``beatrec.data.graphs``: 12 draws per user, ~10 training edges per user after
    one validation and one test edge) of 10k, 100k and 1M users: seconds per training epoch (evaluation
    excluded) and peak RSS, for full-graph and sampled training; one epoch measured, or, where marked,
    extrapolated from the first ``--probe-steps`` steps (time per step x steps per epoch);
  * 10k users: full against sampled trained to early stopping, quantised test HR@20 side by side;
  * Amazon (``../shared/data/xrec/amazon``, ``beatrec tokenize`` with the rule-based phrase splitter): full
    against sampled, test HR@20 and codebook usage; and the sampled run with two processes (``torchrun``,
    one thread each) against one process (two threads): seconds per epoch.
Synthetic rows train the behaviour objective only (no text: BPR + VQ), as the scaling rows of
``benchmarks/tokenizer.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AMAZON = ROOT / ".." / "shared" / "data" / "xrec" / "amazon"
RESULTS = ROOT / "benchmarks" / "tokenizer_scale.json"
REPORT = ROOT / "benchmarks" / "tokenizer_scale.md"
PLOT = ROOT / "benchmarks" / "tokenizer_scale.png"

# The large-graph setting (README "Stage 1 on large graphs"): big batches, so that an epoch has few steps, and
# small fan-outs, so that a step's neighbourhood (and the rows Adam updates) stays bounded.
BIG = {"graph": "sampled", "batch_size": 131072, "fanouts": [2, 2, 2]}
DEFAULT_SAMPLED = {"graph": "sampled", "batch_size": 1024, "fanouts": [10, 10, 10]}
FULL = {"graph": "full", "batch_size": 1024}
SETTINGS = {"full": FULL, "sampled": DEFAULT_SAMPLED, "big": BIG}
TWO_PROC_EPOCHS = 3  # the two-process Amazon run is timed over its first epochs (its quality: the DDP test)
# Rows run with torch's huge-page allocator switch off ("0") and on ("1"), side by side (see kernels_child).
THP_ROWS = {"kernels-thp0": "0", "kernels-thp1": "1", "synth-1000000-big-probe-thp0": "0",
            "synth-1000000-big-probe-thp1": "1"}
THP_PROBE_STEPS = 8  # 1M-user steps timed with the switch off and on


def synth_child(n_users: int, setting: str, probe_steps: int, max_epochs: int, seed: int) -> dict:
    """Train on a genre-block graph; one epoch (or ``probe_steps`` steps) unless ``max_epochs`` > 1."""
    import numpy as np
    import torch

    from beatrec.data.graphs import genre_block_graph
    from beatrec.metrics.ranking import interaction_matrix
    from beatrec.tokenizer.config import TokenizerModelConfig, TokenizerTrainConfig
    from beatrec.tokenizer.graph import normalized_adjacency
    from beatrec.tokenizer.model import BehaviorTokenizer
    from beatrec.tokenizer.train import PhraseTable, TokenizerData, evaluate_model, train_tokenizer

    g = genre_block_graph(n_users, per_user=12, seed=seed)
    mats = {s: interaction_matrix(g.users[g.split == s], g.items[g.split == s], n_users, g.n_items) for s in (0, 1, 2)}
    tr = g.split == 0
    users, items = g.users[tr], g.items[tr]
    n_items = g.n_items
    del g, tr  # only the training edges and the matrices stay in memory
    adj = normalized_adjacency(users, items, n_users, n_items)
    opts = dict(SETTINGS[setting])
    n_edges = len(users)
    steps_per_epoch = -(-n_edges // opts["batch_size"])
    if probe_steps and probe_steps < steps_per_epoch:  # a partial epoch: the first probe_steps batches
        keep = np.random.default_rng(seed).permutation(n_edges)[: probe_steps * opts["batch_size"]]
        users, items = users[keep], items[keep]
    empty = PhraseTable(torch.zeros(0, dtype=torch.long), torch.zeros(0, 5, 384), torch.zeros(0, 5, dtype=torch.bool))
    none = torch.zeros(0, dtype=torch.long)
    data = TokenizerData(adj, users, items, mats[0], mats[1], none, none, torch.zeros(0, 384), empty, empty)
    cfg = TokenizerTrainConfig(max_epochs=max_epochs, eval_users=2000 if n_users > 20000 else 0, seed=seed,
                               min_steps=0, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in opts.items()})
    model = BehaviorTokenizer(n_users, n_items, 384, TokenizerModelConfig())
    t = time.perf_counter()
    res = train_tokenizer(model, data, cfg, progress=True)
    wall = time.perf_counter() - t
    steps_run = -(-len(users) // cfg.batch_size)
    h = res.history
    out = {"n_users": n_users, "n_items": n_items, "n_train_edges": n_edges, "setting": setting, "opts": opts,
           "steps_per_epoch": steps_per_epoch, "steps_run": steps_run, "epochs_run": len(h),
           "epoch_train_s": h[0].seconds, "eval_s": h[0].eval_seconds,
           "epoch_s": h[0].seconds * steps_per_epoch / steps_run, "extrapolated": steps_run < steps_per_epoch,
           "wall_s": wall, "val_hr_first_epoch": h[0].val_hr, "best_epoch": res.best_epoch,
           "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if max_epochs > 1:
        q, c, v = evaluate_model(model, adj, mats[0] + mats[1], mats[2], 20)
        from beatrec.tokenizer.codebook import codebook_usage

        out.update({"test_hr_quant": q.hr, "test_hr_cont": c.hr, "val_hr": res.best_val_hr,
                    "micro_usage_u": codebook_usage(v["user_codes"][:, 1:], 512).used_fraction,
                    "micro_usage_i": codebook_usage(v["item_codes"][:, 1:], 512).used_fraction,
                    "mean_epoch_s": float(np.mean([x.seconds for x in h]))})
    return out


def amazon_row(name: str, setting: str, procs: int, extra: list[str]) -> dict:
    """``beatrec tokenize`` on Amazon (under torchrun when procs > 1); the run's metrics.json and peak RSS."""
    out = ROOT / "runs" / "bench_scale" / name
    shutil.rmtree(out, ignore_errors=True)
    sets = ["extractor.kind=splitter", f"train.graph={SETTINGS[setting]['graph']}",
            f"train.batch_size={SETTINGS[setting]['batch_size']}", *extra]
    if "fanouts" in SETTINGS[setting]:
        sets.append(f"train.fanouts=[{','.join(map(str, SETTINGS[setting]['fanouts']))}]")
    args = ["-m", "beatrec", "tokenize", "--data", str(AMAZON), "--out", str(out),
            *[a for s in sets for a in ("--set", s)]]
    env = dict(os.environ)
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *args]
        env["OMP_NUM_THREADS"] = "1"
    else:
        cmd = [sys.executable, *args]
    t = time.perf_counter()
    log = out.parent / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        p = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{name} failed; see {log}")
    peak_kb = max(int(line.split(":")[1]) for line in log.read_text().splitlines()
                  if "Maximum resident set size" in line)
    m = json.loads((out / "metrics.json").read_text())
    return {"name": name, "setting": setting, "processes": procs, "wall_s": time.perf_counter() - t,
            "peak_gib_main": peak_kb / 2**20, "metrics": {k: m[k] for k in ("ranking", "codebooks", "training")},
            "sets": sets}


def quantized_test_hits(run: Path) -> tuple:
    """(test users (n,), their quantised HR@20 (n,)) of a ``beatrec tokenize`` run, recomputed from its tokens
    and codebooks the way the run scored them (dot products of the decoded token vectors; training and validation
    items masked)."""
    import numpy as np
    import pandas as pd
    import torch
    from safetensors.torch import load_file

    from beatrec.metrics.ranking import interaction_matrix, per_user_hits, rank_topk
    from beatrec.tokenizer.pipeline import open_stage1_run

    cfg, ds = open_stage1_run(run, None, ("codebooks.safetensors", "user_tokens.parquet", "item_tokens.parquet"))
    books = load_file(str(run / "codebooks.safetensors"))

    def vectors(side: str) -> torch.Tensor:  # (n, (1+N)·C), Side.decode flattened
        codes = torch.as_tensor(pd.read_parquet(run / f"{side}_tokens.parquet").drop(columns="id").to_numpy().copy())
        return torch.cat([books[f"{side}_macro"][codes[:, :1]], books[f"{side}_micro"][codes[:, 1:]]], 1).flatten(1)

    inter = ds.interactions
    mats = {s_: interaction_matrix(p_["user"].to_numpy(), p_["item"].to_numpy(), ds.n_users, ds.n_items)
            for s_, p_ in ((s_, inter[inter["split"] == s_]) for s_ in ("train", "val", "test"))}
    users = np.flatnonzero(np.diff(mats["test"].indptr) > 0)
    top = rank_topk(vectors("user"), vectors("item"), mats["train"] + mats["val"], users, cfg.train.eval_k)
    return users, per_user_hits(top, mats["test"], users)


def paired_hr(run_a: Path, run_b: Path) -> dict:
    """Quantised test HR@20 of run B - run A on the same test users: difference, 95% bootstrap interval, p."""
    import numpy as np

    from beatrec.stats import paired_test

    ua, a = quantized_test_hits(run_a)
    ub, b = quantized_test_hits(run_b)
    assert np.array_equal(ua, ub), "the two runs have different test users"
    t = paired_test(a, b, 2000, 0)
    return {"a": float(a.mean()), "b": float(b.mean()), "diff": t.diff, "low": t.low, "high": t.high,
            "p": t.p_value, "n_users": len(ua)}


def revive_cost(run: Path) -> dict:
    """Seconds of one evaluation's codebook repair (``Side.revive_unused``) on a run's exact vectors of every user
    and item, both sides, and the codes it re-seeds (on a run trained without it: its unused codes)."""
    import torch
    from safetensors.torch import load_file

    from beatrec.config import load_yaml
    from beatrec.tokenizer.model import Side
    from beatrec.tokenizer.pipeline import TokenizeConfig

    cfg = load_yaml(TokenizeConfig, run / "config.yaml")
    state, z = load_file(str(run / "tokenizer.safetensors")), load_file(str(run / "embeddings.safetensors"))
    out = {"run": run.name, "entities": sum(len(v) for v in z.values())}
    t, n = time.perf_counter(), 0
    for side in ("user", "item"):
        s = Side(cfg.model)
        s.load_state_dict({k[len(side) + 1:]: v for k, v in state.items() if k.startswith(side + ".")})
        with torch.no_grad():
            n += s.revive_unused(z[side])
    out.update({"seconds": time.perf_counter() - t, "revived": n})
    return out


PAIRS = (("full", "sampled"), ("full", "sampled-norevive"), ("sampled-norevive", "sampled"))  # Amazon run dirs


def kernels_child() -> dict:
    """Two costs that decide a large-graph step on this machine, under the process's THP_MEM_ALLOC_ENABLE:
    filling a freshly allocated 0.5 GB tensor (first touch of its pages) against refilling it, and a 3-layer
    LightGCN forward + backward on the 100k-user graph with int64 against int32 CSR indices."""
    import numpy as np
    import torch

    import beatrec  # noqa: F401  (sets the allocator switch's default before torch's first allocation)
    from beatrec.data.graphs import genre_block_graph
    from beatrec.tokenizer.graph import adjacency_csr, sym_spmm

    fresh, again = [], []
    for _ in range(7):
        z = torch.empty(700000, 192)
        t = time.perf_counter()
        z.fill_(1.0)
        fresh.append(time.perf_counter() - t)
        t = time.perf_counter()
        z.fill_(2.0)
        again.append(time.perf_counter() - t)
        del z
    g = genre_block_graph(100000, per_user=12, seed=0)
    tr = g.split == 0
    m = adjacency_csr(g.users[tr], g.items[tr], g.n_users, g.n_items)
    spmm = {}
    for dt in (np.int64, np.int32):
        with warnings.catch_warnings():  # torch's "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            adj = torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(dt)),
                                          torch.from_numpy(m.indices.astype(dt)), torch.from_numpy(m.data),
                                          size=m.shape)
        times = []
        for _ in range(5):
            x = torch.randn(m.shape[0], 192, requires_grad=True)
            t = time.perf_counter()
            h, acc = x, x
            for _ in range(3):
                h = sym_spmm(adj, h)
                acc = acc + h
            acc.pow(2).sum().backward()
            times.append(time.perf_counter() - t)
        spmm[np.dtype(dt).name] = float(np.median(times))
    return {"thp": os.environ.get("THP_MEM_ALLOC_ENABLE"), "fresh_fill_s": fresh, "refill_s": again,
            "spmm_nnz": int(m.nnz), "spmm_fwd_bwd_s": spmm}


def child(argv: list[str], env: dict | None = None) -> dict:
    p = subprocess.run([sys.executable, __file__, *argv], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                       env={**os.environ, **(env or {})})
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"child failed ({p.returncode}): {argv}")
    return json.loads(lines[-1][len("RESULT "):])


def rows_plan(probe_steps: int) -> list[tuple[str, list[str] | None]]:
    """(key, child argv) of every row, in the order they run; None = an Amazon row (``beatrec tokenize``)."""
    plan: list[tuple[str, list[str] | None]] = [("amazon-full", None), ("amazon-sampled", None),
                                                ("amazon-sampled-norevive", None)]
    plan += [("synth-1000000-big", ["--child", "1000000", "big", "0", "1"]),  # a whole measured epoch
             ("amazon-sampled-2proc", None)]
    plan += [("kernels-thp0", ["--kernels-child"]), ("kernels-thp1", ["--kernels-child"]),
             ("amazon-full-1thread", None)]
    plan += [(f"synth-1000000-big-probe-thp{v}", ["--child", "1000000", "big", str(THP_PROBE_STEPS), "1", "0"])
             for v in (0, 1)]
    plan += [(f"synth-10000-{s}-trained", ["--child", "10000", s, "0", "30"]) for s in ("full", "sampled")]
    for n in (10000, 100000, 1000000):
        for s in ("full", "sampled", "big"):
            probe = 0 if (n == 10000 or (s == "big" and n < 1000000)) else probe_steps
            if n == 1000000 and s == "full":
                probe = min(probe, 5)  # ~26 s per full-graph step at 1M users
            if f"synth-{n}-{s}" not in dict(plan):
                plan.append((f"synth-{n}-{s}", ["--child", str(n), s, str(probe), "1"]))
    return plan


def fmt(x: float, p: int = 4) -> str:
    return f"{x:.{p}f}"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    labels = {"full": "full graph, batch 1024", "sampled": "sampled 10-10-10, batch 1024",
              "big": f"sampled 2-2-2, batch {BIG['batch_size']}"}
    for s, mk in (("full", "o"), ("sampled", "s"), ("big", "^")):
        pts = sorted((r["n_train_edges"], r["epoch_s"], r["extrapolated"]) for k, r in results.items()
                     if k.startswith("synth-") and k.count("-") == 2 and r.get("setting") == s)
        if not pts:
            continue
        line, = ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker=mk, label=labels[s])
        ext = [(p[0], p[1]) for p in pts if p[2]]
        if ext:
            ax.scatter(*zip(*ext, strict=True), marker=mk, s=90, facecolors="none", edgecolors=line.get_color())
    ax.axhline(1800, color="k", ls=":", lw=1, label="30 minutes")
    ax.set_xlabel("training edges (synthetic, 10 per user)")
    ax.set_ylabel("seconds per epoch (2 CPU cores)")
    ax.set_title("BEAT stage 1: epoch time against graph size\n(hollow markers: extrapolated from a partial epoch)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: dict, command: str, probe_steps: int) -> None:
    import torch

    k = 20
    out = ["# BEAT stage 1 at scale — full-graph against sampled training, one against two processes", "",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
           f"torch {torch.__version__}",
           f"- command: `{command}`",
           "- settings: **full** = `train.graph=full` (batch 1024, the default); **sampled** = `train.graph=sampled` "
           "with the default fan-outs 10-10-10 (batch 1024); **big** = `train.graph=sampled "
           "train.fanouts=[2,2,2] train.batch_size=131072` (the large-graph setting of the README).",
           "- seconds per epoch are training steps only (the per-epoch validation pass is listed apart); peak RSS "
           "is the whole process's maximum resident set.", ""]
    out += ["## Synthetic genre-block graphs: one epoch", "",
            "| users | items | train edges | setting | steps/epoch | s/epoch | measured over | eval s | peak GiB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for n in (10000, 100000, 1000000):
        for s in ("full", "sampled", "big"):
            r = results.get(f"synth-{n}-{s}")
            if r is None:
                continue
            over = (f"{r['steps_run']} steps (extrapolated)" if r["extrapolated"] else "the whole epoch")
            out.append(f"| {n} | {r['n_items']} | {r['n_train_edges']} | {s} | {r['steps_per_epoch']} | "
                       f"{r['epoch_s']:.1f} | {over} | {r['eval_s']:.1f} | {r['peak_gib']:.2f} |")
    out += ["", f"![seconds per epoch against edges]({PLOT.name})", ""]
    kern = {v: results.get(f"kernels-thp{v}") for v in (0, 1)}
    probe = {v: results.get(f"synth-1000000-big-probe-thp{v}") for v in (0, 1)}
    if all(kern.values()) and all(probe.values()):
        import statistics

        def spread(xs: list[float]) -> str:
            return f"{statistics.median(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"

        out += ["## What a large step costs on this machine: fresh memory and index width", "",
                "Each row is its own process with torch's `THP_MEM_ALLOC_ENABLE` as shown (beatrec sets it to 1 "
                "unless the environment says otherwise). Fill: a freshly allocated (700000, 192) float32 tensor "
                "(0.5 GB) filled once (first touch of its pages) and again, 7 times, median (min–max). "
                "LightGCN: 3 layers forward + backward on the 100k-user graph "
                f"({kern[1]['spmm_nnz']} non-zeros, 192 columns), median of 5, with int64 against int32 CSR indices.",
                "", "| THP | fresh fill s | refill s | LightGCN int64 s | LightGCN int32 s | int64 / int32 |",
                "|---|---|---|---|---|---|"]
        for v in (0, 1):
            r = kern[v]
            sp_ = r["spmm_fwd_bwd_s"]
            out.append(f"| {v} | {spread(r['fresh_fill_s'])} | {spread(r['refill_s'])} | {sp_['int64']:.3f} | "
                       f"{sp_['int32']:.3f} | {sp_['int64'] / sp_['int32']:.2f} |")
        per = {v: probe[v]["epoch_train_s"] / probe[v]["steps_run"] for v in (0, 1)}
        out += ["", f"1M users, large-graph setting, the same first {THP_PROBE_STEPS} steps (the first includes the "
                f"codebooks' k-means initialisation): {per[0]:.1f} s/step with THP off, {per[1]:.1f} s/step with it "
                f"on (off / on {per[0] / per[1]:.2f}); peak {probe[0]['peak_gib']:.2f} / {probe[1]['peak_gib']:.2f} "
                "GiB.", ""]
    a, b = results.get("synth-10000-full-trained"), results.get("synth-10000-sampled-trained")
    if a and b:
        out += ["## 10k users: trained to early stopping (patience 5, at most 30 epochs)", "",
                "| setting | epochs (best) | mean s/epoch | val HR@20 quant | test HR@20 quant | test HR@20 cont | "
                "micro usage u/i |", "|---|---|---|---|---|---|---|"]
        for s, r in (("full", a), ("sampled", b)):
            out.append(f"| {s} | {r['epochs_run']} ({r['best_epoch']}) | {r['mean_epoch_s']:.1f} | {fmt(r['val_hr'])} | "
                       f"{fmt(r['test_hr_quant'])} | {fmt(r['test_hr_cont'])} | "
                       f"{r['micro_usage_u']:.2f}/{r['micro_usage_i']:.2f} |")
        out += ["", f"sampled / full test HR@20 (quantised): {b['test_hr_quant'] / a['test_hr_quant']:.3f}", ""]
    am = {k_: results.get(f"amazon-{k_}") for k_ in ("full", "sampled", "sampled-norevive", "sampled-2proc")}
    if am["full"] and am["sampled"]:
        out += ["## Amazon (`beatrec tokenize`, rule-based phrase splitter)", "",
                "| run | processes | epochs (best) | mean s/epoch | peak GiB (rank 0) | test HR@20 quant | "
                "test HR@20 cont | test HR@20 pop | micro codes used u/i | macro codes used u/i | "
                "micro perplexity u/i |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in am.items():
            if r is None:
                continue
            m = r["metrics"]
            t, cb, tr = m["ranking"]["test"], m["codebooks"], m["training"]
            out.append(f"| {name} | {r['processes']} | {tr['epochs_run']} ({tr['best_epoch']}) | "
                       f"{tr['mean_epoch_s']:.1f} | {r['peak_gib_main']:.2f} | {fmt(t[f'quantized_hr@{k}'])} | "
                       f"{fmt(t[f'continuous_hr@{k}'])} | {fmt(t[f'popularity_hr@{k}'])} | "
                       f"{cb['user_micro']['n_used']}/{cb['item_micro']['n_used']} of {cb['user_micro']['n_codes']} | "
                       f"{cb['user_macro']['n_used']}/{cb['item_macro']['n_used']} of {cb['user_macro']['n_codes']} | "
                       f"{cb['user_micro']['perplexity']:.0f}/{cb['item_micro']['perplexity']:.0f} |")
        hr = {n_: r["metrics"]["ranking"]["test"][f"quantized_hr@{k}"] for n_, r in am.items() if r}
        out += ["", f"Sampled / full test HR@20 (quantised): {hr['sampled'] / hr['full']:.3f} (one seed each; "
                "both stop on validation HR with patience 5)."]
        pairs = results.get("paired", {})
        if pairs:
            out += ["", "Paired on the same test users (quantised test HR@20 of each user, recomputed from the run's "
                    "tokens and codebooks; 95% bootstrap interval over users, sign-flip p, 2000 resamples):", "",
                    "| B - A | users | A | B | B - A | 95% interval | p |", "|---|---|---|---|---|---|---|"]
            for label, r in pairs.items():
                out.append(f"| {label} | {r['n_users']} | {fmt(r['a'])} | {fmt(r['b'])} | {r['diff']:+.4f} | "
                           f"[{r['low']:+.4f}, {r['high']:+.4f}] | {r['p']:.1e} |")
        old = [f"{n_} ({r['measured_with']})" for n_, r in am.items() if r and r.get("measured_with")]
        if old:
            out += ["", "Measured with an earlier commit: " + "; ".join(old) + "."]
        notes = [f"{n_}: {r['remark']}" for n_, r in am.items() if r and r.get("remark")]
        if notes:
            out += ["", "Notes on rows: " + "; ".join(notes) + "."]
        rc = results.get("revive-cost")
        if rc:
            out += ["", f"`train.revive_unused` (on for sampled training) re-seeds, at each evaluation, the codes that "
                    "no entity's exact full-graph vector uses (sampled steps fit the codebooks to sampled-neighbourhood "
                    f"vectors, and a few codewords then serve no exact one). On the {rc['entities']:,} users and "
                    f"items of the sampled-norevive run it re-seeds {rc['revived']} codes in {rc['seconds']:.2f} s "
                    "(one thread, beside other jobs): a small part of an evaluation."]
        timed = "sampled-norevive" if am["sampled-norevive"] else "sampled"  # the sampled row timed alone
        if am["sampled-2proc"]:
            e1 = am[timed]["metrics"]["training"]["mean_epoch_s"]
            e2 = am["sampled-2proc"]["metrics"]["training"]["mean_epoch_s"]
            out += ["", f"Two processes / one process, seconds per epoch (sampled; the {timed} row): {e2 / e1:.2f}. Each process "
                    "takes half of an epoch's batches, but on this 2-core machine the two one-thread processes share "
                    "the cores the single process's two threads used, so there is no speed-up to expect here; the "
                    f"two-process run is timed over its first {TWO_PROC_EPOCHS} epochs (its token quality is "
                    "checked by `tests/test_tokenize_scale.py` on planted data)."]
        full_s = am["full"]["metrics"]["training"]["mean_epoch_s"]
        one = results.get("amazon-full-1thread")
        one_s = one["metrics"]["training"]["mean_epoch_s"] if one else float("nan")
        out += ["", "### Amazon full-graph epoch time", "",
                f"This run: {full_s:.1f} s per full-graph epoch (2 threads); the same training "
                f"with one thread (`train.threads=1`, 2 epochs): {one_s:.1f} s per epoch ({one_s / full_s:.2f}x). "
                "`benchmarks/tokenizer.md` recorded 65.7 s on 2026-11-22 and another session measured 76–89 s on a "
                "machine of the same kind; a fresh-machine try reported 164–173 s. Two causes were measured here "
                "(see the tables above): a one-thread setting (e.g. `OMP_NUM_THREADS=1` left in the environment, "
                "as the test instructions for parallel work suggest) slows the epoch by the factor just given; and "
                "on these VMs, memory the process touches for the first time is slow and unevenly so (the 0.5 GB "
                "fill above), because the VM's balloon device reports freed memory to the host (free page reporting, "
                "bit 5 of `/sys/bus/virtio/drivers/virtio_balloon/virtio0/features`), so a fresh machine, or memory "
                "freed and allocated again, is backed anew. The 64-bit CSR indices every earlier version used "
                "also took torch's slow sparse path (int64 / int32 in the table above); this version uses 32-bit "
                "indices whenever they fit. Which of these produced 164–173 s on that machine cannot be told from "
                "here: a one-thread setting alone (the factor above) is too small to explain a 2.5x slower epoch; the "
                "cost of fresh memory is the effect that varied most between our runs, but it is not shown to be the "
                "cause.", "",
                "Rows not re-run with this version: the 10k trained-to-early-stopping rows and the two-process Amazon "
                "row were measured with commit ce2f83c (before 32-bit indices and huge pages), so the two-process "
                "ratio above divides an old-version time by a newer one; in ce2f83c's own run it was 61.1 / 56.8 s "
                "= 1.08.", ""]
        out.append("")
    REPORT.write_text("\n".join(out) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=5, metavar=("USERS", "SETTING", "PROBE", "EPOCHS", "SEED"))
    ap.add_argument("--kernels-child", action="store_true")
    ap.add_argument("--only", nargs="*", help="row keys to (re)run; default: every row not yet in the JSON")
    ap.add_argument("--probe-steps", type=int, default=20)
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    if a.kernels_child:
        print("RESULT " + json.dumps(kernels_child()), flush=True)
        return
    if a.child:
        n, s, probe, epochs, seed = a.child
        print("RESULT " + json.dumps(synth_child(int(n), s, int(probe), int(epochs), int(seed))), flush=True)
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if not a.report_only:
        for key, argv in rows_plan(a.probe_steps):
            if (a.only and key not in a.only) or (not a.only and key in results):
                continue
            if argv is None and not AMAZON.is_dir():
                print(f"skip {key}: {AMAZON} not found (the XRec data sits in ../shared/data)", flush=True)
                continue
            print(f"== {key}", flush=True)
            if key in THP_ROWS:
                results[key] = child(argv, {"THP_MEM_ALLOC_ENABLE": THP_ROWS[key]})
            elif argv is not None:
                results[key] = child(argv + ["0"])
            elif key == "amazon-sampled-2proc":
                results[key] = amazon_row("sampled-2proc", "sampled", 2, [f"train.max_epochs={TWO_PROC_EPOCHS}"])
            elif key == "amazon-sampled-norevive":  # what train.revive_unused (auto: on when sampled) changes
                results[key] = amazon_row("sampled-norevive", "sampled", 1, ["train.revive_unused=off"])
            elif key == "amazon-full-1thread":  # is a one-thread setting what made a fresh machine's epochs slow?
                results[key] = amazon_row("full-1thread", "full", 1, ["train.threads=1", "train.max_epochs=2"])
            else:
                results[key] = amazon_row(key.split("-", 1)[1], key.split("-", 1)[1], 1, [])
            RESULTS.write_text(json.dumps(results, indent=1))
            print(json.dumps(results[key])[:400], flush=True)
    runs = ROOT / "runs" / "bench_scale"
    for a_, b_ in PAIRS:  # paired on the same test users, from the run directories when they are here
        if (runs / a_ / "metrics.json").is_file() and (runs / b_ / "metrics.json").is_file():
            results.setdefault("paired", {})[f"{b_} - {a_}"] = paired_hr(runs / a_, runs / b_)
    if (runs / "sampled-norevive" / "embeddings.safetensors").is_file():  # what one evaluation's repair costs
        results["revive-cost"] = revive_cost(runs / "sampled-norevive")
    RESULTS.write_text(json.dumps(results, indent=1))
    command = "python benchmarks/tokenizer_scale.py" + (f" --only {' '.join(a.only)}" if a.only else "")
    write_report(results, command, a.probe_steps)
    plot(results, PLOT)
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
