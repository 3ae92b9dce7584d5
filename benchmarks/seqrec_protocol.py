"""The protocol experiment of issue 24: how much of a model's Beauty score comes from items stored in ASIN order?

    python benchmarks/seqrec_protocol.py --seeds 0 1 2
    python benchmarks/seqrec_protocol.py --orders asin --seeds 0      # one chain; run chains as parallel processes
    python benchmarks/seqrec_protocol.py --orders shipped --models SASRec "EAGER (official losses)"  # part 3
    python benchmarks/seqrec_protocol.py --report-only                # the report from the recorded runs

Two copies of one dataset (default Beauty), the same users and items: the file **as shipped**, and each user's
items **re-sorted by ASIN** (stable, from ``item_text.tsv``; the order of the authors' preprocessing of EAGER,
which sets every timestamp to 0 and keeps the 5-core file's ASIN order). The re-sorted copy is written under
``--runs`` (derived data, never committed). On both: the next-ASIN heuristic and popularity (no training), then
per seed SASRec and the generative models, each EAGER on the behavior codes of the SASRec of its own order and
seed, every model with the same config (budget) on both orders.

Every finished run is recorded in ``benchmarks/seqrec_protocol.json`` (committed): its config, test metrics and
each test user's rank of the held-out item (one character per user), so the report and its paired tests are
rebuilt from the records alone and the seeds accumulate across machines and sessions whose ``runs/`` folders are
gone. A recorded row is not trained again; an EAGER record counts while the SASRec record it was trained on is
the recorded one.

The report (``benchmarks/seqrec_protocol.md``) gives per model and order the test metrics, mean ± std over
seeds, and paired per-user tests on the same users (per-user metrics averaged over seeds first):
ASIN - shipped for each model, and the difference in differences
(EAGER_asin - EAGER_shipped) - (SASRec_asin - SASRec_shipped): if EAGER gains far more than SASRec from the ASIN
order, its published Beauty gap is explained by the protocol. Each order scores its own held-out items (the last
of the user's sequence in that order), so a per-user pair is the same user under the two protocols.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from seqrec import same_run  # noqa: E402 - the benchmark's rule for "this finished run is this row"

ORDERS = ("shipped", "asin")
ORDER_LABELS = {"shipped": "as shipped", "asin": "re-sorted by ASIN"}
# (row label, slug, --model, extra --set lines applied after the common ones); EAGER rows read the SASRec of the
# same order and seed as their behavior encoder. The official-settings row keeps the preset's early stopping on
# every validation user with patience 10 whatever the common budget says; the official-losses row is the same
# preset (losses, negatives, sibling softmax, schedule) under the common budget's early stopping, so it differs
# from the EAGER row only in what the authors' code sets (and fits a CPU session: validating 22k users with beam
# search every epoch does not).
MODELS = (
    ("SASRec", "sasrec", "sasrec", ()),
    ("EAGER", "eager", "eager", ()),
    ("EAGER (official losses)", "eager-official-losses", "eager-official", ()),
    ("EAGER (official settings)", "eager-official", "eager-official", ("train.val_users=0", "train.patience=10")),
)
METRIC = "ndcg@10"
RESULTS = ROOT / "benchmarks" / "seqrec_protocol.json"
MISS = "-"  # rank string: "0".."9" = the held-out item at rank 1..10, MISS = not in the top 10


class UserScores(NamedTuple):
    """Per-user test metrics of one system on one order, aligned to the dataset's users."""

    ndcg10: np.ndarray  # (U,)
    recall10: np.ndarray  # (U,)


def write_asin_order(src: Path, dst: Path) -> Path:
    """``dst/<name>/<name>.txt``: the users of ``src`` with their items stably re-sorted by ASIN; the item files are
    linked, not copied. Returns the dataset directory (rewritten only when missing)."""
    from beatrec.seqrec.audit import key_ranks
    from beatrec.seqrec.data import load_seq_dataset

    out = dst / src.name
    txt = out / f"{src.name}.txt"
    if txt.is_file():
        return out
    ds = load_seq_dataset(src)
    _, rank = key_ranks(ds, "asin")
    out.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(map(str, [u, *ds.item_raw_ids[s[np.argsort(rank[s], kind="stable")]].tolist()]))
             for u, s in zip(ds.user_raw_ids.tolist(), ds.sequences, strict=True)]
    for f in src.iterdir():
        if f.is_file() and f.name != txt.name:
            try:
                (out / f.name).symlink_to(f.resolve())
            except FileExistsError:  # linked before, or by a process writing the same copy at the same time
                pass
    tmp = txt.with_name(f"{txt.name}.{os.getpid()}.tmp")  # parallel chains may write the copy at once
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(txt)  # atomic: a reader sees no file or the whole file
    return out


