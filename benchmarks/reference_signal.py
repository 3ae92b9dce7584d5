"""Do the reference texts of each dataset depend on the user? (issue #37, part 1; ``beatrec signal``)

    python benchmarks/reference_signal.py            # amazon, yelp, google -> benchmarks/reference_signal.md

For every dataset under ``--data-root`` it runs :func:`beatrec.data.reference_signal.reference_signal` (MiniLM
cosines; the decomposition is in that module's docstring) and writes the tables and the plain-words verdicts,
with the machine, date and command. No text from the data is written.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=ROOT / ".." / "shared" / "data" / "xrec")
    ap.add_argument("--datasets", nargs="+", default=["amazon", "yelp", "google"])
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "reference_signal.md")
    args = ap.parse_args(argv)
    from beatrec.data.dataset import load_dataset
    from beatrec.data.reference_signal import reference_signal, signal_dict, signal_table, verdict
    from beatrec.text_encoder import TextEncoder, TextEncoderConfig

    missing = [d for d in args.datasets if not (args.data_root / d).is_dir()]
    if missing:
        sys.exit(f"skipped: dataset folder(s) {missing} not found under {args.data_root} (../shared/data is absent)")
    enc = TextEncoder(TextEncoderConfig())
    out = ["# Reference signal: do the explanations and profiles of each dataset depend on the user?", "",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {platform.platform()}, {os.cpu_count()} cores",
           f"- command: `python benchmarks/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}`",
           "- method: `beatrec.data.reference_signal` (MiniLM mean-pooled embeddings, cosine). *User effect*: a "
           "user's reference for another item j against another user's reference for that same j (one unit per "
           "user). *Item effect*: two users' references of the same item against random pairs. *Graph effect*: "
           "the profile of the user (item) sharing the most items (users) in the graph against a random one. "
           "Mean ± 95% normal half-width; `beatrec signal --data DIR` prints the same for any dataset.", ""]
    summary = ["| dataset | explanation user effect | explanation item effect | user-profile graph effect | "
               "item-profile graph effect |", "|---|---|---|---|---|"]
    records = {}
    for name in args.datasets:
        t0 = time.perf_counter()
        sig = reference_signal(load_dataset(args.data_root / name), enc)
        e = sig.explanations
        summary.append(f"| {name} | {e.user_effect} | {e.item_effect} | {sig.user_profiles.graph_effect} | "
                       f"{sig.item_profiles.graph_effect} |")
        out += [f"## {name} ({e.n_pairs} text pairs; {time.perf_counter() - t0:.0f} s)", "", signal_table(sig), "",
                *(f"- {v}" for v in verdict(sig)), ""]
        records[name] = signal_dict(sig)
        print(f"{name}: user effect {e.user_effect}, item effect {e.item_effect}", flush=True)
    text = "\n".join(out[:7] + ["## Summary", "", *summary, ""] + out[7:])
    args.report.write_text(text)
    args.report.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
