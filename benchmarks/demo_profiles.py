"""Do the demo's profiles name a zero-shot user's planted intents? Stage-2 profile variants x decoding guidance.

    beatrec demo --out runs/demo                                       # data + stage 1 (the planted demo)
    python benchmarks/demo_profiles.py --demo runs/demo                # train the variants, write the report
    python benchmarks/demo_profiles.py --report-only

Issue #37 part 4 asks that zero-shot users' profiles name their planted intents at least 3x as often as profiles
written from another test user's tokens. Each variant (:data:`VARIANTS`) trains stage 2 on the training users'
``user_summary`` only (``train.tasks=[user_profile]``, into ``RUN/<subdir>``; an identical config there is reused)
and then writes every test user's profile from its own tokens and from another test user's (a seeded
derangement), at each behavior-token guidance (``generate.guidance``, :mod:`beatrec.align.guidance`). Rates
(:func:`beatrec.data.planted_signal.profile_rates`): intent recall (the share of a user's planted intents its profile
names), intent precision, genre named. Each (variant, guidance) is recorded in ``--records`` as it lands (rates and
the number of distinct profiles; no text), and the report is rebuilt from the records.
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

PROFILE_ONLY = ("train.tasks=[user_profile]", "train.epochs=2", "train.lr=3e-3", "train.max_train_pairs=240",
                "train.val_pairs=40", "generate.num_beams=1")
VARIANTS: dict[str, dict[str, Any]] = {  # name -> label, subdir, stage-2 overrides
    "lora": {"label": "LoRA, profiles only (lr 3e-3, 2 epochs)", "subdir": "align_demo_profiles",
             "sets": list(PROFILE_ONLY)},
    "anchor": {"label": "LoRA + word anchoring (model.word_anchor=1)", "subdir": "align_demo_profiles_anchor",
               "sets": [*PROFILE_ONLY, "model.word_anchor=1"]},
    "contrast": {"label": "LoRA + token contrast (model.token_contrast=1)", "subdir": "align_demo_profiles_contrast",
                 "sets": [*PROFILE_ONLY, "model.token_contrast=1"]},
    "anchor_contrast": {"label": "LoRA + word anchoring + token contrast", "subdir": "align_demo_profiles_anchor_contrast",
                        "sets": [*PROFILE_ONLY, "model.word_anchor=1", "model.token_contrast=1"]},
}
# the demo's own stage 2 (``beatrec.demo.DEMO_ALIGN_OVERRIDES``: explanations, 240 pairs, lr 1e-3, greedy) with
# the user profiles learnt beside the explanations and word anchoring: a candidate for the demo's recipe
VARIANTS["demo_multitask"] = {
    "label": "the demo's stage 2 + profiles + word anchoring", "subdir": "align_demo_multitask",
    "sets": ["train.max_train_pairs=240", "train.val_pairs=40", "train.lr=1e-3", "generate.num_beams=1",
             "train.tasks=[explain,user_profile]", "model.word_anchor=1"]}
CODE = ("src/beatrec/align", "src/beatrec/data/planted_signal.py", "src/beatrec/lm.py")


def identity(cfg) -> dict[str, Any]:  # noqa: ANN001 - AlignConfig
    """The config that makes a trained model what it is: all of it but ``train.threads`` (a machine setting)."""
    from beatrec.config import to_dict

    d = to_dict(cfg)
    d["train"].pop("threads", None)
    return d


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict -> {"a.b": value}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def stage1_sets(run: Path) -> list[str]:
    """The demo run's stage-1 settings that differ from the demo's own (``beatrec.demo.DEMO_OVERRIDES`` on the
    defaults), as ``KEY=VALUE`` lines (machine settings left out): which stage 1 a row's tokens come from."""
    from beatrec.config import load_yaml, to_dict
    from beatrec.demo import DEMO_OVERRIDES
    from beatrec.tokenizer.pipeline import TokenizeConfig

    have = flat(to_dict(load_yaml(TokenizeConfig, run / "config.yaml", [])))
    base = flat(to_dict(load_yaml(TokenizeConfig, None, list(DEMO_OVERRIDES))))
    skip = ("train.threads",)
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in have.items()
            if k not in skip and base.get(k) != v]


def projected_probe(a, planted, fit: np.ndarray, score: np.ndarray) -> float:  # noqa: ANN001 - Aligned, Planted
    """Top-k intent precision of the linear intent probe (:func:`beatrec.data.intent_probe.intent_probe`) on the
    user tokens *as the LM receives them* (the trained projector's output, flattened), fitted on the text training
    users and scored on ``score``: whether the intents reach the LM's input at all."""
    import torch

    from beatrec.data.intent_probe import intent_probe

    u = torch.arange(len(planted.user_genre))
    with torch.no_grad():
        h = a.model.behavior_embeds(u, torch.zeros_like(u), ("user",)).float()  # (U, S, d)
    return float(intent_probe(h.reshape(len(u), -1).numpy(), planted, fit, score).precision.mean())


