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


def greedy(step: Stepper, pre: Prefilled, cfg: GenerateConfig, pad: int, eos: int) -> list[list[int]]:
    """Greedy decoding (``generate``'s ``_sample`` without sampling: processors on the raw logits, argmax);
    a row leaves the batch at its end token. -> generated ids per prompt (the end token included)."""
    procs = processors(cfg, eos)
    b = len(pre.logits)
    live = torch.arange(b)  # rows of the original batch still decoding
    seqs = torch.empty(b, 0, dtype=torch.long)  # (R, t) generated ids of the live rows
    out: list[list[int]] = [[] for _ in range(b)]
    logits, mask, pos = pre.logits, pre.mask, pre.next_pos
    for t in range(cfg.max_new_tokens):
        nxt = procs(seqs, logits).argmax(-1)  # (R,)
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        done = nxt == eos
        if t + 1 == cfg.max_new_tokens:
            done[:] = True
        for r in done.nonzero()[:, 0].tolist():
            out[int(live[r])] = seqs[r].tolist()
        if bool(done.all()):
            break
        keep = (~done).nonzero()[:, 0]
        if len(keep) < len(live):
            step.select(keep)
            live, seqs, nxt, mask, pos = live[keep], seqs[keep], nxt[keep], mask[keep], pos[keep]
        mask = torch.cat([mask, torch.ones(len(live), 1, dtype=mask.dtype)], dim=1)
        logits = step(nxt, pos, mask)
        pos = pos + 1
    return out


def beam_search(step: Stepper, pre: Prefilled, cfg: GenerateConfig, pad: int, eos: int) -> list[list[int]]:
    """Beam search with ``generate``'s semantics (``_beam_search``: 2K candidates, finished hypotheses scored
    ``sum log p / length ** length_penalty``, the ``early_stopping=False`` heuristic); a prompt leaves the batch
    when that heuristic says its search is over. -> the best hypothesis's ids per prompt."""
    procs = processors(cfg, eos)
    k, t_max, lp = cfg.num_beams, cfg.max_new_tokens, cfg.length_penalty
    b = len(pre.logits)
    mask, pos = pre.mask, pre.next_pos
    step.repeat(k)
    logits = pre.logits.repeat_interleave(k, dim=0)  # (B*K, V)
    mask, pos = mask.repeat_interleave(k, dim=0), pos.repeat_interleave(k, dim=0)
    live = torch.arange(b)
    run_seq = torch.full((b, k, t_max), pad, dtype=torch.long)  # running hypotheses
    run_score = torch.full((b, k), NEG)
    run_score[:, 0] = 0.0  # the beams start identical: only the first one's continuations count
    fin_seq = run_seq.clone()  # finished hypotheses
    fin_score = torch.full((b, k), NEG)
    fin_len = torch.zeros(b, k, dtype=torch.long)
    fin_done = torch.zeros(b, k, dtype=torch.bool)
    open_ = torch.ones(b, dtype=torch.bool)  # HF's is_early_stop_heuristic_unsatisfied
    best: dict[int, list[int]] = {}
    top_mask = torch.arange(2 * k) < k  # only the top K candidates may finish
    for t in range(t_max):
        n = len(live)
        v = logits.shape[-1]
        logp = procs(run_seq.reshape(n * k, t_max)[:, :t], F.log_softmax(logits, dim=-1))  # (n*K, V)
        acc = (logp.view(n, k, v) + run_score[:, :, None]).view(n, k * v)
        cand_score, cand = acc.topk(2 * k, dim=1)  # (n, 2K)
        src = torch.div(cand, v, rounding_mode="floor")  # (n, 2K) beam of origin
        tok = cand % v
        cand_seq = run_seq.gather(1, src[..., None].expand(-1, -1, t_max)).clone()  # (n, 2K, T)
        cand_seq[:, :, t] = tok
        hits = (tok == eos) | (t + 1 >= t_max)  # (n, 2K) the candidate ends here
        # running beams: the best K candidates that go on
        go = cand_score + hits.float() * NEG
        nxt = go.topk(k, dim=1).indices  # (n, K)
        run_seq = cand_seq.gather(1, nxt[..., None].expand(-1, -1, t_max))
        run_score = go.gather(1, nxt)
        beam_src = src.gather(1, nxt)  # (n, K)
        next_tok = tok.gather(1, nxt)
        # finished hypotheses: a top-K candidate that ends, scored with the length penalty
        just = hits & top_mask[None, :]
        score = cand_score / ((t + 1) ** lp) + (~open_[:, None]).float() * NEG + (~just).float() * NEG
        m_seq = torch.cat([fin_seq, cand_seq], dim=1)
        m_score = torch.cat([fin_score, score], dim=1)
        m_len = torch.cat([fin_len, torch.full_like(tok, t + 1)], dim=1)
        m_done = torch.cat([fin_done, just], dim=1)
        keep = m_score.topk(k, dim=1).indices
        fin_seq = m_seq.gather(1, keep[..., None].expand(-1, -1, t_max))
        fin_score, fin_len, fin_done = m_score.gather(1, keep), m_len.gather(1, keep), m_done.gather(1, keep)
        # HF's early-stop heuristic (early_stopping=False: the best running score at the current length)
        worst = torch.where(fin_done, fin_score.min(dim=1, keepdim=True).values, torch.tensor(NEG))
        open_ = open_ & ((run_score[:, :1] / ((t + 1) ** lp)) > worst).any(dim=1)
        over = ~open_ | hits.all(dim=1) | (t + 1 >= t_max)
        for r in over.nonzero()[:, 0].tolist():
            best[int(live[r])] = fin_seq[r, 0, : int(fin_len[r, 0])].tolist()
        if bool(over.all()):
            break
        stay = (~over).nonzero()[:, 0]  # (n',) prompts still searching
        rows = (stay[:, None] * k + beam_src[stay]).reshape(-1)  # (n'*K,) cache rows the next beams extend
        step.select(rows)
        live, run_seq, run_score, open_ = live[stay], run_seq[stay], run_score[stay], open_[stay]
        fin_seq, fin_score, fin_len, fin_done = fin_seq[stay], fin_score[stay], fin_len[stay], fin_done[stay]
        mask = torch.cat([mask[rows], torch.ones(len(rows), 1, dtype=mask.dtype)], dim=1)
        pos = pos[rows]
        logits = step(next_tok[stay].reshape(-1), pos, mask)
        pos = pos + 1
    return [best[i] for i in range(b)]


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
        rows = (greedy if cfg.num_beams == 1 else beam_search)(step, pre, cfg, pad, eos)
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out
