"""BEAT stage 2 with a tiny random causal LM: prompt/slot/label invariants, SAR by hand, frozen LM, the
training loop (single process and 2 CPU processes), generation and the CLI's error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_stage1
from safetensors.torch import load_file
from tiny_lm import save_tiny_lm

from beatrec.align.batch import IGNORE, collate_prompt, collate_train
from beatrec.align.config import AlignConfig, AlignModelConfig
from beatrec.align.model import BehaviorLM, slot_parts
from beatrec.align.prompt import PromptBuilder, cap_words
from beatrec.align.sar import match_behavior_tokens, sample_pairs, sar_loss
from beatrec.align.vocab import BehaviorVocab
from beatrec.cli import main
from beatrec.config import from_dict
from beatrec.lm import LMConfig, load_causal_lm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(data dir, tokenized run dir, tiny LM dir)."""
    return tiny_stage1(tmp_path_factory, seed=2)


def align_cfg(lm: Path, **train: object) -> AlignConfig:
    t = {"batch_size": 4, "max_steps": 3, "val_pairs": 8, "log_every": 1, "lr": 1e-2, "select_best": False,
         "evals_per_epoch": 1, "schedule": "constant", "warmup_frac": 0.0, **train}
    return from_dict(AlignConfig, {"lm": {"name": str(lm)}, "model": {"projector_hidden": 16, "sar_pairs": 16,
                                                                       "finetune": "frozen"},
                                   "train": t, "generate": {"max_new_tokens": 6, "batch_size": 3}})


def rows(n: int = 3) -> list[dict]:
    return [{"uid": u, "iid": u + 1, "title": f"The Silent Harbor {u}",
             "explanation": "The user would enjoy it because " + "very " * u + "good."} for u in range(n)]


def test_placeholders_replaced_exactly(stage1: tuple[Path, Path, Path]) -> None:
    _, run, lm_dir = stage1
    lm, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    vocab = BehaviorVocab.from_run(run)
    model = BehaviorLM(lm, vocab, AlignModelConfig(projector_hidden=16))
    builder = PromptBuilder(tok, model.n_side_slots, model.n_side_slots)
    for batch in (collate_train(builder, rows(), 50, 32), collate_prompt(builder, rows())):
        embeds, tokens, beh = model.embed(batch)
        assert batch.slot_pos.shape == (3, 2 * (1 + vocab.n_micro))
        is_slot = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
        is_slot.scatter_(1, batch.slot_pos, True)
        assert torch.equal(embeds[~is_slot], tokens[~is_slot])  # every other position untouched
        for b in range(3):
            assert torch.equal(embeds[b, batch.slot_pos[b]], beh[b])  # slot j holds behavior token j
            assert (batch.input_ids[b, batch.slot_pos[b]] == builder.pad).all()
            assert batch.attention_mask[b, batch.slot_pos[b]].all()
    # user slots come before item slots, and they carry the user's / item's own codes
    assert torch.equal(beh[:, :6], model.projector(torch.cat([vocab.vectors("user", batch.users),
                                                               vocab.vectors("item", batch.items)], 1))[:, :6])


def test_labels_only_on_the_explanation(stage1: tuple[Path, Path, Path]) -> None:
    _, _, lm_dir = stage1
    _, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    builder = PromptBuilder(tok, 6, 6)
    batch = collate_train(builder, rows(), max_words=50, max_tokens=64)
    for b, r in enumerate(rows()):
        target = builder.target(r["explanation"], 50, 64)
        prompt = builder.prompt(r["title"])
        lab = batch.labels[b]
        on = (lab != IGNORE).nonzero().squeeze(1)
        assert on.tolist() == list(range(len(prompt.ids), len(prompt.ids) + len(target)))
        assert lab[on].tolist() == target and target[-1] == tok.eos_token_id
        assert torch.equal(batch.input_ids[b, on], lab[on])
        assert (lab[batch.attention_mask[b] == 0] == IGNORE).all()  # padding never scored
    assert (batch.attention_mask.sum(1) < batch.input_ids.shape[1]).any()  # the batch really has padding


def test_targets_capped_at_50_words() -> None:
    assert cap_words(" ".join(f"w{i}" for i in range(80)), 50).split() == [f"w{i}" for i in range(50)]
    assert cap_words("a  b\nc", 50) == "a b c"


