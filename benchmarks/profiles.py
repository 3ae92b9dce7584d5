"""The profile table (issue #37, Table 2): zero-shot users' profiles written from what each method knows of them.

    python benchmarks/profiles.py --datasets amazon --stage1 amazon=runs/p37/amazon            # test users
    python benchmarks/profiles.py --datasets amazon --stage1 amazon=runs/p37/amazon --split val  # selection runs
    python benchmarks/profiles.py --report-only                                                  # rebuild the report

For each dataset and scored split (``test``: the zero-shot test users; ``val``: validation users, for choosing
settings), every row writes one profile per scored user that has a ``user_summary``, scored against it:
BLEU-1, BERTScore-MiniLM, specificity (MRR of the own profile among the scored users' profiles), distinct-2 and
length, with the paired difference to BEAT (95% percentile bootstrap over users, paired permutation p;
:mod:`beatrec.metrics.paired`). Rows (:data:`ROWS`): BEAT with multitask stage 2 (explanations, user profiles,
item profiles; :mod:`beatrec.align.tasks`), BEAT with another scored user's tokens (control), the floor (a random
training user's profile), retrieval (the nearest training user's profile by LightGCN vector), history-titles
prompting and continuous vectors (XRec-style), both with the same multitask recipe.

**Records.** Every finished row is written to ``--records`` (default ``benchmarks/profiles.json``): its config, a
digest of the code it ran and of the stage-1 tokens, and per scored user the statistics every metric and paired
test needs (BLEU-1 counts, lengths, BERTScore, reciprocal rank) — no text. The report is rebuilt from the records
alone; a row whose key (dataset, split, row config, stage-1 and code digests, users) is recorded is not run
again, so rows accumulate across processes, days and machines. Within a row the trained stage-2 model
(``RUN/<subdir>``) is the checkpoint: a rerun with the same config reuses it instead of training again.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import digest_files, provenance, put_record, read_records, record_key, stage1_digest  # noqa: E402

DATASETS = ("amazon", "yelp", "google")
TASKS = "train.tasks=[explain,user_profile,item_profile]"
ROWS: dict[str, dict[str, Any]] = {  # key -> label, kind, and for trained rows the subdir and overrides
    "beat": {"label": "BEAT (behavior tokens; multitask stage 2)", "kind": "lm", "subdir": "align_profiles",
             "sets": [TASKS]},
    "beat_shuffled_user": {"label": "BEAT, another scored user's tokens (control)", "kind": "control", "of": "beat"},
    "beat_anchor": {"label": "BEAT + word anchoring (model.word_anchor=1)", "kind": "lm",
                    "subdir": "align_profiles_anchor", "sets": [TASKS, "model.word_anchor=1"]},
    "beat_anchor_shuffled_user": {"label": "BEAT + word anchoring, another scored user's tokens (control)",
                                  "kind": "control", "of": "beat_anchor"},
    "beat_contrast": {"label": "BEAT + token contrast on user profiles (model.token_contrast=1)", "kind": "lm",
                      "subdir": "align_profiles_contrast", "sets": [TASKS, "model.token_contrast=1"]},
    "beat_contrast_shuffled_user": {"label": "BEAT + token contrast, another scored user's tokens (control)",
                                    "kind": "control", "of": "beat_contrast"},
    "beat_g2": {"label": "BEAT, behavior-token guidance 2 (generate.guidance=2)", "kind": "lm",
                "subdir": "align_profiles", "sets": [TASKS], "generate": ["generate.guidance=2"]},
    "beat_g2_shuffled_user": {"label": "BEAT, guidance 2, another scored user's tokens (control)", "kind": "control",
                              "of": "beat_g2"},
    "beat_g4": {"label": "BEAT, behavior-token guidance 4 (generate.guidance=4)", "kind": "lm",
                "subdir": "align_profiles", "sets": [TASKS], "generate": ["generate.guidance=4"]},
    "beat_g4_shuffled_user": {"label": "BEAT, guidance 4, another scored user's tokens (control)", "kind": "control",
                              "of": "beat_g4"},
    "floor": {"label": "random training user's profile (floor)", "kind": "floor"},
    "retrieval": {"label": "nearest training user's profile (LightGCN vectors)", "kind": "retrieval"},
    "history": {"label": "history-titles prompting (5 titles, no behavior tokens)", "kind": "lm",
                "subdir": "align_profiles_history",
                "sets": ["train.tasks=[explain,user_profile]", "model.use_user=false", "model.history_titles=5"]},
    "continuous": {"label": "continuous vectors (XRec-style, LightGCN -> projector)", "kind": "lm",
                   "subdir": "align_profiles_continuous", "sets": [TASKS, "model.source=continuous"]},
}
CODE = ("src/beatrec/align", "src/beatrec/metrics", "src/beatrec/baselines/profiles.py", "src/beatrec/lm.py")
STATS = ("bleu1_match", "hyp_len", "ref_len", "bertscore", "specificity")


def code_digest() -> str:
    """A digest of the source the rows run (the align package, the metrics, the profile baselines, the LM loader)."""
    return digest_files([ROOT / p for p in CODE])


def pair_stats_record(preds: list[str], refs: list[str], scorer) -> dict[str, Any]:  # noqa: ANN001
    from beatrec.metrics.diversity import average_words, distinct_n
    from beatrec.metrics.paired import pair_stats

    s = pair_stats(preds, refs, scorer)
    return {"stats": {k: np.asarray(getattr(s, k)).round(6).tolist() for k in STATS},
            "distinct2": distinct_n(preds, 2), "avg_words": average_words(preds)}


def stats_of(rec: dict[str, Any]):  # noqa: ANN201 - PairStats
    from beatrec.metrics.paired import PairStats

    st = rec["stats"]
    return PairStats(*(np.asarray(st[k], dtype=np.int64 if k.endswith(("match", "len")) else np.float64)
                       for k in STATS))


def align_config(row: dict[str, Any], common: list[str], lm: str | None):  # noqa: ANN201 - AlignConfig
    from beatrec.align.config import AlignConfig
    from beatrec.config import load_yaml

    return load_yaml(AlignConfig, None, [*row["sets"], *common, *([f"lm.name={lm}"] if lm else [])])


def trained(run: Path, subdir: str, cfg, data: Path, progress: bool) -> None:  # noqa: ANN001
    """Train the row's stage 2 unless ``run/subdir`` already holds one with this exact config (the checkpoint)."""
    from beatrec.align.config import AlignConfig
    from beatrec.align.train import train_align
    from beatrec.config import load_yaml, to_dict

    d = run / subdir
    if (d / "weights.safetensors").is_file() and (d / "config.yaml").is_file():
        if to_dict(load_yaml(AlignConfig, d / "config.yaml", [])) == to_dict(cfg):
            print(f"  reusing the trained {d}", flush=True)
            return
    train_align(run, data, cfg, progress=progress, subdir=subdir)


