"""The registry of stage-2 slot sources: what fills a prompt's behavior slots (``model.source``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from beatrec.align.continuous import ContinuousVectors
from beatrec.align.vocab import BehaviorVocab
from beatrec.errors import RunError

# ``"tokens"``: BEAT's quantised codewords; ``"continuous"``: the stage-1 LightGCN vectors (the XRec-style
# baseline; ``data`` is needed only for stage-1 runs that predate ``embeddings.safetensors``).
SOURCE_LOADERS: dict[str, Callable[[str | Path, str | Path | None], nn.Module]] = {
    "tokens": lambda run, data: BehaviorVocab.from_run(run),
    "continuous": ContinuousVectors.from_run,
}
SOURCES = tuple(SOURCE_LOADERS)


def load_source(run: str | Path, source: str = "tokens", data: str | Path | None = None) -> nn.Module:
    """The slot source ``source`` of stage-1 run ``run`` (:class:`BehaviorVocab` or :class:`ContinuousVectors`)."""
    if source not in SOURCE_LOADERS:
        raise RunError(f"unknown slot source {source!r}; expected one of {SOURCES}")
    return SOURCE_LOADERS[source](run, data)
