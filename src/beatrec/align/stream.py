"""Continuous batching of explanation decodes: prompts join the running batch between decode steps (issue #38).

A batch decoded by :func:`beatrec.align.decode.decode` starts together and ends when its slowest prompt ends; a
request that arrives meanwhile waits for the whole batch. :class:`StreamDecoder` schedules at the level of one decode
step instead (iteration-level scheduling, Yu et al. 2022, "Orca"): :meth:`~StreamDecoder.admit` prefills new
prompts (by the LM, as :func:`~beatrec.align.decode.prefill` does) and appends their rows to the running ones;
:meth:`~StreamDecoder.step` advances every search by one token with one :class:`~beatrec.align.fastlm.FastStep`
call over all live rows, and returns the prompts that finished. Each admission is its own search (greedy or beam
search, :class:`~beatrec.align.decode.GreedySearch` / :class:`~beatrec.align.decode.BeamSearch`, with its own
step count and settings), so a prompt's tokens are those :func:`~beatrec.align.decode.decode` gives it alone.

Layout: all live rows share the key/value buffers' column counter. Rows are right-aligned (a row's cached
positions end at column ``length - 1``) and the attention mask hides the columns before a row's prompt; when
prompts join (or the buffers are full) the buffers are rebuilt with the columns no live row attends to dropped.
Positions are each row's own, so realignment never changes what a row computes.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import NamedTuple

import torch

from beatrec.align.config import GenerateConfig
from beatrec.align.decode import Search, identity, new_search, prefill
from beatrec.align.fastlm import FastStep, KVBuffers


class Cohort:
    """Prompts admitted together: one search over ``rows`` consecutive rows of the shared buffers."""

    def __init__(self, search: Search, keys: list[Hashable], logits: torch.Tensor, room: int) -> None:
        self.search, self.keys, self.logits = search, keys, logits  # logits (rows, V): not yet advanced
        self.rows = len(logits)
        self.room = room  # decode steps it may still take


class Finished(NamedTuple):
    key: Hashable
    ids: list[int]  # generated ids, the end token included


class StreamDecoder:
    """Live decodes over shared key/value buffers (module docstring).

    Args:
        lm: the LM that prefills prompts (the one ``fast`` was built from).
        fast: the decode step.
        pad, eos: the tokenizer's padding and end token ids.
        share_prefix: prefill the instruction prefix an admission's prompts share once.
    """

    def __init__(self, lm: torch.nn.Module, fast: FastStep, pad: int, eos: int, share_prefix: bool = True) -> None:
        self.lm, self.fast, self.pad, self.eos, self.share_prefix = lm, fast, pad, eos, share_prefix
        self.cohorts: list[Cohort] = []
        self.kv: KVBuffers | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)  # (R, length) 1 where a row attends
        self.pos = torch.zeros(0, dtype=torch.long)  # (R,) position of each row's next token

    def busy(self) -> bool:
        return bool(self.cohorts)

    def reset(self) -> None:
        """Drop every live decode (after a failure)."""
        self.cohorts, self.kv = [], None
        self.mask, self.pos = torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long)

    @torch.no_grad()
    def admit(self, embeds: torch.Tensor, mask: torch.Tensor, cfg: GenerateConfig, keys: list[Hashable]) -> None:
        """Prefill left-padded prompts (B, L, d) with mask (B, L) and join them to the running rows; ``keys`` name
        them in :meth:`step`'s results, ``cfg`` is their decoding (greedy or beam search, penalties, length)."""
        if len(keys) != len(embeds):
            raise ValueError(f"{len(embeds)} prompts but {len(keys)} keys")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated")
            pre = prefill(self.lm, embeds, mask.long(), self.share_prefix)
        s = new_search(len(embeds), cfg, self.pad, self.eos)
        k = s.rows_per_prompt
        new = KVBuffers.from_cache(pre.cache, 0, self.fast.dtype)
        if k > 1:  # every beam starts from its prompt's cache
            new.select(torch.arange(len(embeds)).repeat_interleave(k))
        logits = pre.logits.repeat_interleave(k, dim=0)  # (B*K, V)
        self._relayout(new, pre.mask.repeat_interleave(k, dim=0), pre.next_pos.repeat_interleave(k, dim=0),
                       room=cfg.max_new_tokens)
        self.cohorts.append(Cohort(s, list(keys), logits, cfg.max_new_tokens))

    @torch.no_grad()
    def step(self) -> list[Finished]:
        """Advance every search by one token (one decode step over all live rows). -> the prompts that ended."""
        done: list[Finished] = []
        rows, tokens, kept = [], [], []
        offset = 0
        for c in self.cohorts:
            adv = c.search.advance(c.logits)
            done += [Finished(c.keys[i], ids) for i, ids in adv.finished.items()]
            if len(adv.rows):
                rows.append(adv.rows + offset)
                tokens.append(adv.tokens)
                c.rows, c.room = len(adv.rows), c.room - 1
                kept.append(c)
            offset += len(c.logits)
        self.cohorts = kept
        if not kept:
            self.reset()
            return done
        sel, tok = torch.cat(rows), torch.cat(tokens)
        assert self.kv is not None
        if not identity(sel, len(self.mask)):
            self.kv.select(sel)
            self.mask, self.pos = self.mask[sel], self.pos[sel]
        if self.kv.length == self.kv.keys[0].shape[2]:  # full: rebuild without the columns nobody attends to
            self._relayout(None, None, None, room=0)
        self.mask = torch.cat([self.mask, torch.ones(len(self.mask), 1, dtype=self.mask.dtype)], dim=1)
        logits = self.fast(tok, self.pos, self.kv, self.mask)  # (R, V)
        self.pos = self.pos + 1
        for c, part in zip(kept, logits.split([c.rows for c in kept]), strict=True):
            c.logits = part
        return done

    def _relayout(self, new: KVBuffers | None, new_mask: torch.Tensor | None, new_pos: torch.Tensor | None,
                  room: int) -> None:
        """Rebuild the buffers: the live rows (their unattended leading columns dropped), then ``new``'s rows, all
        right-aligned, with space for as many more columns as any search may still need."""
        old_len = 0
        first = 0
        if self.kv is not None and len(self.mask):
            used = self.mask.any(0).nonzero()
            first = int(used[0]) if len(used) else self.kv.length
            old_len = self.kv.length - first
        new_len = new.length if new is not None else 0
        length = max(old_len, new_len)
        room = max([room, *(c.room for c in self.cohorts)]) + 1
        parts = ([(self.kv, self.mask, first)] if self.kv is not None and len(self.mask) else []) + \
            ([(new, new_mask, 0)] if new is not None else [])
        n_rows = sum(len(m) for _, m, _ in parts)
        ref = parts[0][0].keys[0]
        _, kvh, _, d = ref.shape
        keys = [ref.new_zeros(n_rows, kvh, length + room, d) for _ in self.fast.layers]
        values = [ref.new_zeros(n_rows, kvh, length + room, d) for _ in self.fast.layers]
        mask = torch.zeros(n_rows, length, dtype=torch.long)
        r0 = 0
        for buf, m, start in parts:
            span = buf.length - start
            rr = slice(r0, r0 + len(m))
            for i in range(len(keys)):
                keys[i][rr, :, length - span : length] = buf.keys[i][:, :, start : buf.length]
                values[i][rr, :, length - span : length] = buf.values[i][:, :, start : buf.length]
            mask[rr, length - span :] = m[:, start:]
            r0 += len(m)
        pos = torch.cat([self.pos, new_pos]) if new_pos is not None else self.pos
        self.kv, self.mask, self.pos = KVBuffers(keys, values, length), mask, pos
