"""Two LLM-BS speed-ups, each measured side by side with the path it replaced, in one run on SmolLM2-135M.

    python benchmarks/llmbs_speed.py --users 4 --examples 32

- decoding: constrained beam search (beam 20) with a key/value cache (the prompt run once per user, then one new
  token per beam per step, caches reordered to follow the beams) vs prompt and prefix recomputed for every beam and
  step; real test histories of a Beauty slice; both must rank the same items;
- training: a forward+backward step over LLM-BS examples with the LM head only at answer positions vs the LM's
  logits (and loss) over every position; both must give the same loss.

Writes ``benchmarks/llmbs_speed.md``.
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
    ap.add_argument("--examples", type=int, default=32, help="training examples (batches of 8) for each path")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "llmbs_speed.md")
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
    load = os.getloadavg()[0]
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
    # training: answer-column logits (LLMBS.forward) vs the LM's own loss over all positions
    from beatrec.seqrec.llmbs.model import LLMBS, GCDConfig, collate
    from beatrec.seqrec.llmbs.tasks import TaskConfig, build_examples

    split = leave_one_out(ds, 20)
    ex = build_examples(split.train, code_text, ds.titles, TaskConfig(seqrec=args.examples // 2,
                                                                      semantic=args.examples // 4, preference=0))
    batches = [collate(tok, ex[i : i + 8]) for i in range(0, len(ex), 8)]
    model = LLMBS(lm, torch.zeros(ds.n_items, 4), torch.zeros(ds.n_items, 4), GCDConfig(0.0, 0.0))
    lm.train()
    with torch.no_grad():
        model(batches[0])  # the one-time check that the LM's logits are its head on the last hidden state
    train_t, losses = {}, {}
    for path in ("answer positions", "all positions"):
        t, total = time.perf_counter(), 0.0
        for b in batches:
            if path == "answer positions":
                loss = model(b).loss
            else:
                loss = lm(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
            loss.backward()
            lm.zero_grad(set_to_none=True)
            total += float(loss.detach())
        train_t[path], losses[path] = time.perf_counter() - t, total / len(batches)
        print(f"training, {path}: {train_t[path]:.1f} s for {len(ex)} examples", flush=True)
    lm.eval()
    tokens = sum(int(b.attention_mask.sum()) for b in batches)
    answer = sum(int((b.labels != -100).sum()) for b in batches)
    gap = float((results[True].scores - results[False].scores).abs().max())
    command = "python benchmarks/llmbs_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# LLM-BS speed: decoding with a key/value cache, training with the LM head at answer positions only", "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average at start {load:.2f} (other jobs slow both paths alike)",
        f"- command: `{command}`",
        f"- SmolLM2-135M-Instruct, {ds.n_items} items (a {args.max_users}-user Beauty slice) with "
        f"{vocab.item_ids.shape[1]}-token codes (random index), "
        f"beam {args.beam}, {len(hist)} test histories, both paths in this one process",
        "",
        "| path | seconds | seconds / user |",
        "|---|---|---|",
        f"| key/value cache: prompt once, one new token per beam per step (default) | {times[True]:.1f} | "
        f"{times[True] / len(hist):.2f} |",
        f"| prompt recomputed for every beam and step | {times[False]:.1f} | {times[False] / len(hist):.2f} |",
        "",
        f"Decoding speed-up: {times[False] / times[True]:.1f}x. Same ranked items: {same} (largest score "
        f"difference {gap:.2e}).",
        "",
        f"Training: {len(ex)} examples ({tokens} tokens, {answer} of them answer labels), batches of 8, forward + "
        "backward through the whole LM (full fine-tuning), weights not updated.",
        "",
        "| path | seconds | mean loss |",
        "|---|---|---|",
        *[f"| LM head at {p} | {train_t[p]:.1f} | {losses[p]:.6f} |" for p in train_t],
        "",
        f"Training speed-up: {train_t['all positions'] / train_t['answer positions']:.2f}x.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
