"""Token contrast (``model.token_contrast``, :mod:`beatrec.align.contrast`): hand-computed values, the switch in
BehaviorLM (off changes nothing; on adds the weighted term computed from another row's tokens), per-token NLL
consistent with the mean, and planted recovery: a projector trained with the term makes rows' own tokens predict
their targets better than other rows' tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_stage1

from beatrec.align.batch import collate_train
from beatrec.align.config import AlignModelConfig
from beatrec.align.contrast import row_means, token_contrast_loss
from beatrec.align.model import BehaviorLM
from beatrec.align.vocab import BehaviorVocab
from beatrec.lm import LMConfig, load_causal_lm


def test_hand_computed() -> None:
    vals, rows = torch.tensor([1.0, 3.0, 2.0, 4.0, 6.0]), torch.tensor([0, 0, 1, 2, 2])
    assert row_means(vals, rows, 4).tolist() == [2.0, 2.0, 5.0, 0.0]
    own, other = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.5, 1.0, 3.05])
    # hinge: max(0, 0.1 + own - other) -> [0, 1.1, 0.05]
    assert token_contrast_loss(own, other, 0.1).item() == pytest.approx((0.0 + 1.1 + 0.05) / 3)
    assert token_contrast_loss(own, other + 10, 0.1).item() == 0.0


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tiny_stage1(tmp_path_factory, seed=6)


def model_and_batch(stage1: tuple[Path, Path, Path], weight: float, lm_dir: Path | None = None):  # noqa: ANN201
    _, run, tiny = stage1
    lm, tok = load_causal_lm(LMConfig(name=str(lm_dir or tiny)))
    torch.manual_seed(0)
    m = BehaviorLM(lm, BehaviorVocab.from_run(run), AlignModelConfig(projector_hidden=16, finetune="frozen",
                                                                     token_contrast=weight, use_sar=False), seed=0)
    rows = [{"uid": u, "task": "user_profile", "target": t}
            for u, t in ((0, "cozy mysteries"), (7, "fast pacing and twist endings"), (19, "clear instructions"))]
    builders = {"user_profile": m.prompt_builder(tok, "user_profile")}
    return m, collate_train(builders, rows, 50, 32)


def test_switch_adds_the_weighted_term_and_off_changes_nothing(stage1: tuple[Path, Path, Path]) -> None:
    m_off, batch = model_and_batch(stage1, 0.0)
    m_on, _ = model_and_batch(stage1, 2.0)
    with torch.no_grad():
        off, on = m_off(batch), m_on(batch)
        assert off.contrast.item() == 0.0 and on.nll.item() == pytest.approx(off.nll.item(), rel=1e-6)
        assert on.loss.item() == pytest.approx(on.nll.item() + 2.0 * on.contrast.item(), rel=1e-5)
        # by hand: each row's NLL with its own tokens and with the previous row's
        embeds, _, beh = m_on.embed(batch)
        losses, rows = m_on.token_nll(embeds, batch.attention_mask, batch.labels)
        assert losses.mean().item() == pytest.approx(on.nll.item(), rel=1e-6)
        own = row_means(losses, rows, 3)
        other = row_means(*m_on.token_nll(m_on.embed(batch, behavior=beh.roll(1, 0))[0], batch.attention_mask,
                                          batch.labels), 3)
        want = torch.relu(0.1 + own - other).mean().item()
        assert on.contrast.item() == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_training_with_the_term_makes_own_tokens_predict_better(stage1: tuple[Path, Path, Path],
                                                                 tmp_path: Path) -> None:
    from tiny_lm import save_tiny_lm

    m, batch = model_and_batch(stage1, 1.0, save_tiny_lm(tmp_path / "lm", init_std=0.3))  # an LM that reads its input
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)

    def gap() -> float:  # mean over rows of NLL(other tokens) - NLL(own tokens)
        with torch.no_grad():
            embeds, _, beh = m.embed(batch)
            own = row_means(*m.token_nll(embeds, batch.attention_mask, batch.labels), 3)
            other = row_means(*m.token_nll(m.embed(batch, behavior=beh.roll(1, 0))[0], batch.attention_mask,
                                           batch.labels), 3)
        return float((other - own).mean())

    before = gap()
    for _ in range(40):
        out = m(batch)
        opt.zero_grad()
        (out.contrast).backward()
        opt.step()
    assert abs(before) < 0.01 and gap() > 0.05  # the tokens now tell the rows apart (the margin is 0.1)
    assert m(batch).contrast.item() < 0.02


def test_negative_weight_or_margin_is_a_config_error() -> None:
    from beatrec.config import from_dict
    from beatrec.errors import ConfigError

    with pytest.raises(ConfigError, match="token_contrast"):
        from_dict(AlignModelConfig, {"token_contrast": -1.0}).validate()
    with pytest.raises(ConfigError, match="contrast_margin"):
        from_dict(AlignModelConfig, {"contrast_margin": -0.1}).validate()
    with pytest.raises(ConfigError, match="contrast_tasks names unknown tasks"):
        from_dict(AlignModelConfig, {"contrast_tasks": ["user_profile", "poem"]}).validate()


def test_only_the_contrast_tasks_pay_for_the_term(stage1: tuple[Path, Path, Path]) -> None:
    m, batch = model_and_batch(stage1, 1.0)
    with torch.no_grad():
        assert m(batch).contrast.item() > 0  # user_profile: in the default contrast_tasks
        m.cfg.contrast_tasks = ("explain",)
        assert m(batch).contrast.item() == 0.0
