"""Throughput of LLM phrase extraction (the one-time, cached step of ``beatrec tokenize``).

    python benchmarks/extraction.py --data ../shared/data/xrec/amazon --n 48

Extracts phrases for a seeded sample of ``--n`` users and ``--n`` items of the dataset's training texts with
the packaged SmolLM2 extractor (default config, a private empty cache so nothing is reused), and writes
``benchmarks/extraction.md``: entities per second, failures, and the projected time for all entities.
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
    t = time.perf_counter()
    ex = make_extractor(ExtractorConfig())
    load_s = time.perf_counter() - t
    out = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, key, cols in (("user", "uid", tc.user_texts), ("item", "iid", tc.item_texts)):
            docs = entity_documents(rows, key, cols)
            ids = sorted(docs)
            pick = [ids[i] for i in np.sort(rng.choice(len(ids), min(args.n, len(ids)), replace=False))]
            t = time.perf_counter()
            phr, stats = extract_phrases({i: docs[i] for i in pick}, kind, ex, cache_path=Path(tmp) / f"{kind}.jsonl")
            s = time.perf_counter() - t
            out.append((kind, len(ids), len(pick), s, stats.n_failed,
                        float(np.mean([len(p) for p in phr.values()])) if phr else 0.0))
    lines = ["# Phrase extraction throughput (packaged SmolLM2-135M-Instruct)", "",
             f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads",
             f"- command: `{command}`", f"- model load (expanded checkpoint from the cache): {load_s:.1f} s", "",
             "| kind | entities in dataset | sampled | seconds | entities/s | failed | phrases/entity | projected minutes, all entities |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, total, n, s, failed, mean in out:
        lines.append(f"| {kind} | {total} | {n} | {s:.1f} | {n / s:.2f} | {failed} | {mean:.1f} | {total / (n / s) / 60:.1f} |")
    lines += ["", "Phrases are not shown here: they are derived from the dataset's text, which stays out of the",
              "repository (they are cached under `$BEATREC_CACHE` and written to each run directory)."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
