"""Where an explanation's time goes on this machine, and how close decoding gets to the machine's limits
(issue #38).

    python benchmarks/explain_speed.py --run runs/p37/amazon --subdir align_profiles \
        --data ../shared/data/xrec/amazon

On a trained stage-2 run and its validation pairs, with the packaged SmolLM2:

1. **the machine's limits**: fp32 matmul GFLOP/s (a large square product and the decode step's shapes), int8
   dynamic-quantised Linear GFLOP/s, and memory bandwidth (a large copy), with ``--threads`` threads;
2. **a profile of one pair and of a batch of 16** under today's decoding (``generate.merge_lora=false``, 4-beam
   search): prefill vs decode forward time, the LM head, the rest of ``generate`` (beam bookkeeping, logits
   processors, Python per step), the rows each forward pass carries, and per decode step the time against the
   weight-read bound (weights bytes / bandwidth);
3. **side by side in one process** (``--configs``): each decoding configuration's median single-pair latency and
   batched pairs/s on the same pairs, its ratio to today's, and its quality paired against today's outputs on
   the same validation pairs (BLEU-1, BERTScore-MiniLM, specificity; 95% bootstrap intervals).

Writes ``benchmarks/explain_speed.md`` (machine, date, command). No text of the data is written.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
TODAY = ("generate.merge_lora=false", "generate.decoder=generate")  # the decoding issue #38 starts from
CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {  # name -> (label, --set lines on top of the run's config)
    "today": ("today's decode (LoRA unmerged, HF generate)", TODAY),
    "merged": ("LoRA merged (generate.merge_lora=true)", ("generate.decoder=generate",)),
    "lean": ("merged, lean decoder (generate.decoder=lean)", ("generate.decoder=lean",)),
    "greedy": ("merged, greedy (generate.num_beams=1)", ("generate.decoder=generate", "generate.num_beams=1")),
    "lean_greedy": ("merged, lean decoder, greedy", ("generate.decoder=lean", "generate.num_beams=1")),
    "lean_bf16": ("merged, lean decoder, bfloat16 LM (generate.dtype=bfloat16)",
                  ("generate.decoder=lean", "generate.dtype=bfloat16")),
    "lean_bf16_greedy": ("merged, lean decoder, bfloat16 LM, greedy",
                         ("generate.decoder=lean", "generate.dtype=bfloat16", "generate.num_beams=1")),
    "lean_bf16_sorted": ("merged, lean decoder, bfloat16 LM, length-sorted batches (generate.sort_by_length=true)",
                         ("generate.decoder=lean", "generate.dtype=bfloat16", "generate.sort_by_length=true")),
    "fast": ("merged, fast decoder (generate.decoder=fast)", ("generate.decoder=fast",)),
    "fast_bf16": ("merged, fast decoder, bfloat16 LM", ("generate.decoder=fast", "generate.dtype=bfloat16")),
    "fast_greedy": ("merged, fast decoder, greedy", ("generate.decoder=fast", "generate.num_beams=1")),
    "fast_sorted": ("merged, fast decoder, length-sorted batches",
                    ("generate.decoder=fast", "generate.sort_by_length=true")),
    "fast_w_bf16": ("merged, fast decoder, bfloat16 step weights (generate.fast_weights=bfloat16)",
                    ("generate.decoder=fast", "generate.fast_weights=bfloat16")),
    "fast_w_int8": ("merged, fast decoder, int8 step weights (generate.fast_weights=int8)",
                    ("generate.decoder=fast", "generate.fast_weights=int8")),
    "fast_pack": ("merged, fast decoder, matrices packed for oneDNN (generate.pack=true)",
                  ("generate.decoder=fast", "generate.pack=true")),
    "fast_bf16_pack": ("merged, fast decoder, bfloat16 LM, packed for oneDNN (the default since the pack option)",
                       ("generate.decoder=fast", "generate.dtype=bfloat16", "generate.pack=true")),
    "fast_bf16_pack_greedy": ("merged, fast decoder, bfloat16 LM, packed, greedy",
                              ("generate.decoder=fast", "generate.dtype=bfloat16", "generate.pack=true",
                               "generate.num_beams=1")),
    "fast_w_int8_greedy": ("merged, fast decoder, int8 step weights, greedy",
                           ("generate.decoder=fast", "generate.fast_weights=int8", "generate.num_beams=1")),
    "fast_w_bf16_greedy": ("merged, fast decoder, bfloat16 step weights, greedy",
                           ("generate.decoder=fast", "generate.fast_weights=bfloat16", "generate.num_beams=1")),
    "lean_int8": ("merged, lean decoder, int8 weights (generate.quantize=int8)",
                  ("generate.decoder=lean", "generate.quantize=int8")),
    "lean_int8_greedy": ("merged, lean decoder, int8 weights, greedy",
                         ("generate.decoder=lean", "generate.quantize=int8", "generate.num_beams=1")),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "p37" / "amazon", help="a stage-1 run with stage 2")
    ap.add_argument("--subdir", default="align", help="the stage-2 folder inside --run")
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "xrec" / "amazon")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS),
                    help="configs measured side by side (none: skip)")
    ap.add_argument("--single", type=int, default=8, help="single-pair latencies per config (distinct pairs)")
    ap.add_argument("--pairs", type=int, default=64, help="validation pairs explained in batches per config")
    ap.add_argument("--op-configs", nargs="*", default=["lean_int8"], choices=list(CONFIGS),
                    help="configs whose single-pair operators are profiled beside today's")
    ap.add_argument("--skip-limits", action="store_true")
    ap.add_argument("--skip-profile", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "explain_speed.md")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------- machine limits


def best_of(fn: Callable[[], object], repeat: int = 5, min_s: float = 0.2) -> float:
    """The fastest of ``repeat`` timings of ``fn`` (each timing loops ``fn`` for at least ``min_s``), seconds per
    call: the machine's capability, not its noise."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_s:
                break
        best = min(best, dt / n)
    return best


