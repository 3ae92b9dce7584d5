"""Typed configs of BEAT stage 2 (``beatrec align`` / ``beatrec explain``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from beatrec.align.fastlm import STEP_WEIGHTS
from beatrec.align.tasks import EXPLAIN, TASK_NAMES
from beatrec.config import check
from beatrec.lm import LMConfig

FINETUNE_MODES = ("frozen", "lora")  # frozen: only the projector trains (plug-and-play); lora: + a peft adapter
SCHEDULES = ("constant", "linear", "cosine")  # learning-rate decay after the linear warmup
PAIR_SOURCES = ("all", "crossfit")  # stage-2 training pairs: every training user's, or the cross-fitted fold's
DEFAULT_TASK = "In one or two sentences, explain why this user would enjoy this item."


@dataclass
class AlignModelConfig:
    """The comprehension model around the frozen LM.

    Attributes:
        use_macro / use_micro: put the macro / the N micro tokens of user and item in the prompt (ablations).
        use_sar: add Semantic Alignment Regularization (eq. 11) to the loss.
        gamma: weight γ of SAR (loss = NLL + γ·SAR, eq. 12).
        sar_pairs: text-token pairs sampled per batch for SAR.
        word_anchor: weight λ of word anchoring (:mod:`beatrec.align.anchor`; not in the paper): the projected
            tokens are also trained to read, as words, like their sample's distinctive target words (0 = off).
        token_contrast: weight μ of token contrast (:mod:`beatrec.align.contrast`; not in the paper): each row's
            target must be likelier after its own tokens than after another row's by ``contrast_margin`` nats per
            token (0 = off; one more forward pass per step of the ``contrast_tasks``: by default user profiles
            only, the task whose text depends on the user -- the explanation references carry no user signal).
        projector_hidden: hidden width of the 2-layer MLP projector.
        train_codebooks: also fine-tune the stage-1 codebook vectors (else only the projector trains).
        max_words: explanations are capped at this many words (training targets and generations).
        max_target_tokens: hard cap on explanation tokens in training.
        source: what fills the slots: ``"tokens"`` (BEAT's behavior tokens) or ``"continuous"`` (the stage-1
            LightGCN vectors, cut into the same 1+N parts, unquantised: the XRec-style baseline).
        finetune: ``"frozen"`` (the LM is untouched; the plug-and-play setting) or ``"lora"`` (a peft LoRA
            adapter on the LM's attention and MLP projections trains with the projector; the paper's reported
            setting, "we fine-tune the LLM"); lora_r / lora_alpha / lora_dropout / lora_targets configure it.
        prompt_tokens: shared trainable soft-prompt vectors placed before the behavior tokens (0 = none).
        task: the sentence that states the task, after the user's and item's fields
            (:class:`~beatrec.align.prompt.PromptBuilder` lays the prompt out).
        use_user: put the user's behavior tokens in the prompt (false: the history-prompting baseline).
        history_titles: titles of up to this many of the user's training-graph items, most typical first,
            go into the prompt (0 = none; the history-prompting baseline and "BEAT + history").
    """

    use_macro: bool = True
    use_micro: bool = True
    use_sar: bool = True
    gamma: float = 1.0
    sar_pairs: int = 256
    word_anchor: float = 0.0
    token_contrast: float = 0.0
    contrast_margin: float = 0.1
    contrast_tasks: tuple[str, ...] = ("user_profile",)
    projector_hidden: int = 512
    train_codebooks: bool = False
    max_words: int = 50
    max_target_tokens: int = 96
    source: str = "tokens"
    finetune: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    prompt_tokens: int = 0
    task: str = DEFAULT_TASK
    use_user: bool = True
    history_titles: int = 0

    def validate(self) -> None:
        check(self.source in ("tokens", "continuous"),
              f"model.source must be 'tokens' or 'continuous', got {self.source!r}")
        check(self.use_macro or self.use_micro, "model.use_macro and model.use_micro cannot both be false")
        check(self.finetune in FINETUNE_MODES, f"model.finetune must be one of {FINETUNE_MODES}, got {self.finetune!r}")
        check(self.lora_r >= 1 and self.lora_alpha >= 1, "model.lora_r and model.lora_alpha must be >= 1")
        check(0.0 <= self.lora_dropout < 1.0, f"model.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        check(len(self.lora_targets) >= 1, "model.lora_targets must name at least one module")
        check(self.prompt_tokens >= 0, f"model.prompt_tokens must be >= 0, got {self.prompt_tokens}")
        check(self.history_titles >= 0, f"model.history_titles must be >= 0, got {self.history_titles}")
        check(bool(self.task.strip()), "model.task must be a non-empty instruction")
        check(self.use_user or self.history_titles > 0,
              "the prompt needs something about the user: model.use_user=true or model.history_titles > 0")
        check(self.gamma >= 0, f"model.gamma must be >= 0, got {self.gamma}")
        check(self.word_anchor >= 0, f"model.word_anchor must be >= 0, got {self.word_anchor}")
        check(self.token_contrast >= 0, f"model.token_contrast must be >= 0, got {self.token_contrast}")
        check(self.contrast_margin >= 0, f"model.contrast_margin must be >= 0, got {self.contrast_margin}")
        unknown = [t for t in self.contrast_tasks if t not in TASK_NAMES]
        check(not unknown, f"model.contrast_tasks names unknown tasks {unknown} (known: {list(TASK_NAMES)})")
        check(self.sar_pairs >= 1, f"model.sar_pairs must be >= 1, got {self.sar_pairs}")
        check(self.projector_hidden >= 1, f"model.projector_hidden must be >= 1, got {self.projector_hidden}")
        check(self.max_words >= 1, f"model.max_words must be >= 1, got {self.max_words}")
        check(self.max_target_tokens >= 4, f"model.max_target_tokens must be >= 4, got {self.max_target_tokens}")


@dataclass
class AlignTrainConfig:
    """Optimisation of stage 2 (the projector, and the LoRA adapter / soft prompt when configured).

    Attributes:
        lr: AdamW peak learning rate; weight_decay: AdamW weight decay; batch_size: pairs per step per process;
        epochs: passes over the training pairs; schedule: ``constant``, ``linear`` or ``cosine`` decay to 0
        after ``warmup_frac`` of the steps of linear warmup (per optimizer step); select_best: keep the
        weights of the evaluation with the lowest validation NLL (validation users only), else the last;
        evals_per_epoch: validation passes per epoch (the candidates ``select_best`` picks from);
        pairs: ``all`` training users' pairs, or ``crossfit``: only the pairs of the training users whose
        texts stage 1 never saw (``split.stage2_frac`` at tokenize time), so stage 2 learns from tokens made
        like a zero-shot user's; max_steps: stop after this many optimizer steps (0 = no limit);
        max_train_pairs: a seeded subset of the training pairs (0 = all); val_pairs: validation pairs scored
        at each evaluation (0 = all); seed; threads: torch threads (0 = default); log_every: steps per log line.
        tasks: what stage 2 learns (:mod:`beatrec.align.tasks`): ``explain`` (pair -> explanation),
        ``user_profile`` (user tokens -> ``user_summary``), ``item_profile`` (item tokens, no title ->
        ``item_summary``); every example from training users' texts only, each batch one task.
        profile_ratio: each profile task draws at most this many examples per explanation training pair
        (seeded; one per user / item at most). title_dropout: share of the explanation training pairs whose
        title is withheld (an untitled item: its tokens are all the LM has). anchor_warmup: passes of
        projector-only word anchoring (:func:`beatrec.align.anchor.anchor_warmup`; not in the paper) before the
        LM training (0 = off).
    """

    lr: float = 5e-4
    weight_decay: float = 1e-6
    batch_size: int = 8
    epochs: int = 1
    schedule: str = "cosine"
    warmup_frac: float = 0.1
    select_best: bool = True
    evals_per_epoch: int = 2
    pairs: str = "all"
    max_steps: int = 0
    max_train_pairs: int = 0
    val_pairs: int = 200
    seed: int = 0
    threads: int = 0
    log_every: int = 20
    rank_weights: bool = False  # also write every process's weights (align/weights.rank{K}.safetensors)
    tasks: tuple[str, ...] = (EXPLAIN,)
    profile_ratio: float = 1.0
    title_dropout: float = 0.0
    anchor_warmup: int = 0
    # "bfloat16": the forward passes of training and validation run under torch.autocast (matmuls in bfloat16; the
    # trained weights, AdamW and the loss stay float32). ~1.5x faster steps on a 2-core AVX2 CPU; "float32": off.
    precision: str = "float32"
    # Every this many optimizer steps, write RUN/<subdir>/checkpoint.pt (trained parameters, optimizer, schedule,
    # position in the epoch, random states, validation history); a later training with the same config resumes
    # from it and ends where an uninterrupted one would (tests/test_align_checkpoint.py). 0 = off.
    checkpoint_every: int = 50

    def validate(self) -> None:
        check(self.checkpoint_every >= 0, f"train.checkpoint_every must be >= 0, got {self.checkpoint_every}")
        check(self.precision in ("float32", "bfloat16"),
              f"train.precision must be float32 or bfloat16, got {self.precision!r}")
        check(len(self.tasks) >= 1 and len(set(self.tasks)) == len(self.tasks) and set(self.tasks) <= set(TASK_NAMES),
              f"train.tasks must be distinct names from {TASK_NAMES}, got {list(self.tasks)}")
        check(self.profile_ratio > 0, f"train.profile_ratio must be > 0, got {self.profile_ratio}")
        check(self.anchor_warmup >= 0, f"train.anchor_warmup must be >= 0, got {self.anchor_warmup}")
        check(0.0 <= self.title_dropout < 1.0, f"train.title_dropout must be in [0, 1), got {self.title_dropout}")
        check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        check(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        check(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        check(self.schedule in SCHEDULES, f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check(0.0 <= self.warmup_frac < 1.0, f"train.warmup_frac must be in [0, 1), got {self.warmup_frac}")
        check(self.evals_per_epoch >= 1, f"train.evals_per_epoch must be >= 1, got {self.evals_per_epoch}")
        check(self.pairs in PAIR_SOURCES, f"train.pairs must be one of {PAIR_SOURCES}, got {self.pairs!r}")
        for name in ("max_steps", "max_train_pairs", "val_pairs", "threads"):
            check(getattr(self, name) >= 0, f"train.{name} must be >= 0, got {getattr(self, name)}")
        check(self.log_every >= 1, f"train.log_every must be >= 1, got {self.log_every}")


DECODERS = ("lean", "fast", "generate")  # generate.decoder
QUANTIZE = ("none", "int8")  # generate.quantize
INFER_DTYPES = ("float32", "bfloat16")  # generate.dtype


@dataclass
class GenerateConfig:
    """Decoding of explanations (batched, with the KV cache): greedy (``num_beams=1``) or beam search.

    ``min_new_tokens`` holds EOS back until that many tokens are out; ``repetition_penalty`` (1 = off) and
    ``no_repeat_ngram_size`` (0 = off) discourage loops; ``length_penalty`` applies to beam search only.
    ``guidance`` is behavior-token guidance (:mod:`beatrec.align.guidance`): 1 = off; g > 1 decodes
    ``log p(y|neutral) + g * (log p(y|tokens) - log p(y|neutral))``, the neutral prompt holding the population-mean
    behavior tokens (one more forward pass per step).
    """

    batch_size: int = 16
    max_new_tokens: int = 72
    min_new_tokens: int = 0
    num_beams: int = 4
    length_penalty: float = 1.0
    do_sample: bool = False
    temperature: float = 1.0
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 3
    guidance: float = 1.0
    # Fold the LoRA adapter into the base weights when a run is loaded for inference, if the LM is loaded in
    # float32 (in bf16/fp16 the small delta would be rounded away in part; then the adapter stays unmerged). The
    # adapter on disk stays in peft's format; decoding skips its two extra matmuls per layer. Generations equal the
    # unmerged model's (tests/test_align_recipe.py).
    merge_lora: bool = True
    # Default "fast" (chosen on 64 Amazon validation pairs, `benchmarks/explain_speed.md`: 1.85x the batched
    # pairs/s and 1.35x the single-pair speed of "generate"). "lean" (:mod:`beatrec.align.decode`): each prompt
    # prefilled once (not once per beam), the instruction prefix the prompts share prefilled once per call,
    # finished prompts dropped from the batch; per prompt the tokens
    # ``generate`` gives for it alone. "generate": Hugging Face's ``generate`` (whose repetition penalty skips as
    # many generated tokens as a row has padding). "fast": lean, with each decode step computed by
    # :mod:`beatrec.align.fastlm` from the LM's weights instead of its module stack (Llama-architecture LMs with the
    # LoRA merged; other LMs decode as lean). Guidance and sampling always use ``generate``.
    decoder: str = "fast"
    # "int8": the LM's Linear layers (LM head included) get int8 weights when a run is loaded for inference (PyTorch
    # dynamic quantisation, after the LoRA merge; float32 LM only); "none": float32. It costs quality on SmolLM2
    # (per-tensor int8 activations; `benchmarks/explain_speed.md`): off by default. It keeps the LM float32 (dtype
    # does not apply).
    quantize: str = "none"
    # The LM's dtype for inference: "bfloat16" casts a float32 LM (after the LoRA merge, done in float32) to bfloat16
    # when a run is loaded; decoding then reads half the weight bytes per step (the fast decoder's attention and
    # residual stream stay float32). "float32": as loaded. Default "bfloat16", chosen on 64 Amazon validation pairs
    # (`benchmarks/explain_speed.md`): with decoder=fast 2.98x today's single-pair speed and 2.50x its batched
    # pairs/s, BLEU-1, BERTScore-MiniLM and specificity paired with today's decode all within intervals holding 0.
    dtype: str = "bfloat16"
    # The weights the fast decoder's steps read (:mod:`beatrec.align.fastlm`): "model" (the LM's own), "bfloat16" (a
    # bfloat16 copy: half the bytes, activations and key/value cache in bfloat16) or "int8" (int8 weights, one scale
    # per output row, the products in bfloat16: a quarter of the bytes). The prompt is prefilled by the LM as loaded
    # (float32 by default) either way; decoder=fast only.
    fast_weights: str = "model"
    # Reorder the LM's float32/bfloat16 matrices once, when a run is loaded for inference, into oneDNN's blocked
    # layout and apply them with its linear primitive (:mod:`beatrec.align.fastlm`: the LM's Linear layers, for the
    # prefill, and the fast decoder's fused matrices): the same products, faster on CPU, most for a decode step's few
    # rows; bfloat16 only where the CPU runs it natively (else unpacked). Costs two more copies of the weights in memory.
    pack: bool = True
    # Form the batches of a call from prompts of similar length (less padding); the outputs keep the rows' order.
    # With decoder=lean a pair's explanation does not depend on its batch, so this changes nothing but the time.
    sort_by_length: bool = False

    def validate(self) -> None:
        check(self.dtype in INFER_DTYPES, f"generate.dtype must be one of {INFER_DTYPES}, got {self.dtype!r}")
        check(self.quantize in QUANTIZE, f"generate.quantize must be one of {QUANTIZE}, got {self.quantize!r}")
        check(self.fast_weights in STEP_WEIGHTS,
              f"generate.fast_weights must be one of {STEP_WEIGHTS}, got {self.fast_weights!r}")
        check(self.decoder in DECODERS, f"generate.decoder must be one of {DECODERS}, got {self.decoder!r}")
        check(self.batch_size >= 1, f"generate.batch_size must be >= 1, got {self.batch_size}")
        check(self.max_new_tokens >= 1, f"generate.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check(0 <= self.min_new_tokens <= self.max_new_tokens,
              f"generate.min_new_tokens must be in 0..max_new_tokens ({self.max_new_tokens}), got {self.min_new_tokens}")
        check(self.num_beams >= 1, f"generate.num_beams must be >= 1, got {self.num_beams}")
        check(self.temperature > 0, f"generate.temperature must be > 0, got {self.temperature}")
        check(self.repetition_penalty > 0, "generate.repetition_penalty must be > 0")
        check(self.no_repeat_ngram_size >= 0, "generate.no_repeat_ngram_size must be >= 0")
        check(self.guidance >= 0, f"generate.guidance must be >= 0 (1 = off), got {self.guidance}")


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
