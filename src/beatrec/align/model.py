"""BehaviorLM: projected behavior tokens injected into a frozen causal LM (BEAT eqs. 10–12)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from transformers import PreTrainedModel

from beatrec.align.batch import IGNORE, PairBatch
from beatrec.align.config import AlignModelConfig
from beatrec.align.projector import Projector
from beatrec.align.sar import sample_pairs, sar_loss
from beatrec.align.vocab import BehaviorVocab


class AlignOutput(NamedTuple):
    loss: torch.Tensor  # () NLL + γ·SAR (eq. 12)
    nll: torch.Tensor  # () mean token NLL of the explanation
    sar: torch.Tensor  # () eq. 11 (0 when disabled)


def slot_parts(n_micro: int, cfg: AlignModelConfig) -> list[int]:
    """Which of an entity's 1+N tokens go into the prompt: 0 = macro, 1..N = micro (ablation switches)."""
    return ([0] if cfg.use_macro else []) + (list(range(1, n_micro + 1)) if cfg.use_micro else [])


class BehaviorLM(nn.Module):
    """Frozen LM + trainable projector (and optionally trainable codebooks).

    Args:
        lm: a Hugging Face causal LM; all its parameters are frozen here.
        vocab: what fills the slots: the stage-1 behavior vocabulary (BEAT), or any module with the same
            interface (``n_micro``, ``code_dim``, ``vectors(side, ids) -> (B, 1+N, C)``, ``scale_sample()``,
            ``set_trainable(flag)``), e.g. :class:`~beatrec.align.continuous.ContinuousVectors` (XRec-style).
        cfg: model switches.
    """

    def __init__(self, lm: PreTrainedModel, vocab: BehaviorVocab | nn.Module, cfg: AlignModelConfig,
                 seed: int = 0) -> None:
        super().__init__()
        self.lm, self.vocab, self.cfg = lm, vocab, cfg
        for p in self.lm.parameters():
            p.requires_grad_(False)
        self.lm.eval()
        vocab.set_trainable(cfg.train_codebooks)
        self.parts = slot_parts(vocab.n_micro, cfg)
        width = lm.get_input_embeddings().embedding_dim
        self.projector = Projector(vocab.code_dim, width, cfg.projector_hidden, 2 * len(self.parts))
        self._match_embedding_scale()
        self.generator = torch.Generator().manual_seed(seed)  # SAR pair sampling

    @torch.no_grad()
    def _match_embedding_scale(self) -> None:
        """Scale the projector's last layer so projected tokens start at the spread of the LM's own input
        embeddings (soft tokens far larger than any word embedding derail a frozen LM)."""
        sample = self.vocab.scale_sample()  # (K, C): every codeword, or a sample of continuous parts
        out = self.projector.mlp(sample.float())
        target = self.lm.get_input_embeddings().weight.float().std()
        factor = target / out.std().clamp_min(1e-8)
        last = self.projector.mlp[-1]
        last.weight.mul_(factor)
        last.bias.mul_(factor)

    @property
    def n_side_slots(self) -> int:
        return len(self.parts)

    def train(self, mode: bool = True) -> BehaviorLM:
        super().train(mode)
        self.lm.eval()  # the frozen LM never enters training mode (no dropout)
        return self

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The parameters stage 2 trains (what a checkpoint holds)."""
        return {k: v.detach().clone() for k, v in self.named_parameters() if v.requires_grad}

    def behavior_embeds(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,), (B,) -> (B, S, d) projected behavior tokens, user slots then item slots."""
        vu = self.vocab.vectors("user", users)[:, self.parts]  # (B, S/2, C)
        vi = self.vocab.vectors("item", items)[:, self.parts]  # (B, S/2, C)
        return self.projector(torch.cat([vu, vi], dim=1))

    def embed(self, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input embeddings with the slots replaced. -> (inputs_embeds (B, L, d), token embeds (B, L, d), beh (B, S, d))."""
        tokens = self.lm.get_input_embeddings()(batch.input_ids)  # (B, L, d), frozen
        beh = self.behavior_embeds(batch.users, batch.items).to(tokens.dtype)  # (B, S, d)
        idx = batch.slot_pos[..., None].expand(-1, -1, tokens.shape[-1])  # (B, S, d)
        return tokens.scatter(1, idx, beh), tokens, beh

    def forward(self, batch: PairBatch) -> AlignOutput:
        embeds, tokens, beh = self.embed(batch)
        out = self.lm(inputs_embeds=embeds, attention_mask=batch.attention_mask, labels=batch.labels)
        nll = out.loss
        sar = torch.zeros((), device=nll.device)
        if self.cfg.use_sar and self.cfg.gamma > 0:
            target = batch.labels != IGNORE  # (B, L) explanation tokens
            text = tokens[target].float()  # (M, d)
            owner = target.nonzero()[:, 0]  # (M,)
            pairs = sample_pairs(len(text), self.cfg.sar_pairs, self.generator).to(text.device)
            if len(pairs):
                sar = sar_loss(text, owner, beh.float(), pairs)
        return AlignOutput(nll + self.cfg.gamma * sar, nll, sar)
