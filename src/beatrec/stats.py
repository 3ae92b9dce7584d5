"""Paired resampling tests of two systems scored on the same units (test users, explanation pairs).

For per-unit values ``a``, ``b`` (U, ...) of systems A and B, :func:`paired_test` reports the difference of a
statistic T = t(B) - t(A), a percentile bootstrap interval of T (units resampled with replacement, the same units
for A and B), and the two-sided p-value of a paired permutation test that swaps A and B within each unit at random
(H0: A and B are exchangeable per unit): p = (1 + #{|T*| >= |T|}) / (1 + R) over R random swaps, so the smallest
reachable p is 1 / (1 + R).

t is the mean (default; a swap is a sign flip of the unit's difference b - a) or any function of the per-unit
column sums, for ratio statistics that are not a mean of per-unit values (corpus BLEU: matches / hypothesis length).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

_TIE = 1e-12  # |T*| >= |T| - _TIE counts as "as extreme" (guards exact ties against rounding)


class PairedTest(NamedTuple):
    diff: float  # T = t(B) - t(A)
    low: float  # percentile bootstrap interval of T (level 1 - alpha)
    high: float
    p_value: float  # two-sided paired permutation (swap / sign-flip) test


class PairedDiff(NamedTuple):
    """One table row: a metric of two systems on the same units."""

    metric: str
    a: float  # t(A) over the shared units
    b: float  # t(B)
    diff: float  # b - a
    low: float  # bootstrap interval of diff (level 1 - alpha)
    high: float
    p_value: float


def paired_test(a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05,
                chunk: int = 250, statistic: Callable[[np.ndarray], np.ndarray] | None = None) -> PairedTest:
    """Paired difference T = t(B) - t(A) with a bootstrap interval and a permutation p-value (module docstring).

    Args:
        a, b: per-unit values of A and B, row-aligned: (U,) for the mean; (U,) or (U, k) with ``statistic``.
        statistic: None for the mean (T = mean(b - a)), else a vectorised map from column sums over U units,
            (m, *a.shape[1:]) -> (m,), to the statistic of one system (e.g. corpus BLEU-1 from summed counts).
        n_resamples: R, the number of bootstrap resamples and of random swaps; chunk: resamples drawn at once.
    """
    shape_ok = np.shape(a) == np.shape(b) and np.ndim(a) in ((1,) if statistic is None else (1, 2))
    if not shape_ok or len(a) == 0:
        raise ValueError(f"paired_test needs two equal-length non-empty vectors, got {np.shape(a)}, {np.shape(b)}")
    if not 0 < alpha < 1 or n_resamples < 1:
        raise ValueError("paired_test: alpha must be in (0, 1) and n_resamples >= 1")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a)
    if statistic is None:
        d = b - a  # (U,)
        obs = float(d.mean())

        def boot(idx: np.ndarray) -> np.ndarray:  # (m, U) resampled units -> (m,)
            return d[idx].mean(axis=1)

        def swap(signs: np.ndarray) -> np.ndarray:  # (m, U) +-1, -1 = A and B swapped -> (m,)
            return signs @ d / n
    else:
        sa, sb = a.sum(0), b.sum(0)  # (*k,)
        fa, fb = a.reshape(n, -1), b.reshape(n, -1)  # (U, k)
        obs = float(statistic(sb[None])[0] - statistic(sa[None])[0])

        def boot(idx: np.ndarray) -> np.ndarray:
            m = len(idx)
            counts = np.bincount((idx + n * np.arange(m)[:, None]).ravel(), minlength=m * n)  # (m * U,)
            counts = counts.reshape(m, n).astype(np.float64)  # (m, U) times each unit was drawn
            return statistic((counts @ fb).reshape(m, *sb.shape)) - statistic((counts @ fa).reshape(m, *sa.shape))

        def swap(signs: np.ndarray) -> np.ndarray:
            moved = ((signs < 0).astype(np.float64) @ (fa - fb)).reshape(len(signs), *sa.shape)  # (m, *k)
            return statistic(sb + moved) - statistic(sa - moved)  # swapped units: a counts for B, b for A

    rng = np.random.default_rng(seed)
    boots, swaps = [], []
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        boots.append(boot(rng.integers(0, n, size=(m, n))))
        swaps.append(swap(rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1))
    low, high = np.quantile(np.concatenate(boots), [alpha / 2, 1 - alpha / 2])
    extreme = int((np.abs(np.concatenate(swaps)) >= abs(obs) - _TIE).sum())
    return PairedTest(obs, float(low), float(high), (1 + extreme) / (1 + n_resamples))


def format_p(p: float) -> str:
    """A p-value for a table: three decimals, or the resampling floor in scientific notation (5.0e-04)."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def format_rows(rows: Sequence[PairedDiff], alpha: float) -> list[str]:
    """Markdown table lines (header, rule, one line per row): metric | A | B | B - A | interval | p."""
    level = f"{100 * (1 - alpha):g}%"
    out = [f"| metric | A | B | B - A | {level} interval | p |", "|---|---|---|---|---|---|"]
    out += [f"| {r.metric} | {r.a:.4f} | {r.b:.4f} | {r.diff:+.4f} | [{r.low:+.4f}, {r.high:+.4f}] | "
            f"{format_p(r.p_value)} |" for r in rows]
    return out
