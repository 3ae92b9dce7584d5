"""Do zero-shot users' behavior tokens carry their planted intents? A linear probe on stage-1 runs.

    beatrec demo --out runs/demo && python benchmarks/intent_probe.py --demo runs/demo
    python benchmarks/intent_probe.py --sweep --seeds 0 1 2      # stage-1 variants, validation users only

On the synthetic dataset (planted genres and intents), a one-vs-rest logistic probe is fitted on the *text* training
users' tokens (one-hot per slot) or LightGCN vectors and scored on graph-only users (like every zero-shot user):
top-3 precision of the predicted intents (chance = 3 / n_intents) and genre accuracy
(:mod:`beatrec.data.intent_probe`). Two oracles: the planted intents of each user's training-graph items, counted,
and the *oracle graph probe* — the same logistic probe on a spectral embedding of the training graph (fitted on
every unscored user): what the interactions alone hold. Items: the same probe, fitted on half of the items and
scored on the other half. The dataset is the demo's (``beatrec demo-data``: a user's intents choose its items).

``--demo`` probes one demo run (validation + test users) and writes ``benchmarks/intent_probe.md``. ``--sweep``
trains stage 1 on the demo's dataset for each variant of :data:`VARIANTS` and seed (the demo's stage-1 settings plus
the variant's ``--set`` lines), probes **validation users only** (this is a selection run), and writes
``benchmarks/intent_probe_sweep.md``: per variant the mean ± std over seeds, and the paired per-user difference
against the first variant (user scores averaged over seeds; bootstrap interval, permutation p).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The stage-1 settings the sweep's variants start from: the demo's before it adopted the sweep's best row
# (``beatrec.demo.DEMO_OVERRIDES`` is now this plus "inductive users + continuous BPR 20").
SWEEP_BASE = ("model.n_codes=64", "extractor.kind=splitter", "train.beta=5", "train.lr=1e-2")
VARIANTS = (  # (name, stage-1 --set lines on top of SWEEP_BASE)
    ("stage-1 default lr 1e-3", ("train.lr=1e-3",)),
    ("demo (lr 1e-2)", ()),
    ("spectral init", ("model.init=spectral",)),
    ("inductive users", ("model.user_ids=false",)),
    ("inductive users + spectral init", ("model.user_ids=false", "model.init=spectral")),
    ("256 codes", ("model.n_codes=256",)),
    ("continuous BPR 5", ("train.continuous_weight=5",)),
    ("inductive users + continuous BPR 1", ("model.user_ids=false", "train.continuous_weight=1")),
    ("inductive users + continuous BPR 5", ("model.user_ids=false", "train.continuous_weight=5")),
    ("inductive users + continuous BPR 20", ("model.user_ids=false", "train.continuous_weight=20")),
)


class Probe(NamedTuple):
    user_tokens: np.ndarray  # (U_scored,) per-user top-3 intent precision from the user's tokens
    user_vectors: np.ndarray  # (U_scored,) the same from LightGCN vectors
    item_tokens: np.ndarray  # (I_scored,)
    item_vectors: np.ndarray
    user_genre: tuple[float, float]  # genre accuracy (tokens, vectors)
    item_genre: tuple[float, float]
    oracle: np.ndarray  # (U_scored,) intents of the user's training items, counted
    spectral: np.ndarray  # (U_scored,) the oracle graph probe: a spectral embedding of the training graph
    val_hr: float  # stage 1's quantised validation HR@k of the kept epoch
    user_codewords: np.ndarray  # (U_scored,) the same from the user's codeword vectors (what the projector reads)


def probe_run(data: Path, run: Path, users: str) -> Probe:
    """Probe the run's tokens and vectors (:func:`beatrec.data.intent_probe.intent_probe`). ``users``: ``"val"``
    or ``"val+test"`` (the scored users); fitted on the text training users."""
    import pandas as pd

    from beatrec.align.vocab import read_token_table
    from beatrec.data.intent_probe import codeword_features, intent_probe, one_hot_tokens, spectral_embedding
    from beatrec.data.planted_signal import load_planted
    from beatrec.tokenizer.embeddings import load_graph_embeddings

    pl = load_planted(data)
    sp = json.loads((run / "split.json").read_text())
    k = len(pl.intent_phrases)
    emb = load_graph_embeddings(run)
    fit = np.array(sp["train_users"])
    score = np.array(sp["val_users"] + (sp["test_users"] if users == "val+test" else []))
    ut = intent_probe(one_hot_tokens(read_token_table(run / "user_tokens.parquet")), pl, fit, score)
    uv = intent_probe(emb.user.numpy(), pl, fit, score)
    uc = intent_probe(codeword_features(run), pl, fit, score)
    inter = pd.read_csv(data / "interactions.csv")
    tr = inter[inter["split"] == "train"]
    yu, yi = np.zeros((len(pl.user_genre), k)), np.zeros((len(pl.item_genre), k))
    np.put_along_axis(yu, pl.user_intents, 1, axis=1)
    np.put_along_axis(yi, pl.item_intents, 1, axis=1)
    counts = np.zeros_like(yu)
    np.add.at(counts, tr["user"].to_numpy(), yi[tr["item"].to_numpy()])
    oracle = np.take_along_axis(yu[score], np.argsort(-counts[score], axis=1)[:, :3], 1).mean(1)
    others = np.setdiff1d(np.arange(len(pl.user_genre)), score)  # every user not scored: graph only, no text
    spectral = intent_probe(spectral_embedding(inter, len(pl.user_genre), len(pl.item_genre)), pl, others, score)
    perm = np.random.default_rng(0).permutation(len(yi))
    half = len(yi) // 2
    it = intent_probe(one_hot_tokens(read_token_table(run / "item_tokens.parquet")), pl, perm[:half], perm[half:],
                      "item")
    iv = intent_probe(emb.item.numpy(), pl, perm[:half], perm[half:], "item")
    stage1 = json.loads((run / "metrics.json").read_text())
    val_hr = float(stage1.get("training", {}).get("best_val_hr", float("nan")))
    return Probe(ut.precision, uv.precision, it.precision, iv.precision, (ut.genre_accuracy, uv.genre_accuracy),
                 (it.genre_accuracy, iv.genre_accuracy), oracle, spectral.precision, val_hr, uc.precision)


def header(title: str, command: str) -> list[str]:
    return [f"# {title}", "", f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; "
            f"machine: {platform.platform()}", f"- command: `{command}`"]


def demo_report(args: argparse.Namespace) -> list[str]:
    from beatrec.data.planted_signal import load_planted

    data, run = args.demo / "data", args.demo / "run"
    p = probe_run(data, run, "val+test")
    k = len(load_planted(data).intent_phrases)
    n_genres = len(load_planted(data).genre_names)
    lines = header("Do zero-shot users' tokens carry their planted intents? (linear probe on the demo run)",
                   f"beatrec demo --out {args.demo} && python benchmarks/intent_probe.py --demo {args.demo}")
    lines += [f"- users: probe fitted on the text training users, scored on {len(p.user_tokens)} validation + test "
              f"users (graph only); items: fitted on half, scored on {len(p.item_tokens)}; chance top-3 precision "
              f"{3 / k:.2f}, chance genre accuracy {1 / n_genres:.2f}", "",
              "| representation | intent top-3 precision | genre accuracy |", "|---|---|---|",
              f"| user tokens (one-hot ids) | {p.user_tokens.mean():.2f} | {p.user_genre[0]:.2f} |",
              f"| user codeword vectors (what the projector reads) | {p.user_codewords.mean():.2f} | – |",
              f"| user LightGCN vectors | {p.user_vectors.mean():.2f} | {p.user_genre[1]:.2f} |",
              f"| oracle: intents of the user's items, counted | {p.oracle.mean():.2f} | – |",
              f"| oracle graph probe: spectral embedding of the training graph | {p.spectral.mean():.2f} | – |",
              f"| item tokens | {p.item_tokens.mean():.2f} | {p.item_genre[0]:.2f} |",
              f"| item LightGCN vectors | {p.item_vectors.mean():.2f} | {p.item_genre[1]:.2f} |"]
    return lines


def sweep_report(args: argparse.Namespace) -> list[str]:
    from beatrec.config import load_yaml
    from beatrec.data.planted_signal import load_planted
    from beatrec.data.synthetic import write_dataset
    from beatrec.demo import demo_data_config
    from beatrec.stats import format_p, paired_test
    from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

    data = write_dataset(demo_data_config(0), args.work / "data")
    got: dict[str, list[Probe]] = {}
    secs: dict[str, list[float]] = {}
    for name, sets in VARIANTS:
        for seed in args.seeds:
            run = args.work / f"{name.split(' (')[0].replace(' ', '_').replace('+', 'and')}_seed{seed}"
            cfg = load_yaml(TokenizeConfig, None, [*SWEEP_BASE, *sets, f"train.seed={seed}", "train.threads=2"])
            t0 = time.perf_counter()
            run_tokenize(data, run, cfg, progress=False)
            secs.setdefault(name, []).append(time.perf_counter() - t0)
            got.setdefault(name, []).append(probe_run(data, run, "val"))
            print(f"{name} seed {seed}: user tokens {got[name][-1].user_tokens.mean():.3f} "
                  f"item tokens {got[name][-1].item_tokens.mean():.3f} [{secs[name][-1]:.0f}s]", flush=True)
    base = VARIANTS[0][0]
    seeds = " ".join(map(str, args.seeds))
    lines = header("Stage-1 variants on the planted intents (selection runs: validation users only)",
                   f"python benchmarks/intent_probe.py --sweep --seeds {seeds}")
    lines += [f"- dataset: `beatrec demo-data` (seed 0); stage 1: the demo's earlier settings ({', '.join(SWEEP_BASE)}) "
              f"plus each variant's `--set` lines, training seeds {seeds}; splitter phrases",
              f"- probe fitted on the text training users, scored on the {len(got[base][0].user_tokens)} validation "
              "users (graph only); items fitted on half, scored on the other half; chance top-3 precision "
              f"{3 / len(load_planted(data).intent_phrases):.2f}; oracle (intents of the user's training items, counted) "
              f"{got[base][0].oracle.mean():.2f}; oracle graph probe (spectral embedding of the training graph, "
              f"fitted on every unscored user) {got[base][0].spectral.mean():.2f}",
              "- user tokens: the probe on one-hot token ids; user codewords: on the concatenated codeword vectors "
              "(what stage 2's projector reads); user vectors: on the continuous LightGCN vectors",
              "- mean ± std over seeds; Δ = paired difference against the first row (per-user precision averaged over "
              "seeds), 95% bootstrap interval, permutation p", "",
              "| variant | `--set` | user tokens | Δ user tokens [95% CI], p | user codewords | user vectors | "
              "item tokens | item vectors | val HR@20 | stage-1 s |", "|---|---|---|---|---|---|---|---|---|---|"]

    def ms(xs: list[float]) -> str:
        return f"{np.mean(xs):.3f} ± {np.std(xs):.3f}"

    base_u = np.mean([p.user_tokens for p in got[base]], axis=0)
    for name, sets in VARIANTS:
        ps = got[name]
        u = np.mean([p.user_tokens for p in ps], axis=0)
        if name == base:
            delta = "–"
        else:
            t = paired_test(base_u, u)
            delta = f"{t.diff:+.3f} [{t.low:+.3f}, {t.high:+.3f}], p {format_p(t.p_value)}"
        lines.append(f"| {name} | {' '.join(sets) or '–'} | {ms([p.user_tokens.mean() for p in ps])} | {delta} | "
                     f"{ms([p.user_codewords.mean() for p in ps])} | {ms([p.user_vectors.mean() for p in ps])} | "
                     f"{ms([p.item_tokens.mean() for p in ps])} | "
                     f"{ms([p.item_vectors.mean() for p in ps])} | {ms([p.val_hr for p in ps])} | "
                     f"{np.mean(secs[name]):.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=ROOT / "runs" / "demo", help="a `beatrec demo --out` directory")
    ap.add_argument("--sweep", action="store_true", help="train and probe every stage-1 variant (validation users)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of --sweep")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "intent_probe", help="--sweep's run directories")
    ap.add_argument("--out", type=Path, default=None,
                    help="report (default benchmarks/intent_probe.md, --sweep: benchmarks/intent_probe_sweep.md)")
    args = ap.parse_args(argv)
    out = args.out or ROOT / "benchmarks" / ("intent_probe_sweep.md" if args.sweep else "intent_probe.md")
    lines = sweep_report(args) if args.sweep else demo_report(args)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
