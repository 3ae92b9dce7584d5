"""The paper's Table 1 on our data: BEAT, its ablations and every baseline on amazon / google / yelp.

    python benchmarks/explanations.py --max-train-pairs 600 --max-test-pairs 200 \\
        --stage1 amazon=runs/bench/amazon --stage1 google=runs/bench/google --stage1 yelp=runs/bench/yelp

For each dataset under ``--data-root`` (default ``../shared/data/xrec``): stage 1 (``beatrec tokenize``, or
the stage-1 artifacts of ``--stage1 NAME=DIR`` copied into ``--out/NAME``), then BEAT stage 2 and its three
ablations (``model.use_micro=false`` / ``model.use_macro=false`` / ``model.use_sar=false``), every baseline
(:mod:`beatrec.baselines`), all scored by the same harness (:mod:`beatrec.evaluate`) on the same zero-shot
test pairs, beside the floor. Writes ``benchmarks/explanations.md`` (rewritten after every dataset, so a
partial run still leaves its finished blocks) and ``--out/NAME/results.json``.

``--max-train-pairs`` caps the stage-2 training pairs of BEAT, the ablations and the continuous baseline
(seeded subset); ``--max-test-pairs`` scores a seeded subset of test pairs. Both keep the run within reach
of a 2-core CPU. The hidden ``--lm`` option swaps the frozen LM (tests use a tiny random one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("amazon", "google", "yelp")
BEAT_VARIANTS = (  # (key, label, align subdirectory, overrides)
    ("beat", "BEAT (behavior tokens; LoRA, the default recipe)", "align", ()),
    ("beat_frozen", "BEAT, frozen LM (projector only, lr 1e-3; plug-and-play)", "align_frozen",
     ("model.finetune=frozen", "train.lr=1e-3")),
    ("beat_no_micro", "BEAT w/o micro tokens", "align_no_micro", ("model.use_micro=false",)),
    ("beat_no_macro", "BEAT w/o macro tokens", "align_no_macro", ("model.use_macro=false",)),
    ("beat_no_sar", "BEAT w/o SAR", "align_no_sar", ("model.use_sar=false",)),
)
BASELINES = (  # (key, label)
    ("retrieval", "retrieval (nearest training pair, graph vectors)"),
    ("idgen", "ID-based GRU generator (Att2Seq/NRT/PETER style)"),
    ("itemtext", "item-text prompting (title + item summary, no user)"),
    ("continuous", "continuous injection (XRec-style, LightGCN → MLP adapter)"),
    ("history", "history prompting (titles of the user's training-graph items, no behavior tokens)"),
    ("beat_history", "BEAT + history titles"),
    ("xrec", "XRec published predictions (not zero-shot; covered pairs only)"),
)
CONTROLS = (  # (key, label, the row it is paired against, its align subdirectory, side shuffled, title withheld)
    ("beat_shuffled_user", "BEAT, another test user's tokens (control)", "beat", "align", "user", False),
    ("beat_shuffled_item", "BEAT, another test item's tokens (control)", "beat", "align", "item", False),
    ("history_shuffled_user", "history prompting, another test user's history (control)", "history",
     "align_history", "user", False),
    ("beat_untitled", "BEAT, title withheld (the item's tokens are all it has)", "beat", "align", None, True),
    ("beat_untitled_shuffled_item", "BEAT, title withheld, another test item's tokens (control)", "beat_untitled",
     "align", "item", True),
)
PAIRED_METRICS = ("bleu1", "bertscore_f1", "specificity")  # paired against BEAT in the report
STAGE1_COPY = ("user_tokens.parquet", "item_tokens.parquet", "codebooks.safetensors", "split.json", "config.yaml",
               "embeddings.safetensors", "tokenizer.safetensors", "metrics.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=ROOT / ".." / "shared" / "data" / "xrec")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "explanations")
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "explanations.md")
    ap.add_argument("--stage1", action="append", default=[], metavar="NAME=DIR",
                    help="reuse the stage-1 run DIR for dataset NAME (its artifacts are copied, DIR is not modified)")
    ap.add_argument("--max-train-pairs", type=int, default=0, help="stage-2 training pairs (seeded subset; 0 = all)")
    ap.add_argument("--max-test-pairs", type=int, default=0, help="scored test pairs (seeded subset; 0 = all)")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="subset of: " + " ".join(all_keys()))
    ap.add_argument("--tokenize-set", action="append", default=[], metavar="KEY=VALUE", help="stage-1 override")
    ap.add_argument("--align-set", action="append", default=[], metavar="KEY=VALUE",
                    help="stage-2 override for BEAT, its ablations and the continuous baseline")
    ap.add_argument("--baseline-set", action="append", default=[], metavar="KEY=VALUE",
                    help="BaselineConfig override, e.g. idgen.epochs=20")
    ap.add_argument("--no-bertscore", action="store_true")
    ap.add_argument("--no-lm-score", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--resume", action="store_true",
                    help="read --out/NAME/results.json where it exists: a dataset with every method is not re-run, "
                         "one with some methods keeps its stage 1 and those methods and runs only the rest")
    ap.add_argument("--lm", default="smollm2", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def copy_stage1(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in STAGE1_COPY:
        if (src / f).is_file():
            shutil.copy(src / f, dst / f)


def fmt_s(x: float) -> str:
    return f"{x:.0f} s" if x >= 10 else f"{x:.1f} s"


def run_dataset(name: str, args: argparse.Namespace, stage1: dict[str, Path], log,  # noqa: ANN001
                prev: dict | None = None) -> dict:
    """One dataset's block. ``prev`` (an earlier ``results.json`` of the same run, ``--resume``) supplies the
    stage-1 run already in ``--out/NAME`` and every method it scored whose predictions file is still there;
    only the missing methods are trained and scored."""
    import numpy as np

    from beatrec.align.config import AlignConfig
    from beatrec.align.controls import shuffled_pairs
    from beatrec.align.explain import check_pairs, explain, load_aligned
    from beatrec.align.history import HistoryPrompts
    from beatrec.align.train import train_align
    from beatrec.baselines.registry import BaselineConfig, run_baseline
    from beatrec.baselines.stage2 import VARIANTS, train_variant
    from beatrec.config import load_yaml
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit, eval_pairs
    from beatrec.evaluate import evaluate_predictions, evaluation_pairs
    from beatrec.lm import LMConfig
    from beatrec.metrics.explanations import ScoreConfig, Scorer
    from beatrec.predictions import read_predictions, write_predictions
    from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

    data = args.data_root / name
    run = args.out / name
    wanted = set(args.methods or all_keys())
    timings: dict[str, float] = {}
    prev_reports = {}
    t = time.perf_counter()
    if prev is not None and (run / "tokenizer.safetensors").is_file():
        stage1_note = prev["stage1"]
        timings["stage 1"] = prev["timings"]["stage 1"]
        prev_reports = {k: r for k, r in prev["reports"].items() if (run / "predictions" / f"{k}.jsonl").is_file()}
        for k in prev_reports:
            timings.update({n: v for n, v in prev["timings"].items() if n == k or n.startswith(f"{k}: ")})
        log(f"[{name}] stage 1 and {sorted(prev_reports)} read from {run} (--resume)")
    elif name in stage1:
        copy_stage1(stage1[name], run)
        stage1_note = f"reused `{stage1[name]}`"
    else:
        cfg = load_yaml(TokenizeConfig, None, args.tokenize_set)
        run_tokenize(data, run, cfg, progress=False)
        stage1_note = "trained here" + (f" ({', '.join(args.tokenize_set)})" if args.tokenize_set else "")
    if "stage 1" not in timings:
        timings["stage 1"] = time.perf_counter() - t
        log(f"[{name}] stage 1 {stage1_note}: {fmt_s(timings['stage 1'])}")
    ds = load_dataset(data)
    split = ZeroShotSplit.load(run / "split.json")
    pairs = evaluation_pairs(ds, split, args.max_test_pairs, seed=0)
    n_all = len(eval_pairs(ds, split, "test"))
    align_sets = [f"lm.name={args.lm}", f"train.max_train_pairs={args.max_train_pairs}",
                  *(f"train.threads={args.threads}",) * bool(args.threads), *args.align_set]
    preds_dir = run / "predictions"
    predictions: dict[str, Path] = {}
    labels: dict[str, str] = {}
    info: dict[str, dict] = {k: prev["info"][k] for k in prev_reports if k in prev.get("info", {})}
    test_rows = pairs[["uid", "iid", "title"]].to_dict("records")

    def decode(key: str, subdir: str, side: str | None = None, untitled: bool = False) -> list[str]:
        """Explain the test pairs with the stage-2 model in ``subdir`` (a shuffled-``side`` control when given; with
        every title withheld when ``untitled``); records the mean prompt length in tokens, the decoding throughput
        and, untitled, the share of users with 2+ pairs whose explanations all differ."""
        a = load_aligned(run, subdir=subdir)
        todo = check_pairs(a, test_rows, "test pairs")
        if untitled:
            todo = [{**r, "title": ""} for r in todo]
        if side is not None:
            todo = shuffled_pairs(todo, side, seed=0)
        t = time.perf_counter()
        texts = explain(a, todo)
        secs = time.perf_counter() - t
        timings[f"{key}: explain"] = secs
        shown = [dict(r) for r in todo]
        if a.history is not None:
            a.history.attach(shown)
        lengths = [len(a.builder.prompt(r["title"], r.get("history")).ids) for r in shown]
        info.setdefault(key, {}).update(prompt_tokens=float(np.mean(lengths)), pairs_per_s=len(todo) / secs)
        if untitled:
            info[key]["distinct_within_user"] = distinct_within_user(pairs.uid.tolist(), texts)
        return texts

    stage2_rows = [(key, label, subdir, sets) for key, label, subdir, sets in BEAT_VARIANTS]
    for key, label in BASELINES:
        if key in VARIANTS:
            stage2_rows.append((key, label, VARIANTS[key].subdir, None))
    bsets = [f"itemtext.lm.name={args.lm}", *(f"continuous.{s}" for s in align_sets),
             *(f"history.{s}" for s in align_sets),
             *(f"idgen.threads={args.threads}",) * bool(args.threads), *args.baseline_set]
    bcfg = load_yaml(BaselineConfig, None, bsets)
    for key, label, subdir, sets in stage2_rows:
        if key not in wanted or key in prev_reports:
            continue
        t = time.perf_counter()
        if sets is not None:  # BEAT and its variants
            cfg = load_yaml(AlignConfig, None, [*align_sets, *sets])
            res = train_align(run, data, cfg, progress=False, subdir=subdir)
        else:  # a stage-2 baseline: the same recipe with another prompt source
            acfg = bcfg.continuous if key == "continuous" else bcfg.history
            res = train_variant(key, run, data, acfg, bcfg.history_titles)
        timings[f"{key}: train"] = time.perf_counter() - t
        info[key] = json.loads((res.out_dir / "metrics.json").read_text())
        texts = decode(key, subdir)
        if key in VARIANTS and VARIANTS[key].history:
            cov = HistoryPrompts.build(ds, split, run, bcfg.history_titles).attach([dict(r) for r in test_rows])
            info[key]["history_coverage"] = cov._asdict()
        predictions[key] = write_predictions(preds_dir / f"{key}.jsonl", pairs.uid.tolist(), pairs.iid.tolist(), texts)
        labels[key] = label
        log(f"[{name}] {label}: train {fmt_s(timings[f'{key}: train'])}, explain {fmt_s(timings[f'{key}: explain'])}")
    for key, label, base, subdir, side, untitled in CONTROLS:
        if key not in wanted or key in prev_reports or not (base in predictions or base in prev_reports):
            continue
        texts = decode(key, subdir, side, untitled)
        predictions[key] = write_predictions(preds_dir / f"{key}.jsonl", pairs.uid.tolist(), pairs.iid.tolist(), texts)
        labels[key] = label
        log(f"[{name}] {label}: explain {fmt_s(timings[f'{key}: explain'])}")
    for key, label in BASELINES:
        if key in VARIANTS or key not in wanted or key in prev_reports or (
                key == "xrec" and not (data / "xrec_predictions.jsonl").is_file()):
            continue
        t = time.perf_counter()
        out = run_baseline(key, data, run, bcfg, pairs=pairs)
        timings[key] = time.perf_counter() - t
        p = out.predictions
        predictions[key] = write_predictions(preds_dir / f"{key}.jsonl", p.uid.tolist(), p.iid.tolist(),
                                             p.prediction.tolist())
        labels[key] = label
        info[key] = out.info
        log(f"[{name}] {label}: {fmt_s(timings[key])}")

    t = time.perf_counter()
    score_cfg = ScoreConfig(bertscore=not args.no_bertscore, lm_score=not args.no_lm_score, lm=LMConfig(name=args.lm))
    scorer = Scorer(score_cfg)
    fresh = {k: evaluate_predictions(ds, split, read_predictions(f), scorer, pairs, labels[k]).to_dict()
             for k, f in predictions.items()}
    order = all_keys()
    reports = {k: fresh.get(k, prev_reports.get(k)) for k in order if k in fresh or k in prev_reports}
    paired = paired_against_beat(run, pairs, [k for k in reports if (preds_dir / f"{k}.jsonl").is_file()], scorer)
    timings["scoring"] = time.perf_counter() - t + (prev["timings"].get("scoring", 0.0) if prev_reports else 0.0)
    log(f"[{name}] scoring: {fmt_s(timings['scoring'])}")
    result = {"dataset": name, "data": str(data), "run": str(run), "stage1": stage1_note,
              "n_test_pairs_all": n_all, "n_test_pairs": len(pairs), "n_test_users": int(pairs.uid.nunique()),
              "reports": reports, "info": info, "timings": timings, "paired": paired}
    (run / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def all_keys() -> list[str]:
    """Every row of the table, in table order."""
    return [k for k, *_ in BEAT_VARIANTS] + [k for k, *_ in CONTROLS] + [k for k, _ in BASELINES]


def reference_row(key: str) -> str:
    """The row a row is paired against: a control against the model it shuffles, every other row against BEAT."""
    return next((base for k, _, base, *_ in CONTROLS if k == key), "beat")


def distinct_within_user(uids: list[int], texts: list[str]) -> float:
    """Share of the users with 2+ pairs whose explanations are all different (nan when no user has two)."""
    by: dict[int, list[str]] = {}
    for u, t in zip(uids, texts, strict=True):
        by.setdefault(int(u), []).append(t.strip())
    many = [ts for ts in by.values() if len(ts) > 1]
    return float(sum(len(set(ts)) == len(ts) for ts in many) / len(many)) if many else float("nan")


def paired_against_beat(run: Path, pairs, keys: list[str], scorer) -> dict[str, list[dict]]:  # noqa: ANN001
    """Per row: the paired difference row - its reference row (:func:`reference_row`: BEAT, or the model a control
    shuffles) on the pairs both predicted (BLEU-1, BERTScore-MiniLM, specificity; 95% percentile bootstrap
    interval, permutation p), from the predictions files."""
    from beatrec.metrics.paired import pair_stats, paired_comparison
    from beatrec.predictions import match_predictions, read_predictions

    out = {}
    for key in keys:
        ref_key = reference_row(key)
        if key == "beat" or ref_key not in keys:
            continue
        beat = match_predictions(pairs, read_predictions(run / "predictions" / f"{ref_key}.jsonl")).rows
        other = match_predictions(pairs, read_predictions(run / "predictions" / f"{key}.jsonl")).rows
        both = beat.merge(other[["uid", "iid", "prediction"]], on=["uid", "iid"], suffixes=("_beat", "_row"))
        if len(both) < 2:
            continue
        refs = both["explanation"].tolist()
        rows = paired_comparison(pair_stats(both["prediction_beat"].tolist(), refs, scorer),
                                 pair_stats(both["prediction_row"].tolist(), refs, scorer))
        out[key] = [{**r._asdict(), "n": len(both), "against": ref_key} for r in rows if r.metric in PAIRED_METRICS]
    return out


def refresh_paired(res: dict, args: argparse.Namespace) -> dict:
    """The paired rows of a read-back dataset, recomputed from its predictions files (so a report always pairs
    what the current code pairs); the stored ones when the files or the dataset are gone."""
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit
    from beatrec.evaluate import evaluation_pairs
    from beatrec.metrics.explanations import ScoreConfig, Scorer

    run, data = Path(res["run"]), Path(res["data"])
    keys = [k for k in res["reports"] if (run / "predictions" / f"{k}.jsonl").is_file()]
    if not keys or not (data / "interactions.csv").is_file():
        return res.get("paired", {})
    pairs = evaluation_pairs(load_dataset(data), ZeroShotSplit.load(run / "split.json"), res["n_test_pairs"], seed=0)
    scorer = Scorer(ScoreConfig(bertscore=not args.no_bertscore, lm_score=False))
    return paired_against_beat(run, pairs, keys, scorer)


def dataset_block(res: dict) -> list[str]:
    """The markdown block of one dataset, from its ``results.json`` form (fresh or resumed runs alike)."""
    from beatrec.metrics.explanations import LABELS as LABEL
    from beatrec.metrics.explanations import ExplanationScores, markdown_table

    reports = res["reports"]  # key -> EvalReport.to_dict()
    rows, times = [], []
    t = res["timings"]
    for key, r in reports.items():
        rows.append((r["name"], ExplanationScores(**r["metrics"])))
        secs = t.get(key, t.get(f"{key}: train", 0.0) + t.get(f"{key}: explain", 0.0))
        times.append(fmt_s(secs))
    if reports:
        full = max(reports.values(), key=lambda r: r["n_scored"])
        rows.append(("random training explanation (floor)", ExplanationScores(**full["floor"])))
        times.append("–")
        if "xrec" in reports and reports["xrec"]["n_scored"] < full["n_scored"]:
            rows.append(("floor on the XRec-covered pairs", ExplanationScores(**reports["xrec"]["floor"])))
            times.append("–")
    lines = [f"## {res['dataset']}", "",
             f"- test pairs scored: {res['n_test_pairs']} of {res['n_test_pairs_all']} "
             f"({res['n_test_users']} zero-shot users, never trained on); stage 1: {res['stage1']}",
             ""]
    if rows:
        lines += [markdown_table(rows, {"time": times}), ""]
    for r in reports.values():
        n_missing = r["missing_pairs"]["count"]
        if n_missing:
            lines.append(f"- {r['name']}: {n_missing} of {r['n_test_pairs']} test pairs have no prediction "
                         f"(scored on the {r['n_scored']} covered)")
    paired = res.get("paired", {})
    if paired:
        from beatrec.stats import format_p

        head = " | ".join(f"{LABEL[m]} diff [95% interval] (p)" for m in PAIRED_METRICS)
        lines += ["", "Each row against BEAT on the same test pairs (diff = row - BEAT; a control against the model it "
                      "shuffles; percentile bootstrap over pairs, paired permutation p), with prompt length and decoding "
                      "throughput of the LM rows:", "",
                  f"| method | pairs | {head} | prompt tokens | pairs/s |", "|---|---|" + "---|" * len(PAIRED_METRICS) + "---|---|"]
        for key, rows in paired.items():
            cells = {r["metric"]: f"{r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] ({format_p(r['p_value'])})"
                     for r in rows}
            inf = res.get("info", {}).get(key, {})
            pt = f"{inf['prompt_tokens']:.0f}" if "prompt_tokens" in inf else "–"
            ps = f"{inf['pairs_per_s']:.2f}" if "pairs_per_s" in inf else "–"
            n = rows[0]["n"] if rows else 0
            against = rows[0].get("against", "beat") if rows else "beat"
            vs = "" if against == "beat" else f" (vs {reports[against]['name']})"
            lines.append(f"| {reports[key]['name']}{vs} | {n} | " + " | ".join(cells.get(m, "–") for m in PAIRED_METRICS)
                         + f" | {pt} | {ps} |")
        inf = res.get("info", {}).get("beat", {})
        if "prompt_tokens" in inf:
            lines.append("| BEAT (reference row) | – | " + " | ".join("–" for _ in PAIRED_METRICS)
                         + f" | {inf['prompt_tokens']:.0f} | {inf['pairs_per_s']:.2f} |")
        for key in ("history", "beat_history"):
            cov = res.get("info", {}).get(key, {}).get("history_coverage")
            if cov:
                lines.append(f"- {reports[key]['name']}: {cov['share_with_any']:.1%} of the test pairs' users have at "
                             f"least one titled history item; {cov['mean_titles']:.1f} titles per prompt")
        for key in ("beat_untitled", "beat_untitled_shuffled_item"):
            share = res.get("info", {}).get(key, {}).get("distinct_within_user")
            if share is not None and key in reports:
                lines.append(f"- {reports[key]['name']}: {share:.1%} of the users with 2+ test pairs get a different "
                             "explanation for each of their items")
    diag = length_diagnostic(res)
    if diag:
        lines += ["", "Length diagnostic (BLEU-1 = brevity penalty × clipped unigram precision; NLTK corpus BLEU):", "",
                  "| method | words / reference words | brevity penalty | unigram precision |", "|---|---|---|---|"]
        lines += [f"| {reports[k]['name']} | {r:.2f} | {bp:.3f} | {p1:.4f} |" for k, (r, bp, p1) in diag.items()]
    lines += ["", "Wall time per stage: " + ", ".join(f"{k} {fmt_s(v)}" for k, v in t.items()), ""]
    return lines


def length_diagnostic(res: dict) -> dict[str, tuple[float, float, float]]:
    """Per method: (candidate / reference token ratio, brevity penalty, BLEU-1 / brevity penalty) over the scored
    pairs, from the run's predictions files; empty when they are not there."""
    import math

    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit
    from beatrec.evaluate import evaluation_pairs
    from beatrec.metrics.text import bleu, tokenize
    from beatrec.predictions import read_predictions

    run, data = Path(res["run"]), Path(res["data"])
    if not (run / "predictions").is_dir() or not (data / "interactions.csv").is_file():
        return {}
    pairs = evaluation_pairs(load_dataset(data), ZeroShotSplit.load(run / "split.json"), res["n_test_pairs"], seed=0)
    refs = {(u, i): e for u, i, e in zip(pairs.uid, pairs.iid, pairs.explanation, strict=True)}
    out = {}
    for key in res["reports"]:
        f = run / "predictions" / f"{key}.jsonl"
        if not f.is_file():
            continue
        pred = read_predictions(f)
        got = {(u, i): x for u, i, x in zip(pred.uid, pred.iid, pred.prediction, strict=True)}
        keys = [k for k in refs if k in got]
        cand, ref = [got[k] for k in keys], [refs[k] for k in keys]
        c, r = sum(len(tokenize(x)) for x in cand), sum(len(tokenize(x)) for x in ref)
        bp = 1.0 if c > r else math.exp(1 - r / max(c, 1))
        out[key] = (c / max(r, 1), bp, bleu(cand, ref, 1) / bp)
    return out