def scores_from_ranks(ranks: np.ndarray) -> UserScores:
    """(U,) 1-based ranks of the held-out items (0 = not in the top 10) -> per-user NDCG@10 / Recall@10."""
    from beatrec.seqrec.compare import per_user_metrics

    m = per_user_metrics(ranks)
    return UserScores(m["ndcg@10"], m["recall@10"])


def scores_from_topk(top: np.ndarray, targets: np.ndarray) -> UserScores:
    """(U, k) ranked ids, (U,) held-out ids (same id space) -> per-user NDCG@10 / Recall@10."""
    from beatrec.seqrec.compare import target_ranks

    return scores_from_ranks(target_ranks(top[:, :10], targets))


def encode_ranks(ranks: np.ndarray) -> str:
    """(U,) ranks in 0..10 (0 = missed) -> one character per user ("0".."9" = rank 1..10, MISS = missed)."""
    ranks = np.asarray(ranks)
    if ranks.size and (ranks.min() < 0 or ranks.max() > 10):
        raise ValueError(f"ranks must lie in 0..10, got {ranks.min()}..{ranks.max()}")
    return "".join(MISS if r == 0 else str(r - 1) for r in ranks.tolist())


def decode_ranks(text: str) -> np.ndarray:
    """The inverse of :func:`encode_ranks`: (U,) int64 ranks, 0 = missed."""
    bad = set(text) - set("0123456789" + MISS)
    if bad:
        raise ValueError(f"a rank string holds {sorted(bad)}: only 0-9 and {MISS!r} are allowed")
    return np.asarray([0 if c == MISS else int(c) + 1 for c in text], dtype=np.int64)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_ranks(run: Path, ds) -> np.ndarray:  # noqa: ANN001 - a SeqDataset
    """A finished run's (U,) test ranks of the held-out items (0 = missed), on ``ds``'s users, from its rankings."""
    from beatrec.seqrec.compare import rankings_file, read_rankings, target_ranks

    users, top = read_rankings(rankings_file(run))
    row = {u: i for i, u in enumerate(users.tolist())}
    missing = [u for u in ds.user_raw_ids.tolist() if u not in row]
    if missing:
        raise SystemExit(f"{run}: {len(missing)} test users have no ranking (e.g. user {missing[0]})")
    top = top[[row[u] for u in ds.user_raw_ids.tolist()], :10]
    targets = ds.item_raw_ids[np.asarray([s[-1] for s in ds.sequences])]
    return target_ranks(top, targets)


def heuristic_scores(ds) -> dict[str, UserScores]:  # noqa: ANN001
    """The no-training rows: next-ASIN (the 10 items whose ASIN follows the last history item) and popularity."""
    from beatrec.seqrec.audit import key_ranks, next_key_topk
    from beatrec.seqrec.evaluate import popularity_topk

    _, rank = key_ranks(ds, "asin")
    targets = np.asarray([s[-1] for s in ds.sequences], dtype=np.int64)
    pop = np.bincount(np.concatenate([s[:-2] for s in ds.sequences]), minlength=ds.n_items).astype(np.float64)
    return {"next-ASIN heuristic": scores_from_topk(next_key_topk(ds.sequences, rank), targets),
            "popularity": scores_from_topk(popularity_topk(pop, ds.n_users), targets)}


