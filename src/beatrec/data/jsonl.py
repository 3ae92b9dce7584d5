"""Reading JSON-lines files whose every non-blank line is one JSON object, with errors that name the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from beatrec.errors import DataError


def json_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, object)`` for every non-blank line of ``path`` (line numbers count blank lines).

    Raises:
        DataError: the file is missing, is not UTF-8, or a line is not valid JSON or not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(path, f"not valid JSON ({e.msg} at column {e.colno})", row=lineno) from None
                if not isinstance(obj, dict):
                    raise DataError(path, f"not a JSON object (got {type(obj).__name__})", row=lineno)
                yield lineno, obj
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e})") from None
