"""Training LLM-BS: the initial multi-task stage and the Annealing Adapter (seed paper §3.3–3.4).

- **Initial training** (:func:`fit`): next-token prediction over every task's examples + GCD (eq. 7), either
  full fine-tuning or LoRA (peft) on the attention projections; in both cases the *new* code-token embedding
  rows train while the LM's original vocabulary rows stay fixed (a gradient mask).
- **Annealing Adapter** (:func:`anneal`): a second, fresh LoRA adapter trained on a small, high-quality slice of
  sequential-recommendation examples (by default each user's most recent training window) with the stage-1
  weights frozen. Inference can run with or without it (:func:`adapter_disabled`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from beatrec.config import check
from beatrec.seqrec.llmbs.model import LLMBS, Batch, collate
from beatrec.seqrec.llmbs.tasks import Example

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
ANNEAL = "anneal"


@dataclass
class LoRAConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = LORA_TARGETS

    def validate(self) -> None:
        check(self.r >= 1 and self.alpha >= 1, "lora.r and lora.alpha must be >= 1")
        check(0 <= self.dropout < 1, "lora.dropout must be in [0, 1)")


@dataclass
class LLMBSTrainConfig:
    """Optimisation of both stages.

    Attributes:
        finetune: "lora" (adapters on the attention projections + new token rows) or "full" (every weight).
        lr / epochs / batch_size: initial stage; anneal_lr / anneal_epochs: the annealing adapter.
        max_len: tokens per example (prompt truncated from the left).
    """

    finetune: str = "lora"
    lr: float = 5e-4
    epochs: int = 1
    batch_size: int = 8
    max_len: int = 256
    anneal_lr: float = 2e-4
    anneal_epochs: int = 1
    grad_clip: float = 1.0
    seed: int = 0
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    def validate(self) -> None:
        check(self.finetune in ("lora", "full"), f"train.finetune must be 'lora' or 'full', got {self.finetune!r}")
        check(self.lr > 0 and self.anneal_lr > 0, "learning rates must be > 0")
        check(self.epochs >= 0 and self.anneal_epochs >= 0, "epochs must be >= 0")
        check(self.batch_size >= 1 and self.max_len >= 16, "train.batch_size >= 1 and train.max_len >= 16")
        self.lora.validate()


class StageResult(NamedTuple):
    steps: int
    seconds: float
    losses: list[float]  # mean loss per epoch


def lora_config(cfg: LoRAConfig):  # noqa: ANN201 - a peft LoraConfig (peft imported lazily)
    """The peft ``LoraConfig`` of ``cfg`` for a causal LM."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
                      bias="none", task_type="CAUSAL_LM")


def prepare(model: LLMBS, cfg: LLMBSTrainConfig, first_new_id: int) -> LLMBS:
    """Set up what trains in the initial stage (LoRA wraps ``model.lm`` in place of full fine-tuning)."""
    cfg.validate()
    if cfg.finetune == "lora":
        from peft import get_peft_model

        model.lm = get_peft_model(model.lm, lora_config(cfg.lora))
    else:
        for p in model.lm.parameters():
            p.requires_grad_(True)
    out_emb = model.lm.get_output_embeddings()
    for w in {id(x): x for x in (model.lm.get_input_embeddings().weight,
                                 out_emb.weight if out_emb is not None else None) if x is not None}.values():
        w.requires_grad_(True)
        if not getattr(w, "_beatrec_row_mask", False):  # only the new code-token rows of the vocabulary learn
            w.register_hook(lambda g: torch.cat([torch.zeros_like(g[:first_new_id]), g[first_new_id:]]))
            w._beatrec_row_mask = True
    return model


def _batches(examples: list[Example], size: int, gen: torch.Generator) -> Iterator[list[Example]]:
    order = torch.randperm(len(examples), generator=gen).tolist()
    for s in range(0, len(order), size):
        yield [examples[i] for i in order[s : s + size]]


