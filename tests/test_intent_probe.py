"""The demo's graph holds the planted intents (oracle graph probe), the probe itself, profile rates by hand, and
the spectral start of LightGCN's E⁰ (issue #37)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from beatrec.config import from_dict
from beatrec.data.intent_probe import intent_probe, one_hot_tokens, spectral_embedding
from beatrec.data.planted_signal import Planted, profile_rates
from beatrec.data.synthetic import SyntheticConfig, generate
from beatrec.demo import demo_data_config
from beatrec.errors import ConfigError


def planted_of(d) -> Planted:  # noqa: ANN001
    return Planted(d.genre_names, d.intent_phrases, d.user_genre, d.user_intents, d.item_genre, d.item_intents,
                   d.item_titles)


def graph_probe(cfg: SyntheticConfig) -> tuple[float, float]:
    d = generate(cfg)
    n_u, n_i = len(d.user_genre), len(d.item_genre)
    x = spectral_embedding(d.interactions, n_u, n_i)
    users = np.random.default_rng(0).permutation(n_u)
    r = intent_probe(x, planted_of(d), users[: n_u // 2], users[n_u // 2 :])
    return r.mean, r.chance


def test_the_demo_graph_holds_the_intents_and_the_default_graph_does_not() -> None:
    demo, chance = graph_probe(demo_data_config(seed=1))
    default, _ = graph_probe(SyntheticConfig(seed=1))
    assert chance == pytest.approx(3 / 20)
    assert demo > 0.7 > 4 * chance  # the oracle graph probe finds the intents
    assert default < 2 * chance  # the generator's defaults: genre drives the graph, intents barely
    d = generate(demo_data_config(seed=1))
    inter = d.interactions
    in_genre = (d.user_genre[inter["user"]] == d.item_genre[inter["item"]]).mean()
    assert 0.5 < in_genre < 0.7  # the demo's 60% in genre


def test_intent_probe_reads_a_perfect_and_a_useless_feature() -> None:
    d = generate(SyntheticConfig(n_users=200, n_items=100, seed=2))
    p = planted_of(d)
    onehot = np.zeros((200, 20))
    np.put_along_axis(onehot, d.user_intents, 1.0, axis=1)
    fit, score = np.arange(100), np.arange(100, 200)
    assert intent_probe(onehot, p, fit, score).mean == pytest.approx(1.0)
    noise = np.random.default_rng(0).standard_normal((200, 20))
    assert intent_probe(noise, p, fit, score).mean < 0.3
    codes = np.array([[0, 2], [1, 0], [1, 1]])
    assert one_hot_tokens(codes).tolist() == [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0], [0, 1, 0, 1, 0]]


def test_profile_rates_by_hand() -> None:
    p = Planted(["mystery", "romance"], ["durability", "great value", "fast pacing", "lyrical prose"],
                np.array([0, 1]), np.array([[0, 1], [2, 3]]), np.array([0]), np.array([[0, 1]]), ["T"])
    texts = ["A mystery reader who values durability and fast pacing.", "Loves great value."]
    r = profile_rates(p, np.array([0, 1]), texts)
    # user 0 names 1 of its 2 intents (and 1 other); user 1 names none of its own and 1 other
    assert r.intent_recall == pytest.approx((0.5 + 0.0) / 2)
    assert r.intent_precision == pytest.approx((0.5 + 0.0) / 2)
    assert r.genre == pytest.approx(0.5)
    with pytest.raises(ValueError):
        profile_rates(p, np.array([0]), texts)


def test_spectral_start_is_the_graph_svd() -> None:
    from scipy.sparse.linalg import svds

    from beatrec.tokenizer.graph import csr_to_scipy, normalized_adjacency
    from beatrec.tokenizer.lightgcn import LightGCN

    d = generate(SyntheticConfig(n_users=60, n_items=40, seed=0))
    adj = normalized_adjacency(d.interactions["user"].to_numpy(), d.interactions["item"].to_numpy(), 60, 40)
    gcn = LightGCN(60, 40, 16)
    before = gcn.embedding.detach().clone()
    assert gcn.init_spectral(adj) == 16
    e = gcn.embedding.detach().numpy().astype(np.float64)
    assert e.std() == pytest.approx(0.1, rel=1e-4)
    r = csr_to_scipy(adj)[:60, 60:]
    s = np.sort(svds(r.astype(np.float64), k=16)[1])[::-1]
    # user rows times item rows recover R's rank-16 approximation (up to the common rescaling)
    approx = e[:60] @ e[60:].T
    u, sv, vt = np.linalg.svd(r.toarray())
    best = (u[:, :16] * sv[:16]) @ vt[:16]
    scale = (approx * best).sum() / (approx * approx).sum()
    assert np.allclose(approx * scale, best, atol=1e-6) and np.allclose(sv[:16], s)
    assert not torch.equal(before, gcn.embedding)
    inductive = LightGCN(60, 40, 16, user_ids=False)
    inductive.init_spectral(adj)
    assert float(inductive.embedding.detach()[:60].abs().sum()) == 0.0


def test_unknown_init_is_a_config_error() -> None:
    from beatrec.tokenizer.pipeline import TokenizeConfig

    with pytest.raises(ConfigError, match="model.init"):
        from_dict(TokenizeConfig, {"model": {"init": "zeros"}})


def test_codeword_features_are_the_vocab_vectors(tmp_path_factory: pytest.TempPathFactory) -> None:
    from conftest import tiny_stage1

    from beatrec.align.vocab import BehaviorVocab
    from beatrec.data.intent_probe import codeword_features

    _, run, _ = tiny_stage1(tmp_path_factory, seed=6)
    x = codeword_features(run)
    v = BehaviorVocab.from_run(run)
    assert x.shape == (v.n_users, (1 + v.n_micro) * v.code_dim)
    with torch.no_grad():
        assert np.allclose(x[3], v.vectors("user", torch.tensor([3]))[0].reshape(-1).numpy())