class Limits(NamedTuple):
    matmul_gflops: float  # fp32 (2048 x 2048) @ (2048 x 2048)
    bf16_gflops: float  # the same in bfloat16
    decode_gflops: dict[int, float]  # rows -> fp32 GFLOP/s of (rows x 576) @ (576 x 1536), a decode-step shape
    int8_gflops: dict[int, float]  # rows -> the same through a dynamic-quantised int8 Linear
    copy_gbs: float  # memory bandwidth: bytes read + written per second by a 256 MB copy
    read_gbs: float  # bytes read per second by a sum over 256 MB


def machine_limits() -> Limits:
    import torch

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm = 2 * n**3 / best_of(lambda: torch.mm(a, b)) / 1e9
    ab, bb = a.bfloat16(), b.bfloat16()
    mm16 = 2 * n**3 / best_of(lambda: torch.mm(ab, bb)) / 1e9
    lin = torch.nn.Linear(576, 1536, bias=False)
    q = quantize_linear(torch.nn.Sequential(lin))
    dec, i8 = {}, {}
    for rows in (1, 4, 64):
        x = torch.randn(rows, 576)
        flop = 2 * rows * 576 * 1536
        with torch.no_grad():
            dec[rows] = flop / best_of(lambda x=x: lin(x)) / 1e9
            i8[rows] = flop / best_of(lambda x=x: q(x)) / 1e9
    big = torch.empty(64 * 2**20)  # 256 MB of float32
    big.normal_()
    dst = torch.empty_like(big)
    nbytes = big.numel() * 4
    copy = 2 * nbytes / best_of(lambda: dst.copy_(big)) / 1e9
    read = nbytes / best_of(lambda: big.sum()) / 1e9
    return Limits(mm, mm16, dec, i8, copy, read)