def chain(data: Path, runs: Path, order: str, seed: int, models: list[str], overrides: list[str],
          report: callable, results: Path) -> None:  # noqa: ANN001
    """Train (or read back) the models of one (order, seed), SASRec first. A recorded row is not trained again;
    the SASRec run is, when an EAGER row still to train needs it as behavior encoder and its folder is gone."""
    from beatrec.config import save_yaml
    from beatrec.seqrec.data import load_seq_dataset
    from beatrec.seqrec.train import train_run

    ds = load_seq_dataset(data)
    base = runs / data.name / order / f"seed{seed}"
    sasrec = base / "sasrec"
    for label, slug, model, extra in MODELS:
        if label not in models:
            continue
        row = (label, slug, model, extra)
        run = base / slug
        recs = read_records(results)
        if recorded(recs, ds, order, row, seed, overrides) is not None:
            needed = model == "sasrec" and any(
                r[0] in models and recorded(recs, ds, order, r, seed, overrides) is None for r in MODELS[1:])
            if not needed:
                print(f"[protocol] {order} seed {seed} / {label}: recorded in {results}", flush=True)
                continue
        if model != "sasrec" and not (sasrec / "metrics.json").is_file():
            print(f"[protocol] {order} seed {seed} / {label}: needs the SASRec run {sasrec}; skipped", flush=True)
            continue
        cfg = row_config(model, extra, overrides, seed, sasrec)
        if is_finished(run, cfg, sasrec):
            print(f"[protocol] {order} seed {seed} / {label}: finished run read from {run}", flush=True)
            continue
        run.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, run / "requested.yaml")  # the config asked for (config.yaml holds the resolved one)
        t = time.perf_counter()
        res = train_run(data, run, cfg, progress=True)
        print(f"[protocol] {order} seed {seed} / {label}: {json.dumps(res.metrics['test'])} "
              f"({time.perf_counter() - t:.0f}s)", flush=True)
        report()


def row_config(model: str, extra: tuple[str, ...], overrides: list[str], seed: int, sasrec: Path):  # noqa: ANN201
    """The config of one row's run: the common overrides, the seed, the row's own lines; EAGER rows read ``sasrec``."""
    from beatrec.seqrec.config import load_seqrec_config

    sets = [*overrides, f"train.seed={seed}", *extra]
    return load_seqrec_config(model, None, sets if model == "sasrec" else [*sets, f"behavior_run={sasrec}"])


def is_finished(run: Path, cfg, sasrec: Path) -> bool:  # noqa: ANN001 - a SeqRecConfig
    """``run`` finished with this config (and, for an EAGER row, after its SASRec run finished: not a stale run of
    an earlier behavior encoder)."""
    from beatrec.seqrec.config import read_run_config

    done, requested = run / "metrics.json", run / "requested.yaml"
    if not (done.is_file() and requested.is_file() and same_run(read_run_config(requested), cfg)):
        return False
    return cfg.model == "sasrec" or done.stat().st_mtime >= (sasrec / "metrics.json").stat().st_mtime


def finished(runs: Path, name: str, order: str, row: tuple, seeds: list[int], overrides: list[str]
             ) -> dict[int, Path]:
    """{seed: run dir} of the finished runs of one row (an entry of MODELS) and order, with this budget."""
    _, slug, model, extra = row
    found = {}
    for s in seeds:
        base = runs / name / order / f"seed{s}"
        run, sasrec = base / slug, base / "sasrec"
        if model != "sasrec" and not (sasrec / "metrics.json").is_file():
            continue
        if is_finished(run, row_config(model, extra, overrides, s, sasrec), sasrec):
            found[s] = run
    return found



def recorded_experiment(cfg) -> dict[str, Any]:  # noqa: ANN001 - a SeqRecConfig
    """A row config's experiment as records hold it: JSON types, the behavior run as ``seed<k>/sasrec`` (the rule
    of :func:`seqrec.same_run`: the same run wherever its runs folder sits)."""
    from dataclasses import replace

    from beatrec.seqrec.config import experiment

    norm = replace(cfg, behavior_run="/".join(Path(cfg.behavior_run).parts[-2:]))
    return json.loads(json.dumps(experiment(norm), sort_keys=True))