def run_row(name: str, data: Path, run: Path, refs, common: list[str], lm: str | None,  # noqa: ANN001
            seed: int, scorer, progress: bool) -> dict[str, Any]:  # noqa: ANN001
    """Write the row's profiles for the scored users and reduce them to a record (no text kept)."""
    from beatrec.align.controls import derangement
    from beatrec.align.explain import load_aligned
    from beatrec.align.profile import learnt_profiles, profile_nll
    from beatrec.baselines.profiles import floor_profiles, retrieval_profiles
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit
    from beatrec.tokenizer.embeddings import load_graph_embeddings

    row = ROWS[name]
    users = refs.index.to_numpy(np.int64)
    t0 = time.perf_counter()
    ds, split = load_dataset(data), ZeroShotSplit.load(run / "split.json")
    info: dict[str, Any] = {}
    if row["kind"] == "floor":
        preds = floor_profiles(ds, split, len(users), seed)
    elif row["kind"] == "retrieval":
        preds = retrieval_profiles(ds, split, users, load_graph_embeddings(run, data))
    else:
        src = ROWS[row["of"]] if row["kind"] == "control" else row
        cfg = align_config(src, common, lm)
        if row["kind"] == "lm":
            trained(run, row["subdir"], cfg, data, progress)
            info["train_seconds"] = time.perf_counter() - t0
        a = load_aligned(run, src.get("generate", []), subdir=src["subdir"])  # decoding options: no retraining
        who = users if row["kind"] == "lm" else users[derangement(len(users), np.random.default_rng(seed))]
        preds = learnt_profiles(a, "user_profile", who.tolist(), progress=progress)
        # how well the prompt predicts each user's own user_summary from these tokens (and, for a model, from
        # neutral ones): whether the LM reads the tokens at all, whatever the decoding
        info["nll"] = profile_nll(a, "user_profile", who.tolist(), refs.tolist()).round(5).tolist()
        if row["kind"] == "lm":
            info["nll_neutral"] = profile_nll(a, "user_profile", users.tolist(), refs.tolist(),
                                              neutral=True).round(5).tolist()
    rec = pair_stats_record(preds, refs.tolist(), scorer)
    return {**rec, **info, "seconds": time.perf_counter() - t0}


