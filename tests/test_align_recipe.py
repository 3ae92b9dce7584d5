"""The stage-2 recipe options, each with a behaviour it must show (tiny random LM, tiny synthetic run):
answer-only LM head, LoRA (frozen base, adapter round trip), schedules, weight decay, best-checkpoint
selection, soft prompt, cross-fitted pairs, decoding settings and the history field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_stage1
from safetensors.torch import load_file
from test_align import align_cfg, rows

from beatrec.align.batch import collate_prompt, collate_train
from beatrec.align.config import AlignModelConfig, GenerateConfig
from beatrec.align.model import BehaviorLM
from beatrec.align.prompt import INSTRUCTION, PromptBuilder
from beatrec.align.vocab import BehaviorVocab
from beatrec.errors import ConfigError, RunError
from beatrec.lm import LMConfig, load_causal_lm


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tiny_stage1(tmp_path_factory, seed=3)


def model_for(lm_dir: Path, run: Path, **model: object) -> tuple[BehaviorLM, object]:
    lm, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    return BehaviorLM(lm, BehaviorVocab.from_run(run), AlignModelConfig(projector_hidden=16, **model)), tok


def test_answer_only_head_equals_the_full_lm_loss(stage1: tuple[Path, Path, Path]) -> None:
    _, run, lm_dir = stage1
    m, tok = model_for(lm_dir, run)
    batch = collate_train(m.prompt_builder(tok), rows(4), 50, 32)
    embeds, _, _ = m.embed(batch)
    full = m.lm(inputs_embeds=embeds, attention_mask=batch.attention_mask, labels=batch.labels).loss
    assert m.target_nll(embeds, batch.attention_mask, batch.labels).item() == pytest.approx(full.item(), rel=1e-5)


def test_default_prompt_is_beats_instruction(stage1: tuple[Path, Path, Path]) -> None:
    _, _, lm_dir = stage1
    _, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    text = tok.decode(PromptBuilder(tok, 2, 2).prompt("T").ids)
    assert INSTRUCTION.replace("{USER}", "").replace("{ITEM}", "").replace("{TITLE}", "T")[-40:] in text.replace(
        tok.pad_token, "")


def test_soft_prompt_and_history_fields(stage1: tuple[Path, Path, Path]) -> None:
    _, run, lm_dir = stage1
    m, tok = model_for(lm_dir, run, prompt_tokens=3, history_titles=2, use_user=False)
    b = m.prompt_builder(tok)
    r = [{**x, "history": '"The Lost Kiss"; "The Red Wizard"'} for x in rows(2)]
    p = b.prompt(r[0]["title"], r[0]["history"])
    assert len(p.soft) == 3 and len(p.slots) == m.n_item_slots  # no user slots
    assert "The Lost Kiss" in tok.decode(p.ids) and "Behavior tokens of a user" not in tok.decode(p.ids)
    with pytest.raises(ValueError, match="history"):
        b.prompt("T")
    for batch in (collate_train(b, r, 50, 32), collate_prompt(b, r)):
        embeds, _, _ = m.embed(batch)
        for k in range(2):
            assert torch.equal(embeds[k, batch.soft_pos[k]], m.soft_prompt.detach())
    with pytest.raises(ConfigError, match="something about the user"):
        AlignModelConfig(use_user=False).validate()


def test_lora_trains_an_adapter_and_keeps_the_base_frozen(stage1: tuple[Path, Path, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import beatrec.align.train as T
    from beatrec.align.explain import check_pairs, explain, load_aligned

    data, run, lm_dir = stage1
    lm, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    monkeypatch.setattr(T, "load_causal_lm", lambda cfg: (lm, tok))
    cfg = align_cfg(lm_dir, max_steps=3)
    cfg.model.finetune, cfg.model.prompt_tokens = "lora", 2
    res = T.train_align(run, data, cfg, progress=False)
    after = lm.state_dict()
    for k, v in before.items():  # every base weight bit-identical (peft renames wrapped layers' base_layer)
        k2 = k if k in after else k.replace(".weight", ".base_layer.weight")
        assert torch.equal(after[k2], v), k
    adapter = load_file(str(res.out_dir / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it trained
    conf = json.loads((res.out_dir / "adapter" / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["r"] == 8
    own = load_file(str(res.out_dir / "weights.safetensors"))
    assert "soft_prompt" in own and not any(k.startswith("lm.") for k in own)
    monkeypatch.undo()
    # round trip: a freshly loaded run generates what the trained model generates
    ps = [{"uid": 0, "iid": 1, "title": "x"}, {"uid": 5, "iid": 7, "title": "y"}]
    a = load_aligned(run, ["generate.dtype=float32"])
    assert a.model.cfg.finetune == "lora"
    got = explain(a, check_pairs(a, ps, "x"))
    from beatrec.align.generate import generate_explanations

    assert got == generate_explanations(a.model, a.tok, a.builder, ps, a.cfg.generate, 50)
    # merged for inference (generate.merge_lora, the default): base weights moved by B A, same outputs as unmerged
    u = load_aligned(run, ["generate.merge_lora=false", "generate.dtype=float32"])
    lora_layers = [(n, m) for n, m in a.model.lm.named_modules() if hasattr(m, "merged") and hasattr(m, "base_layer")]
    assert lora_layers and all(m.merged for _, m in lora_layers)
    unmerged = dict(u.model.lm.named_modules())
    assert not any(unmerged[n].merged for n, _ in lora_layers)
    assert any(not torch.equal(m.base_layer.weight, unmerged[n].base_layer.weight) for n, m in lora_layers)
    assert explain(u, check_pairs(u, ps, "x")) == got
    batch = collate_prompt(a.builder, ps)
    with torch.no_grad():
        la = a.model.lm(inputs_embeds=a.model.embed(batch)[0], attention_mask=batch.attention_mask).logits
        lu = u.model.lm(inputs_embeds=u.model.embed(batch)[0], attention_mask=batch.attention_mask).logits
        base = load_causal_lm(LMConfig(name=str(lm_dir)))[0](inputs_embeds=u.model.embed(batch)[0],
                                                              attention_mask=batch.attention_mask).logits
    assert (la - lu).abs().max() < 1e-4 and (la - base).abs().max() > 100 * (la - lu).abs().max()  # the adapter acts
    half = load_aligned(run, ["lm.dtype=bfloat16"]).model.lm  # the delta would round away: left unmerged
    assert not any(m.merged for m in half.modules() if hasattr(m, "merged") and hasattr(m, "base_layer"))
    for k, v in adapter.items():  # the loaded adapter is the saved one
        name = k.removeprefix("base_model.model.").replace(".weight", ".default.weight")
        assert torch.equal(dict(a.model.lm.named_parameters())[name], v), k
    # ... and peft itself reads it onto a fresh base LM (PeftModel.from_pretrained)
    from peft import PeftModel

    peft_lm = PeftModel.from_pretrained(load_causal_lm(LMConfig(name=str(lm_dir)))[0], str(res.out_dir / "adapter"))
    mine = dict(a.model.lm.named_parameters())
    theirs = {n.removeprefix("base_model.model."): p for n, p in peft_lm.named_parameters() if "lora_" in n}
    assert theirs and all(torch.equal(mine[n], p) for n, p in theirs.items())


def test_runs_from_before_lora_load_as_frozen(stage1: tuple[Path, Path, Path]) -> None:
    import beatrec.align.train as T
    from beatrec.align.explain import load_aligned

    data, run, lm_dir = stage1
    res = T.train_align(run, data, align_cfg(lm_dir, max_steps=1), progress=False, subdir="align_legacy")
    meta = json.loads((res.out_dir / "meta.json").read_text())
    del meta["finetune"]  # as written before LoRA existed
    (res.out_dir / "meta.json").write_text(json.dumps(meta))
    conf = (res.out_dir / "config.yaml").read_text().replace("  finetune: frozen\n", "")
    (res.out_dir / "config.yaml").write_text(conf)
    assert load_aligned(run, subdir="align_legacy").model.cfg.finetune == "frozen"
    with pytest.raises(RunError, match="finetune=frozen"):
        load_aligned(run, ["model.finetune=lora"], subdir="align_legacy")


def test_schedules_warm_up_then_decay() -> None:
    from beatrec.align.train import eval_steps, make_scheduler

    def lrs(schedule: str) -> list[float]:
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        s = make_scheduler(opt, schedule, total=10, warmup=2)
        out = []
        for _ in range(10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        return out

    assert lrs("constant") == pytest.approx([0, 0.5] + [1.0] * 8)
    assert lrs("linear") == pytest.approx([0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    cos = lrs("cosine")
    assert cos[2] == pytest.approx(1.0) and cos[6] == pytest.approx(0.5) and cos[-1] < 0.05
    assert eval_steps(10, 1) == {10} and eval_steps(10, 2) == {5, 10} and eval_steps(3, 5) == {1, 2, 3}


def test_best_checkpoint_is_the_lowest_validation_nll(stage1: tuple[Path, Path, Path]) -> None:
    import beatrec.align.train as T
    from beatrec.align.explain import load_aligned

    data, run, lm_dir = stage1
    cfg = align_cfg(lm_dir, max_steps=0, epochs=2, evals_per_epoch=2, select_best=True, lr=0.3,
                    schedule="cosine", warmup_frac=0.2, weight_decay=0.01, val_pairs=8, max_train_pairs=24)
    res = T.train_align(run, data, cfg, progress=False)
    m = json.loads((res.out_dir / "metrics.json").read_text())
    vals = [e["val_nll"] for e in m["evaluations"]]
    assert len(vals) == 4 and m["kept"]["val_nll"] == min(vals)
    hist = T.pd.read_csv(res.out_dir / "history.csv")
    assert hist["lr"].iloc[-1] < 0.3 * 0.2  # cosine decayed
    # the saved weights are the kept evaluation's: their validation NLL is the one recorded
    a = load_aligned(run, ["generate.dtype=float32"])
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    ds = T.load_dataset(data)
    split = T.ZeroShotSplit.load(run / "split.json")
    val = T.eval_pairs(ds, split, "val")
    assert m["val_pairs"] == 8
    keep = T.pair_records(val.iloc[np.sort(_val_subset(cfg.train.seed, len(T.training_texts(ds, split)), 24,
                                                      len(val), 8))])
    loader = DataLoader(keep, batch_size=4, collate_fn=lambda r: collate_train(a.builder, r, 50, 96))
    assert T.mean_nll(a.model, loader, Accelerator(cpu=True)) == pytest.approx(m["kept"]["val_nll"], rel=1e-4)


def _val_subset(seed: int, n_train: int, k_train: int, n_val: int, k_val: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if n_train > k_train:
        rng.choice(n_train, k_train, False)
    return rng.choice(n_val, k_val, False)


def test_weight_decay_changes_training(stage1: tuple[Path, Path, Path]) -> None:
    import beatrec.align.train as T

    data, run, lm_dir = stage1
    out = []
    for wd in (0.0, 5.0):
        res = T.train_align(run, data, align_cfg(lm_dir, max_steps=2, weight_decay=wd, val_pairs=2), progress=False,
                            subdir=f"align_wd{wd}")
        out.append(load_file(str(res.out_dir / "weights.safetensors"))["projector.mlp.0.weight"])
    assert out[1].norm() < out[0].norm()  # decoupled decay shrinks the weights


def test_crossfit_pairs_come_from_users_stage1_never_read(tmp_path_factory: pytest.TempPathFactory) -> None:
    import beatrec.align.train as T
    from beatrec.config import from_dict
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import ZeroShotSplit, stage1_texts, stage2_texts
    from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

    data, run0, lm_dir = tiny_stage1(tmp_path_factory, seed=3)
    with pytest.raises(RunError, match="split.stage2_frac"):
        T.train_align(run0, data, align_cfg(lm_dir, pairs="crossfit"), progress=False)
    run = tmp_path_factory.mktemp("crossfit")
    cfg = from_dict(TokenizeConfig, {"model": {"n_codes": 8, "part_dim": 8, "code_dim": 8},
                                     "train": {"max_epochs": 1, "batch_size": 512}, "extractor": {"kind": "splitter"},
                                     "split": {"stage2_frac": 0.5}})
    run_tokenize(data, run, cfg, progress=False)
    split = ZeroShotSplit.load(run / "split.json")
    split0 = ZeroShotSplit.load(run0 / "split.json")
    assert np.array_equal(split.test_users, split0.test_users)  # the other sets do not move
    assert np.array_equal(split.train_users, split0.train_users)
    n2 = len(split.stage2_users)
    assert n2 == round(0.5 * len(split.train_users)) and np.isin(split.stage2_users, split.train_users).all()
    ds = load_dataset(data)
    s1 = set(stage1_texts(ds, split)["uid"])
    assert s1 and not s1 & set(split.stage2_users.tolist())
    phr = [json.loads(x)["uid"] for x in (run / "phrases_users.jsonl").read_text().splitlines()]
    assert phr and not set(phr) & set(split.stage2_users.tolist())  # stage 1 never read them
    res = T.train_align(run, data, align_cfg(lm_dir, pairs="crossfit", max_steps=1), progress=False)
    m = json.loads((res.out_dir / "metrics.json").read_text())
    assert m["train_pairs"] == len(stage2_texts(ds, split)) and m["pairs"] == "crossfit"


def test_decoding_settings(stage1: tuple[Path, Path, Path]) -> None:
    from beatrec.align.generate import generate_from_embeds

    _, run, lm_dir = stage1
    m, tok = model_for(lm_dir, run)
    batch = collate_prompt(m.prompt_builder(tok), rows(2))
    embeds, _, _ = m.embed(batch)
    for cfg in (GenerateConfig(max_new_tokens=8, min_new_tokens=8), GenerateConfig(max_new_tokens=8, min_new_tokens=8,
                                                                                     num_beams=3)):
        ids = generate_from_embeds(m, tok, embeds, batch.attention_mask, cfg, tok.pad_token_id)
        assert ids.shape[1] == 8 and not (ids == tok.eos_token_id).any()  # EOS held back until 8 tokens
    with pytest.raises(ConfigError, match="min_new_tokens"):
        GenerateConfig(max_new_tokens=4, min_new_tokens=5).validate()


def test_bfloat16_autocast_training(stage1: tuple[Path, Path, Path]) -> None:
    """``train.precision=bfloat16``: the steps run (finite losses, the first close to float32's), the trained
    weights stay float32, and a bad value is a config error."""
    import beatrec.align.train as T

    data, run, lm_dir = stage1
    for prec in ("float32", "bfloat16"):
        cfg = align_cfg(lm_dir, max_steps=4, precision=prec, lr=3e-3)
        res = T.train_align(run, data, cfg, progress=False, subdir=f"align_{prec}")
        state = load_file(str(res.out_dir / "weights.safetensors"))
        assert state and all(v.dtype == torch.float32 for v in state.values())
        assert all(np.isfinite(v) for v in res.val_nll)
    import pandas as pd

    h32 = pd.read_csv(run / "align_float32" / "history.csv")
    h16 = pd.read_csv(run / "align_bfloat16" / "history.csv")
    assert abs(h16["nll"].iloc[0] - h32["nll"].iloc[0]) < 0.05 * h32["nll"].iloc[0]
    assert not np.array_equal(h16["nll"], h32["nll"])  # it did compute in bfloat16
    with pytest.raises(ConfigError, match="train.precision"):
        align_cfg(lm_dir, precision="float16").validate()
