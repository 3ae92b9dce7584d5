"""Collation of (user, item, title[, target text]) rows into padded LM batches, one stage-2 task per batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

from beatrec.align.prompt import PromptBuilder
from beatrec.align.tasks import EXPLAIN, TASK_IDS, TASKS

IGNORE = -100


class PairBatch(NamedTuple):
    input_ids: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) long
    labels: torch.Tensor  # (B, L) long, IGNORE outside the explanation (prompt, slots, padding)
    slot_pos: torch.Tensor  # (B, S) long, positions of the behavior-token slots
    users: torch.Tensor  # (B,) long
    items: torch.Tensor  # (B,) long
    soft_pos: torch.Tensor  # (B, P) long, positions of the shared soft-prompt slots (P may be 0)
    task: torch.Tensor | None = None  # (B,) long, the rows' task (TASK_IDS; one per batch); None = explain


Builders = PromptBuilder | Mapping[str, PromptBuilder]  # one builder, or one per task name


def row_task(rows: list[dict]) -> str:
    """The one task of ``rows`` (``row["task"]``, default ``explain``); ValueError when they mix tasks."""
    tasks = {r.get("task", EXPLAIN) for r in rows}
    if len(tasks) != 1:
        raise ValueError(f"a batch holds one task, got {sorted(tasks)}")
    return tasks.pop()


def _builder(builders: Builders, task: str) -> PromptBuilder:
    return builders if isinstance(builders, PromptBuilder) else builders[task]


def _target(row: dict, task: str) -> str:
    """The text a training row is trained to write: ``row["target"]``, else its task's dataset column."""
    return row["target"] if "target" in row else row[TASKS[task].target]


def collate_train(builders: Builders, rows: list[dict], max_words: int, max_tokens: int) -> PairBatch:
    """Right-padded prompt + target text (the explanation, or a profile); labels only on the target (and its EOS)."""
    task = row_task(rows)
    builder = _builder(builders, task)
    seqs, labels, slots, soft = [], [], [], []
    for r in rows:
        p = builder.prompt(r.get("title", ""), r.get("history"))
        t = builder.target(_target(r, task), max_words, max_tokens)
        seqs.append(p.ids + t)
        labels.append([IGNORE] * len(p.ids) + t)
        slots.append(p.slots)
        soft.append(p.soft)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), builder.pad, dtype=torch.long)
    lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (s, lb) in enumerate(zip(seqs, labels, strict=True)):
        ids[b, : len(s)] = torch.tensor(s)
        lab[b, : len(lb)] = torch.tensor(lb)
        mask[b, : len(s)] = 1
    return PairBatch(ids, mask, lab, _positions(slots), _ids(rows, "uid"), _ids(rows, "iid"), _positions(soft),
                     _task(rows, task))


def collate_prompt(builders: Builders, rows: list[dict]) -> PairBatch:
    """Left-padded prompts for batched generation (labels all IGNORE)."""
    task = row_task(rows)
    builder = _builder(builders, task)
    prompts = [builder.prompt(r.get("title", ""), r.get("history")) for r in rows]
    width = max(len(p.ids) for p in prompts)
    ids = torch.full((len(rows), width), builder.pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    slots, soft = [], []
    for b, p in enumerate(prompts):
        off = width - len(p.ids)
        ids[b, off:] = torch.tensor(p.ids)
        mask[b, off:] = 1
        slots.append([off + s for s in p.slots])
        soft.append([off + s for s in p.soft])
    return PairBatch(ids, mask, torch.full_like(ids, IGNORE), _positions(slots), _ids(rows, "uid"), _ids(rows, "iid"),
                     _positions(soft), _task(rows, task))


def prompt_lengths(builders: Builders, rows: list[dict]) -> list[int]:
    """Each row's prompt length in tokens (what :func:`collate_prompt` pads to the longest of a batch)."""
    builder = _builder(builders, row_task(rows))
    return [len(builder.prompt(r.get("title", ""), r.get("history")).ids) for r in rows]


def _positions(rows: list[list[int]]) -> torch.Tensor:
    """(B, S) long positions (S may be 0)."""
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), -1)


def _ids(rows: list[dict], key: str) -> torch.Tensor:
    """(B,) ids; a profile row has no id of the other side (0 stands in; its tokens are not in the prompt)."""
    return torch.tensor([int(r.get(key, 0)) for r in rows], dtype=torch.long)


def _task(rows: list[dict], task: str) -> torch.Tensor:
    return torch.full((len(rows),), TASK_IDS[task], dtype=torch.long)
