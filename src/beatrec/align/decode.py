"""Batched decoding from prompt embeddings with a KV cache, without the waste of a general ``generate`` (issue #38).

:func:`decode` gives the tokens Hugging Face's ``generate`` gives for one prompt at a time (greedy, or beam search
with its length penalty and stopping heuristic, ``early_stopping=False``; repetition penalty, no-repeat n-grams and
``min_new_tokens`` through the same logits processors), but:

- **each prompt is prefilled once**, not once per beam: beam search starts every beam from the same prompt, so
  the prompt's key/value cache and last logits are computed for ``B`` rows and repeated to ``B x K``;
- **the instruction prefix the prompts share is prefilled once per call**: the prompts are laid out as
  ``[shared prefix][padding][rest]`` (positions from the attention mask, so each real token keeps its position),
  the prefix's cache is computed for one row and repeated to all;
- **a prompt leaves the batch as soon as its search is over** (greedy: its end token; beam search: when HF's
  heuristic says no running beam can beat its finished ones), so later steps run on the live prompts only;
- the penalty of repeated tokens covers every generated token of every row. (HF's ``generate`` given padded
  ``inputs_embeds`` skips, per row, as many generated tokens as the row has padding: a pair's explanation there
  depends on the batch it is in. Here it does not.)

Behavior-token guidance (``generate.guidance != 1``) and sampling stay on ``generate``
(:func:`beatrec.align.generate.generate_from_embeds`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
)

from beatrec.align.config import GenerateConfig
from beatrec.align.fastlm import FastStep, KVBuffers

NEG = -1.0e9  # HF beam search's "never" score


class Prefilled(NamedTuple):
    cache: DynamicCache  # the prompts' keys and values, B rows
    logits: torch.Tensor  # (B, V) float32 next-token logits after each prompt
    mask: torch.Tensor  # (B, L) long attention mask of the cached positions
    next_pos: torch.Tensor  # (B,) long position of each row's next token


def shared_prefix(embeds: torch.Tensor, mask: torch.Tensor) -> int:
    """Length of the leading real positions all left-padded prompts share exactly (<= the shortest prompt - 1,
    so every row keeps a token of its own to prefill). embeds (B, L, d), mask (B, L) -> P."""
    lengths = mask.sum(1)  # (B,)
    shortest = int(lengths.min())
    if len(embeds) == 1 or shortest < 2:
        return 0
    width = embeds.shape[1]
    start = width - lengths  # (B,) first real position of each row
    idx = start[:, None] + torch.arange(shortest - 1)[None, :]  # (B, shortest-1)
    heads = embeds.gather(1, idx[..., None].expand(-1, -1, embeds.shape[2]))  # (B, shortest-1, d)
    same = (heads == heads[:1]).all(dim=2).all(dim=0)  # (shortest-1,)
    return int(same.long().cumprod(0).sum())


def prefill(lm: torch.nn.Module, embeds: torch.Tensor, mask: torch.Tensor, share_prefix: bool = True) -> Prefilled:
    """Run left-padded prompts through the LM once; with ``share_prefix``, the shared leading positions once
    for all rows (layout ``[prefix][padding][rest]``; the positions are those of the left-padded prompt)."""
    b, width, d = embeds.shape
    p = shared_prefix(embeds, mask) if share_prefix else 0
    cache = DynamicCache()
    if p:
        # row b's real tokens fill columns [start_b, L); dropping the first P columns and masking columns < start_b
        # leaves its rest right-aligned after its padding
        rest, rest_mask = embeds[:, p:], mask[:, : width - p]  # (B, L-P, d), (B, L-P)
        start = int(width - mask[0].sum())
        head = embeds[:1, start : start + p]  # (1, P, d)
        lm(inputs_embeds=head, attention_mask=torch.ones(1, p, dtype=torch.long),
           position_ids=torch.arange(p)[None], past_key_values=cache, use_cache=True, logits_to_keep=1)
        if b > 1:
            cache.batch_repeat_interleave(b)
        full = torch.cat([torch.ones(b, p, dtype=torch.long), rest_mask], dim=1)  # (B, L)
        pos = (full.cumsum(1) - 1).clamp(min=0)[:, p:]  # (B, L-P)
        out = lm(inputs_embeds=rest, attention_mask=full, position_ids=pos, past_key_values=cache, use_cache=True,
                 logits_to_keep=1)
        mask = full
    else:
        pos = (mask.cumsum(1) - 1).clamp(min=0)  # (B, L)
        out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                 logits_to_keep=1)
    return Prefilled(cache, out.logits[:, -1].float(), mask, mask.sum(1))


def processors(cfg: GenerateConfig, eos: int) -> LogitsProcessorList:
    """The logits processors of ``generate`` for ``cfg`` (same classes, same order), over generated tokens only."""
    procs = LogitsProcessorList()
    if cfg.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(float(cfg.repetition_penalty)))
    if cfg.no_repeat_ngram_size:
        procs.append(NoRepeatNGramLogitsProcessor(cfg.no_repeat_ngram_size))
    if cfg.min_new_tokens:
        procs.append(MinNewTokensLengthLogitsProcessor(0, cfg.min_new_tokens, eos))
    return procs


class Stepper:
    """Decode steps through the LM's own forward over an HF cache."""

    def __init__(self, lm: torch.nn.Module, cache: DynamicCache) -> None:
        self.lm, self.cache = lm, cache

    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (R,) at positions pos (R,), mask (R, past + 1) -> (R, V) float32 logits."""
        out = self.lm(input_ids=tokens[:, None], attention_mask=mask, position_ids=pos[:, None],
                      past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1].float()

    def repeat(self, k: int) -> None:
        self.cache.batch_repeat_interleave(k)

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder to) ``rows``."""
        self.cache.reorder_cache(rows)


