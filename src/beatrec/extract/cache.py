"""On-disk cache of extracted phrases: only entities never extracted before reach the extractor.

A JSON-lines file holds one ``{"key": sha256, "phrases": [...]}`` object per entity, where the key is
sha256(extractor identity, entity kind, n_phrases, the entity's texts joined). No source text is stored;
the phrases are derived text. New results are appended after every chunk of entities, so an interrupted run
keeps what it extracted. Failed entities are not cached: they are retried on the next call.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

from beatrec.extract.base import PhraseExtractor
from beatrec.paths import cache_dir


class ExtractionStats(NamedTuple):
    """What one ``extract_phrases`` call did."""

    n_entities: int
    n_cached: int  # answered from the cache
    n_extracted: int  # extracted now (and appended to the cache)
    n_failed: int  # extraction failed after retries: absent from the result, not cached
    seconds: float


def phrase_key(identity: str, kind: str, n: int, texts: list[str]) -> str:
    """Cache key of one entity: sha256 hex of (extractor identity, kind, n, texts joined)."""
    h = hashlib.sha256()
    h.update(f"{identity}\x1f{kind}\x1f{n}\x1f".encode())
    h.update("\x1e".join(texts).encode("utf-8"))
    return h.hexdigest()


def default_cache_path(identity: str) -> Path:
    """``cache_dir("phrases") / "<identity slug>.jsonl"``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", identity).strip("_")
    if len(slug) > 100:
        slug = slug[:80] + "-" + hashlib.sha256(identity.encode()).hexdigest()[:12]
    return cache_dir("phrases") / f"{slug}.jsonl"


def read_cache(path: Path) -> dict[str, list[str]]:
    """key -> phrases from a cache file; unreadable lines (e.g. a torn last line) are skipped."""
    out: dict[str, list[str]] = {}
    if not path.is_file():
        return out
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
                key, phrases = rec["key"], rec["phrases"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            if (
                isinstance(key, str)
                and isinstance(phrases, list)
                and all(isinstance(p, str) for p in phrases)
            ):
                out[key] = phrases
    return out


def _append(path: Path, records: dict[str, list[str]]) -> None:
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(
        json.dumps({"key": k, "phrases": v}, ensure_ascii=False) + "\n" for k, v in records.items()
    )
    with path.open("ab") as f:
        if f.tell() > 0:  # start on a fresh line if a previous writer was interrupted mid-line
            with path.open("rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    data = "\n" + data
        f.write(data.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def extract_phrases(
    entities: dict[int, list[str]],
    kind: str,
    extractor: PhraseExtractor,
    cache_path: Path | None = None,
    progress: bool = False,
    chunk_size: int | None = None,
) -> tuple[dict[int, list[str]], ExtractionStats]:
    """Ranked phrases per entity id, from the cache where possible (BEAT eqs. 7-8 inputs).

    Args:
        entities: entity id -> its training texts (order matters: it is part of the key).
        kind: ``"user"`` or ``"item"``.
        extractor: any ``PhraseExtractor``.
        cache_path: the JSON-lines cache (default ``default_cache_path(extractor.identity)``).
        progress: show a progress bar over the entities to extract.
        chunk_size: entities per extractor call (results are appended after each); default 4 batches.

    Returns:
        (id -> phrases for every entity that has them, stats). Failed entities are absent.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    path = cache_path or default_cache_path(extractor.identity)
    cached = read_cache(path)
    keys = {
        eid: phrase_key(extractor.identity, kind, extractor.n_phrases, texts)
        for eid, texts in entities.items()
    }
    out: dict[int, list[str]] = {}
    todo: dict[str, list[str]] = {}  # key -> texts; identical entities are extracted once
    n_cached = 0
    for eid, key in keys.items():
        if key in cached:
            out[eid] = cached[key]
            n_cached += 1
        else:
            todo.setdefault(key, entities[eid])
    done: dict[str, list[str]] = {}
    batch_size = int(getattr(getattr(extractor, "cfg", None), "batch_size", 16))
    chunk = chunk_size or max(4 * batch_size, 16)
    todo_keys = sorted(todo, key=lambda k: sum(len(t) for t in todo[k]))  # similar lengths batch together
    with tqdm(total=len(todo_keys), desc=f"{kind} phrases", unit=kind, disable=not progress) as bar:
        for s in range(0, len(todo_keys), chunk):
            part = todo_keys[s : s + chunk]
            results = extractor.extract(kind, [todo[k] for k in part], progress=False)
            if len(results) != len(part):
                raise RuntimeError(
                    f"extractor {extractor.identity} returned {len(results)} results for {len(part)}"
                )
            new = {k: r for k, r in zip(part, results, strict=True) if r}
            _append(path, new)
            done.update(new)
            bar.update(len(part))
    n_extracted = n_failed = 0
    for eid, key in keys.items():
        if eid in out:
            continue
        if key in done:
            out[eid] = done[key]
            n_extracted += 1
        else:
            n_failed += 1
    stats = ExtractionStats(len(entities), n_cached, n_extracted, n_failed, time.perf_counter() - t0)
    return out, stats
