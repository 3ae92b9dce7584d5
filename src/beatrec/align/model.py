"""BehaviorLM: projected behavior tokens injected into a causal LM (BEAT eqs. 10–12), frozen or with LoRA."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from beatrec.align.anchor import anchor_targets, word_anchor_loss
from beatrec.align.batch import IGNORE, PairBatch
from beatrec.align.config import AlignModelConfig
from beatrec.align.contrast import row_means, token_contrast_loss
from beatrec.align.fastlm import FastStep
from beatrec.align.fastlm import supported as fast_supported
from beatrec.align.projector import Projector
from beatrec.align.prompt import PromptBuilder
from beatrec.align.sar import sample_pairs, sar_loss
from beatrec.align.tasks import EXPLAIN, TASK_NAMES, TASKS
from beatrec.align.vocab import BehaviorVocab


class AlignOutput(NamedTuple):
    loss: torch.Tensor  # () NLL + γ·SAR (eq. 12) + λ·word anchor + μ·token contrast (the last two not in the paper)
    nll: torch.Tensor  # () mean token NLL of the explanation
    sar: torch.Tensor  # () eq. 11 (0 when disabled)
    anchor: torch.Tensor  # () :func:`beatrec.align.anchor.word_anchor_loss` (0 when disabled)
    contrast: torch.Tensor  # () :func:`beatrec.align.contrast.token_contrast_loss` (0 when disabled)


def slot_parts(n_micro: int, cfg: AlignModelConfig) -> list[int]:
    """Which of an entity's 1+N tokens go into the prompt: 0 = macro, 1..N = micro (ablation switches)."""
    return ([0] if cfg.use_macro else []) + (list(range(1, n_micro + 1)) if cfg.use_micro else [])


NEUTRAL_SAMPLE = 20_000  # entities averaged for the neutral behavior tokens (evenly spaced ids beyond that)
LORA_MARK = "lora_"  # peft's LoRA parameters carry this in their names


def lora_config(cfg: AlignModelConfig, lm: PreTrainedModel, **extra: object):  # noqa: ANN201 - peft.LoraConfig
    """peft's LoraConfig for ``cfg.lora_*`` on the modules of ``lm`` it names (ConfigError when none)."""
    from peft import LoraConfig

    present = {name.rsplit(".", 1)[-1] for name, _ in lm.named_modules()}
    targets = [t for t in cfg.lora_targets if t in present]
    if not targets:
        from beatrec.errors import ConfigError

        raise ConfigError(f"model.lora_targets {list(cfg.lora_targets)} name no module of this LM")
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", **extra)