class FastStepper(Stepper):
    """Decode steps through :class:`~beatrec.align.fastlm.FastStep` over preallocated key/value buffers."""

    def __init__(self, fast: FastStep, cache: DynamicCache, extra: int) -> None:
        self.fast, self.kv = fast, KVBuffers.from_cache(cache, extra, fast.dtype)

    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fast(tokens, pos, self.kv, mask)

    def repeat(self, k: int) -> None:
        self.kv.select(torch.arange(len(self.kv.keys[0])).repeat_interleave(k))

    def select(self, rows: torch.Tensor) -> None:
        self.kv.select(rows)


class Advance(NamedTuple):
    """One step of a search over its rows' next-token logits."""

    finished: dict[int, list[int]]  # prompt (index in the search's batch) -> generated ids, end token included
    rows: torch.Tensor  # (R',) long: the search's rows (as they were) that the next step extends, in the new order
    tokens: torch.Tensor  # (R',) long: the token each of those rows is extended with


class GreedySearch:
    """Greedy decoding (``generate``'s ``_sample`` without sampling: processors on the raw logits, argmax) of ``b``
    prompts, one row each; a prompt leaves at its end token, or when ``stop(ids so far)`` says so (``generate``'s
    stopping criteria, checked after each token)."""

    def __init__(self, b: int, cfg: GenerateConfig, eos: int, stop: Callable[[list[int]], bool] | None = None) -> None:
        self.procs, self.cfg, self.eos, self.stop = processors(cfg, eos), cfg, eos, stop
        self.rows_per_prompt = 1
        self.live = torch.arange(b)  # prompts still decoding
        self.seqs = torch.empty(b, 0, dtype=torch.long)  # (R, t) generated ids of the live prompts
        self.t = 0

    def advance(self, logits: torch.Tensor) -> Advance:
        """logits (R, V) of the live rows -> the step's :class:`Advance`."""
        nxt = self.procs(self.seqs, logits).argmax(-1)  # (R,)
        self.seqs = torch.cat([self.seqs, nxt[:, None]], dim=1)
        self.t += 1
        done = nxt == self.eos
        if self.t == self.cfg.max_new_tokens:
            done[:] = True
        if self.stop is not None:
            for r in (~done).nonzero()[:, 0].tolist():
                done[r] = self.stop(self.seqs[r].tolist())
        finished = {int(self.live[r]): self.seqs[r].tolist() for r in done.nonzero()[:, 0].tolist()}
        keep = (~done).nonzero()[:, 0]
        self.live, self.seqs = self.live[keep], self.seqs[keep]
        return Advance(finished, keep, nxt[keep])


