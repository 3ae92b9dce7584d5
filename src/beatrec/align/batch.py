"""Collation of (user, item, title[, explanation]) pairs into padded LM batches."""

from __future__ import annotations

from typing import NamedTuple

import torch

from beatrec.align.prompt import PromptBuilder

IGNORE = -100


class PairBatch(NamedTuple):
    input_ids: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) long
    labels: torch.Tensor  # (B, L) long, IGNORE outside the explanation (prompt, slots, padding)
    slot_pos: torch.Tensor  # (B, S) long, positions of the behavior-token slots
    users: torch.Tensor  # (B,) long
    items: torch.Tensor  # (B,) long
    soft_pos: torch.Tensor  # (B, P) long, positions of the shared soft-prompt slots (P may be 0)


def collate_train(builder: PromptBuilder, rows: list[dict], max_words: int, max_tokens: int) -> PairBatch:
    """Right-padded prompt + explanation; labels only on the explanation (and its EOS)."""
    seqs, labels, slots, soft = [], [], [], []
    for r in rows:
        p = builder.prompt(r["title"], r.get("history"))
        t = builder.target(r["explanation"], max_words, max_tokens)
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
    return PairBatch(ids, mask, lab, _positions(slots), _ids(rows, "uid"), _ids(rows, "iid"), _positions(soft))


def collate_prompt(builder: PromptBuilder, rows: list[dict]) -> PairBatch:
    """Left-padded prompts for batched generation (labels all IGNORE)."""
    prompts = [builder.prompt(r["title"], r.get("history")) for r in rows]
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
                     _positions(soft))


def _positions(rows: list[list[int]]) -> torch.Tensor:
    """(B, S) long positions (S may be 0)."""
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), -1)


def _ids(rows: list[dict], key: str) -> torch.Tensor:
    return torch.tensor([int(r[key]) for r in rows], dtype=torch.long)
