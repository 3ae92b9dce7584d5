"""Exceptions with messages a user can act on.

Every error beatrec raises for bad input names the file, the row (when there is one) and the problem, so the
CLI can print it and exit non-zero without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class BeatrecError(Exception):
    """Base class: the CLI prints ``str(err)`` and exits with status 2."""


class DataError(BeatrecError):
    """A dataset file is missing or malformed.

    Args:
        file: the offending file.
        problem: what is wrong, in words.
        row: 1-based line number in the file (the header of a CSV is line 1), if the problem is in one row.
    """

    def __init__(self, file: str | Path, problem: str, row: int | None = None) -> None:
        self.file = str(file)
        self.row = row
        self.problem = problem
        where = f"{self.file}, line {row}" if row is not None else self.file
        super().__init__(f"{where}: {problem}")


class ConfigError(BeatrecError):
    """A configuration value is invalid (unknown key, wrong type, out of range)."""


class RunError(BeatrecError):
    """A run directory lacks an artifact a command needs, or holds a corrupt one."""


class ModelNotFoundError(BeatrecError):
    """A model (LM or text encoder) is not installed; the message says what to install."""