def users_digest(ds) -> str:  # noqa: ANN001 - a SeqDataset
    """The dataset's users in order: a record's rank string is aligned to them."""
    return digest(" ".join(map(str, ds.user_raw_ids.tolist())))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of ``path`` ([] when the file does not exist yet)."""
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())["records"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a records file ({e!r}); restore it from git or move it away") from e


def record_key(r: dict[str, Any]) -> tuple:
    return (r["dataset"], r["users"], r["order"], r["seed"], r["slug"],
            json.dumps(r["experiment"], sort_keys=True))


def update_records(path: Path, new: list[dict[str, Any]]) -> None:
    """Insert ``new`` into the records file. A record of the same run (dataset, users, order, seed, row,
    experiment) is replaced only by a newer one (``finished``): a leftover older run folder never overwrites a
    newer record; a replaced model is reported. Written atomically under a lock, as parallel chains update it."""
    if not new:
        return
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        recs = {record_key(r): r for r in read_records(path)}
        before = dict(recs)
        for r in new:
            old = recs.get(record_key(r))
            if old is not None and old["finished"] > r["finished"]:
                continue
            if old is not None and old["model"] != r["model"]:
                print(f"[protocol] {r['order']} seed {r['seed']} / {r['row']}: the recorded run ({old['finished']}) "
                      f"is replaced by a newer run with other weights ({r['finished']})"
                      + ("; EAGER records trained on the old SASRec no longer count" if r["slug"] == "sasrec"
                         else ""), flush=True)
            recs[record_key(r)] = r
        if recs == before:
            return
        out = sorted(recs.values(), key=lambda r: (r["dataset"], r["order"], r["seed"], r["slug"], r["finished"]))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"about": "benchmarks/seqrec_protocol.py: one record per finished run; ranks: "
                                                "each test user's rank of the held-out item (0-9 = rank 1-10, "
                                                f"{MISS} = missed), users in the dataset's order; model: digest of "
                                                "its weights; behavior: the model digest of the SASRec an EAGER "
                                                "row read", "records": out}, indent=1) + "\n")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)


def make_record(run: Path, ds, order: str, seed: int, row: tuple, cfg, behavior: str | None  # noqa: ANN001
                ) -> dict[str, Any]:
    """The record of a finished run (``behavior``: the model digest of the SASRec record an EAGER row read)."""
    m = json.loads((run / "metrics.json").read_text())
    ranks = encode_ranks(run_ranks(run, ds))
    done = (run / "metrics.json").stat().st_mtime
    return {"dataset": ds.name, "order": order, "seed": seed, "row": row[0], "slug": row[1],
            "experiment": recorded_experiment(cfg),
            "finished": datetime.datetime.fromtimestamp(done, datetime.UTC).isoformat(timespec="seconds"),
            "model": hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()[:16],
            "test": m["test"], "epochs_run": m["training"]["epochs_run"], "best_epoch": m["training"]["best_epoch"],
            "training_s": m["timings"]["training_s"], "machine": m.get("machine"),
            "users": users_digest(ds), "behavior": behavior, "ranks": ranks}


def export_runs(runs: Path, dss: dict, overrides: list[str], results: Path) -> None:  # noqa: ANN001
    """Record every finished run of this budget under ``runs`` (every seed folder on disk), SASRec first; a run
    that cannot be read is skipped with a warning."""
    from beatrec.errors import BeatrecError

    new = []
    for order, ds in dss.items():
        for folder in sorted((runs / ds.name / order).glob("seed*")):
            if not folder.name[4:].isdigit():
                continue
            seed = int(folder.name[4:])
            sasrec_model = None
            for row in MODELS:
                got = finished(runs, ds.name, order, row, [seed], overrides)
                if seed not in got or (row[2] != "sasrec" and sasrec_model is None):
                    continue
                cfg = row_config(row[2], row[3], overrides, seed, folder / "sasrec")
                try:
                    rec = make_record(got[seed], ds, order, seed, row, cfg,
                                      None if row[2] == "sasrec" else sasrec_model)
                except (BeatrecError, OSError, KeyError, ValueError) as e:
                    print(f"[protocol] {got[seed]}: not recorded ({e})", flush=True)
                    continue
                if row[2] == "sasrec":
                    sasrec_model = rec["model"]
                new.append(rec)
    update_records(results, new)


def recorded(records: list[dict[str, Any]], ds, order: str, row: tuple, seed: int,  # noqa: ANN001
             overrides: list[str]) -> dict[str, Any] | None:
    """The record of one row, order and seed with this budget on ``ds``'s users, or None. An EAGER record counts
    only while the SASRec record of its order and seed is the one it was trained on."""
    _, slug, model, extra = row
    exp = recorded_experiment(row_config(model, extra, overrides, seed, Path(f"seed{seed}") / "sasrec"))
    users = users_digest(ds)
    hit = [r for r in records if (r["dataset"], r["order"], r["seed"], r["slug"]) == (ds.name, order, seed, slug)
           and r["experiment"] == exp and r["users"] == users]
    if not hit:
        return None
    rec = hit[-1]
    if model != "sasrec":
        base = recorded(records, ds, order, MODELS[0], seed, overrides)
        if base is None or rec["behavior"] != base["model"]:
            return None
    return rec


def fmt_ms(values: list[float] | np.ndarray, signed: bool = False) -> str:
    """mean ± std over seeds (sample std; one seed: the value alone); ``signed`` for differences."""
    sign = "+" if signed else ""
    if len(values) == 1:
        return f"{values[0]:{sign}.4f}"
    return f"{np.mean(values):{sign}.4f} ± {np.std(values, ddof=1):.4f}"


SEED_SPREAD = ("column *per seed* of the paired tables: the same N@10 difference computed within each seed, "
               "mean ± std over the seeds (with one seed, its value): a difference is beyond seed-to-seed spread "
               "when the paired interval and the per-seed mean ± std both exclude 0.")


def write_report(path: Path, command: str, data: dict[str, Path], runs: Path, seeds: list[int], remarks: list[str],
                 n_resamples: int, asked: list[str], overrides: list[str], results: Path) -> None:
    """The markdown report from the records of ``results``, after recording every finished run under ``runs``
    (asked rows not run yet are listed as such)."""
    import torch

    from beatrec.seqrec.compare import format_p
    from beatrec.seqrec.data import load_seq_dataset
    from beatrec.stats import paired_test

    dss = {o: load_seq_dataset(d) for o, d in data.items()}
    name = next(iter(dss.values())).name
    users = {o: ds.user_raw_ids.tolist() for o, ds in dss.items()}
    if len({tuple(u) for u in users.values()}) != 1:
        raise SystemExit("the two orders hold different users: the copies do not match")
    export_runs(runs, dss, overrides, results)
    records = read_records(results)
    held: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}  # (row, order) -> {seed: record}
    for o, ds in dss.items():
        for row in MODELS:
            for seed in sorted(seeds):
                rec = recorded(records, ds, o, row, seed, overrides)
                if rec is not None:
                    held.setdefault((row[0], o), {})[seed] = rec
    per: dict[tuple[str, str], dict[int | None, UserScores]] = {}  # (row, order) -> {seed (None: no training)}
    meta: dict[tuple[str, str], list[dict]] = {}
    for o, ds in dss.items():
        for label, sc in heuristic_scores(ds).items():
            per[(label, o)] = {None: sc}
        for row in MODELS:
            for seed, rec in held.get((row[0], o), {}).items():
                per.setdefault((row[0], o), {})[seed] = scores_from_ranks(decode_ranks(rec["ranks"]))
                meta.setdefault((row[0], o), []).append(rec)
    rows = ["next-ASIN heuristic", "popularity", *[m[0] for m in MODELS]]
    out = [f"# Seqrec protocol experiment: {name} as shipped against the same users' items re-sorted by ASIN", "",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
           f"torch {torch.__version__}",
           f"- command: `{command}`",
           "- protocol: leave-one-out in each order (its last item test, second-to-last validation), full ranking "
           "over all items, history not masked; early stopping on validation NDCG@10; test metrics of the best "
           "epoch. Every trained model has the same config on both orders; EAGER reads the SASRec of its own order "
           "and seed as its behavior encoder.",
           "- intervals: 95% percentile bootstrap over the test users and the p-value of a paired sign-flip test "
           f"({n_resamples} resamples), on per-user metrics averaged over the seeds every compared run has (column "
           "*seeds*).",
           f"- {SEED_SPREAD}",
           *[f"- {r}" for r in remarks], "",
           f"## Test metrics (mean ± std over seeds; seeds asked: {', '.join(map(str, seeds))})", "",
           "| model | order | seeds | N@10 | R@10 | epochs (best) | train s |", "|---|---|---|---|---|---|---|"]
    pending = []
    for label in rows:
        for o in data:
            scs = list(per.get((label, o), {}).values())
            if not scs:
                if label in asked:
                    pending.append(f"{label} ({ORDER_LABELS[o]})")
                continue
            ms = meta.get((label, o), [])
            ep = ", ".join(f"{m['epochs_run']} ({m['best_epoch']})" for m in ms) or "—"
            secs = [m["training_s"] for m in ms]
            ts = "—" if not ms else f"{np.mean(secs):.0f}" + (f" ± {np.std(secs, ddof=1):.0f}" if len(ms) > 1 else "")
            out.append(f"| {label} | {ORDER_LABELS[o]} | {len(ms) or '—'} | "
                       f"{fmt_ms([float(s.ndcg10.mean()) for s in scs])} | "
                       f"{fmt_ms([float(s.recall10.mean()) for s in scs])} | {ep} | {ts} |")
    if pending:
        out += ["", f"**Not run yet:** {', '.join(pending)}."]

    def avg(cells: list[tuple[str, str]], which: str) -> tuple[list[np.ndarray], str, np.ndarray] | None:
        """Per-user ``which`` of each (row, order) cell, averaged over the seeds every trained cell has (a
        no-training row has one value); with a label of those seeds and the (S, C) matrix of each cell's mean
        per shared seed. None when a cell is missing or no seed is shared."""
        if any(not per.get(c) for c in cells):
            return None
        sets = [set(per[c]) for c in cells if None not in per[c]]
        common = sorted(set.intersection(*sets)) if sets else [None]
        if not common:
            return None
        each = [[getattr(per[c][k if None not in per[c] else None], which) for k in common] for c in cells]
        vals = [np.mean(e, axis=0) for e in each]  # C x (U,)
        by_seed = np.array([[float(x.mean()) for x in e] for e in each]).T  # (S, C)
        return vals, ("—" if common == [None] else ", ".join(map(str, common))), by_seed

    out += ["", "## Paired: ASIN order - as shipped, per model (same users)", "",
            "| model | seeds | N@10 shipped | N@10 ASIN | ASIN - shipped | 95% interval | p | per seed | "
            "R@10 ASIN - shipped | 95% interval | p |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label in rows:
        got = {w: avg([(label, "shipped"), (label, "asin")], w) for w in ("ndcg10", "recall10")}
        if got["ndcg10"] is None:
            continue
        (an, bn), used, sn = got["ndcg10"]
        ar, br = got["recall10"][0]
        tn, tr = paired_test(an, bn, n_resamples, 0), paired_test(ar, br, n_resamples, 1)
        out.append(f"| {label} | {used} | {an.mean():.4f} | {bn.mean():.4f} | {tn.diff:+.4f} | "
                   f"[{tn.low:+.4f}, {tn.high:+.4f}] | {format_p(tn.p_value)} | "
                   f"{fmt_ms(sn[:, 1] - sn[:, 0], signed=True)} | "
                   f"{tr.diff:+.4f} | [{tr.low:+.4f}, {tr.high:+.4f}] | {format_p(tr.p_value)} |")
    gen = [m[0] for m in MODELS[1:]]
    did = []
    for label in gen:
        cells = [(label, "shipped"), (label, "asin"), ("SASRec", "shipped"), ("SASRec", "asin")]
        got = {w: avg(cells, w) for w in ("ndcg10", "recall10")}
        if got["ndcg10"] is None:
            continue
        tests = []
        for i, w in enumerate(("ndcg10", "recall10")):
            gs, ga, ss, sa = got[w][0]
            d = (ga - gs) - (sa - ss)  # (U,) per-user difference in differences
            tests.append(paired_test(np.zeros_like(d), d, n_resamples, 2 + i))
        sn = got["ndcg10"][2]  # (S, 4) seed means: G shipped, G asin, SASRec shipped, SASRec asin
        spread = fmt_ms((sn[:, 1] - sn[:, 0]) - (sn[:, 3] - sn[:, 2]), signed=True)
        n10, r10 = (f"{t.diff:+.4f} | [{t.low:+.4f}, {t.high:+.4f}] | {format_p(t.p_value)}" for t in tests)
        did.append(f"| {label} | {got['ndcg10'][1]} | {n10} | {spread} | {r10} |")
    if did:
        out += ["", "## Difference in differences: a generative model's ASIN gain - SASRec's ASIN gain", "",
                "Per user (G_asin - G_shipped) - (SASRec_asin - SASRec_shipped), on the seeds all four runs have. "
                "Positive: the model profits more than SASRec from the ASIN order.", "",
                "| model | seeds | N@10 gain - SASRec's | 95% interval | p | per seed | R@10 gain - SASRec's | "
                "95% interval | p |", "|---|---|---|---|---|---|---|---|---|", *did]

    def against(ref: str, labels: list[str], title: str, stream: int) -> list[str]:
        """A section of paired N@10 differences label - ref within each order (empty when no pair exists)."""
        lines = []
        for label in labels:
            for o in data:
                got = avg([(ref, o), (label, o)], "ndcg10")
                if got is None:
                    continue
                (a, b), used, sn = got
                t = paired_test(a, b, n_resamples, stream)
                lines.append(f"| {label} | {ORDER_LABELS[o]} | {used} | {t.diff:+.4f} | [{t.low:+.4f}, {t.high:+.4f}] "
                             f"| {format_p(t.p_value)} | {fmt_ms(sn[:, 1] - sn[:, 0], signed=True)} |")
        return ["", f"## Paired: {title}, within one order", "",
                f"| model | order | seeds | N@10 - {ref} | 95% interval | p | per seed |",
                "|---|---|---|---|---|---|---|", *lines] if lines else []

    out += against("SASRec", gen, "each generative model - SASRec", 4)
    out += against(gen[0], gen[1:], f"the authors' settings - {gen[0]} (our defaults)", 5)
    out += ["", "## Per seed (test N@10)", "", "| model | order | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|---|" + "---|" * len(seeds)]
    for row in MODELS:
        label = row[0]
        for o in data:
            recs = held.get((label, o))
            if recs:
                vals = [recs[s]["test"][METRIC] if s in recs else None for s in seeds]
                out.append(f"| {label} | {ORDER_LABELS[o]} | " +
                           " | ".join("—" if v is None else f"{v:.4f}" for v in vals) + " |")
    path.write_text("\n".join(out) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "seqrec")
    ap.add_argument("--dataset", default="Beauty")
    ap.add_argument("--orders", nargs="*", default=list(ORDERS), choices=ORDERS)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--models", nargs="*", default=[m[0] for m in MODELS[:2]], help="row labels to train")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every model")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "seqrec_protocol")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "seqrec_protocol.md")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the records file (committed)")
    ap.add_argument("--report-seeds", nargs="*", type=int, default=None,
                    help="seeds the report lists (default: --seeds)")
    ap.add_argument("--remark", action="append", default=[], help="a sentence for the report's header; repeatable")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: record the finished runs, then the report from the records")
    args = ap.parse_args(argv)
    src = args.data_root / args.dataset
    if not src.is_dir():
        print(f"[protocol] {src} not found: the seqrec data must sit in ../shared/data/seqrec beside the repository; "
              "nothing to do", flush=True)
        return 0
    unknown = [m for m in args.models if m not in {x[0] for x in MODELS}]
    if unknown:
        raise SystemExit(f"unknown --models {unknown}; choose from {[x[0] for x in MODELS]}")
    data = {"shipped": src, "asin": write_asin_order(src, args.runs / "data-asin")}
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"]
    command = "python benchmarks/seqrec_protocol.py " + shlex.join(given)
    seeds = args.report_seeds if args.report_seeds is not None else args.seeds

    def report() -> None:
        write_report(args.out, command, data, args.runs, seeds, args.remark, args.resamples, args.models,
                     args.overrides, args.results)
        print(f"[protocol] wrote {args.out}", flush=True)

    if not args.report_only:
        for seed in args.seeds:
            for o in args.orders:
                chain(data[o], args.runs, o, seed, args.models, args.overrides, report, args.results)
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
