"""Phrase extraction with a local Hugging Face causal LM (default: the packaged SmolLM2-135M-Instruct).

Batched greedy generation (left padding, KV cache) of a prefilled JSON answer (``prompt.PREFILL``): the
model only continues the phrase list, and each row stops as soon as the list is closed, holds n phrases
or repeats a phrase (``prompt.list_is_done``). The prompt prefix shared by all entities of a kind (system
turn, demonstration) is run once and its KV cache reused by every batch (``cfg.prefix_cache``).
Entities whose answer fails validation are retried alone with sampling (temperature 0.7, a new seed each
attempt), up to ``cfg.retries`` times; entities still failing get None.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from beatrec.extract.base import ExtractorConfig
from beatrec.extract.prompt import (
    PREFILL,
    PROMPT_VERSION,
    build_messages,
    drop_demo_copies,
    list_is_done,
    parse_phrases,
)
from beatrec.lm import SMOLLM2_CACHE_NAME, SMOLLM2_NAME, LMConfig, load_causal_lm

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class GenerationStats(NamedTuple):
    """Throughput of the last ``extract`` call."""

    n_entities: int
    n_failed: int
    n_generated_tokens: int  # new tokens over all rows and attempts (padding rows after a stop excluded)
    n_prompt_tokens: int
    seconds: float


class HFExtractor:
    """Extract ranked phrases with a local causal LM.

    Args:
        cfg: extractor config; kind ``"smollm2"`` loads the packaged model, ``"hf"`` loads ``cfg.model``.
        model, tokenizer: an already loaded LM and tokenizer to use instead (e.g. shared with another stage).
    """

    def __init__(
        self,
        cfg: ExtractorConfig,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:

        cfg.validate()
        self.cfg = cfg
        self.n_phrases = cfg.n_phrases
        name = SMOLLM2_NAME if cfg.kind == "smollm2" else cfg.model
        if model is None or tokenizer is None:
            model, tokenizer = load_causal_lm(LMConfig(name=name, dtype=cfg.dtype))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.model, self.tokenizer = model, tokenizer
        from beatrec.runtime import resolve_device

        self.device = resolve_device(cfg.device)
        self.model.to(self.device).eval()
        if cfg.pack and self.device.type == "cpu":
            from beatrec.align.fastlm import pack_linears

            pack_linears(self.model)  # inference only: a layer falls back to the plain product under autograd
        self._fast = None  # the greedy first attempt through the fast decoder (extractor.decoder=fast, CPU)
        if cfg.decoder == "fast" and self.device.type == "cpu":
            from beatrec.align.fastlm import FastStep, supported

            if supported(self.model) is None:
                self._fast = FastStep(self.model, "model", pack_weights=cfg.pack)
        tag = SMOLLM2_CACHE_NAME if name == SMOLLM2_NAME else name
        self.identity = f"hf:{tag}:{PROMPT_VERSION}:w{cfg.max_words}:t{cfg.max_new_tokens}"
        self.last_stats: GenerationStats | None = None
        self._prefixes: dict[str, tuple[list[int], Any] | None] = {}

    def prompt(self, kind: str, texts: list[str]) -> str:
        """The full model input for one entity: chat-formatted messages plus the prefilled answer start."""
        msgs = build_messages(kind, texts, self.cfg.n_phrases, self.cfg.max_words)
        if getattr(self.tokenizer, "chat_template", None):
            head = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        else:
            head = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in msgs) + "Assistant: "
        return head + PREFILL

    def _encode(self, prompts: list[str]) -> list[list[int]]:
        add_special = not getattr(self.tokenizer, "chat_template", None)
        return self.tokenizer(prompts, add_special_tokens=add_special)["input_ids"]

    def _prefix(self, kind: str) -> tuple[list[int], Any] | None:
        """The token ids every ``kind`` prompt starts with (system turn, demonstration, header) and their KV cache.

        Found as the longest common token prefix of two probe prompts; computed once per kind.
        """
        import torch

        if kind not in self._prefixes:
            a, b = self._encode([self.prompt(kind, ["aaa"]), self.prompt(kind, ["zzz"])])
            n = 0
            while n < min(len(a), len(b)) and a[n] == b[n]:
                n += 1
            entry = None
            if n >= 16:  # too short to be worth it otherwise
                with torch.inference_mode():
                    ids = torch.tensor([a[:n]], device=self.device)
                    cache = self.model(input_ids=ids, use_cache=True).past_key_values
                entry = (a[:n], cache)
            self._prefixes[kind] = entry
        return self._prefixes[kind]

    def _batch(self, ids: list[list[int]], kind: str | None) -> tuple[dict[str, Any], int]:
        """Model inputs for one batch of token-id lists, and the input length.

        Without a shared prefix: left padding. With one (``cfg.prefix_cache``): ``[prefix | pads | suffix]``
        rows over a copy of the prefix's KV cache, so the prefix is not recomputed for every entity (it is
        ~half of each prompt); positions come from the attention mask, so pads in the middle are invisible.
        """
        import torch

        pad = self.tokenizer.pad_token_id
        prefix = self._prefix(kind) if (kind is not None and self.cfg.prefix_cache) else None
        k = 0
        if prefix is not None:  # the cached prefix, cut to what every row shares (leaving >= 1 own token)
            k = min(len(prefix[0]), min(len(x) for x in ids) - 1)
            for x in ids:
                while k > 0 and x[:k] != prefix[0][:k]:
                    k -= 1
            if k < 16:
                k = 0
        width = max(len(x) for x in ids)
        inp = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        if k:
            inp[:, :k] = torch.tensor(prefix[0][:k])
            mask[:, :k] = 1
        for row, x in enumerate(ids):
            tail = x[k:]
            inp[row, width - len(tail) :] = torch.tensor(tail)
            mask[row, width - len(tail) :] = 1
        batch: dict[str, Any] = {"input_ids": inp.to(self.device), "attention_mask": mask.to(self.device)}
        if k:
            cache = copy.deepcopy(prefix[1])
            if k < len(prefix[0]):
                cache.crop(k)
            cache.batch_repeat_interleave(len(ids))
            batch["past_key_values"] = cache
        return batch, width

    def _generate(
        self, prompts: list[str], sample: bool, seed: int, kind: str | None = None
    ) -> tuple[list[str], int, int]:
        """Generate continuations of ``prompts`` (one batch); returns (texts, new tokens, prompt tokens).

        ``kind`` (when given) lets the batch reuse the KV cache of the prompt prefix shared by that kind.
        """
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        ids = self._encode(prompts)
        batch, start = self._batch(ids, kind)
        tok, n = self.tokenizer, self.cfg.n_phrases

        class _StopWhenListDone(StoppingCriteria):
            """Per row: stop once the phrase list is closed, has n phrases, or repeats one (``list_is_done``)."""

            def __call__(
                self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object
            ) -> torch.Tensor:
                texts = tok.batch_decode(input_ids[:, start:], skip_special_tokens=True)
                return torch.tensor([list_is_done(t, n) for t in texts], device=input_ids.device)  # (b,) bool

        gen = GenerationConfig(
            max_new_tokens=self.cfg.max_new_tokens,
            do_sample=sample,
            num_beams=1,
            use_cache=True,
            temperature=0.7 if sample else None,
            top_p=0.95 if sample else None,
            top_k=None,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self.model.generate(
                **batch, generation_config=gen, stopping_criteria=StoppingCriteriaList([_StopWhenListDone()])
            )
        new = out[:, start:]  # (b, <= max_new_tokens)
        texts = tok.batch_decode(new, skip_special_tokens=True)
        n_new = int((new != tok.pad_token_id).sum()) if new.numel() else 0
        return texts, n_new, sum(len(x) for x in ids)

    def _generate_fast(self, prompts: list[str]) -> tuple[list[str], int, int]:
        """Greedy continuations of ``prompts`` through the lean decoder and the fast step
        (:mod:`beatrec.align.decode`): the tokens ``generate`` gives (same stopping rule, checked after each token),
        without its per-step module stack. -> (texts, new tokens, prompt tokens)."""
        import torch

        from beatrec.align.config import GenerateConfig
        from beatrec.align.decode import FastStepper, prefill, search

        tok, n = self.tokenizer, self.cfg.n_phrases
        ids = self._encode(prompts)
        width = max(len(x) for x in ids)
        inp = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            inp[row, width - len(x) :] = torch.tensor(x)
            mask[row, width - len(x) :] = 1
        cfg = GenerateConfig(num_beams=1, max_new_tokens=self.cfg.max_new_tokens, repetition_penalty=1.0,
                             no_repeat_ngram_size=0)
        with torch.inference_mode():
            embeds = self.model.get_input_embeddings()(inp)  # (B, L, d)
            pre = prefill(self.model, embeds, mask)  # the prompts' shared head (system turn, demo) once
            step = FastStepper(self._fast, pre.cache, cfg.max_new_tokens)
            rows = search(step, pre, cfg, tok.pad_token_id, tok.eos_token_id,
                          stop=lambda seq: list_is_done(tok.decode(seq, skip_special_tokens=True), n))
        texts = [tok.decode(r, skip_special_tokens=True) for r in rows]
        n_new = sum(sum(1 for t in r if t != tok.pad_token_id) for r in rows)
        return texts, n_new, sum(len(x) for x in ids)

    def extract(self, kind: str, docs: list[list[str]], progress: bool = False) -> list[list[str] | None]:
        """Ranked phrases per entity (None where every attempt failed validation). See module docstring."""
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        prompts = [self.prompt(kind, texts) for texts in docs]
        results: list[list[str] | None] = [None] * len(docs)
        lengths = [len(p) for p in prompts]
        n_gen = n_prompt = 0
        bs = self.cfg.batch_size
        with tqdm(total=len(docs), desc=f"extracting {kind} phrases", unit=kind, disable=not progress) as bar:
            has_text = [i for i in range(len(docs)) if any(t.strip() for t in docs[i])]  # no text: None
            bar.update(len(docs) - len(has_text))
            todo = sorted(has_text, key=lambda i: lengths[i])  # length-sorted batches: less padding
            for attempt in range(self.cfg.retries + 1):
                failed: list[int] = []
                for s in range(0, len(todo), bs):
                    idx = todo[s : s + bs]
                    if attempt == 0 and self._fast is not None:
                        outs, g, p = self._generate_fast([prompts[i] for i in idx])
                    else:
                        outs, g, p = self._generate(
                            [prompts[i] for i in idx], sample=attempt > 0, seed=self.cfg.seed + attempt, kind=kind
                        )
                    n_gen, n_prompt = n_gen + g, n_prompt + p
                    for i, out in zip(idx, outs, strict=True):
                        results[i] = drop_demo_copies(
                            kind, parse_phrases(PREFILL + out, self.cfg.n_phrases), docs[i]
                        )
                        if results[i] is None:
                            failed.append(i)
                        else:
                            bar.update(1)
                todo = failed
                if not todo:
                    break
            bar.update(len(todo))
        n_failed = sum(r is None for r in results)
        self.last_stats = GenerationStats(len(docs), n_failed, n_gen, n_prompt, time.perf_counter() - t0)
        return results
