"""Token contrast: a training term that makes the LM's text depend on the behavior tokens (not in the paper).

A stage-2 LM can fit its targets while ignoring the tokens: it learns the mode of the dataset's profiles, and
another user's tokens then predict a user's profile as well as its own (measured on Amazon,
``benchmarks/profiles.md``). Token contrast adds a margin ranking loss over conditioning contexts: each row's
target must be likelier after its own tokens than after another row's of the batch (a batch rolled by one), by
at least ``margin`` nats per token::

    L_con = mean_b max(0, margin + NLL(y_b | x_b) - NLL(y_b | x_{b-1}))

NLL is the row's mean token NLL. It is the training-time counterpart of maximum mutual information decoding
(Li et al. 2016, eq. 4: prefer targets likelier under their own context than unconditionally) and of
behavior-token guidance (:mod:`beatrec.align.guidance`).
"""

from __future__ import annotations

import torch


def row_means(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """(T,) per-token values and (T,) their row ids -> (n_rows,) per-row means (0 for a row without tokens)."""
    sums = values.new_zeros(n_rows).index_add(0, rows, values)
    counts = values.new_zeros(n_rows).index_add(0, rows, torch.ones_like(values))
    return sums / counts.clamp_min(1)


def token_contrast_loss(own: torch.Tensor, other: torch.Tensor, margin: float) -> torch.Tensor:
    """(B,) row NLLs after the rows' own tokens and after another row's -> () mean hinge (module docstring)."""
    return torch.relu(margin + own - other).mean()
