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

from beatrec.align.controls import SIDES
from beatrec.baselines.floor import floor_predictions
from beatrec.config import check
from beatrec.data.dataset import XRecDataset
from beatrec.data.split import ZeroShotSplit, eval_pairs
from beatrec.errors import ConfigError, DataError
from beatrec.metrics.explanations import LABELS, ExplanationScores, ScoreConfig, Scorer, markdown_table
from beatrec.predictions import match_predictions

N_SHOWN = 5  # how many missing / extra pair ids are listed


@dataclass
class EvaluateConfig:
    """Harness settings: which metrics (``score``), the seed of the floor (and of the test-pair subset), an
    optional cap on the test pairs (``max_test_pairs``, 0 = all; a seeded subset in file order), and the
    shuffled-token controls (``controls``: ``user`` and/or ``item``, :mod:`beatrec.align.controls`) compared
    with the run's own explanations pair by pair (``resamples`` bootstrap / permutation draws, ``alpha``)."""

    score: ScoreConfig = field(default_factory=ScoreConfig)
    floor_seed: int = 0
    max_test_pairs: int = 0
    controls: tuple[str, ...] = ()
    control_seed: int = 0
    resamples: int = 2000
    alpha: float = 0.05

    def validate(self) -> None:
        self.score.validate()
        check(self.max_test_pairs >= 0, f"max_test_pairs must be >= 0, got {self.max_test_pairs}")
        bad = [c for c in self.controls if c not in SIDES]
        check(not bad, f"controls must be among {SIDES}, got {bad}")
        check(self.resamples >= 1, f"resamples must be >= 1, got {self.resamples}")
        check(0 < self.alpha < 1, f"alpha must be in (0, 1), got {self.alpha}")


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


class ControlResult(NamedTuple):
    """The model with one side's tokens shuffled, scored and compared with the model on the same pairs."""

    side: str  # user | item
    report: EvalReport
    paired: tuple  # beatrec.stats.PairedDiff rows: A = the model, B = its control (diff = control - model)

    def to_dict(self) -> dict:
        return {"side": self.side, "metrics": self.report.scores._asdict(),
                "paired": {r.metric: r._asdict() for r in self.paired}}


class EvaluateResult(NamedTuple):
    report: EvalReport
    out_dir: Path
    predictions: Path  # the file that was scored
    controls: tuple[ControlResult, ...] = ()


def score_controls(a, pairs: pd.DataFrame, preds: pd.DataFrame, ds: XRecDataset, split: ZeroShotSplit,  # noqa: ANN001
                   scorer: Scorer, cfg: EvaluateConfig, out_dir: Path, progress: bool = False
                   ) -> tuple[ControlResult, ...]:
    """Generate the shuffled-token controls of the stage-2 model ``a`` (an ``Aligned``) on the pairs ``preds``
    covers, score each and compare it with ``preds`` pair by pair (bootstrap interval, permutation p-value).
    Writes ``out_dir/predictions_shuffled_<side>.jsonl``."""
    from beatrec.align.controls import shuffled_pairs
    from beatrec.align.explain import check_pairs, explain
    from beatrec.metrics.paired import pair_stats, paired_comparison
    from beatrec.predictions import read_predictions, write_predictions

    m = match_predictions(pairs, preds).rows
    refs = m["explanation"].tolist()
    base = pair_stats(m["prediction"].tolist(), refs, scorer)
    todo = check_pairs(a, m[["uid", "iid", "title"]].to_dict("records"), "test pairs")
    out = []
    for side in cfg.controls:
        texts = explain(a, shuffled_pairs(todo, side, cfg.control_seed), progress=progress)
        path = write_predictions(out_dir / f"predictions_shuffled_{side}.jsonl", m["uid"].tolist(), m["iid"].tolist(),
                                 texts)
        report = evaluate_predictions(ds, split, read_predictions(path), scorer, m.drop(columns="prediction"),
                                      f"shuffled {side} tokens", cfg.floor_seed)
        rows = paired_comparison(base, pair_stats(texts, refs, scorer), cfg.resamples, cfg.alpha, cfg.control_seed)
        out.append(ControlResult(side, report, rows))
    return tuple(out)


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
    if cfg.controls and predictions is not None:
        raise ConfigError("the shuffled-token controls are compared with the run's own explanations: drop "
                          "--predictions (or score that file without --controls)")
    run, data = Path(run), Path(data)
    ds = load_dataset(data)
    split = ZeroShotSplit.load(run / "split.json")
    pairs = evaluation_pairs(ds, split, cfg.max_test_pairs, cfg.floor_seed)
    default = run / "test_predictions.jsonl"
    weights = run / "align" / "weights.safetensors"
    if predictions is None and default.is_file():
        if weights.is_file() and weights.stat().st_mtime > default.stat().st_mtime:
            if progress:
                print(f"{default} predates the stage-2 model {weights}: generating afresh", flush=True)
        else:
            predictions = default
    name = name or (Path(predictions).stem if predictions is not None else "beat")
    out_dir = Path(out) if out is not None else run / "eval" / name
    a = None
    if predictions is None or cfg.controls:
        from beatrec.align.explain import load_aligned

        a = load_aligned(run)
    if predictions is None:
        from beatrec.align.explain import check_pairs, explain

        todo = check_pairs(a, pairs[["uid", "iid", "title"]].to_dict("records"), "test pairs")
        texts = explain(a, todo, progress=progress)
        predictions = write_predictions(out_dir / "predictions.jsonl", pairs["uid"].tolist(), pairs["iid"].tolist(),
                                        texts)
        if len(pairs) == len(eval_pairs(ds, split, "test")):
            write_predictions(default, pairs["uid"].tolist(), pairs["iid"].tolist(), texts)
    preds = read_predictions(predictions)
    scorer = Scorer(cfg.score)
    report = evaluate_predictions(ds, split, preds, scorer, pairs, name, cfg.floor_seed)
    controls = score_controls(a, pairs, preds, ds, split, scorer, cfg, out_dir, progress) if cfg.controls else ()
    extra = [f"- dataset: `{data}`", f"- run: `{run}`", f"- predictions: `{predictions}`", ""]
    for c in controls:
        from beatrec.metrics.paired import format_paired

        extra += [f"Shuffled-{c.side}-token control (each pair explained with another test {c.side}'s tokens), "
                  f"paired with {name} on {c.report.scores.n} pairs; diff = control - {name}, "
                  f"{cfg.resamples} resamples:", "", *format_paired(c.paired, cfg.alpha), ""]
    write_report(report, out_dir, extra)
    if controls:
        js = out_dir / "metrics.json"
        js.write_text(json.dumps({**json.loads(js.read_text()), "controls": [c.to_dict() for c in controls]},
                                 indent=2) + "\n")
    return EvaluateResult(report, out_dir, Path(predictions), controls)
