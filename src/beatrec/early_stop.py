"""Early stopping on a validation metric (higher is better), keeping the best weights in memory."""

from __future__ import annotations

import copy

from torch import nn


class EarlyStopping:
    """Tracks the best validation score and stops after ``patience`` epochs without improvement.

    Usage: call :meth:`update` once per epoch (it returns True when training should stop), then
    :meth:`restore` to load the kept epoch's weights back into the model.

    With ``tolerance`` > 0 the kept epoch is the *latest* whose score is within that fraction of the best so far
    (score >= (1 - tolerance) * best), and only epochs below that band count towards ``patience``: for models
    with objectives besides the watched metric that keep improving after it plateaus. ``best_epoch`` is then
    the kept epoch; ``best`` stays the best score seen.
    """

    def __init__(self, patience: int, tolerance: float = 0.0) -> None:
        self.patience = patience
        self.tolerance = tolerance
        self.best = -1.0
        self.best_epoch = 0
        self.stopped = False
        self._bad = 0
        self._state: dict | None = None

    def update(self, score: float, epoch: int, model: nn.Module) -> bool:
        """Record epoch ``epoch``'s validation ``score``; True when ``patience`` epochs passed without a gain."""
        if score > self.best or (self.tolerance > 0 and score >= (1.0 - self.tolerance) * self.best):
            self.best, self.best_epoch, self._bad, self.stopped = max(score, self.best), epoch, 0, False
            self._state = copy.deepcopy(model.state_dict())
        else:
            self._bad += 1
            self.stopped = self._bad >= self.patience
        return self.stopped

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights (no-op before any :meth:`update`)."""
        if self._state is not None:
            model.load_state_dict(self._state)

    def state_dict(self) -> dict:
        """Everything :meth:`load_state_dict` needs to continue (checkpoints)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "stopped": self.stopped, "bad": self._bad,
                "state": self._state}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.best_epoch, self.stopped = d["best"], d["best_epoch"], d["stopped"]
        self._bad, self._state = d["bad"], d["state"]
