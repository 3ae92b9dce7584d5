"""Constrained recommendation with an LLM-BS model: beam search (beam 20) over item codes, restricted by the
prefix trie of valid codes (:func:`beatrec.seqrec.beam.constrained_beam_search`); items ranked by sequence
log-probability. Every returned item is a real item."""

from __future__ import annotations

import copy

import numpy as np
import torch

from beatrec.seqrec.beam import BeamResult, constrained_beam_search
from beatrec.seqrec.llmbs.model import keep_kwargs, prompt_text
from beatrec.seqrec.llmbs.tasks import history_text
from beatrec.seqrec.llmbs.templates import SEQREC
from beatrec.seqrec.llmbs.vocab import CodeVocab


@torch.no_grad()
def recommend(lm, tok, vocab: CodeVocab, histories: np.ndarray, code_text: list[str], beam: int = 20,  # noqa: ANN001
              max_history: int = 10, kv_cache: bool = True) -> BeamResult:
    """Top-``beam`` items for each history (B, max_len) (right-aligned, PAD = -1), best first.

    The prompt is the first sequential-recommendation template. With ``kv_cache`` (default) the prompt runs
    once per user; its key/value cache is copied to the beams, and each step feeds only the newest code token of
    every beam, the beams' caches reordered to follow their parents; without it every step re-reads the whole
    prompt and prefix for every beam (same result, for LMs whose cache cannot be reordered).
    """
    lm.eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompts = [tok(prompt_text(tok, SEQREC[0].format(history=history_text(h, code_text, max_history))),
                   add_special_tokens=False)["input_ids"] for h in histories]
    width = max(len(p) for p in prompts)
    base = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(base)
    for b, p in enumerate(prompts):  # left padding: every prompt ends at the last column
        base[b, width - len(p):] = torch.tensor(p)
        mask[b, width - len(p):] = 1
    v = vocab.trie.vocab_size
    dev = next(lm.parameters()).device  # logits come back to the CPU, where the trie lives
    base, mask = base.to(dev), mask.to(dev)
    keep = keep_kwargs(lm, 1)  # only the last position's logits
    lens = mask.sum(1)  # (B,) real prompt tokens: the position of the first code token
    state: dict[str, object] = {}  # "prompt": the prompt cache; "cache"/"prev": the beams' cache and prefixes

    def cached_fn(prefix: torch.Tensor) -> torch.Tensor:  # (B, b, t) -> (B, b, V)
        n, k, t = prefix.shape
        if t == 0:
            out = lm(input_ids=base, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0),
                     use_cache=True, **keep)
            state["prompt"] = out.past_key_values
            return out.logits[:, -1:].float()[..., :v].cpu()
        if t == 1:  # every beam continues the user's prompt
            cache = copy.deepcopy(state["prompt"])
            cache.batch_repeat_interleave(k)
        else:  # each beam's parent: the previous beam whose prefix this one extends (beams are distinct)
            prev = state["prev"]  # (B, b_prev, t-1)
            parent = (prefix[:, :, None, :-1] == prev[:, None]).all(-1).float().argmax(-1)  # (B, b)
            cache = state["cache"]
            cache.reorder_cache((torch.arange(n)[:, None] * prev.shape[1] + parent).reshape(-1).to(dev))
        att = torch.cat([mask.repeat_interleave(k, 0), torch.ones(n * k, t, dtype=torch.long, device=dev)], 1)
        pos = lens.repeat_interleave(k)[:, None] + (t - 1)  # (n·k, 1) the new token's position after its prompt
        out = lm(input_ids=prefix[:, :, -1:].reshape(n * k, 1).to(dev), attention_mask=att, position_ids=pos,
                 past_key_values=cache, use_cache=True, **keep)
        state.update(cache=out.past_key_values, prev=prefix)  # the cache now ends with this step's token
        return out.logits[:, -1].float().reshape(n, k, -1)[..., :v].cpu()

    def full_fn(prefix: torch.Tensor) -> torch.Tensor:  # (B, b, t) -> (B, b, V)
        n, k, t = prefix.shape
        ids = torch.cat([base[:, None].expand(n, k, width), prefix.to(dev)], dim=2).reshape(n * k, width + t)
        att = torch.cat([mask[:, None].expand(n, k, width), torch.ones(n, k, t, dtype=torch.long, device=dev)], 2)
        att = att.reshape(n * k, width + t)
        pos = (att.cumsum(1) - 1).clamp_min(0)  # positions count real tokens only (left padding)
        out = lm(input_ids=ids, attention_mask=att, position_ids=pos, **keep).logits[:, -1]  # (n·k, V_lm)
        return out.float().reshape(n, k, -1)[..., :v].cpu()

    return constrained_beam_search(cached_fn if kv_cache else full_fn, vocab.trie, len(prompts), beam)
