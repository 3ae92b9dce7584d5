"""XRec-style continuous-embedding injection: LightGCN vectors -> MLP adapter -> the same frozen LM.

No code of its own beyond configuration: it is BEAT stage 2 (:func:`beatrec.align.train.train_align`) with
``model.source: continuous``, i.e. :class:`~beatrec.align.continuous.ContinuousVectors` instead of the
behavior tokens filling the same prompt slots through the same projector, trained with the same loss and
loop on the same training pairs, written beside BEAT's ``align/`` as ``align_continuous/``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd

from beatrec.align.config import AlignConfig
from beatrec.align.explain import check_pairs, explain, load_aligned
from beatrec.align.train import AlignResult, train_align

CONTINUOUS_DIR = "align_continuous"


def continuous_config(cfg: AlignConfig) -> AlignConfig:
    """A copy of ``cfg`` with the continuous source switched on."""
    out = copy.deepcopy(cfg)
    out.model.source = "continuous"
    out.validate()
    return out


def train_continuous(run: str | Path, data: str | Path, cfg: AlignConfig, progress: bool = False,
                     subdir: str = CONTINUOUS_DIR) -> AlignResult:
    """Train the adapter on the training users' pairs; writes ``run/subdir``."""
    return train_align(run, data, continuous_config(cfg), progress=progress, subdir=subdir)


def continuous_predictions(run: str | Path, pairs: pd.DataFrame, progress: bool = False,
                           subdir: str = CONTINUOUS_DIR) -> list[str]:
    """Explanations of the trained continuous model for the rows of ``pairs`` (uid, iid[, title])."""
    a = load_aligned(run, subdir=subdir)
    cols = [c for c in ("uid", "iid", "title") if c in pairs.columns]
    return explain(a, check_pairs(a, pairs[cols].to_dict("records"), "evaluation pairs"), progress=progress)