def quantize_linear(module):  # noqa: ANN001, ANN201 - nn.Module
    """int8 dynamic quantisation of every nn.Linear of ``module`` (PyTorch's eager API)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager quantisation API is deprecated but present in the pinned torch
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


# ---------------------------------------------------------------------------------------------- profile


class Call(NamedTuple):
    rows: int  # sequences in the forward pass (batch x beams)
    length: int  # positions fed (prompt length at prefill, 1 when decoding)
    seconds: float
    head_seconds: float


class Profile(NamedTuple):
    pairs: int
    total: float  # seconds of the whole explain call
    calls: list[Call]  # every LM forward pass, in order

    @property
    def prefill(self) -> float:
        return sum(c.seconds for c in self.calls if c.length > 1)

    @property
    def decode(self) -> float:
        return sum(c.seconds for c in self.calls if c.length == 1)

    @property
    def head(self) -> float:
        return sum(c.head_seconds for c in self.calls)

    @property
    def steps(self) -> int:
        return sum(c.length == 1 for c in self.calls)


class ForwardClock:
    """Times every forward pass of the LM's core model and of its LM head (forward hooks)."""

    def __init__(self, lm) -> None:  # noqa: ANN001 - a (peft-wrapped) causal LM
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        self.calls: list[Call] = []
        self._t = self._h = 0.0
        self._head = 0.0
        self._hooks = [base.register_forward_pre_hook(self._pre, with_kwargs=True),
                       base.register_forward_hook(self._post, with_kwargs=True),
                       base.lm_head.register_forward_pre_hook(lambda m, a: self._head_pre()),
                       base.lm_head.register_forward_hook(lambda m, a, o: self._head_post())]

    def _pre(self, module, args, kwargs) -> None:  # noqa: ANN001
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        self._shape = tuple(x.shape[:2])
        self._head = 0.0
        self._t = time.perf_counter()

    def _post(self, module, args, kwargs, out) -> None:  # noqa: ANN001
        self.calls.append(Call(self._shape[0], self._shape[1], time.perf_counter() - self._t, self._head))

    def _head_pre(self) -> None:
        self._h = time.perf_counter()

    def _head_post(self) -> None:
        self._head += time.perf_counter() - self._h

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def profile_explain(a, pairs: list[dict]) -> Profile:  # noqa: ANN001 - Aligned
    from beatrec.align.explain import explain

    clock = ForwardClock(a.model.lm)
    t0 = time.perf_counter()
    try:
        explain(a, pairs)
    finally:
        clock.close()
    return Profile(len(pairs), time.perf_counter() - t0, clock.calls)


def op_table(a, pairs: list[dict], top: int = 12) -> list[str]:  # noqa: ANN001 - Aligned
    """torch.profiler over one explain call: the operators with the most self CPU time, and the wall time no
    operator accounts for (Python: HF's generate and module calls, the decoder's bookkeeping)."""
    from torch.profiler import ProfilerActivity, profile

    from beatrec.align.explain import explain

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        explain(a, pairs)
    wall = time.perf_counter() - t0
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    ops = sum(e.self_cpu_time_total for e in ev) / 1e6
    out = ["| operator | calls | self CPU s | share of wall |", "|---|---|---|---|"]
    out += [f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e6:.2f} | {100 * e.self_cpu_time_total / 1e6 / wall:.0f}% |"
            for e in ev[:top]]
    out.append(f"| (no operator: Python, module calls, bookkeeping) | – | {max(wall - ops, 0):.2f} | "
               f"{100 * max(wall - ops, 0) / wall:.0f}% |")
    return [f"wall {wall:.2f} s under the profiler (which adds overhead of its own)", "", *out]


def weight_bytes(lm) -> int:  # noqa: ANN001
    """Bytes of every parameter a decode step reads (the tied head counted once)."""
    seen, n = set(), 0
    for p in lm.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            n += p.numel() * p.element_size()
    return n


