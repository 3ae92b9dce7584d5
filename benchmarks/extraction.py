"""Throughput of LLM phrase extraction (the one-time, cached step of ``beatrec tokenize``).

    python benchmarks/extraction.py --data ../shared/data/xrec/amazon --n 48

Extracts phrases for a seeded sample of ``--n`` users and ``--n`` items of the dataset's training texts with
the packaged SmolLM2 extractor (default config, a private empty cache so nothing is reused), and writes
``benchmarks/extraction.md``: entities per second, failures, and the projected time for all entities. With
``--compare KEY=VALUE ...`` the same sample is extracted first with those extractor settings (the "before") and
then with the defaults, side by side in one process: the speed ratio and the share of entities whose phrases are
the same list (and the mean Jaccard overlap of the phrase sets).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "xrec" / "amazon")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--compare", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extractor settings of the 'before' run, e.g. pack=false")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "extraction.md")
    args = ap.parse_args()
    if not (args.data / "explanations.jsonl").is_file():
        raise SystemExit(f"dataset absent: {args.data}")
    import torch

    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import SplitConfig, make_zero_shot_split, training_texts
    from beatrec.extract.base import ExtractorConfig
    from beatrec.extract.cache import extract_phrases
    from beatrec.extract.registry import make_extractor
    from beatrec.tokenizer.pipeline import TokenizeConfig, entity_documents

    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    ds = load_dataset(args.data)
    rows = training_texts(ds, make_zero_shot_split(ds, SplitConfig()))
    tc = TokenizeConfig()
    from beatrec.config import load_yaml

    def run(sets: list[str]) -> tuple[float, list[tuple], dict]:
        t = time.perf_counter()
        ex = make_extractor(load_yaml(ExtractorConfig, None, sets))
        load_s = time.perf_counter() - t
        out, phrases = [], {}
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as tmp:
            for kind, key, cols in (("user", "uid", tc.user_texts), ("item", "iid", tc.item_texts)):
                docs = entity_documents(rows, key, cols)
                ids = sorted(docs)
                pick = [ids[i] for i in np.sort(rng.choice(len(ids), min(args.n, len(ids)), replace=False))]
                t = time.perf_counter()
                phr, stats = extract_phrases({i: docs[i] for i in pick}, kind, ex,
                                             cache_path=Path(tmp) / f"{kind}.jsonl")
                s = time.perf_counter() - t
                out.append((kind, len(ids), len(pick), s, stats.n_failed,
                            float(np.mean([len(p) for p in phr.values()])) if phr else 0.0))
                phrases.update({(kind, i): p for i, p in phr.items()})
        return load_s, out, phrases

    before = run(args.compare) if args.compare else None
    load_s, out, phrases = run([])
    lines = ["# Phrase extraction throughput (packaged SmolLM2-135M-Instruct)", "",
             f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads",
             f"- command: `{command}`", f"- model load (expanded checkpoint from the cache): {load_s:.1f} s", "",
             "| kind | entities in dataset | sampled | seconds | entities/s | failed | phrases/entity | projected minutes, all entities |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, total, n, s, failed, mean in out:
        lines.append(f"| {kind} | {total} | {n} | {s:.1f} | {n / s:.2f} | {failed} | {mean:.1f} | {total / (n / s) / 60:.1f} |")
    if before is not None:
        lines += ["", f"Side by side on the same sample (before: `{' '.join(args.compare)}`; after: the defaults):", "",
                  "| kind | before s | after s | speed ratio | same phrase list | mean Jaccard of phrase sets |",
                  "|---|---|---|---|---|---|"]
        _, bout, bphr = before
        for (kind, _, _, s0, *_), (_, _, _, s1, *_) in zip(bout, out, strict=True):
            keys = [k for k in phrases if k[0] == kind and k in bphr]
            same = np.mean([phrases[k] == bphr[k] for k in keys]) if keys else float("nan")
            jac = np.mean([len(set(phrases[k]) & set(bphr[k])) / max(1, len(set(phrases[k]) | set(bphr[k])))
                           for k in keys]) if keys else float("nan")
            lines.append(f"| {kind} | {s0:.1f} | {s1:.1f} | {s0 / s1:.2f}x | {same:.2f} | {jac:.2f} |")
    lines += ["", "Phrases are not shown here: they are derived from the dataset's text, which stays out of the",
              "repository (they are cached under `$BEATREC_CACHE` and written to each run directory)."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