def test_sar_hand_computed() -> None:
    # two text tokens of sample 0, one of sample 1; behavior tokens: sample 0 has x- and y-axis, sample 1 has (1,1)
    text = torch.tensor([[1.0, 0.1], [0.1, 1.0], [3.0, 0.0]])
    owner = torch.tensor([0, 0, 1])
    beh = torch.tensor([[[2.0, 0.0], [0.0, 5.0]], [[1.0, 1.0], [1.0, -1.0]]])
    matched = match_behavior_tokens(text, owner, beh)
    assert torch.equal(matched, torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]]))  # eq. 10
    pairs = torch.tensor([[0, 1], [0, 2]])
    # pair (0,1): cos_p = 0, cos_e = 0.2/1.01; pair (0,2): cos_p = 1/sqrt2, cos_e = 1/sqrt(1.01)
    expect = ((0 - 0.2 / 1.01) ** 2 + (2 ** -0.5 - 1.01 ** -0.5) ** 2) / 2
    assert sar_loss(text, owner, beh, pairs).item() == pytest.approx(expect, rel=1e-5)
    p = sample_pairs(5, 100, torch.Generator().manual_seed(0))
    assert p.shape == (100, 2) and (p[:, 0] != p[:, 1]).all() and p.max() < 5


def test_ablation_switches_change_the_slots() -> None:
    assert slot_parts(5, AlignModelConfig()) == [0, 1, 2, 3, 4, 5]
    assert slot_parts(5, AlignModelConfig(use_micro=False)) == [0]
    assert slot_parts(5, AlignModelConfig(use_macro=False)) == [1, 2, 3, 4, 5]


def test_training_keeps_lm_frozen_and_trains_only_the_projector(
    stage1: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import beatrec.align.train as T

    data, run, lm_dir = stage1
    lm, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    monkeypatch.setattr(T, "load_causal_lm", lambda cfg: (lm, tok))
    books_before = load_file(str(run / "codebooks.safetensors"))
    res = T.train_align(run, data, align_cfg(lm_dir), progress=False)
    for k, v in lm.state_dict().items():
        assert torch.equal(v, before[k]), k  # bit-identical
    saved = load_file(str(res.out_dir / "weights.safetensors"))
    assert saved and all(k.startswith("projector.") for k in saved)
    assert len(res.history) == 3 and res.history["sar"].gt(0).all()
    assert books_before.keys() == load_file(str(run / "codebooks.safetensors")).keys()
    meta = json.loads((res.out_dir / "meta.json").read_text())
    assert meta["lm_width"] == 32 and (res.out_dir / "loss_curves.png").is_file()
    # with codebook fine-tuning on, the codebooks are trained (and saved) too
    cfg = align_cfg(lm_dir)
    cfg.model.train_codebooks = True
    res2 = T.train_align(run, data, cfg, progress=False)
    saved2 = load_file(str(res2.out_dir / "weights.safetensors"))
    assert {k for k in saved2 if k.startswith("vocab.books.")} == {f"vocab.books.{s}" for s in
                                                                   ("user_macro", "user_micro", "item_macro", "item_micro")}
    assert not torch.equal(saved2["vocab.books.user_macro"], books_before["user_macro"])


def test_training_never_reads_heldout_users_texts(stage1: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import beatrec.align.train as T

    data, run, lm_dir = stage1
    split = json.loads((run / "split.json").read_text())
    trained, validated = set(), set()
    real = T.collate_train

    def spy(builder, rows, **kw):  # noqa: ANN001, ANN003
        # training batches are collated with gradients on; validation batches under no_grad
        (trained if torch.is_grad_enabled() else validated).update(int(r["uid"]) for r in rows)
        return real(builder, rows, **kw)

    monkeypatch.setattr(T, "collate_train", spy)
    T.train_align(run, data, align_cfg(lm_dir, max_steps=0, epochs=1, val_pairs=0), progress=False)
    assert trained and trained <= set(split["train_users"])
    assert validated and validated <= set(split["val_users"])  # validation reads only validation users
    assert not (trained | validated) & set(split["test_users"])


def test_generation_and_explain_cli(stage1: tuple[Path, Path, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import beatrec.align.train as T

    data, run, lm_dir = stage1
    T.train_align(run, data, align_cfg(lm_dir, max_steps=1), progress=False)
    assert main(["explain", "--run", str(run), "--user", "0", "--item", "1", "--quiet"]) == 0
    one = capsys.readouterr().out.strip()
    assert 0 < len(one.split()) <= 50
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"uid": u, "iid": i}) + "\n" for u, i in [(0, 1), (5, 7), (9, 2), (3, 3)]))
    out = tmp_path / "pred.jsonl"
    assert main(["explain", "--run", str(run), "--pairs", str(pairs), "--out", str(out), "--quiet"]) == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(g["uid"], g["iid"]) for g in got] == [(0, 1), (5, 7), (9, 2), (3, 3)]
    assert all(isinstance(g["prediction"], str) for g in got)
    # batched generation (3 per call, left padding) equals one-at-a-time greedy generation
    from beatrec.align.explain import check_pairs, explain, load_aligned

    a = load_aligned(run)
    ps = check_pairs(a, [{"uid": 0, "iid": 1}, {"uid": 5, "iid": 7}], "x")
    batched = explain(a, ps)
    a.cfg.generate.batch_size = 1
    assert batched == explain(a, ps)


