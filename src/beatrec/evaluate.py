"""The explanation evaluation harness (``beatrec evaluate``).

Scores a predictions file (:mod:`beatrec.predictions`) on the zero-shot test pairs of a run
(:func:`beatrec.data.split.eval_pairs` ``"test"``) with every metric of :mod:`beatrec.metrics.explanations`,
beside the floor (a seeded random training explanation per scored pair, :mod:`beatrec.baselines.floor`).
Nothing is dropped silently: test pairs without a prediction and predictions for pairs outside the test set
are counted and listed (the first few) in the output and in ``metrics.json``; the metrics cover the test pairs
that have a prediction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from beatrec.baselines.floor import floor_predictions
from beatrec.config import check
from beatrec.data.dataset import XRecDataset
from beatrec.data.split import ZeroShotSplit, eval_pairs
from beatrec.errors import DataError
from beatrec.metrics.explanations import LABELS, ExplanationScores, ScoreConfig, Scorer, markdown_table
from beatrec.predictions import match_predictions

N_SHOWN = 5  # how many missing / extra pair ids are listed


@dataclass
class EvaluateConfig:
    """Harness settings: which metrics (``score``), the seed of the floor (and of the test-pair subset), and an
    optional cap on the test pairs (``max_test_pairs``, 0 = all; a seeded subset in file order)."""

    score: ScoreConfig = field(default_factory=ScoreConfig)
    floor_seed: int = 0
    max_test_pairs: int = 0

    def validate(self) -> None:
        self.score.validate()
        check(self.max_test_pairs >= 0, f"max_test_pairs must be >= 0, got {self.max_test_pairs}")


class EvalReport(NamedTuple):
    """The result of scoring one predictions set."""

    name: str
    n_test_pairs: int  # pairs expected
    scores: ExplanationScores  # on the expected pairs that have a prediction
    floor: ExplanationScores  # random training explanations on the same pairs
    missing: list[tuple[int, int]]  # expected pairs without a prediction
    extra: list[tuple[int, int]]  # predictions for pairs not expected

    def to_dict(self) -> dict:
        """JSON-ready form (what ``metrics.json`` holds)."""
        def ids(x: list[tuple[int, int]]) -> dict:
            return {"count": len(x), "first": [{"uid": u, "iid": i} for u, i in x[:N_SHOWN]]}

        return {"name": self.name, "n_test_pairs": self.n_test_pairs, "n_scored": self.scores.n,
                "coverage": self.scores.n / self.n_test_pairs if self.n_test_pairs else 0.0,
                "metrics": self.scores._asdict(), "floor": self.floor._asdict(), "labels": LABELS,
                "missing_pairs": ids(self.missing), "extra_pairs": ids(self.extra)}

    def summary(self) -> str:
        """Human-readable lines on coverage (printed by the CLI)."""
        lines = [f"{self.name}: scored {self.scores.n} of {self.n_test_pairs} test pairs"]
        if self.missing:
            lines.append(f"  {len(self.missing)} test pair(s) have NO prediction (not scored), first: "
                         + ", ".join(f"({u},{i})" for u, i in self.missing[:N_SHOWN]))
        if self.extra:
            lines.append(f"  {len(self.extra)} prediction(s) are for pairs outside the test set (ignored), first: "
                         + ", ".join(f"({u},{i})" for u, i in self.extra[:N_SHOWN]))
        return "\n".join(lines)


def evaluation_pairs(ds: XRecDataset, split: ZeroShotSplit, max_pairs: int = 0, seed: int = 0) -> pd.DataFrame:
    """The zero-shot test pairs; with ``max_pairs`` a seeded subset of that many, in file order."""
    rows = eval_pairs(ds, split, "test")
    if max_pairs and len(rows) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_pairs, replace=False))
        rows = rows.iloc[keep].reset_index(drop=True)
    return rows


def evaluate_predictions(ds: XRecDataset, split: ZeroShotSplit, preds: pd.DataFrame, scorer: Scorer,
                         pairs: pd.DataFrame | None = None, name: str = "predictions",
                         floor_seed: int = 0) -> EvalReport:
    """Score ``preds`` (uid, iid, prediction) on ``pairs`` (default: every test pair) and the floor beside it.

    Raises:
        DataError: not one expected pair has a prediction.
    """
    pairs = eval_pairs(ds, split, "test") if pairs is None else pairs
    m = match_predictions(pairs, preds)
    if m.rows.empty:
        raise DataError(name, f"none of the {len(pairs)} test pairs has a prediction "
                              f"({len(m.extra)} prediction(s) are for other pairs); wrong dataset or run?")
    refs = m.rows["explanation"].tolist()
    scores = scorer.score(m.rows["prediction"].tolist(), refs)
    floor = scorer.score(floor_predictions(ds, split, len(refs), floor_seed), refs)
    return EvalReport(name, len(pairs), scores, floor, m.missing, m.extra)


def write_report(report: EvalReport, out_dir: str | Path, extra_md: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.md`` (the table: the method and the floor on the same pairs)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "metrics.json"
    js.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    md = out / "metrics.md"
    table = markdown_table([(report.name, report.scores),
                            ("random training explanation (floor)", report.floor)])
    lines = [f"# Explanation metrics: {report.name}", "", *(extra_md or []), "```", report.summary(), "```", "",
             table, "",
             "BERTScore-MiniLM: greedy token matching with all-MiniLM-L6-v2, not rescaled (not comparable with "
             "roberta-large BERTScore). LM-score: mean log-likelihood of the reference given the prediction "
             "under a causal LM, a stand-in for BARTScore. ROUGE-L: sentence-level LCS F1, mean over pairs."]
    md.write_text("\n".join(lines) + "\n")
    return js, md


class EvaluateResult(NamedTuple):
    report: EvalReport
    out_dir: Path
    predictions: Path  # the file that was scored


def evaluate_run(data: str | Path, run: str | Path, predictions: str | Path | None = None,
                 out: str | Path | None = None, cfg: EvaluateConfig | None = None, name: str | None = None,
                 progress: bool = True) -> EvaluateResult:
    """``beatrec evaluate``: score a predictions file, or the run's own explanations, on the test pairs.

    Without ``predictions``: ``RUN/test_predictions.jsonl`` when it exists, else explanations generated now by
    the run's stage-2 model (written to ``OUT/predictions.jsonl``, and to ``RUN/test_predictions.jsonl`` when
    they cover every test pair). ``out`` defaults to ``RUN/eval/<name>``.

    Raises:
        DataError: a missing, empty or corrupt predictions file, or no test pair predicted.
        RunError: no ``split.json`` in the run, or (when generating) no stage-2 model.
    """
    from beatrec.data.dataset import load_dataset
    from beatrec.predictions import read_predictions, write_predictions

    cfg = cfg or EvaluateConfig()
    cfg.validate()
    run, data = Path(run), Path(data)
    ds = load_dataset(data)
    split = ZeroShotSplit.load(run / "split.json")
    pairs = evaluation_pairs(ds, split, cfg.max_test_pairs, cfg.floor_seed)
    default = run / "test_predictions.jsonl"
    if predictions is None and default.is_file():
        predictions = default
    name = name or (Path(predictions).stem if predictions is not None else "beat")
    out_dir = Path(out) if out is not None else run / "eval" / name
    if predictions is None:
        from beatrec.align.explain import check_pairs, explain, load_aligned

        a = load_aligned(run)
        todo = check_pairs(a, pairs[["uid", "iid", "title"]].to_dict("records"), "test pairs")
        texts = explain(a, todo, progress=progress)
        predictions = write_predictions(out_dir / "predictions.jsonl", pairs["uid"].tolist(), pairs["iid"].tolist(),
                                        texts)
        if len(pairs) == len(eval_pairs(ds, split, "test")):
            write_predictions(default, pairs["uid"].tolist(), pairs["iid"].tolist(), texts)
    preds = read_predictions(predictions)
    report = evaluate_predictions(ds, split, preds, Scorer(cfg.score), pairs, name, cfg.floor_seed)
    write_report(report, out_dir, [f"- dataset: `{data}`", f"- run: `{run}`", f"- predictions: `{predictions}`", ""])
    return EvaluateResult(report, out_dir, Path(predictions))
