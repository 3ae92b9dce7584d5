"""Loading a stage-2 run and explaining pairs (``beatrec explain``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from beatrec.align.config import AlignConfig, GenerateConfig
from beatrec.align.fastlm import pack_linears
from beatrec.align.generate import generate_explanations
from beatrec.align.history import HistoryPrompts
from beatrec.align.model import BehaviorLM, merge_lora, quantize_int8
from beatrec.align.prompt import PromptBuilder
from beatrec.align.sources import load_source
from beatrec.align.train import ADAPTER_DIR, ALIGN_DIR, PEFT_PREFIX, WEIGHTS
from beatrec.align.vocab import STAGE1_FILES
from beatrec.config import load_yaml
from beatrec.errors import DataError, RunError
from beatrec.lm import load_causal_lm


class Aligned(NamedTuple):
    model: BehaviorLM
    tok: PreTrainedTokenizerBase
    builder: PromptBuilder
    cfg: AlignConfig
    titles: dict[int, str]  # item id -> title (from the dataset's text rows)
    history: HistoryPrompts | None = None  # the history field's source (model.history_titles > 0)


def load_aligned(run: str | Path, overrides: list[str] | None = None, subdir: str = ALIGN_DIR) -> Aligned:
    """Rebuild the stage-2 model of ``run/subdir`` (stage-1 vocabulary + frozen LM + trained projector).

    Raises RunError when stage-1 or stage-2 artifacts are missing, or when the configured LM does not match
    the one the projector was trained for.
    """
    run = Path(run)
    missing = [f for f in STAGE1_FILES if not (run / f).is_file()]
    if missing:
        raise RunError(f"{run}: no stage-1 artifacts ({', '.join(missing)} missing); run `beatrec tokenize` first")
    adir = run / subdir
    missing = [f for f in ("config.yaml", "meta.json", WEIGHTS) if not (adir / f).is_file()]
    if missing:
        raise RunError(f"{run}: no stage-2 artifacts ({', '.join(missing)} missing in {adir}); run `beatrec align` first")
    meta = json.loads((adir / "meta.json").read_text())
    # runs trained before LoRA existed have no finetune key: they are frozen-LM runs, whatever today's default
    legacy = [] if "finetune" in meta else ["model.finetune=frozen"]
    cfg = load_yaml(AlignConfig, adir / "config.yaml", [*legacy, *(overrides or [])])
    if cfg.model.finetune != meta.get("finetune", "frozen"):
        raise RunError(f"{adir} was trained with model.finetune={meta.get('finetune', 'frozen')}; it cannot be "
                       f"loaded as {cfg.model.finetune}")
    vocab = load_source(run, cfg.model.source, meta.get("data"))
    lm, tok = load_causal_lm(cfg.lm)
    emb = lm.get_input_embeddings()
    if emb.embedding_dim != meta["lm_width"] or emb.num_embeddings != meta["lm_vocab"]:
        raise RunError(
            f"LM mismatch: {cfg.lm.name} has width {emb.embedding_dim} and vocabulary {emb.num_embeddings}, but the "
            f"projector in {adir} was trained for {meta['lm']} (width {meta['lm_width']}, vocabulary {meta['lm_vocab']})"
        )
    model = BehaviorLM(lm, vocab, cfg.model)
    state = _read_weights(adir / WEIGHTS)
    own = dict(model.named_parameters())
    bad = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if bad or not any(k.startswith("projector.") for k in state):
        raise RunError(f"{adir / WEIGHTS}: does not fit this model (unexpected or mis-shaped: {bad[:3]})")
    if cfg.model.finetune == "lora":
        from peft import set_peft_model_state_dict

        adapter = {k.removeprefix(PEFT_PREFIX): v
                   for k, v in _read_weights(adir / ADAPTER_DIR / "adapter_model.safetensors").items()}
        res = set_peft_model_state_dict(model.lm, adapter)
        missing = [k for k in getattr(res, "missing_keys", []) if "lora_" in k]
        if getattr(res, "unexpected_keys", None) or missing:
            raise RunError(f"{adir / ADAPTER_DIR}: adapter does not fit this LM (unexpected: "
                           f"{list(res.unexpected_keys)[:3]}, missing: {missing[:3]})")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
    if cfg.model.finetune == "lora" and cfg.generate.merge_lora and emb.weight.dtype == torch.float32:
        merge_lora(model.lm)
    if cfg.generate.quantize == "int8":
        if emb.weight.dtype != torch.float32 or (cfg.model.finetune == "lora" and not cfg.generate.merge_lora):
            raise RunError("generate.quantize=int8 needs the LM in float32 (lm.dtype=float32) with its LoRA adapter "
                           "merged (generate.merge_lora=true)")
        quantize_int8(model.lm)
    if cfg.generate.dtype == "bfloat16" and emb.weight.dtype == torch.float32 and cfg.generate.quantize == "none":
        model.lm.to(torch.bfloat16)  # after the float32 merge; quantize=int8 quantises float32 weights, so it keeps float32
    if cfg.generate.pack and cfg.generate.quantize == "none":
        pack_linears(model.lm)  # after the merge and the cast: the packed matrices are the ones decoded with
    model.eval()
    data = Path(meta["data"])
    titles = _titles(data)
    history = None
    if cfg.model.history_titles:
        from beatrec.data.dataset import load_dataset
        from beatrec.data.split import ZeroShotSplit

        if not data.is_dir():
            raise RunError(f"{adir}: the prompt lists users' history titles, read from the dataset {data}, "
                           "which is no longer there")
        history = HistoryPrompts.build(load_dataset(data), ZeroShotSplit.load(run / "split.json"), run,
                                       cfg.model.history_titles)
    return Aligned(model, tok, model.prompt_builder(tok), cfg, titles, history)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise RunError(f"{path}: missing (stage-2 artifacts incomplete); run `beatrec align` again")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types on a corrupt file
        raise RunError(f"{path}: cannot be read ({e})") from e


def _titles(data: Path) -> dict[int, str]:
    """Item titles from the dataset's text files (empty when the dataset is no longer there)."""
    out: dict[int, str] = {}
    for name in ("explanations.jsonl", "test.jsonl"):
        p = data / name
        if p.is_file():
            rows = pd.read_json(p, lines=True, dtype={"iid": "int64"})
            if {"iid", "title"} <= set(rows.columns):
                out.update(dict(zip(rows["iid"].astype(int), rows["title"].astype(str), strict=True)))
    return out


