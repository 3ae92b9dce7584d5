"""Baselines that are BEAT stage 2 with another prompt: no code of their own beyond configuration.

Each is :func:`beatrec.align.train.train_align` with a few model switches, trained with the same loss, loop and
recipe on the same training pairs, written beside BEAT's ``align/`` in its own subdirectory (:data:`VARIANTS`):

- ``continuous`` — XRec-style injection: the stage-1 LightGCN vectors (``model.source: continuous``,
  :class:`~beatrec.align.continuous.ContinuousVectors`) fill the slots through the same projector, unquantised;
- ``history`` — history prompting (issue #25): no user behavior tokens (``model.use_user: false``); the titles
  of up to N of the user's training-graph items, most typical first, are in the prompt instead
  (``model.history_titles: N``; :mod:`beatrec.align.history`);
- ``beat_history`` — BEAT + history: the user's behavior tokens *and* the history titles.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from beatrec.align.config import AlignConfig
from beatrec.align.explain import check_pairs, explain, load_aligned
from beatrec.align.train import AlignResult, train_align


class Stage2Variant(NamedTuple):
    subdir: str  # beside the run's align/
    source: str  # model.source
    use_user: bool  # the user's behavior tokens in the prompt
    history: bool  # the user's history titles in the prompt


VARIANTS: dict[str, Stage2Variant] = {
    "continuous": Stage2Variant("align_continuous", "continuous", True, False),
    "history": Stage2Variant("align_history", "tokens", False, True),
    "beat_history": Stage2Variant("align_beat_history", "tokens", True, True),
}
CONTINUOUS_DIR = VARIANTS["continuous"].subdir


def variant_config(name: str, cfg: AlignConfig, history_titles: int = 0) -> AlignConfig:
    """A copy of ``cfg`` with variant ``name``'s switches (``history_titles``: N for the history variants)."""
    v = VARIANTS[name]
    out = copy.deepcopy(cfg)
    out.model.source, out.model.use_user = v.source, v.use_user
    out.model.history_titles = history_titles if v.history else 0
    out.validate()
    return out


def train_variant(name: str, run: str | Path, data: str | Path, cfg: AlignConfig, history_titles: int = 0,
                  progress: bool = False) -> AlignResult:
    """Train variant ``name`` on the training users' pairs; writes ``run/<its subdir>``."""
    return train_align(run, data, variant_config(name, cfg, history_titles), progress=progress,
                       subdir=VARIANTS[name].subdir)


def variant_predictions(name: str, run: str | Path, pairs: pd.DataFrame, progress: bool = False) -> list[str]:
    """Explanations of the trained variant for the rows of ``pairs`` (uid, iid[, title])."""
    a = load_aligned(run, subdir=VARIANTS[name].subdir)
    cols = [c for c in ("uid", "iid", "title") if c in pairs.columns]
    return explain(a, check_pairs(a, pairs[cols].to_dict("records"), "evaluation pairs"), progress=progress)
