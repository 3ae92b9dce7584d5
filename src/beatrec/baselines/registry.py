"""One entry point for every explanation baseline: :func:`run_baseline` (``beatrec baseline``).

Every method reads text only through :func:`beatrec.data.split.training_texts` (training users) and writes
predictions for the requested pairs (default: every zero-shot test pair) in the common format of
:mod:`beatrec.predictions`, so :mod:`beatrec.evaluate` scores all of them identically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from beatrec.align.config import AlignConfig
from beatrec.baselines.idgen import IdGenConfig
from beatrec.baselines.itemtext import ItemTextConfig
from beatrec.config import check
from beatrec.errors import ConfigError

METHODS = ("floor", "retrieval", "idgen", "itemtext", "continuous", "history", "beat_history", "xrec")
HISTORY_TITLES = 5  # history titles per prompt (history, beat_history); chosen on Amazon validation users


@dataclass
class BaselineConfig:
    """Settings of all baselines (``beatrec baseline --config FILE --set section.key=value``).

    Attributes:
        seed: the floor's draw.
        idgen / itemtext: per-method settings; continuous: the stage-2 config of the continuous model
            (``model.source`` is forced to ``continuous``); history: the stage-2 config of ``history`` and
            ``beat_history`` (BEAT's default recipe unless set), with ``history_titles`` titles per prompt.
    """

    seed: int = 0
    idgen: IdGenConfig = field(default_factory=IdGenConfig)
    itemtext: ItemTextConfig = field(default_factory=ItemTextConfig)
    continuous: AlignConfig = field(default_factory=AlignConfig)
    history: AlignConfig = field(default_factory=AlignConfig)
    history_titles: int = HISTORY_TITLES

    def validate(self) -> None:
        check(isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}")
        check(self.history_titles >= 1, f"history_titles must be >= 1, got {self.history_titles}")
        self.idgen.validate()
        self.itemtext.validate()
        self.continuous.validate()
        self.history.validate()


class BaselineOutput(NamedTuple):
    predictions: pd.DataFrame  # uid, iid, prediction (one row per requested pair it covers)
    info: dict  # method-specific facts (coverage, training seconds, ...)


def run_baseline(method: str, data: str | Path, run: str | Path, cfg: BaselineConfig | None = None,
                 pairs: pd.DataFrame | None = None, progress: bool = False) -> BaselineOutput:
    """Train (if the method trains) and predict with baseline ``method``.

    Args:
        method: one of :data:`METHODS`.
        data: the dataset directory; run: its stage-1 run (``split.json``; graph vectors for retrieval and
            continuous; ``continuous`` also writes ``run/align_continuous/``).
        pairs: the pairs to explain (uid, iid, title, ...); default every zero-shot test pair.
    """
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit, eval_pairs, training_texts

    if method not in METHODS:
        raise ConfigError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    cfg = cfg or BaselineConfig()
    cfg.validate()
    run, data = Path(run), Path(data)
    ds = load_dataset(data)
    split = ZeroShotSplit.load(run / "split.json")
    pairs = eval_pairs(ds, split, "test") if pairs is None else pairs.reset_index(drop=True)
    info: dict = {"method": method, "pairs_asked": len(pairs)}
    t = time.perf_counter()
    if method == "xrec":
        from beatrec.baselines.xrec import xrec_predictions

        cov = xrec_predictions(ds, pairs)
        info.update(pairs_covered=cov.n_covered, seconds=time.perf_counter() - t)
        return BaselineOutput(cov.predictions, info)
    if method == "floor":
        from beatrec.baselines.floor import floor_predictions

        preds = floor_predictions(ds, split, len(pairs), cfg.seed)
    elif method == "retrieval":
        from beatrec.baselines.retrieval import retrieval_predictions
        from beatrec.tokenizer.embeddings import load_graph_embeddings

        preds = retrieval_predictions(ds, split, pairs, load_graph_embeddings(run, data))
    elif method == "idgen":
        from beatrec.baselines.idgen import idgen_predictions, train_idgen

        trained = train_idgen(training_texts(ds, split), ds.n_users, ds.n_items, cfg.idgen)
        info.update(train_seconds=time.perf_counter() - t, epoch_nll=trained.losses, vocab=len(trained.vocab))
        preds = idgen_predictions(trained, pairs)
    elif method == "itemtext":
        from beatrec.baselines.itemtext import itemtext_predictions

        out = itemtext_predictions(ds, split, pairs, cfg.itemtext)
        preds = out.predictions
        info["summary_from_eval_row"] = out.n_summary_from_eval_row
    else:  # a stage-2 variant: continuous, history, beat_history
        from beatrec.baselines.stage2 import train_variant, variant_predictions

        acfg = cfg.continuous if method == "continuous" else cfg.history
        res = train_variant(method, run, data, acfg, cfg.history_titles, progress=progress)
        info["train_seconds"] = time.perf_counter() - t
        info["align_dir"] = str(res.out_dir)
        if method != "continuous":
            from beatrec.align.history import HistoryPrompts

            cov = HistoryPrompts.build(ds, split, run, cfg.history_titles).attach(
                pairs[["uid", "iid"]].to_dict("records"))
            info["history_coverage"] = cov._asdict()
        preds = variant_predictions(method, run, pairs, progress=progress)
    info["seconds"] = time.perf_counter() - t
    frame = pd.DataFrame({"uid": pairs["uid"].astype("int64"), "iid": pairs["iid"].astype("int64"),
                          "prediction": preds})
    return BaselineOutput(frame, info)
