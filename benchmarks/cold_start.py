"""Cold start on a real graph: users removed from the trained graph and folded back in, without retraining.

    python benchmarks/cold_start.py --run runs/explanations/amazon --data ../shared/data/xrec/amazon

Nothing is retrained: the stage-1 model and the stage-2 projector of ``--run`` are used as they are.

1. **Ranking.** A seeded random ``--frac`` (5%) of all users is removed from the graph (their edges dropped
   from Â, so items' propagated vectors no longer see them; they are never neighbours). Each is folded back in
   from its training items (:mod:`beatrec.tokenizer.foldin`) and quantised; HR@20 / NDCG@20 over all items on
   its test edges (training and validation edges excluded) with the folded tokens, against the *same users*
   with their trained (in-graph) tokens, beside popularity. Token agreement with the trained tokens is
   reported against chance (agreement with other removed users' tokens).
2. **Explanations.** The users of a seeded subset of ``--max-pairs`` zero-shot test pairs are removed the same
   way and folded back in; the stage-2 model explains each pair once with the folded tokens and once with the
   in-graph tokens, both scored by the same harness (BLEU, ROUGE-L, BERTScore-MiniLM, specificity, ...).

Writes ``benchmarks/cold_start.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "explanations" / "amazon",
                    help="a run with stage 1 and stage 2 (align/)")
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "xrec" / "amazon")
    ap.add_argument("--frac", type=float, default=0.05, help="fraction of users removed for the ranking test")
    ap.add_argument("--max-pairs", type=int, default=100, help="zero-shot test pairs explained (seeded subset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--few", type=int, default=2, help="interactions per user in the few-interactions test")
    ap.add_argument("--no-lm-score", action="store_true")
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "cold_start.md")
    ap.add_argument("--threads", type=int, default=0)
    return ap.parse_args(argv)


def ranking_block(args: argparse.Namespace, log) -> tuple[list[str], dict]:  # noqa: ANN001
    import torch

    from beatrec.data.dataset import load_dataset
    from beatrec.metrics.ranking import evaluate_scores, interaction_matrix
    from beatrec.tokenizer.foldin import load_foldin

    t0 = time.perf_counter()
    ds = load_dataset(args.data)
    inter = ds.interactions
    mats = {s: interaction_matrix(p["user"].to_numpy(), p["item"].to_numpy(), ds.n_users, ds.n_items)
            for s, p in ((s, inter[inter["split"] == s]) for s in ("train", "val", "test"))}
    rng = np.random.default_rng(args.seed)
    has_train = np.flatnonzero(np.diff(mats["train"].indptr) > 0)
    gone = np.sort(rng.choice(has_train, int(round(args.frac * len(has_train))), replace=False))
    fi = load_foldin(args.run, args.data, exclude={"user": gone})
    t_load = time.perf_counter() - t0
    t = time.perf_counter()
    results = [fi.fold("user", mats["train"][u].indices) for u in gone]
    t_fold = time.perf_counter() - t
    folded = torch.tensor([r.tokens for r in results])  # (R, 1+N)
    trained = fi.tokens["user"][torch.from_numpy(gone)]  # (R, 1+N): the run's in-graph tokens
    us, its = fi.sides["user"], fi.sides["item"]
    with torch.no_grad():
        item_q = its.decode(fi.tokens["item"]).flatten(1)  # (I, (1+N)·C) trained item tokens, unchanged
        user_in = us.decode(fi.tokens["user"]).flatten(1)  # (U, ...)
        user_fold = user_in.clone()
        user_fold[torch.from_numpy(gone)] = us.decode(folded).flatten(1)
    test = inter[(inter["split"] == "test") & inter["user"].isin(gone)]
    held = interaction_matrix(test["user"].to_numpy(), test["item"].to_numpy(), ds.n_users, ds.n_items)
    excl = mats["train"] + mats["val"]
    pop = torch.from_numpy(np.asarray(mats["train"].sum(0)).ravel().astype(np.float32))
    m_in = evaluate_scores(user_in, item_q, excl, held, args.k)
    m_fold = evaluate_scores(user_fold, item_q, excl, held, args.k)
    m_pop = evaluate_scores(None, None, excl, held, args.k, item_bias=pop)
    f, tr = folded.numpy(), trained.numpy()
    agree = (f == tr).mean(0)
    chance = np.mean([(f == np.roll(tr, s, axis=0)).mean(0) for s in rng.integers(1, len(gone), 20)], axis=0)
    n_int = np.diff(mats["train"].indptr)[gone]
    borrowed = sum(r.alpha > 0 for r in results)
    log(f"ranking: {len(gone)} users removed, HR@{args.k} in-graph {m_in.hr:.4f}, folded {m_fold.hr:.4f}")
    # Few interactions: each removed user folded in from only --few of its training items, with the neighbour
    # borrowing (default) and without it (min_interactions=0). The other training items stay excluded at test.
    few = {}
    for label, fold in (("with borrowing (default)", fi), ("without borrowing", _without_borrowing(fi))):
        vecs = user_in.clone()
        pick = np.random.default_rng(args.seed + 1)
        codes = [fold.fold("user", pick.choice(mats["train"][u].indices, min(args.few, mats["train"][u].nnz),
                                               replace=False)).tokens for u in gone]
        with torch.no_grad():
            vecs[torch.from_numpy(gone)] = us.decode(torch.tensor(codes)).flatten(1)
        few[label] = evaluate_scores(vecs, item_q, excl, held, args.k)
    k = args.k
    lines = [
        "## 1. Ranking: a random 5% of users removed and folded back in",
        "",
        f"- users removed: {len(gone)} of {len(has_train)} with training edges (seed {args.seed}); "
        f"{m_in.n_users} of them have test edges and are scored; training interactions per removed user: "
        f"median {int(np.median(n_int))}, min {int(n_int.min())}; {borrowed} borrowed from neighbours "
        f"(fewer than {fi.cfg.min_interactions} interactions)",
        f"- fold-in time: {t_fold:.2f} s for {len(gone)} users ({1000 * t_fold / len(gone):.1f} ms per user; "
        f"loading and preparing the graph {t_load:.1f} s)",
        "",
        f"| tokens of the removed users | HR@{k} | NDCG@{k} |",
        "|---|---|---|",
        f"| trained, in the graph (reference) | {m_in.hr:.4f} | {m_in.ndcg:.4f} |",
        f"| folded in, graph without them (no retraining) | {m_fold.hr:.4f} | {m_fold.ndcg:.4f} |",
        f"| popularity | {m_pop.hr:.4f} | {m_pop.ndcg:.4f} |",
        "",
        f"Folded/in-graph HR@{k}: {m_fold.hr / m_in.hr:.2f}. Item tokens are the trained ones in every row.",
        "",
        f"Few interactions: the same users folded in from only {args.few} of their training items (seeded), with "
        "and without borrowing from neighbours (all their training items stay excluded from the ranking):",
        "",
        f"| folded in from {args.few} items | HR@{k} | NDCG@{k} |",
        "|---|---|---|",
        *(f"| {label} | {m.hr:.4f} | {m.ndcg:.4f} |" for label, m in few.items()),
        "",
        "| token position | agreement with trained tokens | chance |",
        "|---|---|---|",
        *(f"| {'macro' if p == 0 else f'micro_{p}'} | {agree[p]:.3f} | {chance[p]:.3f} |" for p in range(len(agree))),
        "",
    ]
    return lines, {"hr_in": m_in.hr, "hr_fold": m_fold.hr, "n": len(gone)}


def _without_borrowing(fi):  # noqa: ANN001, ANN202
    """The same fold-in with borrowing switched off (a shallow copy with min_interactions=0)."""
    import copy
    import dataclasses

    plain = copy.copy(fi)
    plain.cfg = dataclasses.replace(fi.cfg, min_interactions=0)
    return plain


def explanation_block(args: argparse.Namespace, log) -> list[str]:  # noqa: ANN001
    import pandas as pd

    from beatrec.align.explain import check_pairs, explain, load_aligned
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit
    from beatrec.evaluate import evaluate_predictions, evaluation_pairs
    from beatrec.metrics.explanations import ScoreConfig, Scorer, markdown_table
    from beatrec.tokenizer.foldin import load_foldin

    ds = load_dataset(args.data)
    split = ZeroShotSplit.load(args.run / "split.json")
    pairs = evaluation_pairs(ds, split, args.max_pairs, seed=args.seed)
    users = np.unique(pairs["uid"].to_numpy())
    tr = ds.interactions[ds.interactions["split"] == "train"]
    fi = load_foldin(args.run, args.data, exclude={"user": users})
    a = load_aligned(args.run)
    new_id = {}
    t = time.perf_counter()
    for u in users:
        items = tr.loc[tr["user"] == u, "item"].to_numpy()
        new_id[int(u)] = a.model.vocab.add_entity("user", fi.fold("user", items).tokens)
    t_fold = time.perf_counter() - t
    rows = check_pairs(a, pairs[["uid", "iid", "title"]].to_dict("records"), "test pairs")
    t = time.perf_counter()
    in_graph = explain(a, rows)
    folded = explain(a, [{**r, "uid": new_id[r["uid"]]} for r in rows])
    t_gen = time.perf_counter() - t
    log(f"explanations: {len(rows)} pairs x 2 generated in {t_gen:.0f} s")
    scorer = Scorer(ScoreConfig(lm_score=not args.no_lm_score))
    reports = []
    for name, texts in (("trained tokens, in the graph (reference)", in_graph),
                        ("folded-in tokens, graph without these users", folded)):
        preds = pd.DataFrame({"uid": pairs["uid"], "iid": pairs["iid"], "prediction": texts})
        reports.append(evaluate_predictions(ds, split, preds, scorer, pairs, name))
    same = float(np.mean([x == y for x, y in zip(in_graph, folded, strict=True)]))
    rows_md = [(r.name, r.scores) for r in reports] + [("random training explanation (floor)", reports[0].floor)]
    return [
        "## 2. Explanations: zero-shot test users removed and folded back in",
        "",
        f"- {len(pairs)} zero-shot test pairs (seeded subset of {len(ds.texts[ds.texts['uid'].isin(split.test_users)])}), "
        f"{len(users)} users removed from the graph together and folded back in ({t_fold:.1f} s); the stage-2 "
        f"model of `{args.run}/align` unchanged; generation {t_gen:.0f} s for both rows",
        f"- identical explanation text for {same:.0%} of the pairs",
        "",
        markdown_table(rows_md),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "interactions.csv").is_file():
        raise SystemExit(f"dataset absent: {args.data} (this benchmark needs ../shared/data/xrec/amazon)")
    if not (args.run / "align" / "weights.safetensors").is_file() and not (args.run / "align").is_dir():
        raise SystemExit(f"{args.run}: needs stage 1 and stage 2 (run benchmarks/explanations.py or "
                         "`beatrec tokenize` + `beatrec align` first)")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + " ".join(["benchmarks/cold_start.py", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    log = lambda m: print(m, flush=True)  # noqa: E731
    rank_lines, _ = ranking_block(args, log)
    expl_lines = explanation_block(args, log)
    head = [
        "# Cold start: users folded into a trained graph without retraining",
        "",
        f"- date: {started}; total wall time {time.perf_counter() - t0:.0f} s",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- command: `{command}`",
        f"- run: `{args.run}` (stage 1 + stage 2), data: `{args.data}`; fold-in defaults (`FoldInConfig`): borrow "
        "from 5 collaborative + 5 semantic neighbours below 5 interactions, α = 2 / (2 + n)",
        "",
    ]
    args.report.write_text("\n".join(head + rank_lines + expl_lines) + "\n")
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
