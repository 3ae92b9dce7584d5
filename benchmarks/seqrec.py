"""Benchmark of generative sequential recommendation: EAGER, its three ablations, SASRec and TIGER-style.

    python benchmarks/seqrec.py                                   # Beauty (both streams) and Sports (behavior)
    python benchmarks/seqrec.py --datasets Beauty --max-users 2000 --set train.max_epochs=10   # a quick slice

Every model of a dataset runs in one process, one after another, on the same leave-one-out split, with the same
full-ranking evaluator (Recall/NDCG@5/10 over all items, history not masked). SASRec is trained first and is
also EAGER's behavior encoder (``behavior_run``), so the behavior codes of every EAGER variant are the same.
Writes ``benchmarks/seqrec.md`` (machine, date, command, training time and inference time per 1,000 users)
after each model, and every run directory under ``--runs``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEQREC = ROOT / ".." / "shared" / "data" / "seqrec"

# (row label, --model, extra --set overrides, datasets it runs on (None: all)); EAGER variants reuse the dataset's
# SASRec run. After the ablations come design rows of EAGER: the learning-rate schedule of the authors' code, then
# the earlier designs (commented below).
VARIANTS = (
    ("SASRec", "sasrec", (), None),
    ("EAGER", "eager", (), None),
    ("TIGER-style (semantic codes)", "tiger", (), None),
    ("EAGER w/o second stream", "eager", ("eager.use_semantic=false",), None),
    ("EAGER w/o contrastive task", "eager", ("eager.use_contrastive=false",), None),
    ("EAGER w/o transfer task", "eager", ("eager.use_transfer=false",), None),
    ("EAGER, lr inverse-sqrt (warmup 500)", "eager", ("train.lr_schedule=inverse_sqrt", "train.warmup_steps=500"),
     ("Beauty",)),
    ("EAGER, dropout 0.3", "eager", ("eager.dropout=0.3",), ("Beauty",)),  # SASRec's dropout; EAGER overfits after ~epoch 9
    ("EAGER, weight decay 0.1", "eager", ("train.weight_decay=0.1",), None),  # the other regulariser
    # a heavier global contrastive task (λ_con; default 0.1): it pulls the summary toward the SASRec item embedding
    ("EAGER, contrastive weight 1.0", "eager", ("eager.contrastive_weight=1.0",), ("Beauty",)),
    # the design steps to the default, each row one change from the next: the encoder's own item table instead of
    # the tied leaf embeddings; then 32 x 32 codes (+ index) instead of 128 (+ index); then TIGER's shared tokens
    ("EAGER, untied item table", "eager", ("eager.tie_items=false",), None),
    ("EAGER, untied, codes 32 x 32 (+ index)", "eager", ("eager.tie_items=false", "codes.k=32", "codes.levels=2"),
     ("Beauty",)),
    ("EAGER, untied, codes 32 x 32 (+ index), shared tokens", "eager",
     ("eager.tie_items=false", "codes.k=32", "codes.levels=2", "eager.code_tokens=shared"), ("Beauty",)),
)


def _runs_on(only: tuple[str, ...] | None, ds: str) -> bool:
    return only is None or ds in only


ANCHORS = {  # Beauty, from the LLM-BS paper's table (issue 6)
    "TIGER (paper)": (0.0454, 0.0648, 0.0321, 0.0384),
    "LC-Rec 7B (paper)": (None, 0.0681, None, 0.0409),
    "LLM-BS 7B (paper)": (None, 0.0830, None, 0.0459),
}


TITLE = "Generative sequential recommendation — EAGER, ablations, SASRec, TIGER-style"


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def write_report(path: Path, command: str, blocks: dict[str, list[dict]], notes: dict[str, str],
                 planned: dict[str, list[str]] | None = None, remarks: tuple[str, ...] = (),
                 merges: dict[str, list[dict]] | None = None, title: str = TITLE) -> None:
    """Every dataset of ``planned`` gets a block; rows not run yet are listed under it (a partial run says so)."""
    import pandas as pd
    import torch

    from beatrec.plots import plot_validation_curves

    out = [f"# {title}", "",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
           f"torch {torch.__version__}",
           f"- command: `{command}`",
           "- protocol: leave-one-out (last item test, second-to-last validation), full ranking over all items,"
           " history not masked; early stopping on validation NDCG@10; test metrics of the best epoch.",
           *[f"- {r}" for r in remarks], ""]
    planned = planned or {ds: [] for ds in blocks}
    for ds in planned:
        rows = blocks.get(ds, [])
        done = {r["label"] for r in rows}
        pending = [lb for lb in planned[ds] if lb not in done and f"{lb}:" not in notes.get(ds, "")]  # skipped: noted
        out += [f"## {ds}", "", notes.get(ds, ""), ""]
        curves = {r["label"]: pd.read_csv(r["run"] / "history.csv") for r in rows
                  if (r["run"] / "history.csv").is_file()}
        if curves:
            png = path.with_name(f"{path.stem}_{ds}.png")
            plot_validation_curves(curves, png, f"{ds}: validation NDCG@10 per epoch (star: best epoch, tested)")
            out += [f"![validation NDCG@10 per epoch]({png.name})", ""]
        if pending:
            out += [f"**Partial: not run yet:** {', '.join(pending)}.", ""]
        out += ["| model | R@5 | R@10 | N@5 | N@10 | params | epochs (best) | train s | infer s / 1k users | trained on |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            m = r["metrics"]
            t = m["test"]
            out.append(f"| {r['label']} | {fmt(t['recall@5'])} | {fmt(t['recall@10'])} | {fmt(t['ndcg@5'])} | "
                       f"{fmt(t['ndcg@10'])} | {m['n_parameters'] / 1e6:.2f}M | {m['training']['epochs_run']} "
                       f"({m['training']['best_epoch']}){', time cap' * bool(m['training'].get('out_of_time'))} | "
                       f"{m['timings']['training_s']:.0f} | "
                       f"{m['timings']['inference_s_per_1000_users']:.2f} | "
                       f"{_trained_on(r)} |")
        if rows:
            p = rows[0]["metrics"]["popularity_test"]
            out.append(f"| popularity | {fmt(p['recall@5'])} | {fmt(p['recall@10'])} | {fmt(p['ndcg@5'])} | "
                       f"{fmt(p['ndcg@10'])} | — | — | — | — | — |")
        if ds == "Beauty":
            for name, (r5, r10, n5, n10) in ANCHORS.items():
                out.append(f"| {name} | {fmt(r5)} | {fmt(r10)} | {fmt(n5)} | {fmt(n10)} | — | — | — | — | — |")
        out.append("")
        if len((merges or {}).get(ds, [])) > 1:  # the trained merge alone is already the EAGER row
            out += [f"### {ds}: the EAGER row decoded with each stream merge", "",
                    "The same trained run, test users, beam 20; `beatrec seqrec evaluate --run RUN --merge M`. "
                    "Inference seconds were timed beside the training rows (upper bounds).", "",
                    "| merge | R@5 | R@10 | N@5 | N@10 | infer s / 1k users |", "|---|---|---|---|---|---|"]
            for e in merges[ds]:
                t = e["test"]
                out.append(f"| {e['merge']} | {fmt(t['recall@5'])} | {fmt(t['recall@10'])} | {fmt(t['ndcg@5'])} | "
                           f"{fmt(t['ndcg@10'])} | {e['inference_s_per_1000_users']:.2f} |")
            out.append("")
        paired = [r for r in rows if r.get("paired") is not None]
        if paired:
            from beatrec.seqrec.compare import format_p

            c0 = paired[0]["paired"]
            level = f"{100 * (1 - c0.alpha):g}%"
            out += [f"### {ds}: each row against SASRec, paired on the same test users", "",
                    f"Difference row - SASRec over the {c0.n_users} test users, with its {level} bootstrap interval "
                    f"over users and the p-value of a paired sign-flip test ({c0.n_resamples} resamples; "
                    "`beatrec seqrec compare SASREC_RUN RUN`). Rows whose run holds no per-user rankings (trained "
                    "before runs saved them; `beatrec seqrec evaluate --run RUN` writes them) are not listed.", "",
                    f"| model | R@10 - SASRec | {level} interval | p | N@10 - SASRec | {level} interval | p |",
                    "|---|---|---|---|---|---|---|"]
            for r in paired:
                d = {x.metric: x for x in r["paired"].rows}
                out.append(f"| {r['label']} | " + " | ".join(
                    f"{d[m].diff:+.4f} | [{d[m].low:+.4f}, {d[m].high:+.4f}] | {format_p(d[m].p_value)}"
                    for m in ("recall@10", "ndcg@10")) + " |")
            out.append("")
    path.write_text("\n".join(out) + "\n")


def paired_vs(sasrec: Path, run: Path, data: Path):  # noqa: ANN201
    """The run against the SASRec row on the same test users (a :class:`Comparison`), or None when either run
    holds no per-user rankings."""
    from beatrec.errors import RunError
    from beatrec.seqrec.compare import compare_runs, rankings_file

    try:
        for r in (sasrec, run):
            rankings_file(r)
    except RunError:
        return None
    return compare_runs(sasrec, run, data)


def _trained_on(row: dict) -> str:
    """The row's device. Machine records written before devices were recorded are CPU runs (there was no other
    path then): their thread count."""
    machine = row["metrics"].get("machine", {})
    if "device" in machine:
        return machine["device"]
    return f"cpu: {machine['threads']} threads" if "threads" in machine else "—"


def same_run(a, b) -> bool:  # noqa: ANN001
    """Two requested configs describe the same row: the same experiment (:func:`beatrec.seqrec.train.experiment`:
    runtime settings aside, and for SASRec the generative-only sections aside) wherever the runs folder holding
    the behavior SASRec sits (``<runs>/<dataset>/sasrec`` on any machine)."""
    from dataclasses import replace

    from beatrec.seqrec.config import experiment

    def norm(c):  # noqa: ANN001, ANN202
        return experiment(replace(c, behavior_run="/".join(Path(c.behavior_run).parts[-2:])))

    return norm(a) == norm(b)


def merge_results(run: Path, data: Path, asked: list[str], compute: bool) -> list[dict]:
    """The EAGER run's test metrics under each stream merge: the trained merge from ``metrics.json``, the others
    from ``RUN/evaluation_merge-<m>.json`` (computed when ``compute`` and missing or older than the weights)."""
    from beatrec.seqrec.beam import MERGES
    from beatrec.seqrec.config import read_run_config
    from beatrec.seqrec.train import evaluate_run

    metrics = json.loads((run / "metrics.json").read_text())
    trained = read_run_config(run / "config.yaml").eager.merge
    found = [{"merge": trained, "test": metrics["test"],
              "inference_s_per_1000_users": metrics["timings"]["inference_s_per_1000_users"]}]
    weights = (run / "model.safetensors").stat().st_mtime
    for m in MERGES:
        if m == trained:
            continue
        f = run / f"evaluation_merge-{m}.json"
        if f.is_file() and f.stat().st_mtime >= weights:
            found.append(json.loads(f.read_text()))
        elif compute and m in asked:
            print(f"[seqrec bench] {run}: decoding with merge={m}", flush=True)
            found.append(evaluate_run(run, data, progress=False, merge=m, out_name=f.name))
    return found


def _with_skips(notes: dict[str, str], skipped: dict[str, list[str]]) -> dict[str, str]:
    return {ds: " ".join([notes.get(ds, ""), *[f"{x}." for x in skipped.get(ds, [])]]).strip()
            for ds in {*notes, *skipped}}


def main(argv: list[str] | None = None) -> int:
    from beatrec.seqrec.beam import MERGES

    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", type=Path, default=SEQREC, help="directory holding the dataset directories")
    ap.add_argument("--datasets", nargs="*", default=["Beauty", "Sports_and_Outdoors"])
    ap.add_argument("--models", nargs="*", default=[v[0] for v in VARIANTS], help="row labels to run")
    ap.add_argument("--max-users", type=int, default=0, help="seeded user subset (0 = all)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every model")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "seqrec")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "seqrec.md")
    ap.add_argument("--title", default=TITLE, help="the report's heading")
    ap.add_argument("--remark", action="append", default=[],
                    help="a sentence for the report's header (e.g. how the rows were run); repeatable")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: write the report from the finished runs, listing the others as not run yet")
    ap.add_argument("--merges", nargs="*", default=[], choices=MERGES,
                    help="also decode the two-stream EAGER row with these stream merges (kept in the run folder)")
    ap.add_argument("--resume", action="store_true",
                    help="read models whose run (same config) already finished; an interrupted run always resumes "
                         "from its checkpoint.pt")
    args = ap.parse_args(argv)
    if not args.data_root.is_dir():
        raise SystemExit(f"{args.data_root} not found: the seqrec data must sit in ../shared/data/seqrec beside the "
                         "repository")

    from beatrec.config import save_yaml
    from beatrec.seqrec.config import load_seqrec_config, read_run_config
    from beatrec.seqrec.train import RunResult, train_run

    given = list(sys.argv[1:] if argv is None else argv)
    if args.report_only:  # the command that trains (or reads back) these rows, not the report-only one
        given = [a for a in given if a != "--report-only"] + ([] if args.resume else ["--resume"])
    command = "python benchmarks/seqrec.py " + shlex.join(given)
    blocks: dict[str, list[dict]] = {}
    planned = {ds: [v[0] for v in VARIANTS if v[0] in args.models and _runs_on(v[3], ds)] for ds in args.datasets}
    notes: dict[str, str] = {}
    skipped: dict[str, list[str]] = {}
    merges: dict[str, list[dict]] = {}
    for ds in args.datasets:
        blocks[ds] = []
        data = args.data_root / ds
        sasrec_run = args.runs / ds / "sasrec"
        base = [*args.overrides] + ([f"max_users={args.max_users}"] if args.max_users else [])
        for label, model, extra, only in VARIANTS:
            if label not in args.models or not _runs_on(only, ds):
                continue
            texted = (data / "item_text.tsv").is_file()
            if extra in (("eager.use_semantic=false",), ("eager.use_transfer=false",)) and not texted:
                # without item text EAGER already runs one stream, and the transfer task needs two: same row twice
                skipped.setdefault(ds, []).append(f"{label}: same model as EAGER here (no item text)")
                continue
            if model == "tiger" and not texted:
                skipped.setdefault(ds, []).append(f"{label}: not run (semantic codes need item text; none here)")
                continue
            sets = [*base, *extra]
            if model == "eager" and (sasrec_run / "run.json").is_file():  # a finished SASRec row
                sets.append(f"behavior_run={sasrec_run}")
            slug = label.lower().replace(" ", "-")
            for ch in "/(),+":
                slug = slug.replace(ch, "")
            slug = "-".join(p for p in slug.split("-") if p)
            run = sasrec_run if model == "sasrec" else args.runs / ds / slug
            t = time.perf_counter()
            cfg = load_seqrec_config(model, None, sets)
            requested = run / "requested.yaml"  # the config asked for (config.yaml holds the resolved one)
            finished = (run / "metrics.json").is_file() and requested.is_file() and \
                same_run(read_run_config(requested), cfg)
            if (args.resume or args.report_only) and finished:
                res = RunResult(run, json.loads((run / "metrics.json").read_text()))
                print(f"[seqrec bench] {ds} / {label}: finished run read from {run}", flush=True)
            elif args.report_only:
                print(f"[seqrec bench] {ds} / {label}: no finished run with this config in {run} (--report-only: "
                      "listed as not run yet)", flush=True)
                continue
            else:
                run.mkdir(parents=True, exist_ok=True)
                before = requested.read_text() if requested.is_file() else None
                save_yaml(cfg, requested)
                try:
                    res = train_run(data, run, cfg, progress=True)
                except Exception as e:  # noqa: BLE001 - e.g. a malformed dataset: say so, go on to the next row
                    if before is not None:  # a failed attempt must not unlink a finished run from its config
                        requested.write_text(before)
                    print(f"[seqrec bench] {ds} / {label}: {e}", file=sys.stderr)
                    skipped.setdefault(ds, []).append(f"{label}: not run ({e})")
                    continue
            print(f"[seqrec bench] {ds} / {label}: {json.dumps(res.metrics['test'])} "
                  f"({time.perf_counter() - t:.0f}s)", flush=True)
            row = {"label": label, "metrics": res.metrics, "run": Path(res.run_dir)}
            if model != "sasrec" and (sasrec_run / "run.json").is_file():
                row["paired"] = paired_vs(sasrec_run, Path(res.run_dir), data)
            blocks[ds].append(row)
            n = res.metrics["dataset"]
            notes[ds] = (f"{n['n_users']} users, {n['n_items']} items, {n['n_interactions']} interactions; item "
                         f"text: {'yes' if n['has_text'] else 'no (EAGER runs the behavior stream only)'}.")
            if label == "EAGER" and texted:
                merges[ds] = merge_results(Path(res.run_dir), data, args.merges, not args.report_only)
            write_report(args.out, command, blocks, _with_skips(notes, skipped), planned, tuple(args.remark), merges,
                         args.title)
    write_report(args.out, command, blocks, _with_skips(notes, skipped), planned, tuple(args.remark), merges,
                 args.title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