class BeamSearch:
    """Beam search with ``generate``'s semantics (``_beam_search``: 2K candidates, finished hypotheses scored
    ``sum log p / length ** length_penalty``, the ``early_stopping=False`` heuristic) of ``b`` prompts, K rows
    each; a prompt leaves when that heuristic says its search is over."""

    def __init__(self, b: int, cfg: GenerateConfig, pad: int, eos: int) -> None:
        k, t_max = cfg.num_beams, cfg.max_new_tokens
        self.procs, self.k, self.t_max, self.lp, self.eos = processors(cfg, eos), k, t_max, cfg.length_penalty, eos
        self.rows_per_prompt = k
        self.live = torch.arange(b)
        self.run_seq = torch.full((b, k, t_max), pad, dtype=torch.long)  # running hypotheses
        self.run_score = torch.full((b, k), NEG)
        self.run_score[:, 0] = 0.0  # the beams start identical: only the first one's continuations count
        self.fin_seq = self.run_seq.clone()  # finished hypotheses
        self.fin_score = torch.full((b, k), NEG)
        self.fin_len = torch.zeros(b, k, dtype=torch.long)
        self.fin_done = torch.zeros(b, k, dtype=torch.bool)
        self.open_ = torch.ones(b, dtype=torch.bool)  # HF's is_early_stop_heuristic_unsatisfied
        self.top_mask = torch.arange(2 * k) < k  # only the top K candidates may finish
        self.t = 0

    def advance(self, logits: torch.Tensor) -> Advance:
        """logits (n·K, V) of the live prompts' beams -> the step's :class:`Advance`."""
        k, t_max, t = self.k, self.t_max, self.t
        n, v = len(self.live), logits.shape[-1]
        logp = self.procs(self.run_seq.reshape(n * k, t_max)[:, :t], F.log_softmax(logits, dim=-1))  # (n*K, V)
        acc = (logp.view(n, k, v) + self.run_score[:, :, None]).view(n, k * v)
        cand_score, cand = acc.topk(2 * k, dim=1)  # (n, 2K)
        src = torch.div(cand, v, rounding_mode="floor")  # (n, 2K) beam of origin
        tok = cand % v
        cand_seq = self.run_seq.gather(1, src[..., None].expand(-1, -1, t_max)).clone()  # (n, 2K, T)
        cand_seq[:, :, t] = tok
        hits = (tok == self.eos) | (t + 1 >= t_max)  # (n, 2K) the candidate ends here
        # running beams: the best K candidates that go on
        go = cand_score + hits.float() * NEG
        nxt = go.topk(k, dim=1).indices  # (n, K)
        run_seq = cand_seq.gather(1, nxt[..., None].expand(-1, -1, t_max))
        run_score = go.gather(1, nxt)
        beam_src = src.gather(1, nxt)  # (n, K)
        next_tok = tok.gather(1, nxt)
        # finished hypotheses: a top-K candidate that ends, scored with the length penalty
        just = hits & self.top_mask[None, :]
        score = cand_score / ((t + 1) ** self.lp) + (~self.open_[:, None]).float() * NEG + (~just).float() * NEG
        m_seq = torch.cat([self.fin_seq, cand_seq], dim=1)
        m_score = torch.cat([self.fin_score, score], dim=1)
        m_len = torch.cat([self.fin_len, torch.full_like(tok, t + 1)], dim=1)
        m_done = torch.cat([self.fin_done, just], dim=1)
        keep = m_score.topk(k, dim=1).indices
        fin_seq = m_seq.gather(1, keep[..., None].expand(-1, -1, t_max))
        fin_score, fin_len, fin_done = m_score.gather(1, keep), m_len.gather(1, keep), m_done.gather(1, keep)
        # HF's early-stop heuristic (early_stopping=False: the best running score at the current length)
        worst = torch.where(fin_done, fin_score.min(dim=1, keepdim=True).values, torch.tensor(NEG))
        open_ = self.open_ & ((run_score[:, :1] / ((t + 1) ** self.lp)) > worst).any(dim=1)
        over = ~open_ | hits.all(dim=1) | (t + 1 >= t_max)
        finished = {int(self.live[r]): fin_seq[r, 0, : int(fin_len[r, 0])].tolist()
                    for r in over.nonzero()[:, 0].tolist()}
        stay = (~over).nonzero()[:, 0]  # (n',) prompts still searching
        rows = (stay[:, None] * k + beam_src[stay]).reshape(-1)  # (n'*K,) rows the next beams extend
        self.live, self.run_seq, self.run_score, self.open_ = self.live[stay], run_seq[stay], run_score[stay], open_[stay]
        self.fin_seq, self.fin_score = fin_seq[stay], fin_score[stay]
        self.fin_len, self.fin_done = fin_len[stay], fin_done[stay]
        self.t += 1
        return Advance(finished, rows, next_tok[stay].reshape(-1))


