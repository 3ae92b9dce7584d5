"""Committed benchmark records shared by the table scripts (``profiles.py``, ``explanations.py``).

A record is one finished row: its config, a digest of the code it ran and of its stage-1 tokens, and the per-user
or per-pair statistics its metrics and paired tests need (never text). Scripts skip a row whose key is recorded
and rebuild their reports from the records alone, so rows accumulate across processes, days and machines.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def digest_files(paths: list[Path]) -> str:
    """16 hex digits over the files (directories: every ``*.py`` below them), names included."""
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(str(f.relative_to(p.parent)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def stage1_digest(run: Path) -> str:
    """A digest of a stage-1 run's tokens and split (what every stage-2 row reads)."""
    return digest_files([run / "user_tokens.parquet", run / "item_tokens.parquet", run / "split.json"])


def record_key(*parts: Any) -> str:
    """20 hex digits over the JSON form of ``parts`` (dataset, row, config, digests, scored units...)."""
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:20]


def read_records(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["records"] if path.is_file() else []


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Atomic rewrite (a crash never leaves half a file)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"records": records}, indent=1) + "\n")
    os.replace(tmp, path)


def put_record(path: Path, rec: dict[str, Any]) -> None:
    """Add ``rec`` to the file, replacing a record with the same key (re-read first: rows may land from other
    processes)."""
    write_records(path, [r for r in read_records(path) if r["key"] != rec["key"]] + [rec])


def provenance(command: str) -> dict[str, str]:
    """When, where and by what command a record was made (UTC date, platform and core count)."""
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.platform()}, {os.cpu_count()} cores", "command": command}
