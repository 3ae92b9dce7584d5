"""Constrained beam search of LLM-BS with and without the prompt key/value cache, side by side in one run.

    python benchmarks/llmbs_decoding.py --users 4

SmolLM2-135M with random-index item codes for a Beauty slice's items added to its vocabulary,
beam 20, the sequential-recommendation prompt of real test histories (10 most recent items). Both paths must
return the same rankings; the report gives seconds per user of each and their ratio. Writes
``benchmarks/llmbs_decoding.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT / ".." / "shared" / "data" / "seqrec" / "Beauty"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=BEAUTY)
    ap.add_argument("--users", type=int, default=4, help="test users decoded by each path")
    ap.add_argument("--max-users", type=int, default=1000, help="the slice whose items get codes")
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "llmbs_decoding.md")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} not found: this benchmark reads ../shared/data/seqrec/Beauty in place")
    import torch

    from beatrec.lm import LMConfig, load_causal_lm
    from beatrec.seqrec.data import leave_one_out, load_seq_dataset
    from beatrec.seqrec.llmbs.generate import recommend
    from beatrec.seqrec.llmbs.indices import IndexConfig, build_index
    from beatrec.seqrec.llmbs.vocab import add_code_tokens

    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_seq_dataset(args.data).subset_users(args.max_users, 0)
    hist = leave_one_out(ds, 20).test.history[: args.users]
    lm, tok = load_causal_lm(LMConfig())
    vocab = add_code_tokens(lm, tok, build_index(IndexConfig(kind="random"), ds.n_items))
    code_text = [vocab.text(i, tok) for i in range(ds.n_items)]
    times, results = {}, {}
    for kv in (True, False):
        t = time.perf_counter()
        results[kv] = recommend(lm, tok, vocab, hist, code_text, args.beam, kv_cache=kv)
        times[kv] = time.perf_counter() - t
        print(f"kv_cache={kv}: {times[kv]:.1f} s for {len(hist)} users", flush=True)
    same = bool(torch.equal(results[True].values, results[False].values))
    gap = float((results[True].scores - results[False].scores).abs().max())
    command = "python benchmarks/llmbs_decoding.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# LLM-BS decoding: prompt key/value cache vs recomputing the prompt", "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- command: `{command}`",
        f"- SmolLM2-135M-Instruct, {ds.n_items} items (a {args.max_users}-user Beauty slice) with "
        f"{vocab.item_ids.shape[1]}-token codes (random index), "
        f"beam {args.beam}, {len(hist)} test histories, both paths in this one process",
        "",
        "| path | seconds | seconds / user |",
        "|---|---|---|",
        f"| prompt cache shared by all beams (default) | {times[True]:.1f} | {times[True] / len(hist):.2f} |",
        f"| prompt recomputed for every beam and step | {times[False]:.1f} | {times[False] / len(hist):.2f} |",
        "",
        f"Speed-up: {times[False] / times[True]:.1f}x. Same ranked items: {same} (largest score difference "
        f"{gap:.2e}).",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
