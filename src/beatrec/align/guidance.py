"""Behavior-token guidance: decoding that amplifies what the behavior tokens say.

Classifier-free guidance for language models (Sanchez et al. 2023, "Stay on topic with classifier-free guidance",
eq. 7; the same form as context-aware decoding, Shi et al. 2023, eq. 2), with the behavior tokens as the guided
context::

    log p~(y_t | y_<t, x) = log p(y_t | y_<t, x0) + g * (log p(y_t | y_<t, x) - log p(y_t | y_<t, x0))

``x`` is the prompt holding the entities' projected behavior tokens, ``x0`` the same prompt with every behavior slot
holding the population mean of its projected tokens (:meth:`beatrec.align.model.BehaviorLM.neutral_behavior`):
"an average user/item". ``g = 1`` is plain decoding; ``g > 1`` favours the words these tokens make likelier than an
average entity's would (their pointwise mutual information with the tokens), which a fine-tuned LM that has learnt
the mode of its targets otherwise drowns; ``g = 0`` decodes the neutral prompt only (a control).

The neutral prompt runs beside the real one with its own KV cache; under beam search the cache follows the beams
(each running hypothesis is matched to the one it extends).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache, LogitsProcessor, PreTrainedModel


def guided_scores(cond: torch.Tensor, neutral: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, V) next-token scores of the real and the neutral prompt -> (N, V) guided log-probabilities (eq. 7).

    Both are normalised first (log-softmax), so raw logits and log-probabilities give the same result; a token
    the real prompt's processors ruled out (-inf: repeated n-grams, EOS held back) stays ruled out at every scale.
    """
    c, n = F.log_softmax(cond.float(), dim=-1), F.log_softmax(neutral.float(), dim=-1)
    return (n + scale * (c - n)).masked_fill(c == -torch.inf, -torch.inf)


def beam_parents(prev: torch.Tensor, now: torch.Tensor, num_beams: int) -> torch.Tensor:
    """Which previous row each running hypothesis extends.

    prev (N, t-1) the hypotheses of the previous step, now (N, t) this step's; rows come in groups of
    ``num_beams`` per prompt. -> (N,) row index into ``prev`` whose tokens equal ``now[:, :-1]`` (within the group).
    """
    n, t = now.shape
    g = n // num_beams
    head = now[:, :-1].reshape(g, num_beams, 1, t - 1)
    eq = (head == prev.reshape(g, 1, num_beams, t - 1)).all(-1)  # (G, nb, nb): hypothesis j extends previous k
    if not bool(eq.any(-1).all()):
        raise RuntimeError("behavior guidance: a running hypothesis extends no hypothesis of the previous step")
    local = eq.to(torch.int8).argmax(-1)  # (G, nb): the first match
    return (local + torch.arange(g, device=now.device)[:, None] * num_beams).reshape(n)


class BehaviorGuidance(LogitsProcessor):
    """A ``generate`` logits processor applying :func:`guided_scores` against the neutral prompt.

    Args:
        lm: the causal LM ``generate`` runs (the same weights, LoRA included).
        neutral_embeds: (B, L, d) the left-padded prompt embeddings with neutral behavior slots.
        attention_mask: (B, L) the prompt's mask (the real prompt's).
        scale: the guidance ``g`` (1 = plain decoding).
        num_beams: hypotheses per prompt in the ``generate`` call.
    """

    def __init__(self, lm: PreTrainedModel, neutral_embeds: torch.Tensor, attention_mask: torch.Tensor,
                 scale: float, num_beams: int = 1) -> None:
        self.lm, self.scale, self.num_beams = lm, scale, num_beams
        self.embeds = neutral_embeds.repeat_interleave(num_beams, dim=0)  # (N, L, d), N = B * num_beams
        self.mask = attention_mask.repeat_interleave(num_beams, dim=0)  # (N, L)
        self.cache: DynamicCache | None = None
        self.prev: torch.Tensor | None = None  # (N, t) the hypotheses the cache holds
        self.pos: torch.Tensor | None = None  # (N, 1) position of the next token

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.cache is None:  # first step: the neutral prompt (and any tokens already there) in one pass
            self.cache = DynamicCache()
            mask = torch.cat([self.mask, self.mask.new_ones(input_ids.shape)], dim=1)  # (N, L + t)
            pos = (mask.cumsum(-1) - 1).clamp_min(0)  # (N, L + t): left padding
            tok = self.lm.get_input_embeddings()(input_ids).to(self.embeds.dtype)  # (N, t, d)
            out = self.lm(inputs_embeds=torch.cat([self.embeds, tok], dim=1), attention_mask=mask,
                          position_ids=pos, past_key_values=self.cache, use_cache=True)
            self.mask, self.pos = mask, pos[:, -1:] + 1
        else:
            if self.num_beams > 1 and self.prev.shape[1]:
                self.cache.reorder_cache(beam_parents(self.prev, input_ids, self.num_beams))
            new = input_ids[:, self.prev.shape[1]:]  # (N, k) the tokens since the last call (k = 1)
            self.mask = torch.cat([self.mask, self.mask.new_ones(new.shape)], dim=1)
            steps = self.pos + torch.arange(new.shape[1], device=new.device)  # (N, k)
            out = self.lm(input_ids=new, attention_mask=self.mask, position_ids=steps,
                          past_key_values=self.cache, use_cache=True)
            self.pos = steps[:, -1:] + 1
        self.prev = input_ids.clone()
        return guided_scores(scores, out.logits[:, -1], self.scale).to(scores.dtype)