def add_lora(lm: PreTrainedModel, cfg: AlignModelConfig) -> None:
    """Inject a peft LoRA adapter (``cfg.lora_*``) into ``lm`` in place; only its parameters train."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(lora_config(cfg, lm), lm)
    for name, p in lm.named_parameters():
        p.requires_grad_(LORA_MARK in name)


def merge_lora(lm: PreTrainedModel) -> int:
    """Fold every LoRA adapter of ``lm`` into its base weight, W <- W + (alpha / r) * B A (LoRA, Hu et al. 2021,
    eq. 3; peft's ``LoraLayer.merge``), in the weights' dtype: a forward pass then runs the base matmuls only.
    For inference (the adapter stays in the module, marked merged; training a merged model is wrong). -> the number
    of layers merged."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for m in lm.modules():
        if isinstance(m, LoraLayer) and not m.merged:
            m.merge()
            n += 1
    return n


def quantize_int8(lm: PreTrainedModel) -> PreTrainedModel:
    """int8 weights for every ``nn.Linear`` of ``lm`` (PyTorch dynamic quantisation: per-tensor int8 weights,
    activations quantised per call; the LM head too, so a head tied to the input embeddings is untied, the
    embeddings staying float32). In place; for inference on CPU. Merge a LoRA adapter first (:func:`merge_lora`):
    a merged layer's forward calls only its (now quantised) base layer. -> ``lm``."""
    import warnings

    with warnings.catch_warnings():  # the eager quantisation API is deprecated in torch 2.x, present in the pinned 2.13
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(lm, {nn.Linear}, dtype=torch.qint8, inplace=True)


def lora_config_dict(cfg: AlignModelConfig, lm: PreTrainedModel) -> dict:
    """peft's ``adapter_config.json`` content for the adapter :func:`add_lora` made."""
    return lora_config(cfg, lm, task_type="CAUSAL_LM",
                       base_model_name_or_path=getattr(lm, "name_or_path", None)).to_dict()


class BehaviorLM(nn.Module):
    """LM (frozen, or frozen base + LoRA adapter) + trainable projector (optionally trainable codebooks and
    shared soft-prompt vectors).

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
        self._fast: dict[tuple[str, bool], FastStep] = {}  # generate.decoder=fast by (weights, pack), built on first use
        for p in self.lm.parameters():
            p.requires_grad_(False)
        if cfg.finetune == "lora":
            torch.manual_seed(seed)  # LoRA A is drawn from the global stream
            add_lora(lm, cfg)
        self.lm.eval()
        vocab.set_trainable(cfg.train_codebooks)
        self.parts = slot_parts(vocab.n_micro, cfg)
        self.n_user_slots = len(self.parts) if cfg.use_user else 0
        emb = lm.get_input_embeddings()
        width = emb.embedding_dim
        self.projector = Projector(vocab.code_dim, width, cfg.projector_hidden, self.n_user_slots + len(self.parts))
        self._match_embedding_scale()
        gen = torch.Generator().manual_seed(seed)
        # soft prompt: starts at real word embeddings (random rows), a scale the frozen LM already reads
        rows = torch.randint(emb.num_embeddings, (cfg.prompt_tokens,), generator=gen)
        self.soft_prompt = nn.Parameter(emb.weight.detach()[rows].clone().float()) if cfg.prompt_tokens else None
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
    def n_item_slots(self) -> int:
        """Behavior-token slots per item (and per user, when the prompt holds the user's tokens)."""
        return len(self.parts)

    n_side_slots = n_item_slots  # the name earlier callers use

    def sides(self, task: str = EXPLAIN) -> tuple[str, ...]:
        """The entities whose behavior tokens fill the slots of ``task``'s prompt (user slots first)."""
        return tuple(s for s in TASKS[task].sides if s != "user" or self.n_user_slots)

    def prompt_builder(self, tok: PreTrainedTokenizerBase, task: str = EXPLAIN) -> PromptBuilder:
        """The prompt layout this model reads for ``task`` (slots, soft prompt, history field, title, instruction;
        the history field goes into the prompts that are about the user)."""
        spec, sides = TASKS[task], self.sides(task)
        return PromptBuilder(tok, self.n_user_slots if "user" in sides else 0,
                             self.n_item_slots if "item" in sides else 0, task=spec.instruction or self.cfg.task,
                             n_soft=self.cfg.prompt_tokens, history=self.cfg.history_titles > 0 and "user" in spec.sides,
                             title=spec.title, cue=spec.cue)

    def train(self, mode: bool = True) -> BehaviorLM:
        super().train(mode)
        self.lm.eval()  # the base LM never enters training mode (no dropout) ...
        if mode and self.cfg.finetune == "lora":
            for name, m in self.lm.named_modules():
                if name.endswith("lora_dropout"):  # ... except the LoRA adapter's own dropout
                    m.train(True)
        return self

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The parameters stage 2 trains, LoRA included (what selection keeps in memory)."""
        return {k: v.detach().clone() for k, v in self.named_parameters() if v.requires_grad}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a :meth:`trained_state` back (exact names and shapes)."""
        own = dict(self.named_parameters())
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v)

    def behavior_embeds(self, users: torch.Tensor, items: torch.Tensor,
                        sides: tuple[str, ...] | None = None) -> torch.Tensor:
        """(B,), (B,) -> (B, S, d) projected behavior tokens of ``sides`` (default: the explanation's), user slots
        (when used) then item slots; each side keeps its own slot embeddings whichever sides a prompt holds."""
        sides = self.sides() if sides is None else sides
        parts, slot_ids = [], []
        for side, ids in (("user", users), ("item", items)):
            if side in sides:
                parts.append(self.vocab.vectors(side, ids)[:, self.parts])  # (B, S_side, C)
                first = 0 if side == "user" else self.n_user_slots
                slot_ids.append(torch.arange(first, first + len(self.parts)))
        if not parts:  # a prompt without behavior tokens (history prompting's profile)
            return users.new_zeros((len(users), 0, self.projector.mlp[-1].out_features), dtype=torch.float)
        return self.projector(torch.cat(parts, dim=1), torch.cat(slot_ids).to(users.device))

    @torch.no_grad()
    def fast_step(self, weights: str = "model", pack: bool = False) -> FastStep | None:
        """The LM's :class:`~beatrec.align.fastlm.FastStep` (``generate.decoder=fast``) reading ``weights``
        (``generate.fast_weights``), prepacked for oneDNN with ``pack`` (``generate.pack``), built once on first
        use from the current weights: for a model loaded for inference (:func:`beatrec.align.explain.load_aligned`).
        None (decode through the LM's own forward) for an LM it does not implement or an unmerged adapter."""
        if (weights, pack) not in self._fast and fast_supported(self.lm) is None:
            self._fast[weights, pack] = FastStep(self.lm, weights, pack)
        return self._fast.get((weights, pack))

    def neutral_behavior(self, sides: tuple[str, ...], max_ids: int = NEUTRAL_SAMPLE) -> torch.Tensor:
        """-> (S, d) the population mean of each slot's projected behavior token over ``sides`` (user slots first):
        an average user/item, the neutral context of :mod:`beatrec.align.guidance`. The mean runs over every entity
        of a side, or ``max_ids`` evenly spaced ones where there are more."""
        out = []
        for side in sides:
            n = self.vocab.n_users if side == "user" else self.vocab.n_items
            ids = torch.linspace(0, n - 1, min(n, max_ids)).round().long()  # (n',)
            other = torch.zeros_like(ids)
            users, items = (ids, other) if side == "user" else (other, ids)
            out.append(self.behavior_embeds(users, items, (side,)).float().mean(0))  # (S_side, d)
        return torch.cat(out) if out else torch.zeros((0, self.projector.mlp[-1].out_features))

    def embed(self, batch: PairBatch, neutral: bool = False,
              behavior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input embeddings with the slots replaced -- by each row's behavior tokens, with ``neutral`` by the
        population mean (:meth:`neutral_behavior`), or by ``behavior`` (B, S, d) when given.
        -> (inputs_embeds (B, L, d), token embeds (B, L, d), beh (B, S, d))."""
        tokens = self.lm.get_input_embeddings()(batch.input_ids)  # (B, L, d), frozen
        task = EXPLAIN if batch.task is None else TASK_NAMES[int(batch.task[0])]
        if behavior is not None:
            beh = behavior.to(tokens.dtype)
        elif neutral:
            beh = self.neutral_behavior(self.sides(task)).to(tokens.dtype)[None].expand(len(tokens), -1, -1)
        else:
            beh = self.behavior_embeds(batch.users, batch.items, self.sides(task)).to(tokens.dtype)  # (B, S, d)
        idx = batch.slot_pos[..., None].expand(-1, -1, tokens.shape[-1])  # (B, S, d)
        embeds = tokens.scatter(1, idx, beh)
        if self.soft_prompt is not None:
            soft = self.soft_prompt.to(tokens.dtype)[None].expand(len(tokens), -1, -1)  # (B, P, d)
            embeds = embeds.scatter(1, batch.soft_pos[..., None].expand(-1, -1, tokens.shape[-1]), soft)
        return embeds, tokens, beh

    def token_nll(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NLL of each label token, with the LM head applied only where a label is predicted.

        The decoder runs over every position, but the (vocabulary-wide) output layer and the softmax only over
        the T positions that predict an explanation token. -> (losses (T,), row of each (T,)).
        """
        try:
            decoder = self.lm.get_decoder()
        except (AttributeError, ValueError, NotImplementedError):
            decoder = None
        head = self.lm.get_output_embeddings()
        nxt = labels[:, 1:]  # (B, L-1): position t predicts token t+1
        where = nxt != IGNORE
        if decoder is None or head is None or decoder is self.lm:
            logits = self.lm(inputs_embeds=embeds, attention_mask=attention_mask).logits[:, :-1][where]  # (T, V)
        else:
            hidden = decoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state  # (B, L, d)
            logits = head(hidden[:, :-1][where])  # (T, V)
        return F.cross_entropy(logits.float(), nxt[where], reduction="none"), where.nonzero()[:, 0]

    def target_nll(self, embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean NLL of the label tokens (:meth:`token_nll`): the same value as ``lm(labels=...).loss``."""
        return self.token_nll(embeds, attention_mask, labels)[0].mean()

    def word_anchor(self, beh: torch.Tensor, labels: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, d) projected tokens, (B, L) labels -> () :func:`~beatrec.align.anchor.word_anchor_loss` against
        the LM's (frozen) input embeddings and the batch's distinctive target words; ``vocab`` (V',) restricts the
        softmax to those token ids (which must hold every target id of ``labels``)."""
        emb = self.lm.get_input_embeddings().weight.detach()  # (V, d), frozen
        targets = anchor_targets(labels, emb.shape[0], IGNORE)  # (B, V)
        if vocab is not None:
            emb, targets = emb[vocab], targets[:, vocab]  # (V', d), (B, V')
        return word_anchor_loss(beh, emb, targets)

    def forward(self, batch: PairBatch) -> AlignOutput:
        embeds, tokens, beh = self.embed(batch)
        losses, rows = self.token_nll(embeds, batch.attention_mask, batch.labels)  # (T,), (T,)
        nll = losses.mean()
        contrast = torch.zeros((), device=nll.device)
        task = EXPLAIN if batch.task is None else TASK_NAMES[int(batch.task[0])]
        if self.cfg.token_contrast > 0 and task in self.cfg.contrast_tasks and beh.shape[1] and len(beh) > 1:
            other = self.embed(batch, behavior=beh.roll(1, dims=0))[0]  # each row with the previous row's tokens
            o_losses, o_rows = self.token_nll(other, batch.attention_mask, batch.labels)
            contrast = token_contrast_loss(row_means(losses, rows, len(beh)), row_means(o_losses, o_rows, len(beh)),
                                           self.cfg.contrast_margin)
        sar = torch.zeros((), device=nll.device)
        if self.cfg.use_sar and self.cfg.gamma > 0 and beh.shape[1]:
            target = batch.labels != IGNORE  # (B, L) explanation tokens
            text = tokens[target].float()  # (M, d)
            owner = target.nonzero()[:, 0]  # (M,)
            pairs = sample_pairs(len(text), self.cfg.sar_pairs, self.generator).to(text.device)
            if len(pairs):
                sar = sar_loss(text, owner, beh.float(), pairs)
        anchor = torch.zeros((), device=nll.device)
        if self.cfg.word_anchor > 0 and beh.shape[1]:
            anchor = self.word_anchor(beh, batch.labels)
        loss = nll + self.cfg.gamma * sar + self.cfg.word_anchor * anchor + self.cfg.token_contrast * contrast
        return AlignOutput(loss, nll, sar, anchor, contrast)
