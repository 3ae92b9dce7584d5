"""Word anchoring (``model.word_anchor``, :mod:`beatrec.align.anchor`): hand-computed values, the batch-frequency
filter, planted recovery (a free token learns to read as its target word), and the switch in BehaviorLM."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_stage1

from beatrec.align.anchor import anchor_targets, anchor_warmup, word_anchor_loss
from beatrec.align.batch import collate_train
from beatrec.align.config import AlignModelConfig
from beatrec.align.model import BehaviorLM
from beatrec.align.vocab import BehaviorVocab
from beatrec.lm import LMConfig, load_causal_lm


def test_targets_keep_distinct_ids_in_at_most_half_the_batch() -> None:
    labels = torch.tensor([[-100, 5, 6, 6], [-100, 5, 7, 8], [-100, 9, 5, -100]])
    q = anchor_targets(labels, 10)
    assert q.shape == (3, 10)
    # id 5 is in all three samples (> 3/2): dropped; 6 counts once per sample
    assert q[0].nonzero().flatten().tolist() == [6]
    assert q[1].nonzero().flatten().tolist() == [7, 8]
    assert q[2].nonzero().flatten().tolist() == [9]
    assert anchor_targets(labels[:1], 10).sum() == 0  # a batch of one has nothing distinctive


def test_loss_hand_computed() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # cosines to (1, 0): 1, 0, -1
    q = torch.tensor([[1.0, 0.0, 0.0]])
    got = word_anchor_loss(torch.tensor([[[2.0, 0.0]]]), emb, q, tau=1.0)
    assert got.item() == pytest.approx(math.log(math.e + 1 + 1 / math.e) - 1, rel=1e-6)
    # two slots: the mixture of their distributions; targets 0 and 1 averaged
    beh = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])
    z = math.e + 1 + 1 / math.e  # slot 1: cosines (1, 0, -1); slot 2: (0, 1, 0)
    p0 = 0.5 * (math.e / z + 1 / (math.e + 2))
    p1 = 0.5 * (1 / z + math.e / (math.e + 2))
    got = word_anchor_loss(beh, emb, torch.tensor([[1.0, 1.0, 0.0]]), tau=1.0)
    assert got.item() == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-6)
    zero = word_anchor_loss(beh.requires_grad_(), emb, torch.zeros(1, 3))
    assert zero.item() == 0.0 and zero.requires_grad


def test_a_free_token_learns_to_read_as_its_target_word() -> None:
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(50, 8, generator=gen)
    h = torch.randn(1, 1, 8, generator=gen, requires_grad=True)
    q = torch.zeros(1, 50)
    q[0, 17] = 1.0
    opt = torch.optim.Adam([h], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        word_anchor_loss(h, emb, q).backward()
        opt.step()
    cos = torch.nn.functional.cosine_similarity(h[0, 0][None], emb)
    assert int(cos.argmax()) == 17


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tiny_stage1(tmp_path_factory, seed=5)


def test_switch_adds_the_weighted_term_and_off_changes_nothing(stage1: tuple[Path, Path, Path]) -> None:
    _, run, lm_dir = stage1
    lm, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    outs = {}
    for w in (0.0, 2.0):
        torch.manual_seed(0)  # the projector's initial weights
        m = BehaviorLM(lm, BehaviorVocab.from_run(run), AlignModelConfig(projector_hidden=16, word_anchor=w,
                                                                         finetune="frozen"), seed=0)
        rows = [{"uid": u, "iid": i, "title": "t", "explanation": e}
                for u, i, e in ((0, 1, "alpha beta"), (1, 2, "gamma beta"), (2, 3, "delta beta"))]
        batch = collate_train(m.prompt_builder(tok), rows, 50, 32)
        with torch.no_grad():
            outs[w] = m(batch)
    off, on = outs[0.0], outs[2.0]
    assert off.anchor.item() == 0.0
    assert on.anchor.item() > 0.0
    assert on.nll.item() == pytest.approx(off.nll.item(), rel=1e-6)  # same initial weights
    assert on.loss.item() == pytest.approx(on.nll.item() + on.sar.item() + 2.0 * on.anchor.item(), rel=1e-5)


def test_warmup_lowers_the_anchor_loss_and_moves_only_the_projector(stage1: tuple[Path, Path, Path]) -> None:
    _, run, lm_dir = stage1
    lm, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    cfg = AlignModelConfig(projector_hidden=16, word_anchor=1.0, finetune="lora", prompt_tokens=2)
    m = BehaviorLM(lm, BehaviorVocab.from_run(run), cfg, seed=0)
    rows = [{"uid": u, "iid": i, "title": "t", "explanation": e}
            for u, i, e in ((0, 1, "alpha beta"), (1, 2, "gamma beta"), (2, 3, "delta beta"), (3, 4, "omega beta"))]
    batches = [collate_train(m.prompt_builder(tok), rows, 50, 32)]
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    assert any("lora_" in k for k in before) and "soft_prompt" in before  # LoRA and soft prompt present
    labels = batches[0].labels
    used = torch.unique(labels[labels >= 0])  # the warm-up's softmax: the ids the targets use
    with torch.no_grad():
        beh = m.embed(batches[0])[2]
        start = m.word_anchor(beh, labels, used).item()
        full = m.word_anchor(beh, labels).item()
        everything = m.word_anchor(beh, labels, torch.arange(m.lm.get_input_embeddings().weight.shape[0])).item()
    assert everything == pytest.approx(full, rel=1e-6) and start < full  # fewer competitors, lower loss
    means = anchor_warmup(m, batches, 30)
    assert len(means) == 30 and means[0] == pytest.approx(start, rel=1e-5)
    assert means[-1] < 0.65 * means[0]  # the tokens learn to read as their rows' distinctive words
    after = dict(m.named_parameters())
    for k, v in before.items():
        assert torch.equal(after[k], v) != k.startswith("projector."), k  # the projector moved, nothing else
    assert all(p.grad is None for p in m.parameters())  # no warm-up gradient left for the first LM step
    assert anchor_warmup(m, batches, 0) == []


def test_negative_weight_is_a_config_error() -> None:
    from beatrec.config import from_dict
    from beatrec.errors import ConfigError

    with pytest.raises(ConfigError, match="word_anchor"):
        from_dict(AlignModelConfig, {"word_anchor": -1.0}).validate()
