"""The LLM-BS model: a causal LM with item-code tokens, trained by next-token prediction plus Global Contrast
Decompression (seed paper eq. 7).

Every sequential-recommendation target ends with the [CON] summary token. Its last-layer hidden state h goes
through two *training-only* projectors into the exogenous spaces, and InfoNCE (cosine, in-batch negatives)
pulls it to the target item's semantic embedding (the LM's mean hidden state over its text) and its behavior
embedding (the behavior encoder's item vector):

    L = L_NTP + λ1 · InfoNCE(P_s(h), e_s(target)) + λ2 · InfoNCE(P_b(h), e_b(target))        (eq. 7)

The projectors are not part of what inference runs (:meth:`LLMBS.inference_modules`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from beatrec.align.prompt import render_chat
from beatrec.config import check
from beatrec.losses import info_nce
from beatrec.seqrec.llmbs.tasks import Example
from beatrec.seqrec.llmbs.templates import ANSWER_CUE
from beatrec.seqrec.llmbs.vocab import CON

IGNORE = -100


@dataclass
class GCDConfig:
    """Global Contrast Decompression: weights λ1 (semantic), λ2 (behavior) and the InfoNCE temperature."""

    lambda_semantic: float = 0.1
    lambda_behavior: float = 0.1
    temperature: float = 0.1

    def validate(self) -> None:
        check(self.lambda_semantic >= 0 and self.lambda_behavior >= 0, "gcd lambdas must be >= 0")
        check(self.temperature > 0, "gcd.temperature must be > 0")


class Batch(NamedTuple):
    input_ids: torch.Tensor  # (B, L) right-padded prompt + answer (+ [CON]) + EOS
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L) IGNORE outside the answer
    con_pos: torch.Tensor  # (B,) position of [CON], -1 for examples without one
    items: torch.Tensor  # (B,) target item of seqrec examples, -1 otherwise


class LLMBSOutput(NamedTuple):
    loss: torch.Tensor
    ntp: torch.Tensor  # next-token prediction loss
    gcd: torch.Tensor  # λ-weighted contrastive terms (0 when no [CON] in the batch or both λ = 0)


def keep_kwargs(lm: nn.Module, keep: int | torch.Tensor) -> dict:
    """``{"logits_to_keep": keep}`` when the LM (under any peft wrapper) accepts it, else ``{}`` (all logits)."""
    import inspect

    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}


def prompt_text(tok, prompt: str) -> str:  # noqa: ANN001
    return render_chat(tok, prompt, ANSWER_CUE)


def collate(tok, examples: list[Example], max_len: int = 256) -> Batch:  # noqa: ANN001
    """Tokenize examples: labels on the answer, [CON] after seqrec answers, EOS at the end; right padding."""
    con = tok.convert_tokens_to_ids(CON)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows, labels, cons = [], [], []
    for ex in examples:
        p = tok(prompt_text(tok, ex.prompt), add_special_tokens=False)["input_ids"]
        a = tok(" " + ex.target if not prompt_text(tok, "").endswith("\n") else ex.target,
                add_special_tokens=False)["input_ids"]
        a = a + ([con] if ex.task == "seqrec" else []) + [tok.eos_token_id]
        p = p[-(max_len - len(a)):] if len(p) + len(a) > max_len else p
        rows.append(p + a)
        labels.append([IGNORE] * len(p) + a)
        cons.append(len(p) + len(a) - 2 if ex.task == "seqrec" else -1)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[b, : len(r)] = torch.tensor(r)
        lab[b, : len(lb)] = torch.tensor(lb)
        mask[b, : len(r)] = 1
    return Batch(ids, mask, lab, torch.tensor(cons), torch.tensor([ex.item for ex in examples]))


class LLMBS(nn.Module):
    """LM + training-only GCD projectors.

    Args:
        lm: causal LM whose vocabulary already holds the code tokens (:func:`~beatrec.seqrec.llmbs.vocab.add_code_tokens`).
        semantic / behavior: (n_items, d_s) / (n_items, d_b) exogenous item embeddings (frozen buffers).
    """

    def __init__(self, lm: nn.Module, semantic: torch.Tensor, behavior: torch.Tensor, cfg: GCDConfig) -> None:
        super().__init__()
        cfg.validate()
        self.lm, self.cfg = lm, cfg
        width = lm.get_input_embeddings().embedding_dim
        self.register_buffer("semantic", semantic.float(), persistent=False)
        self.register_buffer("behavior", behavior.float(), persistent=False)
        self.proj_semantic = nn.Linear(width, semantic.shape[1])
        self.proj_behavior = nn.Linear(width, behavior.shape[1])
        self._gather_ok: bool | None = None  # LM logits == output embedding(last hidden state)? (first forward)

    def inference_modules(self) -> nn.Module:
        """What recommendation runs: the LM alone (the GCD projectors are training-only)."""
        return self.lm

    def forward(self, batch: Batch) -> LLMBSOutput:
        """NTP over the answer tokens + GCD.

        The LM head (a 49k-word vocabulary for SmolLM2) runs only on the N positions that predict an answer
        token — gathered row by row from the last hidden states — not on every prompt position. The first call
        checks that the LM's own logits are its output embedding applied to ``hidden_states[-1]`` (true for
        Llama-style LMs; not for, e.g., soft-capped logits); if not, every call uses the LM's full logits. Either
        way the loss equals the LM's own shifted cross-entropy over the labels.
        """
        need_gcd = bool((batch.con_pos >= 0).any()) and (self.cfg.lambda_semantic + self.cfg.lambda_behavior) > 0
        target = batch.labels[:, 1:]  # (B, L-1) column j predicts token j+1
        rows, cols = (target != IGNORE).nonzero(as_tuple=True)  # (N,), (N,)
        head = self.lm.get_output_embeddings()
        if self._gather_ok is None:  # first call: full logits, and the check
            out = self.lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
            with torch.no_grad():
                mine = head(out.hidden_states[-1]).float() if head is not None else None
                self._gather_ok = mine is not None and mine.shape == out.logits.shape and \
                    torch.allclose(mine, out.logits.float(), atol=1e-3, rtol=1e-3)
            logits = out.logits[rows, cols]  # (N, V)
        elif self._gather_ok:
            out = self.lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True,
                          **keep_kwargs(self.lm, 1))
            logits = head(out.hidden_states[-1][rows, cols])  # (N, V) only where an answer token is predicted
        else:
            out = self.lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          output_hidden_states=need_gcd)
            logits = out.logits[rows, cols]
        ntp = nn.functional.cross_entropy(logits.float(), target[rows, cols], ignore_index=IGNORE)
        gcd = torch.zeros((), device=ntp.device)
        if need_gcd:
            rows = (batch.con_pos >= 0).nonzero().squeeze(1)  # (M,)
            h = out.hidden_states[-1][rows, batch.con_pos[rows]].float()  # (M, d) hidden state at [CON]
            items = batch.items[rows]
            if len(rows) > 1:  # InfoNCE needs in-batch negatives
                t = self.cfg.temperature
                gcd = self.cfg.lambda_semantic * info_nce(self.proj_semantic(h), self.semantic[items], t) + \
                    self.cfg.lambda_behavior * info_nce(self.proj_behavior(h), self.behavior[items], t)
        return LLMBSOutput(ntp + gcd, ntp, gcd)