def write_report(path: Path, results: list[dict], args: argparse.Namespace, command: str, started: str,
                 total_s: float) -> None:
    import torch

    head = [
        "# Explanation quality on zero-shot users — BEAT, ablations and baselines (the paper's Table 1, our data)",
        "",
        f"- date: {started}; total wall time {fmt_s(total_s)}",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- command: `{command}`",
        "- wall times per stage are those of the run that produced each result (with `--resume`, earlier runs); "
        "the total above is this invocation's",
        f"- LM: `{args.lm}` (a LoRA adapter on it unless the row says frozen); stage-2 training pairs: {args.max_train_pairs or 'all'}; "
        "test pairs: " + (f"a seeded {args.max_test_pairs}" if args.max_test_pairs else "all"),
        "- metrics (`beatrec.metrics.explanations`): BLEU (NLTK corpus, method1), ROUGE-L (sentence LCS F1, mean), "
        "BERTScore-MiniLM (all-MiniLM-L6-v2, greedy matching, not rescaled), LM-score (mean log p(reference | "
        "prediction) under the frozen LM; a stand-in for BARTScore), specificity (MRR of the own reference by "
        "MiniLM cosine), distinct-1/2 over all generations, average words.",
        "",
    ]
    body = [line for r in results for line in dataset_block(r)]
    kept = earlier_blocks(path, {r["dataset"] for r in results})
    path.write_text("\n".join(head + body + kept) + "\n")