def check_pairs(a: Aligned, pairs: list[dict], source: str) -> list[dict]:
    """Validate ids and fill titles; DataError names the row of ``source`` and the problem."""
    v = a.model.vocab
    out = []
    for row, p in enumerate(pairs, start=1):
        for key, n, what in (("uid", v.n_users, "user"), ("iid", v.n_items, "item")):
            if key not in p:
                raise DataError(source, f"missing column {key!r}", row)
            try:
                val = int(p[key])
            except (TypeError, ValueError):
                raise DataError(source, f"{key} {p[key]!r} is not an integer id", row) from None
            if not 0 <= val < n:
                raise DataError(source, f"unknown {what} id {val} (the run has {what}s 0..{n - 1})", row)
        title = p.get("title") or a.titles.get(int(p["iid"]), "")
        out.append({"uid": int(p["uid"]), "iid": int(p["iid"]), "title": str(title)})
    return out


def explain(a: Aligned, pairs: list[dict], progress: bool = False, generate: GenerateConfig | None = None) -> list[str]:
    """Explanations for validated pairs (see :func:`check_pairs`), decoded with ``generate`` (default: the run's
    ``generate`` settings); the history field, when the model reads one, is filled from each pair's user (its
    target item left out)."""
    if a.history is not None:
        pairs = [dict(p) for p in pairs]
        a.history.attach(pairs)
    return generate_explanations(a.model, a.tok, a.builder, pairs, generate or a.cfg.generate, a.cfg.model.max_words,
                                 progress)
