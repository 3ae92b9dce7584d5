"""Typed configs of ``beatrec seqrec train``, the model presets, and what makes two runs the same experiment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from beatrec.config import check, load_yaml, to_dict, without_runtime
from beatrec.errors import ConfigError
from beatrec.seqrec.codes import CodesConfig
from beatrec.seqrec.eager import TIGER_PRESET, EagerConfig
from beatrec.seqrec.sasrec import SASRecConfig
from beatrec.text_encoder import TextEncoderConfig

# EAGER with the auxiliary-task settings of the authors' released code (yewzz/EAGER, train_rec.py / HF_Model.py,
# where the two tasks are switched off by default): L_con weights 1 (behavior) and 10 (semantic), τ 0.3, 2048
# items drawn per batch as its negatives, transfer weight 1, the level-2 softmax over the siblings of the target's
# first code, inverse-sqrt learning rate after 2000 warm-up updates. What stays ours: early stopping on every
# validation user with patience 10 (the released code evaluates on the test split and keeps no best checkpoint),
# collisions removed from the sampled negatives, and the transfer task's masking (each position w.p. 0.5, >= 1;
# the released code masks exactly one of the two).
EAGER_OFFICIAL_PRESET = ("eager.contrastive_weight=1.0", "eager.semantic_contrastive_scale=10.0",
                         "eager.temperature=0.3", "eager.contrastive_negatives=2048", "eager.transfer_weight=1.0",
                         "eager.sibling_softmax=true", "train.lr_schedule=inverse_sqrt", "train.warmup_steps=2000",
                         "train.val_users=0", "train.patience=10")
MODELS = ("eager", "sasrec", "tiger", "eager-official")  # the models of SeqRecConfig (this harness)
CLI_MODELS = (*MODELS, "llmbs")  # every `beatrec seqrec train --model` (LLM-BS has its own harness)
PRESETS: dict[str, tuple[str, ...]] = {"eager": (), "sasrec": (), "tiger": TIGER_PRESET,
                                       "eager-official": EAGER_OFFICIAL_PRESET}


LR_SCHEDULES = ("constant", "inverse_sqrt")


@dataclass
class SeqTrainConfig:
    """Optimisation and early stopping of one model."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 50
    patience: int = 5  # evaluations without a better validation NDCG@10 before stopping
    eval_every: int = 1  # epochs between validation evaluations
    max_steps_per_epoch: int = 0  # 0 = a full pass over the training windows
    val_users: int = 0  # users scored for early stopping (seeded subset); 0 = all
    eval_batch_size: int = 512
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    seed: int = 0
    threads: int = 0  # torch threads; 0 = leave torch's default
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N
    max_minutes: float = 0.0  # training time budget: stop after the first evaluation past it (0 = none)
    lr_schedule: str = "constant"  # constant | inverse_sqrt (lr·sqrt(warmup/step) after the warmup)
    warmup_steps: int = 0  # linear warmup from ~0 to lr over this many optimiser steps

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``lr`` at optimiser step ``step`` (0-based): linear warmup, then constant or
        inverse-square-root decay (as the authors' EAGER code and fairseq schedule Transformers)."""
        w = self.warmup_steps
        if step < w:
            return (step + 1) / w
        return 1.0 if self.lr_schedule == "constant" else (max(w, 1) / (step + 1)) ** 0.5

    def validate(self) -> None:
        check(self.lr > 0, "train.lr must be > 0")
        check(self.lr_schedule in LR_SCHEDULES, f"train.lr_schedule must be one of {LR_SCHEDULES}, "
              f"got {self.lr_schedule!r}")
        check(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        for name in ("batch_size", "max_epochs", "patience", "eval_every", "eval_batch_size"):
            check(getattr(self, name) >= 1, f"train.{name} must be >= 1")
        check(bool(self.device), "train.device must be auto, cpu, cuda or cuda:N")
        for name in ("max_steps_per_epoch", "val_users", "threads"):
            check(getattr(self, name) >= 0, f"train.{name} must be >= 0")
        check(self.max_minutes >= 0, "train.max_minutes must be >= 0")
        check(self.weight_decay >= 0 and self.grad_clip >= 0, "train.weight_decay and grad_clip must be >= 0")


@dataclass
class SeqRecConfig:
    """Everything ``beatrec seqrec train`` uses; saved, resolved, as ``RUN/config.yaml``."""

    model: str = "eager"  # eager | sasrec | tiger | eager-official (the presets are EAGER models)
    max_len: int = 20  # history items per sample (sliding windows)
    max_users: int = 0  # 0 = all users; else a seeded random subset (smoke runs)
    subset_seed: int = 0
    behavior_run: str = ""  # an existing SASRec run whose item embeddings make the behavior codes
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    eager: EagerConfig = field(default_factory=EagerConfig)
    codes: CodesConfig = field(default_factory=CodesConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    train: SeqTrainConfig = field(default_factory=SeqTrainConfig)
    behavior_train: SeqTrainConfig = field(default_factory=SeqTrainConfig)  # the behavior SASRec of a run

    def validate(self) -> None:
        check(self.model in MODELS, f"model must be one of {MODELS}, got {self.model!r}")
        check(self.max_len >= 1, "max_len must be >= 1")
        check(self.max_users >= 0, "max_users must be >= 0")


# Options added after runs were first saved, with the value every run saved before them used: a saved config
# that predates one reads as what was run, not as today's default, and :func:`experiment` leaves an option out
# at that value, so adding an option never turns an earlier run (or its checkpoint) into another experiment.
LEGACY: dict[str, Any] = {"eager.code_tokens": "shared", "eager.tie_items": False,
                          "eager.semantic_contrastive_scale": 1.0, "eager.contrastive_negatives": 0,
                          "eager.sibling_softmax": False,
                          **{f"{sec}.{k}": v for sec in ("train", "behavior_train")
                             for k, v in (("lr_schedule", "constant"), ("warmup_steps", 0))}}


def read_run_config(path: str | Path) -> SeqRecConfig:
    """A saved run's ``config.yaml`` / ``requested.yaml``; options the file predates take their :data:`LEGACY`
    value."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) if p.is_file() else None
    except yaml.YAMLError:
        raw = None  # load_yaml says what is wrong with the file
    missing = []
    for key, value in LEGACY.items():
        node: Any = raw
        for part in key.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is _ABSENT and isinstance(raw, dict):
            missing.append(f"{key}={value}")
    return load_yaml(SeqRecConfig, p, missing)


_ABSENT = object()

# Sections a SASRec run never reads: changing them (e.g. a new EAGER default) leaves a SASRec run the same one.
_GENERATIVE_ONLY = ("eager", "codes", "text_encoder", "behavior_train", "behavior_run")


def experiment(cfg: SeqRecConfig) -> dict[str, Any]:
    """What decides a run's results, as a plain dict: the config without runtime settings (threads, device) and,
    for SASRec, without the sections only the generative models read. Two runs with equal ``experiment``
    are the same run (checkpoint resume, behavior-encoder reuse, benchmark read-back). Options at their
    :data:`LEGACY` value are left out: the experiment is the one run before the option existed."""
    d = to_dict(without_runtime(cfg))
    if cfg.model == "sasrec":
        for k in _GENERATIVE_ONLY:
            d.pop(k)
    for key, value in LEGACY.items():
        section, name = key.split(".")
        if section in d and d[section].get(name, _ABSENT) == value:
            del d[section][name]
    return d


def load_seqrec_config(model: str, path: str | Path | None = None, overrides: list[str] | None = None
                       ) -> SeqRecConfig:
    """The config of a ``--model`` run: the YAML file, then the model's preset on top of it (TIGER: semantic
    stream only, no auxiliary tasks, its own code shape; eager-official: :data:`EAGER_OFFICIAL_PRESET`; these win
    over the file), then ``--set`` overrides."""
    if model not in MODELS:
        raise ConfigError(f"--model must be one of {MODELS}, got {model!r}")
    return load_yaml(SeqRecConfig, path, [*PRESETS[model], *(overrides or []), f"model={model}"])
