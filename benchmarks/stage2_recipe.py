"""Choosing BEAT's stage-2 recipe on validation users only (the selection runs behind the defaults).

    python benchmarks/stage2_recipe.py --dataset amazon --stage1 runs/sel/amazon --stage1-crossfit runs/sel/amazon_cf

Every row trains stage 2 on the same stage-1 run (the cross-fitted rows on a run tokenized with
``split.stage2_frac=0.5``, whose val/test users are the same) into its own ``RUN/align_sel_<row>`` and explains a
seeded subset of the *validation* pairs (never a test pair). Each row is scored (BLEU-1, BERTScore-MiniLM,
specificity, length) and compared pair by pair with the first row (bootstrap interval, permutation p), and with
its own shuffled-user-token control. ``--decode`` rows re-decode one trained row with other generation settings.
Resumable per row: ``--out/<dataset>/results.json`` keeps finished rows; rows whose config changed are rerun.
Writes ``benchmarks/stage2_recipe.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LORA = ("model.finetune=lora", "train.lr=5e-4", "train.schedule=cosine", "train.warmup_frac=0.1",
        "train.select_best=true", "train.evals_per_epoch=2", "train.weight_decay=1e-6")
# (key, label, stage-1 run: "main" | "crossfit", align overrides)
ROWS = (
    ("frozen_1ep", "frozen, lr 1e-3 constant, 1 epoch, last step (the old default)", "main",
     ("model.finetune=frozen", "train.lr=1e-3", "train.epochs=1", "train.schedule=constant", "train.warmup_frac=0",
      "train.select_best=false", "train.evals_per_epoch=1", "train.weight_decay=0")),
    ("frozen_2ep_cos", "frozen, lr 1e-3 cosine (warmup 10%), 2 epochs, best of 4 validations", "main",
     ("model.finetune=frozen", "train.lr=1e-3", "train.epochs=2", "train.schedule=cosine", "train.warmup_frac=0.1",
      "train.select_best=true", "train.evals_per_epoch=2", "train.weight_decay=0")),
    ("lora_1ep_cos", "LoRA r 8, lr 5e-4 cosine (warmup 10%), 1 epoch, best of 2 validations", "main",
     (*LORA, "train.epochs=1")),
    ("lora_2ep_cos", "LoRA r 8, lr 5e-4 cosine (warmup 10%), 2 epochs, best of 4 validations", "main",
     (*LORA, "train.epochs=2")),
    ("lora_crossfit", "LoRA as lora_1ep_cos, cross-fitted pairs (stage-2 users' texts unseen by stage 1)", "crossfit",
     (*LORA, "train.epochs=1", "train.pairs=crossfit")),
    ("history_n5", "history prompting, 5 titles (no user tokens), recipe of lora_1ep_cos", "main",
     (*LORA, "train.epochs=1", "model.use_user=false", "model.history_titles=5")),
    ("history_n10", "history prompting, 10 titles (no user tokens), recipe of lora_1ep_cos", "main",
     (*LORA, "train.epochs=1", "model.use_user=false", "model.history_titles=10")),
)
# (key, label, trained row it re-decodes, generate overrides)
DECODES = (
    ("dec_min24", "min_new_tokens 24", ("generate.min_new_tokens=24",)),
    ("dec_plain", "no repetition penalty, no n-gram block", ("generate.repetition_penalty=1.0",
                                                           "generate.no_repeat_ngram_size=0")),
    ("dec_min24_plain", "min_new_tokens 24, no repetition controls", ("generate.min_new_tokens=24",
                                                                     "generate.repetition_penalty=1.0",
                                                                     "generate.no_repeat_ngram_size=0")),
    ("dec_beam4", "beam search, 4 beams", ("generate.num_beams=4",)),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="amazon")
    ap.add_argument("--data-root", type=Path, default=ROOT / ".." / "shared" / "data" / "xrec")
    ap.add_argument("--stage1", type=Path, required=True, help="the stage-1 run of the main rows")
    ap.add_argument("--stage1-crossfit", type=Path, help="a stage-1 run tokenized with split.stage2_frac > 0")
    ap.add_argument("--rows", nargs="+", default=None, help="subset of: " + " ".join(k for k, *_ in ROWS))
    ap.add_argument("--decode-row", default=None, help="re-decode this trained row with each DECODES setting")
    ap.add_argument("--decodes", nargs="+", default=None, help="subset of: " + " ".join(k for k, *_ in DECODES))
    ap.add_argument("--max-train-pairs", type=int, default=0)
    ap.add_argument("--val-pairs", type=int, default=120, help="validation pairs explained and scored")
    ap.add_argument("--align-set", action="append", default=[], help="override for every row")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "stage2_recipe")
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "stage2_recipe.md")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bertscore", action="store_true")
    ap.add_argument("--lm", default="smollm2", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - a linear script
    args = parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from beatrec.align.config import AlignConfig
    from beatrec.align.controls import shuffled_pairs
    from beatrec.align.explain import check_pairs, explain, load_aligned
    from beatrec.align.train import train_align
    from beatrec.config import load_yaml, to_dict
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit, eval_pairs
    from beatrec.metrics.explanations import ScoreConfig, Scorer, markdown_table
    from beatrec.metrics.paired import format_paired, pair_stats, paired_comparison

    data = args.data_root / args.dataset
    runs = {"main": args.stage1, "crossfit": args.stage1_crossfit}
    out = args.out / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results: dict = json.loads(res_path.read_text()) if res_path.is_file() else {}
    ds = load_dataset(data)
    split = ZeroShotSplit.load(args.stage1 / "split.json")
    val = eval_pairs(ds, split, "val")
    if args.val_pairs and len(val) > args.val_pairs:
        val = val.iloc[np.sort(np.random.default_rng(0).choice(len(val), args.val_pairs, replace=False))]
    val = val.reset_index(drop=True)
    refs = val["explanation"].tolist()
    scorer = Scorer(ScoreConfig(bertscore=not args.no_bertscore, lm_score=False, specificity=True))
    # decoding as the selection runs had it (the defaults before this study), so finished rows stay the same rows
    common = [f"lm.name={args.lm}", "train.val_pairs=200", f"train.max_train_pairs={args.max_train_pairs}",
              "generate.min_new_tokens=0", "generate.num_beams=1", "generate.repetition_penalty=1.1",
              "generate.no_repeat_ngram_size=3", *args.align_set]

    def predict(run: Path, subdir: str, gen_sets: tuple[str, ...] = (), control: bool = False) -> tuple[list, float]:
        a = load_aligned(run, list(gen_sets), subdir=subdir)
        pairs = check_pairs(a, val[["uid", "iid", "title"]].to_dict("records"), "validation pairs")
        t = time.perf_counter()
        texts = explain(a, shuffled_pairs(pairs, "user", 0) if control else pairs)
        return texts, time.perf_counter() - t

    def save() -> None:
        res_path.write_text(json.dumps(results, indent=2) + "\n")

    wanted = [r for r in ROWS if args.rows is None or r[0] in args.rows]
    for key, label, which, sets in wanted:
        run = runs[which]
        if run is None:
            print(f"[{key}] skipped: needs --stage1-crossfit", flush=True)
            continue
        cfg = load_yaml(AlignConfig, None, [*common, *sets])
        ident = {"config": to_dict(cfg), "stage1": str(run)}
        if key in results and results[key]["ident"] == ident:
            print(f"[{key}] read back", flush=True)
            continue
        print(f"[{key}] training: {label}", flush=True)
        t = time.perf_counter()
        tr = train_align(run, data, cfg, progress=True, subdir=f"align_sel_{key}")
        train_s = time.perf_counter() - t
        texts, gen_s = predict(run, f"align_sel_{key}")
        ctrl, _ = predict(run, f"align_sel_{key}", control=True)
        m = json.loads((tr.out_dir / "metrics.json").read_text())
        results[key] = {"ident": ident, "label": label, "texts": texts, "control": ctrl, "train_s": train_s,
                        "gen_s": gen_s, "samples_per_s": m["samples_per_s"], "evaluations": m["evaluations"],
                        "kept": m["kept"], "train_pairs": m["train_pairs"]}
        save()
        print(f"[{key}] done in {train_s:.0f} s + {gen_s:.0f} s decoding", flush=True)
    if args.decode_row:
        base = results[args.decode_row]
        run = Path(base["ident"]["stage1"])
        for key, label, gsets in [d for d in DECODES if args.decodes is None or d[0] in args.decodes]:
            ident = {"row": args.decode_row, "base": base["ident"], "generate": list(gsets)}
            if key in results and results[key]["ident"] == ident:
                continue
            print(f"[{key}] decoding {args.decode_row} with {label}", flush=True)
            texts, gen_s = predict(run, f"align_sel_{args.decode_row}", gsets)
            results[key] = {"ident": ident, "label": f"{args.decode_row} decoded with {label}", "texts": texts,
                            "gen_s": gen_s}
            save()

    # ---- report ----------------------------------------------------------------------------------------------
    keys = [k for k, *_ in ROWS if k in results] + [k for k, *_ in DECODES if k in results]
    stats = {k: pair_stats(results[k]["texts"], refs, scorer) for k in keys}
    ref_key = keys[0]
    lines = [
        "# BEAT stage-2 recipe selection on validation users (never test users)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {args.threads} threads, torch {torch.__version__}",
        f"- command: `python benchmarks/stage2_recipe.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- dataset `{args.dataset}`; stage-1 runs {', '.join(f'`{v}`' for v in runs.values() if v)}; "
        f"{len(val)} validation pairs (seeded subset) explained and scored; training pairs per row below; "
        "validation NLL for checkpoint selection on up to 200 validation pairs",
        "",
    ]
    table = []
    for k in keys:
        table.append((k, scorer.score(results[k]["texts"], refs)))
    lines += [markdown_table([(f"{k}: {results[k]['label']}", s) for k, s in table]), ""]
    lines += ["| row | training pairs | train s | samples/s | kept (step, val NLL) | decode s / pair |",
              "|---|---|---|---|---|---|"]
    for k in keys:
        r = results[k]
        kept = r.get("kept")
        kept_s = f"{kept['step']}, {kept['val_nll']:.4f}" if kept and "val_nll" in kept else "–"
        lines.append(f"| {k} | {r.get('train_pairs', '–')} | {r.get('train_s', 0):.0f} | "
                     f"{r.get('samples_per_s', float('nan')):.2f} | {kept_s} | {r['gen_s'] / len(val):.2f} |")
    lines.append("")
    for k in keys[1:]:
        lines += [f"**{k}** against **{ref_key}** on the same validation pairs (diff = {k} - {ref_key}):", "",
                  *format_paired(paired_comparison(stats[ref_key], stats[k])), ""]
    for k in keys:
        if "control" in results[k]:
            ctrl = pair_stats(results[k]["control"], refs, scorer)
            lines += [f"**{k}** with shuffled user tokens (diff = control - {k}):", "",
                      *format_paired(paired_comparison(stats[k], ctrl)), ""]
    lines += ["Samples (first three validation pairs):", ""]
    for j in range(min(3, len(val))):
        lines.append(f"- reference: {refs[j]}")
        for k in keys:
            lines.append(f"  - {k}: {results[k]['texts'][j]}")
    args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