Search = GreedySearch | BeamSearch


def new_search(b: int, cfg: GenerateConfig, pad: int, eos: int,
               stop: Callable[[list[int]], bool] | None = None) -> Search:
    """Greedy when ``cfg.num_beams == 1`` (with the stopping rule ``stop``), else beam search, over ``b`` prompts."""
    if stop is not None and cfg.num_beams != 1:
        raise ValueError("a stopping rule is supported with greedy decoding only")
    return GreedySearch(b, cfg, eos, stop) if cfg.num_beams == 1 else BeamSearch(b, cfg, pad, eos)


def identity(rows: torch.Tensor, n: int) -> bool:
    """``rows`` keeps all ``n`` rows in their order (no cache copy needed)."""
    return len(rows) == n and bool((rows == torch.arange(n)).all())


def search(step: Stepper, pre: Prefilled, cfg: GenerateConfig, pad: int, eos: int,
           stop: Callable[[list[int]], bool] | None = None) -> list[list[int]]:
    """Run greedy or beam search over prefilled prompts, the live rows extended by ``step`` each step (greedy:
    a row also ends when ``stop(its ids)``). -> generated ids per prompt (the end token included)."""
    b = len(pre.logits)
    s = new_search(b, cfg, pad, eos, stop)
    logits, mask, pos = pre.logits, pre.mask, pre.next_pos
    if s.rows_per_prompt > 1:  # every beam starts from its prompt's cache
        step.repeat(s.rows_per_prompt)
        logits, mask, pos = (x.repeat_interleave(s.rows_per_prompt, dim=0) for x in (logits, mask, pos))
    out: dict[int, list[int]] = {}
    while True:
        adv = s.advance(logits)
        out.update(adv.finished)
        if not len(adv.rows):
            break
        if not identity(adv.rows, len(logits)):
            step.select(adv.rows)
            mask, pos = mask[adv.rows], pos[adv.rows]
        mask = torch.cat([mask, torch.ones(len(mask), 1, dtype=mask.dtype)], dim=1)
        logits = step(adv.tokens, pos, mask)
        pos = pos + 1
    return [out[i] for i in range(b)]


@torch.no_grad()
def decode(lm: torch.nn.Module, embeds: torch.Tensor, attention_mask: torch.Tensor, cfg: GenerateConfig, pad: int,
           eos: int, share_prefix: bool = True, fast: FastStep | None = None) -> torch.Tensor:
    """Left-padded prompt embeddings (B, L, d) -> generated ids (B, T), right-padded with ``pad`` (the layout
    ``generate`` returns); greedy when ``cfg.num_beams == 1``, else beam search. With ``fast``, the decode steps
    run through it (the prompt is still prefilled by ``lm``)."""
    with warnings.catch_warnings():  # `past_key_values` is renamed `cache` in transformers 5.x; both work below 5.40
        warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated")
        pre = prefill(lm, embeds, attention_mask.long(), share_prefix)
        step = Stepper(lm, pre.cache) if fast is None else FastStepper(fast, pre.cache, cfg.max_new_tokens)
        rows = search(step, pre, cfg, pad, eos)
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out
