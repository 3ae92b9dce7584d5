"""Where beatrec keeps caches (expanded LM checkpoints, text embeddings, extracted phrases)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$BEATREC_CACHE`` (default ``~/.cache/beatrec``) joined with ``parts``; created on demand."""
    root = Path(os.environ.get("BEATREC_CACHE", Path.home() / ".cache" / "beatrec"))
    p = root.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
