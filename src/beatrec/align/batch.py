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


def collate_train(builder: PromptBuilder, rows: list[dict], max_words: int, max_tokens: int) -> PairBatch:
    """Right-padded prompt + explanation; labels only on the explanation (and its EOS)."""
    seqs, labels, slots = [], [], []
    for r in rows:
        p = builder.prompt(r["title"])
        t = builder.target(r["explanation"], max_words, max_tokens)
        seqs.append(p.ids + t)
        labels.append([IGNORE] * len(p.ids) + t)
        slots.append(p.slots)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), builder.pad, dtype=torch.long)
    lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (s, lb) in enumerate(zip(seqs, labels, strict=True)):
        ids[b, : len(s)] = torch.tensor(s)
        lab[b, : len(lb)] = torch.tensor(lb)
        mask[b, : len(s)] = 1
    return PairBatch(ids, mask, lab, torch.tensor(slots), _ids(rows, "uid"), _ids(rows, "iid"))


def collate_prompt(builder: PromptBuilder, rows: list[dict]) -> PairBatch:
    """Left-padded prompts for batched generation (labels all IGNORE)."""
    prompts = [builder.prompt(r["title"]) for r in rows]
    width = max(len(p.ids) for p in prompts)
    ids = torch.full((len(rows), width), builder.pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    slots = []
    for b, p in enumerate(prompts):
        off = width - len(p.ids)
        ids[b, off:] = torch.tensor(p.ids)
        mask[b, off:] = 1
        slots.append([off + s for s in p.slots])
    return PairBatch(ids, mask, torch.full_like(ids, IGNORE), torch.tensor(slots), _ids(rows, "uid"), _ids(rows, "iid"))


def _ids(rows: list[dict], key: str) -> torch.Tensor:
    return torch.tensor([int(r[key]) for r in rows], dtype=torch.long)
