"""Phrase-extractor interface and factory (BEAT micro supervision, eqs. 7-8).

An extractor turns each entity's training texts into a ranked list of short preference phrases. Kinds:

- ``"smollm2"``: the packaged SmolLM2-135M-Instruct, run locally (default; no download).
- ``"hf"``: any local Hugging Face causal LM (``model`` = path or cached hub id).
- ``"openai"``: any OpenAI-compatible chat-completions endpoint (``base_url``, ``model``).
- ``"splitter"``: a deterministic rule-based phrase splitter, no LM; must be chosen explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from beatrec.config import check
from beatrec.errors import BeatrecError

KINDS = ("smollm2", "hf", "openai", "splitter")


class ExtractionError(BeatrecError):
    """An extractor cannot run at all (e.g. its endpoint is unreachable or rejects the request)."""


@dataclass
class ExtractorConfig:
    """Phrase-extractor settings.

    Attributes:
        kind: ``"smollm2"`` | ``"hf"`` | ``"openai"`` | ``"splitter"``.
        model: HF model path/id (kind "hf") or the endpoint's model name (kind "openai").
        base_url: OpenAI-compatible API root, e.g. ``http://127.0.0.1:8000/v1`` (kind "openai").
        api_key_env: environment variable holding the bearer key (kind "openai"; unset/empty: no key sent).
        n_phrases: the most phrases per entity (the paper's n).
        batch_size: entities per generation batch (local LMs) or concurrent requests (openai).
        max_new_tokens: generation budget per entity (a 5-phrase list needs ~30-40 tokens).
        retries: extra attempts (sampling at temperature 0.7, new seed) for entities whose answer fails
            JSON validation.
        timeout_s: per-request timeout (openai).
        max_words: word budget of the entity's texts in the prompt.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ... (local LMs).
        seed: base seed of the sampling retries.
        dtype: local LMs: ``"auto"`` (the checkpoint's dtype; float32 for the packaged SmolLM2), ``"float32"``,
            ``"bfloat16"`` or ``"float16"``.
        prefix_cache: local LMs: compute the prompt prefix shared by all entities once and reuse its KV cache
            (same outputs up to float rounding, ~2x faster prefill).
        pack: local LMs on CPU: pack the LM's float32/bfloat16 matrices once for oneDNN's linear
            (:func:`beatrec.align.fastlm.pack_linears`): the same products, faster; cached phrases stay valid.
        decoder: local LMs on CPU: ``"fast"`` decodes the greedy first attempt with the lean decoder and the fast
            step (:mod:`beatrec.align.decode`; Llama-architecture LMs, else as ``"generate"``): the same tokens as
            ``"generate"`` (Hugging Face's), without its per-step overhead. Sampled retries use ``generate``.
    """

    kind: str = "smollm2"
    model: str = ""
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    n_phrases: int = 5
    batch_size: int = 16
    max_new_tokens: int = 40
    retries: int = 2
    timeout_s: float = 60
    max_words: int = 200
    device: str = "auto"
    seed: int = 0
    dtype: str = "auto"
    prefix_cache: bool = True
    pack: bool = True
    decoder: str = "fast"

    def validate(self) -> None:
        """Raise ConfigError on an invalid value or a missing setting the kind needs."""
        check(self.kind in KINDS, f"extractor.kind must be one of {KINDS}, got {self.kind!r}")
        check(
            self.kind != "hf" or bool(self.model), "extractor.kind='hf' needs extractor.model (a path or id)"
        )
        check(
            self.kind != "openai" or bool(self.base_url and self.model),
            "extractor.kind='openai' needs extractor.base_url and extractor.model",
        )
        check(self.n_phrases >= 1, f"extractor.n_phrases must be >= 1, got {self.n_phrases}")
        check(self.batch_size >= 1, f"extractor.batch_size must be >= 1, got {self.batch_size}")
        check(self.max_new_tokens >= 4, f"extractor.max_new_tokens must be >= 4, got {self.max_new_tokens}")
        check(self.retries >= 0, f"extractor.retries must be >= 0, got {self.retries}")
        check(self.timeout_s > 0, f"extractor.timeout_s must be > 0, got {self.timeout_s}")
        check(
            self.dtype in ("auto", "float32", "bfloat16", "float16"),
            f"extractor.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}",
        )
        check(self.max_words >= 10, f"extractor.max_words must be >= 10, got {self.max_words}")
        check(self.decoder in ("fast", "generate"), f"extractor.decoder must be fast or generate, got {self.decoder!r}")


@runtime_checkable
class PhraseExtractor(Protocol):
    """Extracts a ranked phrase list per entity.

    Attributes:
        identity: names the extractor, its model and prompt version; part of every phrase-cache key.
        n_phrases: the most phrases per entity; also part of the cache key.
    """

    identity: str
    n_phrases: int

    def extract(self, kind: str, docs: list[list[str]], progress: bool = False) -> list[list[str] | None]:
        """One ranked phrase list per entity (``docs[i]`` = entity i's texts); None where all attempts failed."""
        ...