def earlier_blocks(path: Path, fresh: set[str]) -> list[str]:
    """The dataset blocks of the report already at ``path`` for datasets this invocation did not run, each
    stamped with the date and command of the invocation that produced it (so running one dataset never erases
    another's measured block)."""
    if not path.is_file():
        return []
    text = path.read_text()
    head, *blocks = re.split(r"^(?=## )", text, flags=re.M)
    date = re.search(r"^- date: (.*)$", head, flags=re.M)
    cmd = re.search(r"^- command: (.*)$", head, flags=re.M)
    stamp = f"- produced by an earlier invocation ({date.group(1) if date else 'date unknown'}): " + \
        (cmd.group(1) if cmd else "command unknown")
    out = []
    for block in blocks:
        name = block.split("\n", 1)[0][3:].strip()
        if name in fresh or name not in DATASETS:
            continue
        lines = block.rstrip("\n").split("\n")
        if not any(line.startswith("- produced by") for line in lines):
            lines.insert(2, stamp)
        out += [*lines, ""]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stage1 = {}
    for item in args.stage1:
        name, _, d = item.partition("=")
        if not d:
            raise SystemExit(f"--stage1 wants NAME=DIR, got {item!r}")
        stage1[name] = Path(d)
    missing = [n for n in args.datasets if not (args.data_root / n / "interactions.csv").is_file()]
    if missing:
        raise SystemExit(f"dataset(s) absent under {args.data_root}: {missing} (this benchmark needs ../shared/data/xrec)")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT) if argv is None else
                                    "benchmarks/explanations.py", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    results = []
    for name in args.datasets:
        done = args.out / name / "results.json"
        prev = json.loads(done.read_text()) if args.resume and done.is_file() else None
        wanted = set(args.methods or all_keys())
        if not (args.data_root / name / "xrec_predictions.jsonl").is_file():
            wanted.discard("xrec")
        if prev is not None and wanted <= set(prev["reports"]):
            prev["paired"] = refresh_paired(prev, args)
            results.append(prev)
            print(f"[{name}] read from {done} (--resume)", flush=True)
        else:
            results.append(run_dataset(name, args, stage1, lambda m: print(m, flush=True), prev))
        write_report(args.report, results, args, command, started, time.perf_counter() - t0)
        print(f"wrote {args.report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