def accelerator():  # noqa: ANN201
    """The Accelerate handle of this process: one CPU/GPU process by default; under ``accelerate launch`` (see the
    README) one process per GPU, each training on its share of every epoch's batches (DDP gradient averaging)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # some batches have no [CON] (semantic/preference tasks): the GCD projectors then get no gradient
    # (cpu=True without a GPU: several CPU processes under torchrun then form a gloo group, as in the tests)
    return Accelerator(cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def _run_epochs(model: LLMBS, tok, examples: list[Example], params: list[torch.nn.Parameter], lr: float,  # noqa: ANN001
                epochs: int, cfg: LLMBSTrainConfig, progress: bool, desc: str) -> StageResult:
    from tqdm.auto import tqdm

    if not examples or epochs == 0:
        return StageResult(0, 0.0, [])
    acc = accelerator()
    out = model.lm.get_output_embeddings()
    embs = {id(model.lm.get_input_embeddings().weight)} | ({id(out.weight)} if out is not None else set())
    decay = [p for p in params if id(p) not in embs]
    rows = [p for p in params if id(p) in embs]  # no weight decay: the masked original rows must not move
    groups = [{"params": decay, "weight_decay": 0.01}] + ([{"params": rows, "weight_decay": 0.0}] if rows else [])
    opt = torch.optim.AdamW(groups, lr=lr)
    wrapped, opt = acc.prepare(model, opt)  # the model itself unless several processes (then DDP around it)
    gen = torch.Generator().manual_seed(cfg.seed)  # same seed in every process: the same batch order
    t0, steps, losses = time.perf_counter(), 0, []
    model.train()
    world, rank = acc.num_processes, acc.process_index
    for ep in range(epochs):
        total, n = 0.0, 0
        batches = list(_batches(examples, cfg.batch_size, gen))
        mine = batches[: len(batches) // world * world][rank::world] if world > 1 else batches  # equal shares
        for part in tqdm(mine, desc=f"{desc} {ep + 1}/{epochs}", disable=not (progress and acc.is_main_process)):
            batch = Batch(*(x.to(acc.device) for x in collate(tok, part, cfg.max_len)))
            with acc.autocast():
                out = wrapped(batch)
            opt.zero_grad(set_to_none=True)
            acc.backward(out.loss)
            if cfg.grad_clip > 0:
                acc.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            total, n, steps = total + out.loss.item(), n + 1, steps + 1
        losses.append(total / max(n, 1))
    model.eval()
    return StageResult(steps, time.perf_counter() - t0, losses)


def fit(model: LLMBS, tok, examples: list[Example], cfg: LLMBSTrainConfig, first_new_id: int,  # noqa: ANN001
        progress: bool = False) -> StageResult:
    """The initial multi-task stage (NTP + GCD). Returns steps, seconds and the mean loss per epoch."""
    prepare(model, cfg, first_new_id)
    params = [p for p in model.parameters() if p.requires_grad]
    return _run_epochs(model, tok, examples, params, cfg.lr, cfg.epochs, cfg, progress, "llmbs")


def anneal(model: LLMBS, tok, examples: list[Example], cfg: LLMBSTrainConfig, progress: bool = False  # noqa: ANN001
           ) -> StageResult:
    """Add the annealing LoRA adapter and train only it on ``examples`` (every other weight frozen)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.lm = add_annealing_adapter(model.lm, cfg.lora)
    for name, p in model.lm.named_parameters():
        p.requires_grad_(f".{ANNEAL}." in name)
    params = [p for p in model.lm.parameters() if p.requires_grad]
    return _run_epochs(model, tok, examples, params, cfg.anneal_lr, cfg.anneal_epochs, cfg, progress, "anneal")


def add_annealing_adapter(lm: torch.nn.Module, lora: LoRAConfig) -> torch.nn.Module:
    """``lm`` with a fresh annealing LoRA adapter: stacked on the stage-1 LoRA (both active) when ``lm`` already
    is a peft model, else the only adapter (after full fine-tuning). Used by training and by run loading."""
    from peft import PeftModel, get_peft_model

    if isinstance(lm, PeftModel):
        stage1 = [a for a in lm.peft_config if a != ANNEAL]
        lm.add_adapter(ANNEAL, lora_config(lora))
        lm.base_model.set_adapter([*stage1, ANNEAL])
        return lm
    return get_peft_model(lm, lora_config(lora), adapter_name=ANNEAL)


@contextlib.contextmanager
def adapter_disabled(lm: torch.nn.Module) -> Iterator[None]:
    """Run inference with ``lm`` (an LLM-BS model's LM) without the annealing adapter: the stage-1 model (its
    own LoRA, if any, stays on)."""
    from peft import PeftModel

    if not isinstance(lm, PeftModel) or ANNEAL not in lm.peft_config:
        yield
        return
    others = [a for a in lm.peft_config if a != ANNEAL]
    if others:
        lm.base_model.set_adapter(others)
        try:
            yield
        finally:
            lm.base_model.set_adapter([*others, ANNEAL])
    else:
        with lm.disable_adapter():
            yield
