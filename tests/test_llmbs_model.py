"""LLM-BS tasks, Global Contrast Decompression and constrained recommendation on a tiny random LM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_lm import save_tiny_lm

from beatrec.lm import LMConfig, load_causal_lm
from beatrec.seqrec.data import PAD, Samples
from beatrec.seqrec.llmbs.generate import recommend
from beatrec.seqrec.llmbs.indices import IndexConfig, build_index
from beatrec.seqrec.llmbs.model import IGNORE, LLMBS, GCDConfig, collate
from beatrec.seqrec.llmbs.tasks import TaskConfig, build_examples, preference_text
from beatrec.seqrec.llmbs.vocab import CON, add_code_tokens

N_ITEMS = 24


def coded_lm(lm_dir: Path, rng: np.random.Generator):  # noqa: ANN201
    """A tiny LM with the code tokens of a 1+1-level dual index over random item embeddings."""
    lm, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    sem, beh = rng.normal(size=(N_ITEMS, 6)), rng.normal(size=(N_ITEMS, 5))
    codes = build_index(IndexConfig(kind="dual", k=3, semantic_levels=1, behavior_levels=1), N_ITEMS, sem, beh)
    vocab = add_code_tokens(lm, tok, codes)
    return lm, tok, vocab, [vocab.text(i, tok) for i in range(N_ITEMS)], sem, beh


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    rng = np.random.default_rng(0)
    lm, tok, vocab, code_text, sem, beh = coded_lm(save_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny"), rng)
    titles = [f"Golden Harbor volume {i}" if i % 3 else "" for i in range(N_ITEMS)]
    hist = np.full((6, 4), PAD)
    for r in range(6):
        hist[r, 4 - (r % 3 + 1):] = rng.choice(N_ITEMS, r % 3 + 1, replace=False)
    train = Samples(hist, np.arange(6) + 10, np.arange(6))
    return lm, tok, vocab, code_text, titles, train, torch.tensor(sem), torch.tensor(beh)


def test_examples_cover_the_tasks_from_training_windows_only(setup) -> None:  # noqa: ANN001
    _, _, _, code_text, titles, train, _, _ = setup
    ex = build_examples(train, code_text, titles, TaskConfig(preference=3))
    kinds = [e.task for e in ex]
    n_titled = sum(bool(t) for t in titles)
    assert kinds.count("seqrec") == 6 and kinds.count("preference") == 3
    assert kinds.count("code_to_title") == kinds.count("title_to_code") == n_titled
    seq = [e for e in ex if e.task == "seqrec"]
    assert [e.item for e in seq] == train.target.tolist()  # targets are the training targets, nothing else
    assert all(e.target == code_text[e.item] for e in seq)
    assert build_examples(train, code_text, None, TaskConfig()) == seq  # no text: seqrec only
    assert preference_text(np.array([PAD, 1, 2]), ["", "Blue Tea Kettle", "Red Tea Cup"]).startswith(
        "The user recently chose Blue Tea Kettle; Red Tea Cup. They keep coming back to tea")


def test_collate_labels_con_and_eos(setup) -> None:  # noqa: ANN001
    _, tok, vocab, code_text, titles, train, _, _ = setup
    ex = build_examples(train, code_text, titles, TaskConfig(seqrec=2, semantic=1, preference=0))
    b = collate(tok, ex)
    for r, e in enumerate(ex):
        lab = b.labels[r][b.labels[r] != IGNORE].tolist()
        assert lab[-1] == tok.eos_token_id
        if e.task == "seqrec":
            assert lab[:-2] == vocab.item_ids[e.item].tolist() and lab[-2] == vocab.con_id
            assert b.input_ids[r, b.con_pos[r]] == tok.convert_tokens_to_ids(CON)
        else:
            assert b.con_pos[r] == -1 and vocab.con_id not in lab


def test_gcd_loss_trains_projectors_that_inference_never_uses(setup) -> None:  # noqa: ANN001
    lm, tok, _, code_text, titles, train, sem, beh = setup
    model = LLMBS(lm, sem, beh, GCDConfig(lambda_semantic=0.5, lambda_behavior=0.5))
    b = collate(tok, build_examples(train, code_text, titles, TaskConfig(semantic=0, preference=0)))
    out = model(b)
    assert torch.isfinite(out.loss) and out.gcd > 0
    out.loss.backward()
    assert model.proj_semantic.weight.grad is not None and model.proj_behavior.weight.grad.abs().sum() > 0
    inference = {id(p) for p in model.inference_modules().parameters()}
    assert not inference & {id(p) for p in [*model.proj_semantic.parameters(), *model.proj_behavior.parameters()]}
    off = LLMBS(lm, sem, beh, GCDConfig(lambda_semantic=0.0, lambda_behavior=0.0))(b)
    assert off.gcd == 0 and torch.isclose(off.loss, out.ntp)
    model.zero_grad()
    # NTP with logits only at the answer columns == the LM's own shifted cross-entropy over every position
    mixed = collate(tok, build_examples(train, code_text, titles, TaskConfig(seqrec=3, semantic=2, preference=0)))
    ref = lm(input_ids=mixed.input_ids, attention_mask=mixed.attention_mask, labels=mixed.labels).loss
    plain = LLMBS(lm, sem, beh, GCDConfig(0.0, 0.0))
    torch.testing.assert_close(plain(mixed).ntp, ref)  # first call: full logits + the head check
    assert plain._gather_ok is True
    torch.testing.assert_close(plain(mixed).ntp, ref)  # then: the head only at the gathered answer positions
    # an LM whose logits are not its output embedding of the last hidden state: full logits on every call
    other = torch.nn.Linear(lm.config.hidden_size, lm.config.vocab_size, bias=False)
    orig = lm.get_output_embeddings
    try:
        lm.get_output_embeddings = lambda: other
        odd = LLMBS(lm, sem, beh, GCDConfig(0.0, 0.0))
        torch.testing.assert_close(odd(mixed).ntp, ref)
        torch.testing.assert_close(odd(mixed).ntp, ref)
        assert odd._gather_ok is False
    finally:
        lm.get_output_embeddings = orig


def test_recommend_returns_only_valid_items_deterministically(setup) -> None:  # noqa: ANN001
    lm, tok, vocab, code_text, _, train, _, _ = setup
    res = recommend(lm, tok, vocab, train.history, code_text, beam=10)
    assert res.values.shape == (6, 10)
    assert ((res.values >= 0) & (res.values < N_ITEMS)).all()  # 24 valid items >= beam 10: no empty slot
    for r in range(6):
        assert len(set(res.values[r].tolist())) == 10
        for k in range(10):
            assert vocab.trie.lookup(res.tokens[r, k].tolist()) == int(res.values[r, k])
    assert (res.scores[:, :-1] >= res.scores[:, 1:]).all()
    again = recommend(lm, tok, vocab, train.history, code_text, beam=10)
    assert torch.equal(res.values, again.values)
    one = recommend(lm, tok, vocab, train.history[2:3], code_text, beam=10)  # left padding changes nothing
    assert torch.equal(one.values[0], res.values[2])
    torch.testing.assert_close(one.scores[0], res.scores[2], atol=1e-4, rtol=1e-4)
    full = recommend(lm, tok, vocab, train.history, code_text, beam=10, kv_cache=False)  # prompt cache = recompute
    assert torch.equal(full.values, res.values)
    torch.testing.assert_close(full.scores, res.scores, atol=1e-4, rtol=1e-4)


def _fresh(tmp_path: Path, finetune: str):  # noqa: ANN202
    from beatrec.seqrec.llmbs.train import LLMBSTrainConfig

    rng = np.random.default_rng(1)
    lm, tok, vocab, code_text, sem, beh = coded_lm(save_tiny_lm(tmp_path / "lm"), rng)
    hist = np.full((8, 4), PAD)
    for r in range(8):
        hist[r, 1:] = rng.choice(N_ITEMS, 3, replace=False)
    train = Samples(hist, rng.integers(0, N_ITEMS, 8), np.arange(8) // 2)
    model = LLMBS(lm, torch.tensor(sem), torch.tensor(beh), GCDConfig())
    cfg = LLMBSTrainConfig(finetune=finetune, lr=5e-3, anneal_lr=5e-2, batch_size=4, epochs=2, anneal_epochs=3)
    return model, tok, vocab, code_text, train, cfg


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_fit_trains_new_rows_only_and_adapter_switches(tmp_path: Path, finetune: str) -> None:
    from beatrec.seqrec.llmbs.run import last_windows
    from beatrec.seqrec.llmbs.train import adapter_disabled, anneal, fit

    model, tok, vocab, code_text, train, cfg = _fresh(tmp_path, finetune)
    emb0 = model.lm.get_input_embeddings().weight.detach().clone()
    ex = build_examples(train, code_text, None, TaskConfig())
    res = fit(model, tok, ex, cfg, vocab.first_new_id)
    assert res.steps == 4 and len(res.losses) == 2
    emb1 = model.lm.get_input_embeddings().weight.detach().clone().cpu()  # fit moves the model to the accelerator
    torch.testing.assert_close(emb1[: vocab.first_new_id], emb0[: vocab.first_new_id])  # original vocabulary fixed
    assert not torch.equal(emb1[vocab.first_new_id :], emb0[vocab.first_new_id :])  # code tokens learned
    before = recommend(model.inference_modules(), tok, vocab, train.history[:3], code_text, beam=5)
    frozen = [(w, w.detach().clone()) for w in model.lm.parameters()]  # the same objects after wrapping
    recent = last_windows(train)  # users 0..3, two windows each: the second one is the most recent
    assert recent.user.tolist() == [0, 1, 2, 3] and np.array_equal(recent.target, train.target[1::2])
    sl = build_examples(recent, code_text, None, TaskConfig())
    anneal(model, tok, sl, cfg)
    assert all(torch.equal(w, w0) for w, w0 in frozen)  # stage-1 and base weights unchanged
    assert any(".anneal." in k for k, _ in model.lm.named_parameters())
    on = recommend(model.inference_modules(), tok, vocab, train.history[:3], code_text, beam=5)
    with adapter_disabled(model.lm):
        off = recommend(model.inference_modules(), tok, vocab, train.history[:3], code_text, beam=5)
    torch.testing.assert_close(off.scores, before.scores, atol=1e-4, rtol=1e-4)  # off = the stage-1 model
    assert not torch.allclose(on.scores, off.scores)  # the adapter changes the outputs


def test_annealing_adapter_stacks_on_the_stage1_lora(tmp_path: Path) -> None:
    """A fresh annealing LoRA (B = 0) adds nothing: with it on, outputs equal the stage-1 LoRA model's, so the
    stage-1 adapter stays active underneath it (and is the one left on when the annealing adapter is off)."""
    from dataclasses import replace

    from beatrec.seqrec.llmbs.train import adapter_disabled, anneal, fit

    model, tok, vocab, code_text, train, cfg = _fresh(tmp_path, "lora")
    fit(model, tok, build_examples(train, code_text, None, TaskConfig()), cfg, vocab.first_new_id)
    before = recommend(model.inference_modules(), tok, vocab, train.history[:3], code_text, beam=5)
    anneal(model, tok, [], replace(cfg, anneal_epochs=0))
    on = recommend(model.inference_modules(), tok, vocab, train.history[:3], code_text, beam=5)
    torch.testing.assert_close(on.scores, before.scores, atol=1e-4, rtol=1e-4)
    with adapter_disabled(model.lm):
        off = recommend(model.inference_modules(), tok, vocab, train.history[:3], code_text, beam=5)
    torch.testing.assert_close(off.scores, before.scores, atol=1e-4, rtol=1e-4)
    assert sorted(model.lm.base_model.active_adapters) == ["anneal", "default"]