def write_report(path: Path, records: list[dict[str, Any]], command: str) -> None:
    from beatrec.metrics.paired import corpus_bleu1, paired_comparison
    from beatrec.stats import format_p

    out = ["# Profile table: zero-shot users' profiles from what each method knows of them (issue #37, Table 2)", "",
           f"- report rebuilt {datetime.datetime.now().isoformat(timespec='seconds')} from "
           f"`{path.with_suffix('.json').name}` by `{command}`",
           "- each row: one profile per scored user with a `user_summary` (validation users for selection, test "
           "users for the table; no stage trained on their texts), scored against it. BLEU-1 (NLTK corpus), "
           "BERTScore-MiniLM (not rescaled), specificity (MRR of the own reference among the scored users'), "
           "distinct-2, words; paired difference to BEAT over users (95% percentile bootstrap, permutation p).",
           "- machine, date, command and timings of each row are in its record", ""]
    latest = {(r["dataset"], r["split"], r["row"]): r for r in records}  # a row re-run (new code or config) replaces
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in latest.values():
        groups.setdefault((r["dataset"], r["split"]), []).append(r)
    if not groups:
        out.append("No rows recorded yet.")
    for (ds, split), recs in sorted(groups.items(), key=lambda kv: (DATASETS.index(kv[0][0])
                                                                    if kv[0][0] in DATASETS else 9, kv[0][1])):
        recs = sorted(recs, key=lambda r: list(ROWS).index(r["row"]) if r["row"] in ROWS else 99)
        out += [f"## {ds}, {split} users ({len(recs[0]['users'])} scored)", "",
                "| row | users | BLEU-1 | BERTScore-MiniLM | specificity | distinct-2 | words | seconds |",
                "|---|---|---|---|---|---|---|---|"]
        for r in recs:
            s = stats_of(r)
            out.append(f"| {ROWS.get(r['row'], {}).get('label', r['row'])} | {len(r['users'])} | "
                       f"{corpus_bleu1(s):.4f} | {np.mean(s.bertscore):.4f} | {np.mean(s.specificity):.4f} | "
                       f"{r['distinct2']:.4f} | {r['avg_words']:.1f} | {r['seconds']:.0f} |")
        by_row = {r["row"]: r for r in recs}
        if "beat" in by_row:
            out += ["", "Paired on the same users (row - reference; the reference is BEAT, or for a control the model "
                    "whose tokens it shuffles):", "",
                    "| row | reference | BLEU-1 diff [95%] (p) | BERTScore-MiniLM diff [95%] (p) | "
                    "specificity diff [95%] (p) |", "|---|---|---|---|---|"]
            for r in recs:
                ref = by_row.get(ROWS.get(r["row"], {}).get("of", "beat"))
                if ref is None or r is ref or r["users"] != ref["users"]:
                    continue
                cells = {d.metric: f"{d.diff:+.4f} [{d.low:+.4f}, {d.high:+.4f}] ({format_p(d.p_value)})"
                         for d in paired_comparison(stats_of(ref), stats_of(r))}
                out.append(f"| {ROWS.get(r['row'], {}).get('label', r['row'])} | {ref['row']} | "
                           f"{cells.get('bleu1', '–')} | {cells.get('bertscore_f1', '–')} | "
                           f"{cells.get('specificity', '–')} |")
        out += nll_table(recs, by_row)
        out.append("")
    path.write_text("\n".join(out))


