"""Batched explanation generation with the KV cache."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from transformers import LogitsProcessorList, PreTrainedTokenizerBase

from beatrec.align.batch import Builders, collate_prompt, prompt_lengths, row_task
from beatrec.align.config import GenerateConfig
from beatrec.align.decode import decode
from beatrec.align.guidance import BehaviorGuidance
from beatrec.align.model import BehaviorLM
from beatrec.align.prompt import cap_words, pad_id


def _chunks(rows: list[dict], n: int) -> Iterator[list[dict]]:
    for s in range(0, len(rows), n):
        yield rows[s : s + n]


@torch.no_grad()
def generate_explanations(
    model: BehaviorLM,
    tok: PreTrainedTokenizerBase,
    builder: Builders,
    rows: list[dict],
    cfg: GenerateConfig,
    max_words: int = 50,
    progress: bool = False,
) -> list[str]:
    """Explanations for ``rows`` (dicts with uid, iid, title), ``cfg.batch_size`` prompts per ``generate`` call,
    each capped at ``max_words`` words, in the order of ``rows`` (``cfg.sort_by_length``: batches formed from
    prompts of similar length). Rows of another task (``row["task"]``, all the same) are written with
    that task's prompt: ``builder`` is then a mapping task -> builder."""
    from tqdm.auto import tqdm

    model.eval()
    out: list[str] = []
    mean: torch.Tensor | None = None
    order = list(range(len(rows)))
    if cfg.sort_by_length and len(rows) > cfg.batch_size:  # batches of similar prompt lengths: less padding
        lengths = prompt_lengths(builder, rows)
        order = sorted(order, key=lengths.__getitem__)
    bar = tqdm(total=len(rows), desc="explain", unit="pair", disable=not progress)
    for part in _chunks([rows[i] for i in order], cfg.batch_size):
        batch = collate_prompt(builder, part)
        embeds, _, beh = model.embed(batch)
        neutral = None
        if cfg.guidance != 1 and beh.shape[1]:
            if mean is None:  # the population mean, once per call (rows share one task)
                mean = model.neutral_behavior(model.sides(row_task(part)))  # (S, d)
            neutral = model.embed(batch, behavior=mean[None].expand(len(beh), -1, -1))[0]
        gen = generate_from_embeds(model, tok, embeds, batch.attention_mask, cfg, pad_id(tok), neutral)
        out += [cap_words(t, max_words) for t in tok.batch_decode(gen, skip_special_tokens=True)]
        bar.update(len(part))
    bar.close()
    back = [""] * len(rows)
    for i, text in zip(order, out, strict=True):
        back[i] = text
    return back


@torch.no_grad()
def generate_from_embeds(model: BehaviorLM, tok: PreTrainedTokenizerBase, embeds: torch.Tensor,
                         attention_mask: torch.Tensor, cfg: GenerateConfig, pad: int,
                         neutral: torch.Tensor | None = None) -> torch.Tensor:
    """Decode from left-padded prompt embeddings (B, L, d) with ``cfg``'s settings. -> new token ids (B, T).

    ``neutral`` (B, L, d), the same prompts with neutral behavior slots, turns on behavior-token guidance at
    ``cfg.guidance`` (:class:`~beatrec.align.guidance.BehaviorGuidance`); without it decoding is plain."""
    guide = None
    if cfg.decoder in ("lean", "fast") and not cfg.do_sample and (neutral is None or cfg.guidance == 1):
        fast = model.fast_step(cfg.fast_weights, cfg.pack) if cfg.decoder == "fast" else None
        return decode(model.lm, embeds, attention_mask, cfg, pad, tok.eos_token_id, fast=fast)
    if neutral is not None and cfg.guidance != 1:
        guide = LogitsProcessorList([BehaviorGuidance(model.lm, neutral, attention_mask, cfg.guidance, cfg.num_beams)])
    with warnings.catch_warnings():  # penalties apply to generated tokens only: intended (the prompt is fixed)
        warnings.filterwarnings("ignore", message=".*inputs_embeds.*without `input_ids`")
        warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated")  # the guidance cache; pinned < 5.40
        return model.lm.generate(
            logits_processor=guide,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            max_new_tokens=cfg.max_new_tokens,
            min_new_tokens=cfg.min_new_tokens or None,
            num_beams=cfg.num_beams,
            length_penalty=cfg.length_penalty if cfg.num_beams > 1 else None,
            do_sample=cfg.do_sample,
            temperature=cfg.temperature if cfg.do_sample else None,
            top_p=None,
            top_k=None,
            repetition_penalty=cfg.repetition_penalty,
            no_repeat_ngram_size=cfg.no_repeat_ngram_size or None,
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
            use_cache=True,
        )
