"""Do zero-shot users' behavior tokens carry their planted intents? A linear probe on the demo's run.

    beatrec demo --out runs/demo && python benchmarks/intent_probe.py --demo runs/demo

On the synthetic dataset (planted genres and intents), a one-vs-rest logistic probe is fitted on the *text* training
users' tokens (one-hot per slot) or LightGCN vectors and scored on the validation and test users (graph-only, like
every zero-shot user): top-3 precision of the predicted intents (chance = 3 / n_intents) and genre accuracy. The
oracle counts the planted intents of each user's training-graph items: what the graph itself holds. Items: the
same probe, fitted on half of the items and scored on the other half. Writes ``benchmarks/intent_probe.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=ROOT / "runs" / "demo", help="a `beatrec demo --out` directory")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "intent_probe.md")
    args = ap.parse_args(argv)
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from beatrec.data.planted_signal import load_planted
    from beatrec.tokenizer.embeddings import load_graph_embeddings

    run, data = args.demo / "run", args.demo / "data"
    pl = load_planted(data)
    sp = json.loads((run / "split.json").read_text())
    k = len(pl.intent_phrases)

    def onehot(path: Path) -> np.ndarray:
        t = pd.read_parquet(path)
        cols = [c for c in t.columns if c != "id"]
        return np.hstack([np.eye(int(t[c].max()) + 1)[t[c].to_numpy()] for c in cols])

    def multihot(idx: np.ndarray) -> np.ndarray:
        y = np.zeros((len(idx), k))
        np.put_along_axis(y, idx, 1, axis=1)
        return y

    def probe(x: np.ndarray, y: np.ndarray, genre: np.ndarray, fit: np.ndarray, score: np.ndarray) -> tuple[float, float]:
        clf = OneVsRestClassifier(LogisticRegression(max_iter=2000)).fit(x[fit], y[fit])
        top = np.argsort(-clf.predict_proba(x[score]), axis=1)[:, :3]
        acc = LogisticRegression(max_iter=2000).fit(x[fit], genre[fit]).score(x[score], genre[score])
        return float(np.take_along_axis(y[score], top, 1).mean()), float(acc)

    emb = load_graph_embeddings(run)
    yu, yi = multihot(pl.user_intents), multihot(pl.item_intents)
    fit, score = np.array(sp["train_users"]), np.array(sp["val_users"] + sp["test_users"])
    rows = []
    for name, x in (("user tokens", onehot(run / "user_tokens.parquet")), ("user LightGCN vectors", emb.user.numpy())):
        rows.append((name, *probe(x, yu, pl.user_genre, fit, score)))
    inter = pd.read_csv(data / "interactions.csv")
    tr = inter[inter["split"] == "train"]
    counts = np.zeros_like(yu)
    np.add.at(counts, tr["user"].to_numpy(), yi[tr["item"].to_numpy()])
    top = np.argsort(-counts[score], axis=1)[:, :3]
    rows.append(("oracle: intents of the user's items, counted", float(np.take_along_axis(yu[score], top, 1).mean()),
                 float("nan")))
    perm = np.random.default_rng(0).permutation(len(yi))
    half = len(yi) // 2
    for name, x in (("item tokens", onehot(run / "item_tokens.parquet")), ("item LightGCN vectors", emb.item.numpy())):
        rows.append((name, *probe(x, yi, pl.item_genre, perm[:half], perm[half:])))
    lines = ["# Do zero-shot users' tokens carry their planted intents? (linear probe on the demo run)", "",
             f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; machine: {platform.platform()}",
             f"- command: `beatrec demo --out {args.demo} && python benchmarks/intent_probe.py --demo {args.demo}`",
             f"- users: probe fitted on {len(fit)} text training users, scored on {len(score)} validation + test users "
             f"(graph only); items: fitted on {half}, scored on {len(yi) - half}; chance top-3 precision {3 / k:.2f}, "
             f"chance genre accuracy {1 / len(pl.genre_names):.2f}", "",
             "| representation | intent top-3 precision | genre accuracy |", "|---|---|---|"]
    lines += [f"| {n} | {p:.2f} | {'–' if np.isnan(g) else f'{g:.2f}'} |" for n, p, g in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
