"""Typed configs of the BEAT behavior tokenizer (stage 1)."""

from __future__ import annotations

from dataclasses import dataclass

from beatrec.config import check


@dataclass
class TokenizerModelConfig:
    """Architecture. Defaults follow DESIGN.md "BEAT stage 1" (N=5 micro parts, 512 codes, η=0.5)."""

    part_dim: int = 32  # width of each of the 1+N LightGCN parts
    n_micro: int = 5  # N
    code_dim: int = 32  # codeword width (after the per-part linear projection)
    n_codes: int = 512  # codebook size, for each of the four codebooks
    n_layers: int = 3  # LightGCN depth
    eta: float = 0.5  # commitment weight η (eq. 5)
    dead_after: int = 50  # training calls a code may stay unused before it is re-seeded
    n_phrases: int = 5  # n phrase slots per entity (eq. 7)
    n_masked: int = 2  # t masked slots per sample (eq. 7)
    micro_objective: str = "masked"  # "masked" (eq. 8) | "set" (all slots hidden, set-matched; not in the paper)
    attn_dim: int = 64
    attn_heads: int = 4
    temperature: float = 0.1  # InfoNCE temperature (eq. 6)

    def validate(self) -> None:
        for name in ("part_dim", "n_micro", "code_dim", "n_codes", "n_layers", "n_phrases", "attn_dim", "attn_heads"):
            check(getattr(self, name) >= 1, f"model.{name} must be >= 1")
        check(0 < self.n_masked <= self.n_phrases, "model.n_masked must be in 1..n_phrases")
        check(self.micro_objective in ("masked", "set"),
              f"model.micro_objective must be 'masked' or 'set', got {self.micro_objective!r}")
        check(self.attn_dim % self.attn_heads == 0, "model.attn_dim must be divisible by attn_heads")
        check(self.eta >= 0 and self.temperature > 0, "model.eta >= 0 and model.temperature > 0 required")


@dataclass
class TokenizerTrainConfig:
    """Optimisation. L = α·L_macro + β·L_micro + L_behave (α=0.2, β=1.0), Adam lr 1e-3, batch 1024."""

    alpha: float = 0.2
    beta: float = 1.0
    lr: float = 1e-3
    batch_size: int = 1024  # training edges per step (BPR with one sampled negative each)
    text_batch_size: int = 256  # text pairs per step for the macro InfoNCE (in-batch negatives)
    micro_batch_size: int = 256  # entities per step for the micro reconstruction
    # Extra BPR on the pre-quantisation vectors (not in the paper). Off by default: on the planted synthetic data
    # it drowns the micro supervision (user micro-token intent probe AUC 0.63 -> 0.52 at beta=5).
    continuous_weight: float = 0.0
    l2: float = 1e-4  # L2 on the batch's ID embeddings
    max_epochs: int = 60
    patience: int = 5  # early stopping on validation HitRatio@k
    eval_k: int = 20
    eval_every: int = 1
    seed: int = 0
    threads: int = 0  # torch threads; 0 = leave torch's default

    def validate(self) -> None:
        check(self.lr > 0, "train.lr must be > 0")
        for name in ("batch_size", "text_batch_size", "micro_batch_size", "max_epochs", "patience", "eval_k", "eval_every"):
            check(getattr(self, name) >= 1, f"train.{name} must be >= 1")
        check(self.alpha >= 0 and self.beta >= 0 and self.continuous_weight >= 0, "loss weights must be >= 0")
