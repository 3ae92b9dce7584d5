"""Typed configs of the BEAT behavior tokenizer (stage 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from beatrec.config import check
from beatrec.data.split import SplitConfig
from beatrec.extract.base import ExtractorConfig
from beatrec.text_encoder import TextEncoderConfig

E0_INITS = ("normal", "spectral")  # model.init: how LightGCN's E⁰ starts


@dataclass
class TokenizerModelConfig:
    """Architecture. Defaults follow DESIGN.md "BEAT stage 1" (N=5 micro parts, 512 codes, η=0.5)."""

    part_dim: int = 32  # width of each of the 1+N LightGCN parts
    n_micro: int = 5  # N
    code_dim: int = 32  # codeword width (after the per-part linear projection)
    n_codes: int = 512  # codebook size, for each of the four codebooks
    n_layers: int = 3  # LightGCN depth
    init: str = "normal"  # E⁰: "normal" (noise, std 0.1) | "spectral" (the graph's truncated SVD, LightGCN.init_spectral)
    # Free user ID embeddings (the paper). False = inductive users: a user's vector is built from its items only,
    # so zero-shot users' tokens come from the same function as those of the users whose text supervised stage 1.
    user_ids: bool = True
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
        check(self.init in E0_INITS, f"model.init must be one of {E0_INITS}, got {self.init!r}")


GRAPH_MODES = ("full", "sampled")
REVIVE_MODES = ("auto", "on", "off")  # train.revive_unused


@dataclass
class TokenizerTrainConfig:
    """Optimisation. L = α·L_macro + β·L_micro + L_behave (α=0.2, β=1.0), Adam lr 1e-3, batch 1024."""

    alpha: float = 0.2
    beta: float = 1.0
    lr: float = 1e-3
    batch_size: int = 1024  # training edges per step (BPR with one sampled negative each)
    text_batch_size: int = 256  # text pairs per step for the macro InfoNCE (in-batch negatives)
    micro_batch_size: int = 256  # entities per step for the micro reconstruction
    # Extra BPR on the pre-quantisation vectors (not in the paper). Off by default: on the generator's default data
    # it drowned the micro supervision (user micro-token intent probe AUC 0.63 -> 0.52 at beta=5); on the demo's
    # data, whose graph holds the intents, weight 20 with inductive users carries the most intent into the tokens
    # (benchmarks/intent_probe_sweep.md).
    continuous_weight: float = 0.0
    l2: float = 1e-4  # L2 on the batch's ID embeddings
    max_epochs: int = 60
    patience: int = 5  # early stopping on validation HitRatio@k
    # No early stop before this many optimiser steps: from the small initial embeddings, the quantised BPR sits on
    # a plateau (loss ~log 2, HR ~ popularity) for ~150 steps, and on a small graph (15 steps per epoch on the demo
    # data) patience ran out there for some seeds, leaving untrained tokens.
    min_steps: int = 300
    # Keep the *latest* epoch whose validation HR is within this fraction of the best (0 = the best epoch), and
    # count only epochs below that band towards patience: the text objectives keep improving long after HR peaks.
    select_tolerance: float = 0.0
    eval_k: int = 20
    eval_every: int = 1
    # Early stopping scores this many validation users (a fixed seeded sample; 0 = all). Bounds the per-epoch
    # evaluation on graphs with a million users; the run's reported metrics always use every user.
    eval_users: int = 0
    # "full": every step propagates the whole graph (exact; cost grows with the graph). "sampled": every step
    # propagates only the L-hop sampled neighbourhood of the batch's users and items (cost grows with the batch;
    # embedding rows get sparse, lazy-Adam updates). See the README ("Stage 1 on large graphs").
    graph: str = "full"
    fanouts: tuple[int, ...] = (10, 10, 10)  # sampled: neighbours drawn per node, hop 1 first; one per layer
    # At each evaluation, codes that no entity's exact (full-graph) vector uses are re-seeded at the vectors their
    # codebook serves worst, before the epoch is scored (:meth:`Side.revive_unused`). Sampled training fits the
    # codebooks to sampled-neighbourhood vectors, and a few codewords then serve no full-graph vector.
    # "auto": on for train.graph=sampled, off for full (whose codebooks already see the exact vectors).
    revive_unused: str = "auto"
    seed: int = 0
    threads: int = 0  # torch threads; 0 = leave torch's default

    @property
    def revives(self) -> bool:
        """Whether evaluations re-seed unused codes (``revive_unused`` resolved against ``graph``)."""
        return self.revive_unused == "on" or (self.revive_unused == "auto" and self.graph == "sampled")

    def validate(self) -> None:
        check(self.lr > 0, "train.lr must be > 0")
        for name in ("batch_size", "text_batch_size", "micro_batch_size", "max_epochs", "patience", "eval_k", "eval_every"):
            check(getattr(self, name) >= 1, f"train.{name} must be >= 1")
        check(self.graph in GRAPH_MODES, f"train.graph must be one of {GRAPH_MODES}, got {self.graph!r}")
        check(self.revive_unused in REVIVE_MODES,
              f"train.revive_unused must be one of {REVIVE_MODES}, got {self.revive_unused!r}")
        check(len(self.fanouts) >= 1 and all(int(f) >= 1 for f in self.fanouts),
              f"train.fanouts must be a list of positive integers, got {list(self.fanouts)}")
        check(self.eval_users >= 0, f"train.eval_users must be >= 0, got {self.eval_users!r}")
        check(self.min_steps >= 0, f"train.min_steps must be >= 0, got {self.min_steps!r}")
        check(self.alpha >= 0 and self.beta >= 0 and self.continuous_weight >= 0, "loss weights must be >= 0")
        check(0.0 <= self.select_tolerance < 1.0,
              f"train.select_tolerance must be in [0, 1), got {self.select_tolerance!r}")


TEXT_FIELDS = ("title", "user_summary", "item_summary", "explanation")


@dataclass
class TokenizeConfig:
    """Everything ``beatrec tokenize`` uses; saved as ``config.yaml`` in the run directory."""

    model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    user_texts: tuple[str, ...] = ("explanation", "user_summary")  # a user's training texts (for phrases)
    item_texts: tuple[str, ...] = ("explanation", "item_summary")
    macro_text: str = "explanation"  # the pair text whose embedding supervises macro tokens (eq. 6)

    def validate(self) -> None:
        check(self.train.graph == "full" or len(self.train.fanouts) == self.model.n_layers,
              f"train.fanouts needs one fan-out per LightGCN layer (model.n_layers={self.model.n_layers}), "
              f"got {list(self.train.fanouts)}")
        for cols in (self.user_texts, self.item_texts, (self.macro_text,)):
            check(set(cols) <= set(TEXT_FIELDS), f"text columns must be among {TEXT_FIELDS}, got {list(cols)}")
