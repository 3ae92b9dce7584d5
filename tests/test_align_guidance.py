"""Behavior-token guidance (``generate.guidance``, :mod:`beatrec.align.guidance`): hand-computed scores, beam
parent matching, the neutral cache reproducing plain decoding exactly (greedy and beam search, left padding), the
neutral tokens as the population mean, and guidance 0 ignoring the tokens."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_stage1
from tiny_lm import save_tiny_lm

from beatrec.align.config import AlignModelConfig, GenerateConfig
from beatrec.align.guidance import BehaviorGuidance, beam_parents, guided_scores
from beatrec.align.model import BehaviorLM
from beatrec.align.vocab import BehaviorVocab
from beatrec.lm import LMConfig, load_causal_lm


def test_guided_scores_hand_computed() -> None:
    cond = torch.tensor([[0.0, math.log(3.0), -math.inf]])  # -> probabilities 1/4, 3/4, 0
    neutral = torch.tensor([[0.0, 0.0, 0.0]])  # -> 1/3 each
    c, n = [math.log(0.25), math.log(0.75)], [math.log(1 / 3)] * 2
    g = guided_scores(cond, neutral, 2.0)
    assert g[0, :2].tolist() == pytest.approx([n[0] + 2 * (c[0] - n[0]), n[1] + 2 * (c[1] - n[1])], abs=1e-6)
    assert g[0, 2] == -math.inf  # a token the real prompt rules out stays out
    assert guided_scores(cond, neutral, 1.0)[0, :2].tolist() == pytest.approx(c, abs=1e-6)  # 1 = plain
    zero = guided_scores(cond, neutral, 0.0)[0]  # 0 = the neutral prompt alone, the real one's exclusions kept
    assert zero[:2].tolist() == pytest.approx([math.log(1 / 3)] * 2, abs=1e-6) and zero[2] == -math.inf


def test_beam_parents_match_prefixes_within_each_prompt() -> None:
    prev = torch.tensor([[1], [2], [7], [8]])  # two prompts, two beams each
    now = torch.tensor([[2, 5], [2, 6], [8, 1], [7, 1]])
    assert beam_parents(prev, now, 2).tolist() == [1, 1, 3, 2]
    with pytest.raises(RuntimeError, match="extends no hypothesis"):
        beam_parents(prev, torch.tensor([[9, 5], [2, 6], [8, 1], [7, 1]]), 2)


class Recording(BehaviorGuidance):
    """Records, per step, the largest gap between guided and plain scores and whether the beams reordered."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)
        self.gaps: list[float] = []
        self.reordered = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None and self.prev.shape[1] and self.num_beams > 1:
            parents = beam_parents(self.prev, input_ids, self.num_beams)
            self.reordered |= bool((parents != torch.arange(len(parents))).any())
        out = super().__call__(input_ids, scores)
        plain = F.log_softmax(scores.float(), dim=-1)
        finite = torch.isfinite(plain)
        self.gaps.append(float((out[finite] - plain[finite]).abs().max()))
        return out


@pytest.mark.parametrize("num_beams", [1, 4])
def test_neutral_cache_reproduces_plain_decoding(tmp_path: Path, num_beams: int) -> None:
    """With the neutral prompt equal to the real one, guidance at any scale is plain decoding: the side cache
    (positions under left padding, beam reordering) must then give the real prompt's scores at every step."""
    from transformers import LogitsProcessorList

    lm, _ = load_causal_lm(LMConfig(name=str(save_tiny_lm(tmp_path / "lm"))))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 290, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[2, :1] = 0
    emb = lm.get_input_embeddings()(ids).detach()
    kw = {"inputs_embeds": emb, "attention_mask": mask, "max_new_tokens": 12, "num_beams": num_beams,
          "do_sample": False, "pad_token_id": 0}
    plain = lm.generate(**kw)
    rec = Recording(lm, emb, mask, 3.0, num_beams)
    guided = lm.generate(**kw, logits_processor=LogitsProcessorList([rec]))
    assert torch.equal(plain, guided)
    assert len(rec.gaps) == plain.shape[1] and max(rec.gaps) < 1e-4
    assert rec.reordered == (num_beams > 1)  # beam search did reorder, and the cache followed


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tiny_stage1(tmp_path_factory, seed=11)


def test_neutral_tokens_are_the_population_mean_and_guidance_zero_ignores_them(stage1: tuple[Path, Path, Path]) -> None:
    from beatrec.align.generate import generate_explanations

    _, run, lm_dir = stage1
    lm, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    torch.manual_seed(0)
    vocab = BehaviorVocab.from_run(run)
    m = BehaviorLM(lm, vocab, AlignModelConfig(projector_hidden=16, finetune="frozen"), seed=0)
    users = torch.arange(vocab.n_users)
    with torch.no_grad():
        every = m.behavior_embeds(users, torch.zeros_like(users), ("user",))  # (n_users, S, d)
    assert torch.allclose(m.neutral_behavior(("user",)), every.mean(0), atol=1e-6)
    assert m.neutral_behavior(("user", "item")).shape[0] == 2 * len(m.parts)
    sub = m.neutral_behavior(("user",), max_ids=5)  # evenly spaced ids, ends included
    ids = torch.linspace(0, vocab.n_users - 1, 5).round().long()
    assert torch.allclose(sub, every[ids].mean(0), atol=1e-6)

    # loud stand-in tokens (a freshly initialised projector barely separates users): the tiny LM's words follow them
    loud = torch.randn((vocab.n_users, 2 * len(m.parts), lm.config.hidden_size),
                       generator=torch.Generator().manual_seed(1))  # (n_users, S, d): the item slots follow the user
    m.behavior_embeds = lambda u, i, sides=None: loud[u][:, : len(m.parts) * len(sides or m.sides())]
    rows = [{"uid": u, "iid": 3, "title": "The Silent Harbor"} for u in range(0, 60, 6)]  # one item, ten users
    base = {"max_new_tokens": 8, "batch_size": 4, "num_beams": 2}
    plain = generate_explanations(m, tok, m.prompt_builder(tok), rows, GenerateConfig(**base))
    assert len(set(plain)) > 1  # the users' tokens change the text ...
    zero = generate_explanations(m, tok, m.prompt_builder(tok), rows, GenerateConfig(**base, guidance=0.0))
    assert len(set(zero)) == 1  # ... which guidance 0 (the neutral prompt alone) ignores
    again = generate_explanations(m, tok, m.prompt_builder(tok), rows, GenerateConfig(**base, guidance=1.0))
    assert again == plain


def test_negative_guidance_is_a_config_error() -> None:
    from beatrec.config import from_dict
    from beatrec.errors import ConfigError

    with pytest.raises(ConfigError, match="guidance"):
        from_dict(GenerateConfig, {"guidance": -1.0}).validate()
