"""Per-user test rankings of a seqrec run, and a paired comparison of two runs on the same test users.

A run writes what it recommends to each test user as ``RUN/test_top10.csv`` (``user,rank1..rank10`` in raw ids;
an empty cell is a slot the model left empty); ``beatrec seqrec evaluate`` writes
``RUN/<evaluation name>_test_top10.csv``. :func:`compare_runs` joins two such files on the users both scored,
recomputes each user's held-out item (the last of the user's sequence, DESIGN.md "Evaluation protocol") and
reports, per metric, the mean of each run, the paired difference B - A with a percentile bootstrap interval over
users, and the two-sided p-value of a paired sign-flip randomisation test (H0: A and B are exchangeable per user);
both come from :func:`beatrec.stats.paired_test`.

Per-user metrics (one held-out item at 1-based rank r, r = 0 when it is not in the top 10):
Recall@K = 1[1 <= r <= K], NDCG@K = 1[1 <= r <= K] / log2(r + 1); their means are :func:`metrics_from_topk`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from beatrec.errors import RunError
from beatrec.seqrec.data import load_seq_dataset
from beatrec.seqrec.evaluate import KS
from beatrec.seqrec.rundir import RANKINGS, read_run_json
from beatrec.stats import PairedDiff, format_rows, paired_test
from beatrec.stats import format_p as format_p  # re-exported for callers of this module

METRICS = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in KS)


class Comparison(NamedTuple):
    run_a: str
    run_b: str
    n_users: int  # test users both runs scored
    n_resamples: int
    alpha: float
    rows: tuple[PairedDiff, ...]

    def as_dict(self) -> dict:
        return {"run_a": self.run_a, "run_b": self.run_b, "n_users": self.n_users, "n_resamples": self.n_resamples,
                "alpha": self.alpha, "metrics": {r.metric: r._asdict() for r in self.rows}}


def target_ranks(top: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(U, k) ranked ids, (U,) held-out ids -> (U,) 1-based rank of the target in its row, 0 when absent."""
    hit = np.asarray(top) == np.asarray(targets)[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def per_user_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """(U,) target ranks (0 = missed) -> {"recall@K": (U,), "ndcg@K": (U,)} for K in (5, 10)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in KS:
        hit = (ranks >= 1) & (ranks <= k)
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)
    return out


def rankings_file(run: Path, name: str | None = None) -> Path:
    """The run's per-user test rankings: ``name`` if given, else ``test_top10.csv``, else ``evaluation_test_top10.csv``."""
    for cand in ([name] if name else [RANKINGS, f"evaluation_{RANKINGS}"]):
        p = run / cand
        if p.is_file():
            return p
    raise RunError(f"{run}: no per-user test rankings ({name or RANKINGS}); runs trained before they were saved "
                   f"write them with `beatrec seqrec evaluate --run {run}`")


def read_rankings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``user,rank1..rankK`` -> raw users (U,), raw ranked items (U, K) with -1 for empty cells."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise RunError(f"{path}: unreadable rankings ({e})") from e
    cols = [c for c in df.columns if c.startswith("rank")]
    if "user" not in df.columns or len(cols) < max(KS):
        raise RunError(f"{path}: needs a 'user' column and rank1..rank{max(KS)}, got {list(df.columns)}")
    return df["user"].to_numpy(), df[cols].fillna(-1).to_numpy(dtype=np.int64)


def compare_runs(run_a: str | Path, run_b: str | Path, data: str | Path | None = None, n_resamples: int = 2000,
                 seed: int = 0, alpha: float = 0.05, file_a: str | None = None, file_b: str | None = None
                 ) -> Comparison:
    """Paired comparison of two runs' test rankings (B - A) on the users both scored; see the module docstring."""
    run_a, run_b = Path(run_a), Path(run_b)
    info_a, info_b = read_run_json(run_a), read_run_json(run_b)
    data_a, fp_a, fp_b = info_a["data"], info_a["items_fingerprint"], info_b["items_fingerprint"]
    if fp_a != fp_b:
        raise RunError(f"{run_a} and {run_b} were trained on different items: their rankings are not comparable")
    ds = load_seq_dataset(data or data_a)
    target = {u: ds.item_raw_ids[s[-1]] for u, s in zip(ds.user_raw_ids.tolist(), ds.sequences, strict=True)}
    users_a, top_a = read_rankings(rankings_file(run_a, file_a))
    users_b, top_b = read_rankings(rankings_file(run_b, file_b))
    shared, ia, ib = np.intersect1d(users_a, users_b, return_indices=True)
    if len(shared) == 0:
        raise RunError(f"{run_a} and {run_b} scored no test user in common")
    unknown = [u for u in shared.tolist() if u not in target]
    if unknown:
        raise RunError(f"{len(unknown)} ranked users are not in {data or data_a} (e.g. {unknown[0]!r})")
    tgt = np.asarray([target[u] for u in shared.tolist()], dtype=np.int64)
    per_a = per_user_metrics(target_ranks(top_a[ia], tgt))
    per_b = per_user_metrics(target_ranks(top_b[ib], tgt))
    rows = []
    for i, m in enumerate(METRICS):
        diff, low, high, p = paired_test(per_a[m], per_b[m], n_resamples, seed + i, alpha)
        rows.append(PairedDiff(m, float(per_a[m].mean()), float(per_b[m].mean()), diff, low, high, p))
    return Comparison(str(run_a), str(run_b), len(shared), n_resamples, alpha, tuple(rows))


def format_comparison(c: Comparison) -> str:
    """A markdown table of a :class:`Comparison`."""
    level = f"{100 * (1 - c.alpha):g}%"
    out = [f"A = {c.run_a}, B = {c.run_b}; {c.n_users} shared test users; {level} bootstrap interval and sign-flip "
           f"p-value over {c.n_resamples} resamples.", "", *format_rows(c.rows, c.alpha)]
    return "\n".join(out)
