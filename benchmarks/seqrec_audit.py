"""Order audit of the seqrec datasets: how strongly are users' sequences ordered by ASIN?

    python benchmarks/seqrec_audit.py

For Beauty and Sports_and_Outdoors under ``--data-root`` (the datasets with ASINs): the audit of
:mod:`beatrec.seqrec.audit` on the file as shipped (by ASIN and by item id), on the same users' items re-sorted by
ASIN, and on a within-user shuffle. Writes ``benchmarks/seqrec_audit.md``. Datasets that are absent are skipped
with a message.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("Beauty", "Sports_and_Outdoors")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "seqrec")
    ap.add_argument("--shuffles", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "seqrec_audit.md")
    args = ap.parse_args(argv)
    from beatrec.seqrec.audit import FLAG_EXCESS, FLAG_P, audit_order, key_ranks
    from beatrec.seqrec.data import load_seq_dataset

    rows = []
    for name in DATASETS:
        d = args.data_root / name
        if not d.is_dir():
            print(f"[audit] {d} not found: skipped", flush=True)
            continue
        ds = load_seq_dataset(d)
        _, rank = key_ranks(ds, "asin")
        rng = np.random.default_rng(0)
        variants = {"as shipped": ds.sequences,
                    "re-sorted by ASIN": [s[np.argsort(rank[s], kind="stable")] for s in ds.sequences],
                    "within-user shuffle": [rng.permutation(s) for s in ds.sequences]}
        for label, seqs in variants.items():
            for key in ("asin", "id") if label == "as shipped" else ("asin",):
                r = audit_order(ds, key, args.shuffles, sequences=seqs)
                rows.append((name, label, r))
                print(f"[audit] {name}, {label}: {r.summary()}", flush=True)
    lines = ["# Order audit: are sequences ordered by ASIN? (`beatrec seqrec audit`)", "",
             f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; machine: {platform.platform()}",
             f"- command: `python benchmarks/seqrec_audit.py --shuffles {args.shuffles}`",
             "- increasing: share of consecutive pairs of a user's sequence whose key increases; shuffled: its mean ± "
             f"std over {args.shuffles} within-user shuffles; p: permutation p-value; flagged when increasing - 0.5 >= "
             f"{FLAG_EXCESS} and p < {FLAG_P}. Next-key heuristic: the 10 items whose key follows the user's "
             "second-to-last item, scored on the last (leave-one-out test item), no training; beside it, the same on "
             "a within-user shuffle, and popularity.", "",
             "| dataset | sequences | key | users | pairs | increasing | shuffled | p | flagged | next-key N@10 | "
             "next-key R@10 | next-key N@10, shuffled | popularity N@10 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, label, r in rows:
        lines.append(f"| {name} | {label} | {r.key} | {r.n_users} | {r.n_pairs} | {r.increasing:.3f} | "
                     f"{r.shuffled_mean:.3f} ± {r.shuffled_std:.3f} | {r.p_value:.3g} | {'yes' if r.flagged else 'no'} | "
                     f"{r.next_key_ndcg10:.4f} | {r.next_key_recall10:.4f} | {r.next_key_shuffled_ndcg10:.4f} | "
                     f"{r.popularity_ndcg10:.4f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
