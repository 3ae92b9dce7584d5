"""LLM-BS on a Beauty slice: the full model, its index study (the paper's Figure 5), GCD off and the annealing
adapter off, against SASRec and EAGER trained on the same slice and scored on the same users.

    python benchmarks/llmbs.py                       # the default slice, every row (hours on 2 CPU cores)
    python benchmarks/llmbs.py --rows sasrec eager dual --resume

Each row is one run directory under ``--runs`` (SASRec first: it is also the behavior encoder of EAGER and of
every LLM-BS index). With ``--resume`` a row whose run finished with the same config is read back, so the
benchmark can be completed over several sessions; ``benchmarks/llmbs.md`` is rewritten after every row.
All rows are scored by the same full-ranking evaluator on the same seeded ``--eval-users`` test users of the
slice (LLM-BS ranks by constrained beam search, beam 20; SASRec/EAGER rank all items as in their own runs).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT / ".." / "shared" / "data" / "seqrec" / "Beauty"

# (key, label, model, overrides); LLM-BS rows get --llmbs-set and the slice, seqrec rows --seqrec-set.
ROWS = (
    ("sasrec", "SASRec (full softmax)", "sasrec", ()),
    ("eager", "EAGER (two streams)", "eager", ()),
    ("dual", "LLM-BS (dual-source index, GCD, annealing adapter)", "llmbs", ("index.kind=dual",)),
    ("random", "LLM-BS, random index", "llmbs", ("index.kind=random", "anneal=false")),
    ("semantic", "LLM-BS, semantic-only index", "llmbs", ("index.kind=semantic", "anneal=false")),
    ("behavior", "LLM-BS, behavior-only index", "llmbs", ("index.kind=behavior", "anneal=false")),
    ("unit", "LLM-BS, unit index (one token per item)", "llmbs", ("index.kind=unit", "anneal=false")),
    ("no_gcd", "LLM-BS w/o GCD (λ1 = λ2 = 0)", "llmbs",
     ("index.kind=dual", "gcd.lambda_semantic=0", "gcd.lambda_behavior=0", "anneal=false")),
)
# The slice and training budget: what 2 CPU cores train in about an hour per LLM-BS row (see the report).
SLICE_USERS = 1000
LLMBS_DEFAULTS = ("tasks.seqrec=3000", "tasks.semantic=1000", "tasks.preference=500", "train.epochs=1",
                  "anneal_users=300", "eval_val=false")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=BEAUTY)
    ap.add_argument("--max-users", type=int, default=SLICE_USERS, help="seeded user slice (all their items)")
    ap.add_argument("--eval-users", type=int, default=300, help="seeded test users scored for every row")
    ap.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS], choices=[r[0] for r in ROWS])
    ap.add_argument("--llmbs-set", action="append", default=[], metavar="KEY=VALUE", help="every LLM-BS row")
    ap.add_argument("--seqrec-set", action="append", default=[], metavar="KEY=VALUE", help="SASRec and EAGER")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "llmbs")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "llmbs.md")
    ap.add_argument("--resume", action="store_true", help="read rows whose run finished with the same config")
    ap.add_argument("--lm", default="smollm2", help=argparse.SUPPRESS)  # tests: a tiny random LM
    return ap.parse_args(argv)


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def seqrec_subset_metrics(run: Path, data: Path, max_users: int, eval_users: int) -> dict[str, float]:
    """A SASRec/EAGER run scored on the seeded ``eval_users`` test users LLM-BS is scored on."""
    import numpy as np

    from beatrec.seqrec.config import read_run_config
    from beatrec.seqrec.data import leave_one_out, subset_samples
    from beatrec.seqrec.evaluate import metrics_from_topk
    from beatrec.seqrec.rundir import load_run_dataset
    from beatrec.seqrec.train import load_model, predict_topk

    cfg = read_run_config(run / "config.yaml")
    ds = load_run_dataset(data, cfg.max_users, cfg.subset_seed)
    split = leave_one_out(ds, cfg.max_len)
    s = subset_samples(split.test, eval_users, 0)  # LLM-BS: subset_samples(split.test, eval_users, subset_seed=0)
    model = load_model(run, ds)

    assert max_users == cfg.max_users
    return metrics_from_topk(predict_topk(model.topk, s, cfg.train.eval_batch_size), s.target).as_dict() | {
        "n_users": int(len(np.unique(s.user)))}


def _same_run(a, b) -> bool:  # noqa: ANN001
    """Two row configs describe the same experiment: equal up to runtime settings (threads, device) and, for a
    SASRec row, to the sections only generative models read (:func:`beatrec.seqrec.train.experiment`)."""
    from beatrec.config import without_runtime
    from beatrec.seqrec.config import SeqRecConfig, experiment

    if isinstance(a, SeqRecConfig) and isinstance(b, SeqRecConfig):
        return experiment(a) == experiment(b)
    return without_runtime(a) == without_runtime(b)


def run_row(key: str, args: argparse.Namespace, command: str, log) -> dict:  # noqa: ANN001
    from beatrec.config import load_yaml, save_yaml
    from beatrec.seqrec.config import load_seqrec_config, read_run_config
    from beatrec.seqrec.llmbs.run import LLMBSConfig, train_llmbs
    from beatrec.seqrec.train import train_run

    _, label, model, extra = next(r for r in ROWS if r[0] == key)
    run = args.runs / key
    sasrec = args.runs / "sasrec"
    threads = [f"train.threads={args.threads}"] * bool(args.threads)
    if model == "llmbs":
        sets = [f"lm.name={args.lm}", f"max_users={args.max_users}", f"eval_users={args.eval_users}",
                f"behavior_run={sasrec}", *LLMBS_DEFAULTS, *args.llmbs_set, *extra]
        cfg, read = load_yaml(LLMBSConfig, None, sets), functools.partial(load_yaml, LLMBSConfig)
    else:
        sets = [f"max_users={args.max_users}", *threads, *args.seqrec_set,
                *([f"behavior_run={sasrec}"] if model == "eager" else [])]
        cfg, read = load_seqrec_config(model, None, sets), read_run_config  # older configs: their legacy values
    requested = run / "requested.yaml"
    done = run / "metrics.json"
    t = time.perf_counter()
    if args.resume and done.is_file() and requested.is_file() and _same_run(read(requested), cfg):
        log(f"[llmbs bench] {label}: finished run read from {run} (--resume)")
        metrics = json.loads(done.read_text())
        wall = metrics.get("bench_wall_s", 0.0)
    else:
        run.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, requested)
        if model == "llmbs":
            metrics = train_llmbs(args.data, run, cfg, progress=True)
        else:
            metrics = train_run(args.data, run, cfg, progress=True).metrics
        wall = time.perf_counter() - t
        metrics["bench_wall_s"] = wall
        metrics["bench_command"] = command
        metrics["bench_device"] = f"{metrics['machine']['device']}, {os.cpu_count()} cores"
        done.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    row = {"key": key, "label": label, "model": model, "wall_s": wall, "metrics": metrics}
    if model != "llmbs":
        row["subset"] = seqrec_subset_metrics(run, args.data, args.max_users, args.eval_users)
    log(f"[llmbs bench] {label}: {json.dumps(row.get('subset', metrics.get('test')))} ({wall:.0f} s)")
    return row


def write_report(path: Path, rows: list[dict], args: argparse.Namespace, command: str, started: str) -> None:
    import torch

    head = [
        "# LLM-BS on a Beauty slice — index study, GCD, annealing adapter, vs SASRec and EAGER", "",
        f"- date: {started}",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- command: `{command}`",
        f"- slice: {args.max_users} seeded users of `{args.data.name}` with all their items; every row scored on "
        f"the same {args.eval_users} seeded test users (leave-one-out, full ranking over the slice's items)",
        f"- LLM-BS backbone `{args.lm}`; per-row training budget: {', '.join(LLMBS_DEFAULTS)}"
        + (f", {', '.join(args.llmbs_set)}" if args.llmbs_set else ""),
        "",
        "| row | R@5 | R@10 | N@5 | N@10 | users | train s | infer s / 1k users | wall s | trained on |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    body = []
    for r in rows:
        m = r["metrics"]
        if r["model"] == "llmbs":
            t, train_s = m["test"], m["timings"].get("train_s", 0.0) + m["timings"].get("anneal_s", 0.0)
        else:
            t, train_s = r["subset"], m["timings"]["training_s"]
        inf = m["timings"]["inference_s_per_1000_users"]
        body.append(f"| {r['label']} | {fmt(t['recall@5'])} | {fmt(t['recall@10'])} | {fmt(t['ndcg@5'])} | "
                    f"{fmt(t['ndcg@10'])} | {t['n_users']} | {train_s:.0f} | {inf:.1f} | {r['wall_s']:.0f} | "
                    f"{m.get('bench_device', '—')} |")
        if r["model"] == "llmbs" and "test_without_adapter" in m:
            o = m["test_without_adapter"]
            body.append(f"| LLM-BS w/o annealing adapter (same run) | {fmt(o['recall@5'])} | {fmt(o['recall@10'])} | "
                        f"{fmt(o['ndcg@5'])} | {fmt(o['ndcg@10'])} | {o['n_users']} | — | — | — | — |")
    n = {r["metrics"]["test"]["n_users"] if r["model"] == "llmbs" else r["subset"]["n_users"] for r in rows}
    if len(n) == 1:
        u = n.pop()
        body.append(f"\nWith {u} scored users one test hit moves Recall@k by 1/{u} = {1 / u:.4f}: a difference of "
                    "one or two hits between rows is noise.")
    elsewhere = sorted({r["metrics"].get("bench_command", "") for r in rows} - {command, ""})
    notes = ["", "Rows read back with `--resume` that another command trained (see *trained on*):"] + [
        f"- `{c}`: " + ", ".join(r["key"] for r in rows if r["metrics"].get("bench_command") == c)
        for c in elsewhere] if elsewhere else []
    notes += ["", "Per LLM-BS row (from its `metrics.json`): "]
    notes += [f"- {r['label']}: {r['metrics']['n_examples']} training examples, stage 1 "
              f"{r['metrics']['stage1']['steps']} steps (loss per epoch {r['metrics']['stage1']['losses']}), index "
              f"depth {r['metrics']['code_report']['depth']}" for r in rows if r["model"] == "llmbs"]
    pending = [r[1] for r in ROWS if r[0] in args.rows and r[0] not in {x["key"] for x in rows}]
    if pending:
        head.insert(1, f"\n**Partial: not run yet:** {', '.join(pending)}.\n")
    path.write_text("\n".join(head + body + notes + differences(rows)) + "\n")


def differences(rows: list[dict]) -> list[str]:
    """How this setting differs from the paper's 7B one (the slice's size read from the rows' own runs)."""
    llm = [r["metrics"] for r in rows if r["model"] == "llmbs"]
    size = (f"{llm[0]['n_users']:,} users and {llm[0]['n_items']:,} items" if llm else "the slice above")
    return ["", "How this differs from the paper's setting (so the numbers are not comparable with its table):",
            "- backbone: SmolLM2-135M-Instruct (LoRA r=8 on the attention projections + the new code-token rows), "
            "not a 7B LLM; about 50 times fewer parameters;",
            f"- data: a seeded slice of {size}, not all of Beauty (22,363 users, 12,101 items); rankings are over "
            "the slice's items only, so a row's absolute values are not on the same scale as full-data results;",
            "- training: one pass over a sampled budget of task examples (above) and a 300-user annealing slice, "
            "sized so that one LLM-BS row trains on 2 CPU cores in about an hour; the paper trains on its whole "
            "training set;",
            "- evaluation: the same 300 seeded test users for every row (the paper scores every user)."]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} not found: this benchmark reads ../shared/data/seqrec/Beauty in place")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/llmbs.py " + " ".join(sys.argv[1:] if argv is None else argv)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    order = [r[0] for r in ROWS if r[0] in args.rows]
    if "sasrec" not in order:  # every other row reads its behavior embeddings from the SASRec row (and is compared
        order.insert(0, "sasrec")  # with it); with --resume a finished one is only read back
    rows: list[dict] = []
    for key in order:
        rows.append(run_row(key, args, command, lambda m: print(m, flush=True)))
        write_report(args.out, rows, args, command, started)
        print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
