"""Phrase extraction through any OpenAI-compatible chat-completions endpoint (stdlib ``urllib`` only).

POSTs ``{base_url}/chat/completions`` with the prompt of ``prompt.build_messages`` (model ``cfg.model``,
bearer key from the environment variable ``cfg.api_key_env`` when it is set). The first attempt is greedy
(temperature 0); an answer that fails JSON validation, a timeout, HTTP 429 or a 5xx error is retried at
temperature 0.7 with a new seed, up to ``cfg.retries`` times, and the entity gets None after that. An
unreachable endpoint or a 4xx reply (bad key, unknown model) raises ``ExtractionError`` naming the URL.
Up to ``cfg.batch_size`` requests run concurrently.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from beatrec.extract.base import ExtractionError, ExtractorConfig
from beatrec.extract.prompt import PROMPT_VERSION, build_messages, drop_demo_copies, parse_phrases

_RETRY_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)


class _Transient(Exception):
    """A failure worth retrying (timeout, overload, server error)."""


class OpenAIExtractor:
    """``PhraseExtractor`` over an OpenAI-compatible HTTP endpoint. See module docstring."""

    def __init__(self, cfg: ExtractorConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.n_phrases = cfg.n_phrases
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.identity = f"openai:{cfg.base_url.rstrip('/')}:{cfg.model}:{PROMPT_VERSION}:w{cfg.max_words}"
        self.n_requests = 0

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env, "") if self.cfg.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, payload: dict[str, Any]) -> str:
        """One chat-completions request; returns the answer text."""
        req = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers=self._headers(), method="POST"
        )
        self.n_requests += 1
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            if e.code in _RETRY_STATUS:
                raise _Transient(f"HTTP {e.code}") from e
            raise ExtractionError(
                f"phrase extraction endpoint {self.url} answered HTTP {e.code} "
                f"(model {self.cfg.model!r}): {detail}"
            ) from e
        except TimeoutError as e:
            raise _Transient("timeout") from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _Transient("timeout") from e
            raise ExtractionError(
                f"cannot reach the phrase extraction endpoint {self.url}: {e.reason} "
                f"(is the server running? check extractor.base_url)"
            ) from e
        except ConnectionError as e:
            raise ExtractionError(f"cannot reach the phrase extraction endpoint {self.url}: {e}") from e
        try:
            data = json.loads(body)
            return str(data["choices"][0]["message"]["content"] or "")
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            return ""  # a malformed envelope counts as a failed answer (retried)

    def _one(self, kind: str, texts: list[str]) -> list[str] | None:
        if not any(t.strip() for t in texts):
            return None  # nothing to read: the entity fails without a request
        messages = build_messages(kind, texts, self.cfg.n_phrases, self.cfg.max_words)
        for attempt in range(self.cfg.retries + 1):
            payload: dict[str, Any] = {
                "model": self.cfg.model,
                "messages": messages,
                "max_tokens": max(self.cfg.max_new_tokens, 64),
                "temperature": 0.7 if attempt else 0.0,
                "seed": self.cfg.seed + attempt,
            }
            try:
                phrases = drop_demo_copies(
                    kind, parse_phrases(self._post(payload), self.cfg.n_phrases), texts
                )
            except _Transient:
                time.sleep(min(0.5 * 2**attempt, 8.0))
                continue
            if phrases is not None:
                return phrases
        return None

    def extract(self, kind: str, docs: list[list[str]], progress: bool = False) -> list[list[str] | None]:
        """Ranked phrases per entity (None where every attempt failed)."""
        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=self.cfg.batch_size) as pool:
            futures = [pool.submit(self._one, kind, texts) for texts in docs]
            results: list[list[str] | None] = []
            for f in tqdm(futures, desc=f"extracting {kind} phrases", unit=kind, disable=not progress):
                results.append(f.result())  # re-raises ExtractionError from a worker
        return results