def test_explain_errors(stage1: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import beatrec.align.train as T

    data, run, lm_dir = stage1
    T.train_align(run, data, align_cfg(lm_dir, max_steps=1), progress=False)

    def err(args: list[str]) -> str:
        assert main(args) == 2
        return capsys.readouterr().err

    assert "unknown user id 99999" in err(["explain", "--run", str(run), "--user", "99999", "--item", "1"])
    assert "unknown item id -1" in err(["explain", "--run", str(run), "--user", "0", "--item", "-1"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "empty" in err(["explain", "--run", str(run), "--pairs", str(empty), "--out", str(tmp_path / "o")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"uid": 0, "iid": 1}\n{"uid": 0}\n')
    assert "line 2: missing column 'iid'" in err(["explain", "--run", str(run), "--pairs", str(bad), "--out", str(tmp_path / "o")])
    bare = tmp_path / "bare"
    bare.mkdir()
    assert "no stage-1 artifacts" in err(["explain", "--run", str(bare), "--user", "0", "--item", "1"])
    stage1_only = tmp_path / "s1"
    stage1_only.mkdir()
    for f in ("user_tokens.parquet", "item_tokens.parquet", "codebooks.safetensors"):
        (stage1_only / f).write_bytes((run / f).read_bytes())
    assert "no stage-2 artifacts" in err(["explain", "--run", str(stage1_only), "--user", "0", "--item", "1"])
    wide = save_tiny_lm(tmp_path / "wide", hidden=48)
    assert "LM mismatch" in err(["explain", "--run", str(run), "--user", "0", "--item", "1", "--set", f"lm.name={wide}"])
    assert "no split.json" in err(["align", "--data", str(data), "--run", str(bare), "--set", f"lm.name={lm_dir}"])


def test_two_processes_finish_with_identical_weights(stage1: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, run, lm_dir = stage1
    run2 = tmp_path / "run"
    run2.mkdir()
    for f in ("user_tokens.parquet", "item_tokens.parquet", "codebooks.safetensors", "split.json"):
        (run2 / f).write_bytes((run / f).read_bytes())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "beatrec", "align", "--data", str(data), "--run-dir", str(run2), "--quiet",
           "--set", f"lm.name={lm_dir}", "--set", "train.batch_size=2", "--set", "train.max_steps=3",
           "--set", "train.rank_weights=true", "--set", "model.projector_hidden=16", "--set", "train.val_pairs=4"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r0 = load_file(str(run2 / "align" / "weights.rank0.safetensors"))
    r1 = load_file(str(run2 / "align" / "weights.rank1.safetensors"))
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    m = json.loads((run2 / "align" / "metrics.json").read_text())
    assert m["processes"] == 2 and m["steps"] == 3
    init = BehaviorLM(load_causal_lm(LMConfig(name=str(lm_dir)))[0], BehaviorVocab.from_run(run2),
                      AlignModelConfig(projector_hidden=16)).trained_state()
    assert any(not torch.equal(init[k], r0[k]) for k in r0)  # it trained