def profile_lines(name: str, p: Profile, wbytes: int, limits: Limits | None) -> list[str]:
    rest = p.total - p.prefill - p.decode
    step = p.decode / max(p.steps, 1)
    rows = sorted({c.rows for c in p.calls if c.length == 1})
    pre = [c for c in p.calls if c.length > 1]
    out = [f"| {name} | {p.pairs} | {p.total:.2f} | {p.prefill:.2f} ({100 * p.prefill / p.total:.0f}%) | "
           f"{p.decode:.2f} ({100 * p.decode / p.total:.0f}%) | {p.head:.2f} ({100 * p.head / p.total:.0f}%) | "
           f"{rest:.2f} ({100 * rest / p.total:.0f}%) | {p.steps} | {1000 * step:.0f} | "
           f"{', '.join(f'{c.rows}x{c.length}' for c in pre)} | {', '.join(map(str, rows))} | "
           + (f"{1000 * wbytes / (limits.read_gbs * 1e9):.0f}" if limits else "–") + " |"]
    return out


# ---------------------------------------------------------------------------------------------- side by side


def load_config(run: Path, subdir: str, sets: tuple[str, ...]):  # noqa: ANN201 - Aligned
    """The run loaded with a config's --set lines on top of float32, unpacked inference (``generate.dtype`` defaults
    to bfloat16 and ``generate.pack`` to true since issue #38: a config that wants them says so), so every label
    means what it says."""
    from beatrec.align.explain import load_aligned

    return load_aligned(run, ["generate.dtype=float32", "generate.pack=false", *sets], subdir=subdir)


def load_config_cfg(run: Path, subdir: str) -> str:
    """The run's decoding settings, in words (beams, new tokens, batch size)."""
    from beatrec.align.config import AlignConfig
    from beatrec.config import load_yaml

    g = load_yaml(AlignConfig, run / subdir / "config.yaml", []).generate
    return f"{g.num_beams} beam(s), at most {g.max_new_tokens} new tokens, batches of {g.batch_size}"


def validation_pairs(data: Path, run: Path, n: int, seed: int):  # noqa: ANN201 - DataFrame
    """A seeded ``n`` of the validation users' pairs (never test users: defaults are chosen on these)."""
    import numpy as np

    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit, eval_pairs

    rows = eval_pairs(load_dataset(data), ZeroShotSplit.load(run / "split.json"), "val")
    if n and len(rows) > n:
        rows = rows.iloc[np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))]
    return rows.reset_index(drop=True)


class Measured(NamedTuple):
    single: list[float]  # seconds per single-pair explain call
    batch_s: float  # seconds for the batched call over all pairs
    texts: list[str]  # the batched call's explanations (compared, never written)
    bound: tuple[float, float] | None  # the machine's limit: (single-pair s, batched pairs/s); see :func:`bound_of`


def step_bytes_per_param(g) -> float:  # noqa: ANN001 - GenerateConfig
    """Bytes per weight a decode step reads under decoding settings ``g``."""
    if g.quantize == "int8" or (g.decoder == "fast" and g.fast_weights == "int8"):
        return 1.0
    if g.dtype == "bfloat16" or (g.decoder == "fast" and g.fast_weights == "bfloat16"):
        return 2.0
    return 4.0


def bound_of(a, pairs: list[dict], texts: list[str], limits: Limits) -> tuple[float, float]:  # noqa: ANN001
    """The machine's limit for a config (a lower bound on time, an upper bound on pairs/s): every product at the
    measured 2048³ matmul rate of the weights' dtype (fp32 or bfloat16) and every decode step reading each weight
    once at the measured read bandwidth. A pair costs 2·P·L FLOP to prefill its L prompt tokens and T steps of
    max(bytes / read, 2·P·K / peak) for its T generated tokens (+ the end token) over K beams; in a batch of B the
    weight read is shared by B pairs. -> (single-pair seconds, batched pairs/s)."""
    from beatrec.align.batch import prompt_lengths

    g = a.cfg.generate
    params = weight_bytes(a.model.lm) / next(a.model.lm.parameters()).element_size()
    peak = 1e9 * (limits.bf16_gflops if step_bytes_per_param(g) < 4 else limits.matmul_gflops)
    wread = params * step_bytes_per_param(g) / (1e9 * limits.read_gbs)  # s per step
    lengths = prompt_lengths(a.builder, pairs)
    steps = [len(a.tok(t, add_special_tokens=False).input_ids) + 1 for t in texts]
    k, b = g.num_beams, g.batch_size
    pre = [2 * params * n / peak for n in lengths]
    single = statistics.median(p + t * max(wread, 2 * params * k / peak) for p, t in zip(pre, steps, strict=True))
    batch = sum(p + t * max(wread / b, 2 * params * k / peak) for p, t in zip(pre, steps, strict=True))
    return single, len(texts) / batch