def measure(run: Path, data: Path, variant: str, guidance: float, seed: int, extra: list[str],
            split_name: str = "test") -> dict[str, Any]:
    """Train (or reuse) the variant, write the ``split_name`` users' profiles both ways, reduce them to rates."""
    from beatrec.align.config import AlignConfig
    from beatrec.align.controls import derangement
    from beatrec.align.explain import load_aligned
    from beatrec.align.profile import user_profiles
    from beatrec.align.train import train_align
    from beatrec.config import load_yaml
    from beatrec.data.planted_signal import load_planted, profile_rates
    from beatrec.data.split import ZeroShotSplit

    v = VARIANTS[variant]
    t0 = time.perf_counter()
    cfg = load_yaml(AlignConfig, None, [*v["sets"], *extra])
    d = run / v["subdir"]
    same = (d / "weights.safetensors").is_file() and identity(load_yaml(AlignConfig, d / "config.yaml", [])) == identity(cfg)
    if not same:
        train_align(run, data, cfg, progress=False, subdir=v["subdir"])
    a = load_aligned(run, [f"generate.guidance={guidance}"], subdir=v["subdir"])
    planted = load_planted(data)
    split = ZeroShotSplit.load(run / "split.json")
    users = np.asarray(getattr(split, f"{split_name}_users"), dtype=np.int64)
    probe = projected_probe(a, planted, np.asarray(split.train_users, dtype=np.int64), users)
    own = user_profiles(a, users.tolist())
    other = user_profiles(a, users[derangement(len(users), np.random.default_rng(seed))].tolist())
    return {"own": profile_rates(planted, users, own)._asdict(), "shuffled": profile_rates(planted, users, other)._asdict(),
            "distinct": len(set(own)), "n": len(users), "projected_probe": probe, "trained_here": not same,
            "seconds": time.perf_counter() - t0}


def write_report(path: Path, records: list[dict[str, Any]], command: str) -> None:
    out = ["# Demo: do zero-shot users' profiles name their planted intents? (issue #37 part 4)", "",
           f"- report rebuilt {datetime.datetime.now().isoformat(timespec='seconds')} from `{path.with_suffix('.json').name}`"
           f" by `{command}`",
           "- scored users: the demo's validation users (variants are chosen on these) or test users (the figure "
           "reported), both zero-shot (no stage saw their texts); own = profiles from the user's tokens, "
           "shuffled = from another test user's tokens (control). Intent recall: share of the user's planted intents "
           "named; genre: the user's genre named. The acceptance asks own >= 3x shuffled on intents. Intent probe on "
           "projected tokens: the linear intent probe's top-3 precision on the test users' tokens as the LM receives "
           "them (fitted on the text training users; chance 0.15): whether the intents reach the LM's input.",
           "- machine, date and command of each row are in its record", "",
           "- stage 1: the run's departures from the demo's stage-1 settings (`beatrec demo`'s own when none); "
           "stage 2: `--align-set` lines on top of the variant's (machine settings left out)", "",
           "| variant | stage 1 | stage 2 | guidance | split | users | intent recall own / shuffled (ratio) | "
           "intent precision own / shuffled | genre own / shuffled | intent probe on projected tokens | distinct profiles | "
           "seconds |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def extra(r: dict[str, Any]) -> str:
        own = VARIANTS.get(r["variant"], {}).get("sets", [])
        return " ".join(x for x in r["sets"] if x not in own and not x.startswith("train.threads=")) or "–"

    for r in sorted(records, key=lambda r: (" ".join(r.get("stage1_sets", [])), extra(r) != "–", extra(r),
                                            list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS else 9,
                                            r["guidance"])):
        o, s = r["own"], r["shuffled"]
        ratio = o["intent_recall"] / s["intent_recall"] if s["intent_recall"] else float("inf")
        probe = f"{r['projected_probe']:.3f}" if "projected_probe" in r else "–"
        out.append(f"| {VARIANTS.get(r['variant'], {}).get('label', r['variant'])} | "
                   f"{' '.join(r.get('stage1_sets', [])) or '–'} | {extra(r)} | {r['guidance']:g} | {r.get('split', 'test')} | {r['n']} | "
                   f"{o['intent_recall']:.3f} / {s['intent_recall']:.3f} ({ratio:.2f}x) | "
                   f"{o['intent_precision']:.3f} / {s['intent_precision']:.3f} | {o['genre']:.3f} / {s['genre']:.3f} | "
                   f"{probe} | {r['distinct']} | {r['seconds']:.0f} |")
    if not records:
        out.append("No rows recorded yet.")
    path.write_text("\n".join(out) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=ROOT / "runs" / "demo", help="a `beatrec demo --out` folder")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--guidance", nargs="+", type=float, default=[1.0, 2.0, 4.0])
    ap.add_argument("--align-set", action="append", default=[], metavar="KEY=VALUE",
                    help="stage-2 override for every variant (part of the record's key)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("val", "test"), default="test",
                    help="whose profiles are scored: validation users (select variants here) or test users")
    ap.add_argument("--records", type=Path, default=ROOT / "benchmarks" / "demo_profiles.json")
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "demo_profiles.md")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    command = "python benchmarks/demo_profiles.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.report_only:
        run, data = args.demo / "run", args.demo / "data"
        if not (run / "split.json").is_file() or not (data / "planted.json").is_file():
            sys.exit(f"error: {args.demo} holds no demo run (run/split.json) and planted data (data/planted.json); "
                     "run `beatrec demo --out DIR` first")
        s1, code = stage1_digest(run), digest_files([ROOT / p for p in CODE])
        for variant in args.variants:
            for g in args.guidance:
                sets = [*VARIANTS[variant]["sets"], *args.align_set]
                key = record_key("demo", args.split, variant, [*sets, f"generate.guidance={g}"], s1, code, [args.seed])
                if any(r["key"] == key for r in read_records(args.records)):
                    print(f"{variant} guidance {g:g}: recorded, skipped", flush=True)
                    continue
                print(f"{variant} guidance {g:g} ...", flush=True)
                res = measure(run, data, variant, g, args.seed, args.align_set, args.split)
                put_record(args.records, {"key": key, "variant": variant, "guidance": g, "sets": sets,
                                          "stage1": s1, "stage1_sets": stage1_sets(run), "code": code,
                                          "seed": args.seed, "split": args.split, **res,
                                          **provenance(command)})
                print(f"  own {res['own']}\n  shuffled {res['shuffled']}", flush=True)
    write_report(args.report, read_records(args.records), command)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
