"""Attention of generated explanations on user vs item behavior tokens, per dataset (BEAT paper Fig. 5b).

    python benchmarks/attention.py --runs runs/explanations --datasets amazon google yelp --pairs 40

For each dataset, ``RUN/NAME`` must hold stage 1 and stage 2 (``benchmarks/explanations.py`` leaves them
there). A seeded subset of zero-shot test pairs is explained and measured with
:func:`beatrec.align.attention.attention_map` (mean over all heads and layers; each generated word's attention
over the prompt renormalised to 1). Reported per dataset: the mean share on user tokens, on item tokens and
on the prompt text, and the user fraction of the behavior-token mass, user / (user + item). One heatmap per
dataset goes to ``RUN/NAME/attention/`` (not committed: it shows words generated about dataset items).
Writes ``benchmarks/attention.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "explanations")
    ap.add_argument("--datasets", nargs="+", default=["amazon", "google", "yelp"])
    ap.add_argument("--data-root", type=Path, default=ROOT / ".." / "shared" / "data" / "xrec")
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "attention.md")
    return ap.parse_args(argv)


def measure(name: str, args: argparse.Namespace) -> dict:
    from beatrec.align.attention import attention_map, plot_attention
    from beatrec.align.explain import check_pairs, load_aligned
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit
    from beatrec.evaluate import evaluation_pairs

    run = args.runs / name
    t = time.perf_counter()
    a = load_aligned(run)
    ds = load_dataset(args.data_root / name)
    pairs = evaluation_pairs(ds, ZeroShotSplit.load(run / "split.json"), args.pairs, seed=args.seed)
    rows = check_pairs(a, pairs[["uid", "iid", "title"]].to_dict("records"), "test pairs")
    maps = [attention_map(a, r["uid"], r["iid"], r["title"]) for r in rows]
    maps = [m for m in maps if m.words]
    out = run / "attention"
    out.mkdir(parents=True, exist_ok=True)
    plot_attention(maps[0], out / f"attention_u{maps[0].uid}_i{maps[0].iid}.png")
    user = np.array([m.user_share for m in maps])
    item = np.array([m.item_share for m in maps])
    text = np.array([float(m.text_share.mean()) for m in maps])
    frac = user / np.maximum(user + item, 1e-12)
    return {"dataset": name, "n": len(maps), "user": user.mean(), "item": item.mean(), "text": text.mean(),
            "user_frac": frac.mean(), "user_frac_sd": frac.std(), "user_gt_item": float((user > item).mean()),
            "words": float(np.mean([len(m.words) for m in maps])), "seconds": time.perf_counter() - t}


def paper_comparison(res: dict[str, dict]) -> list[str]:
    """One sentence on the paper's observation: attention shifts from user tokens (Amazon) to item tokens (Yelp)."""
    if not {"amazon", "yelp"} <= set(res):
        return []
    a, y = res["amazon"]["user_frac"], res["yelp"]["user_frac"]
    verdict = "shows the same shift" if a > y else "does not show it: the shift runs the other way" if a < y else \
        "shows no difference"
    return [f"The paper reports attention moving from user tokens on Amazon towards item tokens on Yelp. Ours "
            f"{verdict} (user / (user + item): Amazon {a:.3f}, Yelp {y:.3f}).", ""]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    command = "python " + " ".join(["benchmarks/attention.py", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now().isoformat(timespec="seconds")
    res = []
    for name in args.datasets:
        if not (args.runs / name / "align").is_dir():
            print(f"[{name}] skipped: no stage-2 run in {args.runs / name}", flush=True)
            continue
        r = measure(name, args)
        print(f"[{name}] user {r['user']:.4f} item {r['item']:.4f} text {r['text']:.4f} "
              f"user fraction {r['user_frac']:.3f} ({r['seconds']:.0f} s)", flush=True)
        res.append(r)
    lines = [
        "# Attention on behavior tokens while explaining (the paper's Fig. 5b, averaged)",
        "",
        f"- date: {started}",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}",
        f"- command: `{command}`",
        "- runs: the stage-2 models left by `benchmarks/explanations.py` (see `benchmarks/explanations.md` for how "
        "they were trained); frozen SmolLM2-135M; greedy decoding",
        "- measure (`beatrec.align.attention`): attention probabilities averaged over all heads of all layers; the "
        "query is the position that produced each generated token; each row restricted to the prompt and "
        "renormalised to 1; sub-word rows averaged per word; then averaged over words and pairs",
        "",
        "| dataset | pairs | words/explanation | share on user tokens | share on item tokens | share on prompt text | "
        "user / (user + item) | pairs with user > item |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {r['dataset']} | {r['n']} | {r['words']:.1f} | {r['user']:.4f} | {r['item']:.4f} | {r['text']:.4f} | "
          f"{r['user_frac']:.3f} ± {r['user_frac_sd']:.3f} | {r['user_gt_item']:.0%} |" for r in res),
        "",
    ]
    lines += paper_comparison({r["dataset"]: r for r in res})
    args.report.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
