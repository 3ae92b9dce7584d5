"""Where a BEAT stage-2 training step spends its time on this machine, and what the answer-only LM head saves.

    python benchmarks/stage2_speed.py --run runs/sel/amazon --data ../shared/data/xrec/amazon

On real training pairs (seeded batches of ``--batch-size``), with the packaged SmolLM2:

1. a profile of one training step (forward + backward) per fine-tuning mode: self CPU time by operator group;
2. samples/s of a full training step (forward, backward, AdamW) with the LM head over *every* position (the
   path before: ``lm(labels=...)``) and with the head only where an explanation token is predicted (now),
   frozen and LoRA, the variants interleaved step by step in one process so the machine's load hits all alike;
3. the share of padded positions per batch (random batches, as training draws them).

Writes ``benchmarks/stage2_speed.md`` (machine, date, command).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "sel" / "amazon", help="a stage-1 run")
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "xrec" / "amazon")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "stage2_speed.md")
    ap.add_argument("--lm", default="smollm2", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


GROUPS = (  # operator name fragment -> group (first match wins)
    ("attention", "attention"), ("sdpa", "attention"), ("softmax", "softmax / cross-entropy"),
    ("nll", "softmax / cross-entropy"), ("cross_entropy", "softmax / cross-entropy"), ("mm", "matmul (linear layers, head)"),
    ("linear", "matmul (linear layers, head)"), ("addmm", "matmul (linear layers, head)"), ("silu", "activations / norms"),
    ("rsqrt", "activations / norms"), ("pow", "activations / norms"), ("mean", "activations / norms"),
    ("mul", "elementwise"), ("add", "elementwise"), ("copy", "copies / layout"), ("cat", "copies / layout"),
    ("index", "gather / scatter"), ("scatter", "gather / scatter"), ("gather", "gather / scatter"),
    ("embedding", "gather / scatter"),
)


def group_of(name: str) -> str:
    low = name.lower()
    return next((g for frag, g in GROUPS if frag in low), "other")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "src"))
    from beatrec.align.batch import collate_train
    from beatrec.align.config import AlignModelConfig
    from beatrec.align.model import BehaviorLM
    from beatrec.align.train import pair_records
    from beatrec.align.vocab import BehaviorVocab
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit, training_texts
    from beatrec.lm import LMConfig, load_causal_lm

    t_all = time.perf_counter()
    ds = load_dataset(args.data)
    rows = pair_records(training_texts(ds, ZeroShotSplit.load(args.run / "split.json")))
    rng = np.random.default_rng(0)
    n_batches = args.steps + 1
    batches_rows = [[rows[i] for i in rng.choice(len(rows), args.batch_size, replace=False)] for _ in range(n_batches)]

    def full_head(m: BehaviorLM, embeds, mask, labels):  # noqa: ANN001, ANN202 - the path before
        return m.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    modes = {"frozen": {"finetune": "frozen"}, "lora": {"finetune": "lora"},
             "lora, dropout 0.05": {"finetune": "lora", "lora_dropout": 0.05}}
    models = {}
    for mode, kw in modes.items():
        lm, tok = load_causal_lm(LMConfig(name=args.lm))
        m = BehaviorLM(lm, BehaviorVocab.from_run(args.run), AlignModelConfig(**kw))
        m.train()
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
        models[mode] = (m, opt, m.prompt_builder(tok))
    batches = [collate_train(models["frozen"][2], r, 50, 96) for r in batches_rows]
    pad = [1 - b.attention_mask.float().mean().item() for b in batches]
    answer = [(b.labels != -100).float().sum().item() / b.attention_mask.sum().item() for b in batches]

    def step(mode: str, head: str, batch) -> float:  # noqa: ANN001
        m, opt, _ = models[mode]
        t = time.perf_counter()
        embeds, _, _ = m.embed(batch)
        loss = (full_head(m, embeds, batch.attention_mask, batch.labels) if head == "full" else
                m.target_nll(embeds, batch.attention_mask, batch.labels))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    variants = [(mode, head) for mode in ("frozen", "lora") for head in ("full", "answer")]
    variants.append(("lora, dropout 0.05", "answer"))
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for v in variants:
        step(*v, batches[0])  # warm-up
    for b in batches[1:]:
        for v in variants:  # interleaved: the same load hits every variant
            times[v].append(step(*v, b))

    # profile one step per mode (answer-only head)
    from torch.profiler import ProfilerActivity, profile

    prof_rows = {}
    for mode in modes:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(mode, "answer", batches[1])
        agg: dict[str, float] = defaultdict(float)
        for ev in prof.key_averages():
            if ev.key.startswith("aten::") or ev.key.startswith("autograd"):
                agg[group_of(ev.key)] += ev.self_cpu_time_total / 1e6
        total = sum(agg.values())
        prof_rows[mode] = (total, sorted(agg.items(), key=lambda kv: -kv[1]))

    bs = args.batch_size
    lines = [
        "# BEAT stage-2 training throughput (samples/s) — where a step's time goes, and the answer-only LM head",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; total wall time {time.perf_counter() - t_all:.0f} s",
        f"- machine: {platform.platform()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        f"- command: `python benchmarks/stage2_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- LM `{args.lm}`; stage-1 run `{args.run}`; {len(batches) - 1} timed training steps (forward, backward, "
        f"AdamW) of {bs} real training pairs per variant, after one warm-up step, interleaved step by step",
        "- LoRA: r 8 on q/k/v/o/gate/up/down of every layer; dropout 0 unless stated",
        f"- per batch: {np.mean(pad):.1%} padded positions, {np.mean(answer):.1%} of the real positions predict an "
        "explanation token (the rest is prompt)",
        "",
        "| mode | LM head over | s / step (median) | samples/s | vs. full head |",
        "|---|---|---|---|---|",
    ]
    for mode in ("frozen", "lora"):
        base = float(np.median(times[(mode, "full")]))
        for head, label in (("full", "every position (before)"), ("answer", "answer positions only (now)")):
            med = float(np.median(times[(mode, head)]))
            lines.append(f"| {mode} | {label} | {med:.2f} | {bs / med:.2f} | {base / med:.2f}x |")
    med_do = float(np.median(times[("lora, dropout 0.05", "answer")]))
    base = float(np.median(times[("lora", "full")]))
    lines.append(f"| lora, LoRA dropout 0.05 (before: the default was 0.05) | answer positions only | {med_do:.2f} | "
                 f"{bs / med_do:.2f} | {base / med_do:.2f}x |")
    lines += ["", "Self CPU time of one training step (answer-only head) by operator group (torch.profiler):", ""]
    for mode, (total, groups) in prof_rows.items():
        lines += [f"**{mode}** ({total:.2f} s of operator time)", "", "| group | s | share |", "|---|---|---|"]
        lines += [f"| {g} | {s:.2f} | {s / total:.0%} |" for g, s in groups if s / total >= 0.01]
        lines.append("")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
