"""Typed configs of BEAT stage 2 (``beatrec align`` / ``beatrec explain``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from beatrec.config import check
from beatrec.lm import LMConfig


@dataclass
class AlignModelConfig:
    """The comprehension model around the frozen LM.

    Attributes:
        use_macro / use_micro: put the macro / the N micro tokens of user and item in the prompt (ablations).
        use_sar: add Semantic Alignment Regularization (eq. 11) to the loss.
        gamma: weight γ of SAR (loss = NLL + γ·SAR, eq. 12).
        sar_pairs: text-token pairs sampled per batch for SAR.
        projector_hidden: hidden width of the 2-layer MLP projector.
        train_codebooks: also fine-tune the stage-1 codebook vectors (else only the projector trains).
        max_words: explanations are capped at this many words (training targets and generations).
        max_target_tokens: hard cap on explanation tokens in training.
        source: what fills the slots: ``"tokens"`` (BEAT's behavior tokens) or ``"continuous"`` (the stage-1
            LightGCN vectors, cut into the same 1+N parts, unquantised: the XRec-style baseline).
    """

    use_macro: bool = True
    use_micro: bool = True
    use_sar: bool = True
    gamma: float = 1.0
    sar_pairs: int = 256
    projector_hidden: int = 512
    train_codebooks: bool = False
    max_words: int = 50
    max_target_tokens: int = 96
    source: str = "tokens"

    def validate(self) -> None:
        check(self.source in ("tokens", "continuous"),
              f"model.source must be 'tokens' or 'continuous', got {self.source!r}")
        check(self.use_macro or self.use_micro, "model.use_macro and model.use_micro cannot both be false")
        check(self.gamma >= 0, f"model.gamma must be >= 0, got {self.gamma}")
        check(self.sar_pairs >= 1, f"model.sar_pairs must be >= 1, got {self.sar_pairs}")
        check(self.projector_hidden >= 1, f"model.projector_hidden must be >= 1, got {self.projector_hidden}")
        check(self.max_words >= 1, f"model.max_words must be >= 1, got {self.max_words}")
        check(self.max_target_tokens >= 4, f"model.max_target_tokens must be >= 4, got {self.max_target_tokens}")


@dataclass
class AlignTrainConfig:
    """Optimisation of the projector.

    Attributes:
        lr: AdamW learning rate; batch_size: pairs per step per process; epochs: passes over training pairs;
        max_steps: stop after this many optimizer steps (0 = no limit); max_train_pairs: use a seeded
        subset of the training pairs (0 = all); val_pairs: validation pairs scored after each epoch (0 = all);
        seed; threads: torch threads (0 = default); log_every: steps per log line.
    """

    lr: float = 1e-3
    batch_size: int = 8
    epochs: int = 1
    max_steps: int = 0
    max_train_pairs: int = 0
    val_pairs: int = 200
    seed: int = 0
    threads: int = 0
    log_every: int = 20
    rank_weights: bool = False  # also write every process's weights (align/weights.rank{K}.safetensors)

    def validate(self) -> None:
        check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        check(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        check(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        for name in ("max_steps", "max_train_pairs", "val_pairs", "threads"):
            check(getattr(self, name) >= 0, f"train.{name} must be >= 0, got {getattr(self, name)}")
        check(self.log_every >= 1, f"train.log_every must be >= 1, got {self.log_every}")


@dataclass
class GenerateConfig:
    """Decoding of explanations (greedy by default, batched, with the KV cache)."""

    batch_size: int = 16
    max_new_tokens: int = 72
    do_sample: bool = False
    temperature: float = 1.0
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 3

    def validate(self) -> None:
        check(self.batch_size >= 1, f"generate.batch_size must be >= 1, got {self.batch_size}")
        check(self.max_new_tokens >= 1, f"generate.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check(self.temperature > 0, f"generate.temperature must be > 0, got {self.temperature}")
        check(self.repetition_penalty > 0, "generate.repetition_penalty must be > 0")
        check(self.no_repeat_ngram_size >= 0, "generate.no_repeat_ngram_size must be >= 0")


@dataclass
class AlignConfig:
    """Everything ``beatrec align`` reads; saved as ``align/config.yaml`` in the run directory."""

    lm: LMConfig = field(default_factory=LMConfig)
    model: AlignModelConfig = field(default_factory=AlignModelConfig)
    train: AlignTrainConfig = field(default_factory=AlignTrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def validate(self) -> None:
        self.lm.validate()
        self.model.validate()
        self.train.validate()
        self.generate.validate()