def measure(a, pairs: list[dict], n_single: int, limits: Limits | None) -> Measured:  # noqa: ANN001 - Aligned
    from beatrec.align.explain import explain

    explain(a, pairs[:1])  # warm-up (allocations, lazy imports)
    single = []
    for p in pairs[:n_single]:
        t0 = time.perf_counter()
        explain(a, [p])
        single.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    texts = explain(a, pairs)
    batch_s = time.perf_counter() - t0
    return Measured(single, batch_s, texts, bound_of(a, pairs, texts, limits) if limits else None)


def side_by_side(args: argparse.Namespace, frame, rows: list[dict], limits: Limits | None) -> list[str]:  # noqa: ANN001
    """Each config on the same pairs in one process: latency, throughput, ratio to today's, paired quality."""
    from beatrec.align.explain import check_pairs
    from beatrec.metrics.explanations import ScoreConfig, Scorer
    from beatrec.metrics.paired import format_paired, pair_stats, paired_comparison

    got: dict[str, Measured] = {}
    for name in args.configs:
        a = load_config(args.run, args.subdir, CONFIGS[name][1])
        got[name] = measure(a, check_pairs(a, rows[: args.pairs], "validation pairs"), args.single, limits)
        m = got[name]
        print(f"{name}: single median {statistics.median(m.single):.2f}s, batch {len(m.texts) / m.batch_s:.2f} pairs/s",
              flush=True)
        del a
    base = got.get("today")
    out = ["## Side by side (one process, the same pairs)", "",
           f"{args.single} single-pair calls (distinct validation pairs) and one batched call over {args.pairs} "
           f"validation pairs (`generate.batch_size` of the run) per config; ratios against today's decode. "
           "Limit: the machine's bound for the config (`bound_of`: every product at the measured 2048³ matmul rate of "
           "its dtype, every decode step reading each weight once at the measured read bandwidth) and the share of "
           "it reached.", "",
           "| config | single pair: median s (min-max) | x today | limit s (% reached) | batched pairs/s | x today "
           "| limit pairs/s (% reached) |", "|---|---|---|---|---|---|---|"]
    for name, m in got.items():
        med, bps = statistics.median(m.single), len(m.texts) / m.batch_s
        r1 = f"{statistics.median(base.single) / med:.2f}" if base else "–"
        r2 = f"{bps / (len(base.texts) / base.batch_s):.2f}" if base else "–"
        l1 = f"{m.bound[0]:.3g} ({100 * m.bound[0] / med:.0f}%)" if m.bound else "–"
        l2 = f"{m.bound[1]:.3g} ({100 * bps / m.bound[1]:.0f}%)" if m.bound else "–"
        out.append(f"| {CONFIGS[name][0]} | {med:.2f} ({min(m.single):.2f}-{max(m.single):.2f}) | {r1} | {l1} | "
                   f"{bps:.2f} | {r2} | {l2} |")
    out.append("")
    if base is None:
        return out
    refs = frame["explanation"].tolist()[: args.pairs]
    scorer = Scorer(ScoreConfig(lm_score=False))
    st = {name: pair_stats(m.texts, refs, scorer) for name, m in got.items()}
    out += [f"Quality against the references, paired with today's decode on the same {args.pairs} validation pairs "
            "(config - today; 95% bootstrap interval, permutation p); identical texts: share of pairs whose "
            "explanation is the same string as today's.", ""]
    for name, m in got.items():
        if name == "today":
            continue
        same = sum(x == y for x, y in zip(m.texts, base.texts, strict=True)) / len(m.texts)
        out += [f"**{CONFIGS[name][0]}** (identical texts {same:.2f})", "", *format_paired(paired_comparison(st["today"], st[name])), ""]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not (args.run / args.subdir / "weights.safetensors").is_file():
        sys.exit(f"{args.run / args.subdir}: no stage-2 run there (train one with `beatrec align`)")
    if not args.data.is_dir():
        sys.exit(f"{args.data}: dataset not found (the shared data is needed for the validation pairs)")
    command = "python benchmarks/explain_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# Explanation speed: where the time goes and how close decoding gets to the machine (issue #38)", "",
             f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}; machine: "
             f"{platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads",
             f"- command: `{command}`", f"- run: `{args.run}/{args.subdir}`; decoding of the run: "
             f"{load_config_cfg(args.run, args.subdir)}", ""]
    limits = None
    if not args.skip_limits:
        limits = machine_limits()
        lines += ["## The machine's limits", "",
                  "| measure | value |", "|---|---|",
                  f"| fp32 matmul 2048³ | {limits.matmul_gflops:.0f} GFLOP/s |",
                  f"| bfloat16 matmul 2048³ | {limits.bf16_gflops:.0f} GFLOP/s |"]
        lines += [f"| fp32 ({r}×576)·(576×1536), a decode-step Linear | {g:.1f} GFLOP/s |"
                  for r, g in limits.decode_gflops.items()]
        lines += [f"| int8 dynamic-quantised, same shape, {r} rows | {g:.1f} GFLOP/s |"
                  for r, g in limits.int8_gflops.items()]
        lines += [f"| memory copy (read + write), 256 MB | {limits.copy_gbs:.1f} GB/s |",
                  f"| memory read (sum), 256 MB | {limits.read_gbs:.1f} GB/s |", ""]
        print("\n".join(lines[-12:]), flush=True)
    frame = validation_pairs(args.data, args.run, max(args.pairs, args.single), args.seed)
    rows = frame[["uid", "iid", "title"]].to_dict("records")
    if not args.skip_profile:
        a = load_config(args.run, args.subdir, TODAY)
        wbytes = weight_bytes(a.model.lm)
        lines += ["## Where the time goes (today's decode: LoRA unmerged, 4-beam search)", "",
                  f"Weights read per decode step: {wbytes / 1e6:.0f} MB"
                  + (f" -> at least {1000 * wbytes / (limits.read_gbs * 1e9):.0f} ms per step at the measured read "
                     "bandwidth" if limits else "") + ".", "",
                  "| explain call | pairs | total s | prefill s | decode s | LM head s | rest of generate s | decode "
                  "steps | ms / step | prefill rows×length | rows per decode step | weight-read bound ms / step |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        from beatrec.align.explain import check_pairs

        pairs = check_pairs(a, rows, "validation pairs")
        profile_explain(a, pairs[:1])  # warm-up
        for name, part in (("one pair", pairs[:1]), ("batch of 16", pairs[:16])):
            p = profile_explain(a, part)
            lines += profile_lines(name, p, wbytes, limits)
            print(lines[-1], flush=True)
        lines += ["", "Operators of one pair's explanation, today's decode:", "", *op_table(a, pairs[:1]), ""]
        del a
        for name in args.op_configs:
            b = load_config(args.run, args.subdir, CONFIGS[name][1])
            lines += [f"Operators of one pair's explanation, {CONFIGS[name][0]}:", "",
                      *op_table(b, check_pairs(b, rows[:1], "validation pairs")), ""]
            del b
    if args.configs:
        lines += side_by_side(args, frame, rows, limits)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