def nll_table(recs: list[dict[str, Any]], by_row: dict[str, dict[str, Any]]) -> list[str]:
    """How much each model reads the user's tokens: mean NLL (nats/token) of the users' own ``user_summary`` after
    the learnt profile prompt with their own tokens, another scored user's (the control row) and neutral ones (the
    population mean), paired over users (bootstrap interval, sign-flip p)."""
    from beatrec.stats import format_p, paired_test

    lines = []
    for r in recs:
        if "nll_neutral" not in r or np.array_equal(r["nll"], r["nll_neutral"]):  # no tokens to read (history)
            continue
        own = np.asarray(r["nll"])
        cells = [f"{own.mean():.4f}"]
        for other in (next((c for c in recs if ROWS.get(c["row"], {}).get("of") == r["row"] and "nll" in c), None),
                      {"nll": r["nll_neutral"]}):
            if other is None or len(other["nll"]) != len(own):
                cells.append("–")
                continue
            t = paired_test(own, np.asarray(other["nll"]))
            cells.append(f"{np.mean(other['nll']):.4f}: {t.diff:+.4f} [{t.low:+.4f}, {t.high:+.4f}] ({format_p(t.p_value)})")
        lines.append(f"| {ROWS.get(r['row'], {}).get('label', r['row'])} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["", "Does the LM read the tokens? Mean NLL (nats/token) of each scored user's own `user_summary` after the "
            "learnt profile prompt, with the user's own tokens, another scored user's (the row's control), and the "
            "population-mean tokens; difference to own tokens [95%] (p). Positive = the own tokens predict the "
            "user's profile better.", "",
            "| model | own tokens | another user's tokens: diff | neutral tokens: diff |", "|---|---|---|---|",
            *lines]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=ROOT / ".." / "shared" / "data" / "xrec")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--stage1", action="append", default=[], metavar="NAME=DIR",
                    help="the stage-1 run of dataset NAME (`beatrec tokenize`); stage-2 rows train into it")
    ap.add_argument("--split", choices=("val", "test"), default="test", help="scored users (val: selection runs)")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--align-set", action="append", default=[], metavar="KEY=VALUE",
                    help="stage-2 override for every trained row (part of the row's key)")
    ap.add_argument("--lm", help=argparse.SUPPRESS)  # tests: a tiny random LM
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--records", type=Path, default=ROOT / "benchmarks" / "profiles.json")
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "profiles.md")
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from the records, run nothing")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    command = "python benchmarks/profiles.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.report_only:
        write_report(args.report, read_records(args.records), command)
        print(f"wrote {args.report}")
        return 0
    from beatrec.baselines.profiles import profile_references
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit
    from beatrec.metrics.explanations import ScoreConfig, Scorer

    stage1 = dict(s.split("=", 1) for s in args.stage1)
    code = code_digest()
    scorer = Scorer(ScoreConfig(lm_score=False))
    for ds_name in args.datasets:
        data = args.data_root / ds_name
        if not data.is_dir():
            print(f"skipped {ds_name}: {data} not found (../shared/data is absent)")
            continue
        if ds_name not in stage1:
            sys.exit(f"error: no stage-1 run for {ds_name}: give --stage1 {ds_name}=DIR (`beatrec tokenize`)")
        run = Path(stage1[ds_name])
        refs = profile_references(load_dataset(data), ZeroShotSplit.load(run / "split.json"), args.split)
        users = refs.index.tolist()
        s1 = stage1_digest(run)
        for name in args.rows:
            row = ROWS[name]
            src = ROWS[row["of"]] if row["kind"] == "control" else row
            sets = ([*src["sets"], *args.align_set, *([f"lm.name={args.lm}"] if args.lm else []), *src.get("generate", [])]
                    if "sets" in src else [])
            key = record_key(ds_name, args.split, name, sets, s1, code, users)
            records = read_records(args.records)
            if any(r["key"] == key for r in records):
                print(f"{ds_name}/{args.split}/{name}: recorded, skipped", flush=True)
                continue
            print(f"{ds_name}/{args.split}/{name}: {len(users)} users ...", flush=True)
            res = run_row(name, data, run, refs, args.align_set, args.lm, args.seed, scorer,
                          not args.quiet)
            rec = {"key": key, "dataset": ds_name, "split": args.split, "row": name, "sets": sets,
                   "stage1": s1, "code": code, "users": users, **res, **provenance(command)}
            put_record(args.records, rec)
            write_report(args.report, read_records(args.records), command)
            print(f"  recorded ({res['seconds']:.0f} s)", flush=True)
    write_report(args.report, read_records(args.records), command)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
