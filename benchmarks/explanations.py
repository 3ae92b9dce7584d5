"""The paper's Table 1 on our data: BEAT, its ablations and every baseline on amazon / google / yelp.

    python benchmarks/explanations.py --max-train-pairs 600 --max-test-pairs 200 \\
        --stage1 amazon=runs/bench/amazon --stage1 google=runs/bench/google --stage1 yelp=runs/bench/yelp
    python benchmarks/explanations.py --report-only        # rebuild the report from the records

For each dataset under ``--data-root`` (default ``../shared/data/xrec``): stage 1 (``beatrec tokenize``, or
the stage-1 artifacts of ``--stage1 NAME=DIR`` copied into ``--out/NAME``), then BEAT stage 2 and its
ablations, its controls (another user's / item's tokens, the title withheld), every baseline
(:mod:`beatrec.baselines`), all scored by the same harness (:mod:`beatrec.evaluate`) on the same zero-shot
test pairs, beside the floor.

**Records.** Every finished row is written to ``--records`` (default ``benchmarks/explanations.json``) as it
lands: its config, digests of the code it ran and of the stage-1 tokens, its scored pairs (ids), its metrics and
per pair the statistics the paired tests and the length diagnostic need (BLEU-1 counts, lengths, BERTScore,
reciprocal rank) — no generated or reference text. ``benchmarks/explanations.md`` is rebuilt from the records
alone; a row whose key (dataset, row, config, scoring, stage-1 and code digests, test pairs) is recorded is not
run again, so rows accumulate across processes, days and machines. Within a row the trained stage-2 model
(``--out/NAME/<subdir>``) is the checkpoint: a rerun with the same config and tokens reuses it.

``--max-train-pairs`` caps the stage-2 training pairs of BEAT, the ablations and the continuous baseline
(seeded subset); ``--max-test-pairs`` scores a seeded subset of test pairs. Both keep the run within reach
of a 2-core CPU. The hidden ``--lm`` option swaps the frozen LM (tests use a tiny random one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import digest_files, provenance, put_record, read_records, record_key, stage1_digest  # noqa: E402

DATASETS = ("amazon", "google", "yelp")
BEAT_VARIANTS = (  # (key, label, align subdirectory, overrides)
    ("beat", "BEAT (behavior tokens; LoRA, the default recipe)", "align", ()),
    ("beat_frozen", "BEAT, frozen LM (projector only, lr 1e-3; plug-and-play)", "align_frozen",
     ("model.finetune=frozen", "train.lr=1e-3")),
    ("beat_no_micro", "BEAT w/o micro tokens", "align_no_micro", ("model.use_micro=false",)),
    ("beat_no_macro", "BEAT w/o macro tokens", "align_no_macro", ("model.use_macro=false",)),
    ("beat_no_sar", "BEAT w/o SAR", "align_no_sar", ("model.use_sar=false",)),
    ("beat_multitask", "BEAT, multitask stage 2 (+ user and item profiles; issue #37)", "align_multitask",
     ("train.tasks=[explain,user_profile,item_profile]",)),
    ("beat_multitask_drop", "BEAT, multitask stage 2, title withheld in 30% of training pairs", "align_multitask_drop",
     ("train.tasks=[explain,user_profile,item_profile]", "train.title_dropout=0.3")),
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
    ("beat_multitask_shuffled_user", "BEAT multitask, another test user's tokens (control)", "beat_multitask",
     "align_multitask", "user", False),
    ("beat_multitask_untitled", "BEAT multitask, title withheld", "beat_multitask", "align_multitask", None, True),
    ("beat_multitask_untitled_shuffled_item", "BEAT multitask, title withheld, another test item's tokens (control)",
     "beat_multitask_untitled", "align_multitask", "item", True),
    ("beat_multitask_drop_untitled", "BEAT multitask + title dropout, title withheld", "beat_multitask_drop",
     "align_multitask_drop", None, True),
    ("beat_multitask_drop_untitled_shuffled_item",
     "BEAT multitask + title dropout, title withheld, another test item's tokens (control)",
     "beat_multitask_drop_untitled", "align_multitask_drop", "item", True),
)
PAIRED_METRICS = ("bleu1", "bertscore_f1", "specificity")  # paired against BEAT in the report
STATS = ("bleu1_match", "hyp_len", "ref_len", "bertscore", "specificity")  # per scored pair, in each record
CODE = ("src/beatrec/align", "src/beatrec/baselines", "src/beatrec/metrics", "src/beatrec/evaluate.py",
        "src/beatrec/lm.py", "src/beatrec/predictions.py")  # the source a row's record is keyed on
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
    ap.add_argument("--records", type=Path, default=ROOT / "benchmarks" / "explanations.json",
                    help="committed per-row records (no text); a recorded row is skipped")
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from the records, run nothing")
    ap.add_argument("--lm", default="smollm2", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def copy_stage1(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in STAGE1_COPY:
        if (src / f).is_file():
            shutil.copy(src / f, dst / f)


def fmt_s(x: float) -> str:
    return f"{x:.0f} s" if x >= 10 else f"{x:.1f} s"


def code_digest() -> str:
    """A digest of the source the rows run (stage 2, the baselines, the metrics, the evaluation, the LM loader)."""
    return digest_files([ROOT / p for p in CODE])


def trained_here(d: Path, cfg: dict, s1: str) -> bool:
    """``d`` holds a stage-2 model trained here with config ``cfg`` on the stage-1 tokens ``s1`` (the checkpoint
    a resumed row reuses instead of training again)."""
    mark = d / "bench_trained.json"
    return (d / "weights.safetensors").is_file() and mark.is_file() and \
        json.loads(mark.read_text()) == {"config": cfg, "stage1": s1}


def run_dataset(name: str, args: argparse.Namespace, stage1: dict[str, Path], log, command: str) -> None:  # noqa: ANN001
    """Run the rows of one dataset that are not recorded yet and record each as it lands (``--records``).

    Stage 1 comes from ``--stage1 NAME=DIR`` (copied), else from ``--out/NAME`` when an earlier invocation
    trained it there, else it is trained. A row's trained stage 2 (``--out/NAME/<subdir>``) is reused when its
    config and stage-1 tokens are unchanged, so an interrupted row resumes without training again.
    """
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
    from beatrec.metrics.paired import pair_stats
    from beatrec.predictions import match_predictions, read_predictions, write_predictions
    from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

    data = args.data_root / name
    run = args.out / name
    wanted = set(args.methods or all_keys())
    if not (data / "xrec_predictions.jsonl").is_file():
        wanted.discard("xrec")
    t = time.perf_counter()
    if name in stage1:
        copy_stage1(stage1[name], run)
        stage1_note = f"reused `{stage1[name]}`"
    elif (run / "tokenizer.safetensors").is_file():
        stage1_note = f"`{run}` (trained by an earlier invocation)"
    else:
        cfg = load_yaml(TokenizeConfig, None, args.tokenize_set)
        run_tokenize(data, run, cfg, progress=False)
        stage1_note = "trained here" + (f" ({', '.join(args.tokenize_set)})" if args.tokenize_set else "")
    log(f"[{name}] stage 1 {stage1_note}: {fmt_s(time.perf_counter() - t)}")
    s1, code = stage1_digest(run), code_digest()
    ds = load_dataset(data)
    split = ZeroShotSplit.load(run / "split.json")
    pairs = evaluation_pairs(ds, split, args.max_test_pairs, seed=0)
    pair_ids = [[int(u), int(i)] for u, i in zip(pairs.uid, pairs.iid, strict=True)]
    n_all = len(eval_pairs(ds, split, "test"))
    align_sets = [f"lm.name={args.lm}", f"train.max_train_pairs={args.max_train_pairs}",
                  *(f"train.threads={args.threads}",) * bool(args.threads), *args.align_set]
    bsets = [f"itemtext.lm.name={args.lm}", *(f"continuous.{s}" for s in align_sets),
             *(f"history.{s}" for s in align_sets),
             *(f"idgen.threads={args.threads}",) * bool(args.threads), *args.baseline_set]
    bcfg = load_yaml(BaselineConfig, None, bsets)
    preds_dir = run / "predictions"
    test_rows = pairs[["uid", "iid", "title"]].to_dict("records")
    scoring = {"bertscore": not args.no_bertscore, "lm_score": not args.no_lm_score}
    scorer_box: list[Scorer] = []

    stage2 = {key: (subdir, [*align_sets, *sets]) for key, _, subdir, sets in BEAT_VARIANTS}
    stage2.update({key: (VARIANTS[key].subdir, bsets) for key, _ in BASELINES if key in VARIANTS})
    labels = {**{k: lab for k, lab, *_ in BEAT_VARIANTS}, **{k: lab for k, lab, *_ in CONTROLS}, **dict(BASELINES)}
    controls = {k: (base, subdir, side, untitled) for k, _, base, subdir, side, untitled in CONTROLS}

    def model_of(key: str) -> str:
        """The trained row whose stage-2 model a row decodes with (a control's chain leads to one)."""
        while key in controls:
            key = controls[key][0]
        return key

    def config_of(key: str) -> list:
        if key in controls:
            base, _, side, untitled = controls[key]
            return [*config_of(model_of(base)), {"control": side, "untitled": untitled}]
        return stage2[key][1] if key in stage2 else bsets

    def ensure_trained(key: str) -> dict:
        """Train the stage-2 model of ``key`` unless it is already in its subdirectory; -> its timings."""
        subdir, sets = stage2[key]
        d = run / subdir
        if trained_here(d, sets, s1):
            log(f"[{name}] reusing the trained {d}")
            return {}
        t = time.perf_counter()
        if key in VARIANTS:  # a stage-2 baseline: the same recipe with another prompt source
            res = train_variant(key, run, data, bcfg.continuous if key == "continuous" else bcfg.history,
                                bcfg.history_titles)
        else:
            res = train_align(run, data, load_yaml(AlignConfig, None, sets), progress=False, subdir=subdir)
        (res.out_dir / "bench_trained.json").write_text(json.dumps({"config": sets, "stage1": s1}))
        return {f"{key}: train": time.perf_counter() - t}

    def decode(key: str) -> tuple[list[str], dict, dict]:
        """Explain the test pairs with the row's stage-2 model (a control: shuffled side, titles withheld);
        -> texts, timings, info (mean prompt tokens, pairs/s; untitled: distinct explanations within a user)."""
        base, _, side, untitled = controls.get(key, (None, None, None, False))
        a = load_aligned(run, subdir=stage2[model_of(key)][0])
        todo = check_pairs(a, test_rows, "test pairs")
        if untitled:
            todo = [{**r, "title": ""} for r in todo]
        if side is not None:
            todo = shuffled_pairs(todo, side, seed=0)
        t = time.perf_counter()
        texts = explain(a, todo)
        secs = time.perf_counter() - t
        shown = [dict(r) for r in todo]
        if a.history is not None:
            a.history.attach(shown)
        lengths = [len(a.builder.prompt(r["title"], r.get("history")).ids) for r in shown]
        info = {"prompt_tokens": float(np.mean(lengths)), "pairs_per_s": len(todo) / secs}
        if untitled:
            info["distinct_within_user"] = distinct_within_user(pairs.uid.tolist(), texts)
        return texts, {f"{key}: explain": secs}, info

    for key in all_keys():
        if key not in wanted:
            continue
        config = config_of(key)
        rkey = record_key(name, key, config, scoring, s1, code, pair_ids)
        if any(r["key"] == rkey for r in read_records(args.records)):
            log(f"[{name}] {labels[key]}: recorded, skipped")
            continue
        timings: dict[str, float] = {}
        info: dict = {}
        if key in stage2 or key in controls:
            timings.update(ensure_trained(model_of(key)))
            if key in stage2:
                info = json.loads((run / stage2[key][0] / "metrics.json").read_text())
            texts, secs, extra = decode(key)
            timings.update(secs)
            info.update(extra)
            if key in VARIANTS and VARIANTS[key].history:
                cov = HistoryPrompts.build(ds, split, run, bcfg.history_titles).attach([dict(r) for r in test_rows])
                info["history_coverage"] = cov._asdict()
            f = write_predictions(preds_dir / f"{key}.jsonl", pairs.uid.tolist(), pairs.iid.tolist(), texts)
        else:
            t = time.perf_counter()
            out = run_baseline(key, data, run, bcfg, pairs=pairs)
            timings[key] = time.perf_counter() - t
            p = out.predictions
            f = write_predictions(preds_dir / f"{key}.jsonl", p.uid.tolist(), p.iid.tolist(), p.prediction.tolist())
            info = out.info
        t = time.perf_counter()
        if not scorer_box:
            scorer_box.append(Scorer(ScoreConfig(bertscore=scoring["bertscore"], lm_score=scoring["lm_score"],
                                                 lm=LMConfig(name=args.lm))))
        preds = read_predictions(f)
        report = evaluate_predictions(ds, split, preds, scorer_box[0], pairs, labels[key]).to_dict()
        m = match_predictions(pairs, preds).rows
        st = pair_stats(m["prediction"].tolist(), m["explanation"].tolist(), scorer_box[0])
        timings[f"{key}: scoring"] = time.perf_counter() - t
        put_record(args.records, {
            "key": rkey, "dataset": name, "row": key, "config": config, "scoring": scoring, "stage1": s1,
            "stage1_source": stage1_note, "code": code, "pairs_all": n_all, "pairs": pair_ids,
            "scored": [[int(u), int(i)] for u, i in zip(m["uid"], m["iid"], strict=True)],
            "report": report, "stats": {k: None if getattr(st, k) is None else
                                        np.asarray(getattr(st, k)).round(6).tolist() for k in STATS},
            "info": json.loads(json.dumps(info, default=str)), "timings": timings, **provenance(command)})
        log(f"[{name}] {labels[key]}: recorded (" + ", ".join(f"{k} {fmt_s(v)}" for k, v in timings.items()) + ")")


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


def stats_of(rec: dict, keep: list[int]):  # noqa: ANN201 - PairStats
    """The record's per-pair statistics at the scored-pair positions ``keep``."""
    from beatrec.metrics.paired import PairStats

    st = rec["stats"]
    return PairStats(*(None if st[k] is None else np.asarray(st[k], dtype=np.int64 if k.endswith(("match", "len"))
                                                                else np.float64)[keep] for k in STATS))


def paired_from_records(recs: dict[str, dict]) -> dict[str, list[dict]]:
    """Per row: the paired difference row - its reference row (:func:`reference_row`: BEAT, or the model a control
    shuffles) on the pairs both scored (BLEU-1, BERTScore-MiniLM, specificity; 95% percentile bootstrap interval,
    permutation p), from the records' per-pair statistics."""
    from beatrec.metrics.paired import paired_comparison

    out = {}
    for key, rec in recs.items():
        ref = recs.get(reference_row(key))
        if key == "beat" or ref is None:
            continue
        pos = {tuple(p): j for j, p in enumerate(ref["scored"])}
        both = [(pos[tuple(p)], j) for j, p in enumerate(rec["scored"]) if tuple(p) in pos]
        if len(both) < 2:
            continue
        rows = paired_comparison(stats_of(ref, [a for a, _ in both]), stats_of(rec, [b for _, b in both]))
        out[key] = [{**r._asdict(), "n": len(both), "against": reference_row(key)} for r in rows
                    if r.metric in PAIRED_METRICS]
    return out


def dataset_result(name: str, recs: dict[str, dict]) -> dict:
    """The form :func:`dataset_block` renders, from one dataset's records (row -> record)."""
    order = [k for k in all_keys() if k in recs]
    first = recs["beat"] if "beat" in recs else recs[order[0]]
    timings: dict[str, float] = {}
    for k in order:
        timings.update(recs[k]["timings"])
    return {"dataset": name, "stage1": first["stage1_source"], "n_test_pairs_all": first["pairs_all"],
            "n_test_pairs": len(first["pairs"]), "n_test_users": len({u for u, _ in first["pairs"]}),
            "reports": {k: recs[k]["report"] for k in order}, "info": {k: recs[k]["info"] for k in order},
            "timings": timings, "paired": paired_from_records({k: recs[k] for k in order}),
            "lengths": {k: length_ratio(stats_of(recs[k], list(range(len(recs[k]["scored"]))))) for k in order},
            "dates": sorted({recs[k]["date"] for k in order}), "commands": sorted({recs[k]["command"] for k in order})}


def current_records(records: list[dict]) -> dict[str, dict[str, dict]]:
    """dataset -> row -> its latest record on the latest BEAT record's test pairs and stage 1 (rows recorded
    on other pairs or tokens are left out of the table; they stay in the file)."""
    out: dict[str, dict[str, dict]] = {}
    for r in sorted(records, key=lambda r: r["date"]):
        out.setdefault(r["dataset"], {})[r["row"]] = r
    for name, recs in out.items():
        anchor = recs.get("beat")
        if anchor is not None:
            out[name] = {k: r for k, r in recs.items() if r["pairs"] == anchor["pairs"] and
                         r["stage1"] == anchor["stage1"]}
    return out


def dataset_block(res: dict) -> list[str]:
    """The markdown block of one dataset, from :func:`dataset_result` of its current records."""
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
    diag = res.get("lengths", {})
    if diag:
        lines += ["", "Length diagnostic (BLEU-1 = brevity penalty × clipped unigram precision; NLTK corpus BLEU):", "",
                  "| method | words / reference words | brevity penalty | unigram precision |", "|---|---|---|---|"]
        lines += [f"| {reports[k]['name']} | {r:.2f} | {bp:.3f} | {p1:.4f} |" for k, (r, bp, p1) in diag.items()]
    lines += ["", "Wall time per stage (each row's own run): " + ", ".join(f"{k} {fmt_s(v)}" for k, v in t.items()),
              "", "Recorded " + ", ".join(d[:10] for d in dict.fromkeys(x[:10] for x in res["dates"])) + " by " +
              "; ".join(f"`{c}`" for c in res["commands"]), ""]
    return lines


def length_ratio(st) -> tuple[float, float, float]:  # noqa: ANN001 - PairStats
    """(candidate / reference token ratio, brevity penalty, BLEU-1 / brevity penalty = clipped unigram precision)
    over the scored pairs, from their per-pair counts (NLTK corpus BLEU-1 = brevity penalty × that precision)."""
    c, r = int(st.hyp_len.sum()), int(st.ref_len.sum())
    bp = 1.0 if c > r else math.exp(1 - r / max(c, 1))
    return c / max(r, 1), bp, float(st.bleu1_match.sum()) / max(c, 1)


def write_report(path: Path, records: list[dict], command: str) -> None:
    """The report, rebuilt from the records alone (each dataset's current rows: :func:`current_records`); a
    dataset with no records keeps its block from the report already at ``path``, stamped as earlier work."""
    head = [
        "# Explanation quality on zero-shot users — BEAT, ablations and baselines (the paper's Table 1, our data)",
        "",
        f"- report rebuilt {datetime.datetime.now().isoformat(timespec='seconds')} from "
        f"`{path.with_suffix('.json').name}` by `{command}`; each row's machine, date, command, config and code "
        "digest are in its record, and each block names the commands that recorded its rows",
        "- LM: SmolLM2-135M-Instruct unless a row's config says otherwise (a LoRA adapter on it unless the row says "
        "frozen); a row's stage-2 training pairs and scored test pairs are in its record",
        "- metrics (`beatrec.metrics.explanations`): BLEU (NLTK corpus, method1), ROUGE-L (sentence LCS F1, mean), "
        "BERTScore-MiniLM (all-MiniLM-L6-v2, greedy matching, not rescaled), LM-score (mean log p(reference | "
        "prediction) under the frozen LM; a stand-in for BARTScore), specificity (MRR of the own reference by "
        "MiniLM cosine), distinct-1/2 over all generations, average words.",
        "",
    ]
    cur = current_records(records)
    body = [line for name in sorted(cur, key=lambda n: DATASETS.index(n) if n in DATASETS else 9)
            for line in dataset_block(dataset_result(name, cur[name]))]
    kept = earlier_blocks(path, set(cur))
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
    if missing and not args.report_only:
        raise SystemExit(f"dataset(s) absent under {args.data_root}: {missing} (this benchmark needs ../shared/data/xrec)")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT) if argv is None else
                                    "benchmarks/explanations.py", *(sys.argv[1:] if argv is None else argv)])
    if not args.report_only:
        for name in args.datasets:
            run_dataset(name, args, stage1, lambda m: print(m, flush=True), command)
            write_report(args.report, read_records(args.records), command)
    write_report(args.report, read_records(args.records), command)
    print(f"wrote {args.report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
