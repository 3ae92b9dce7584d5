"""Unit tests of the tokenizer's parts against hand-computed values and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from beatrec.losses import info_nce
from beatrec.metrics.ranking import (
    evaluate_scores,
    interaction_matrix,
    per_user_hits,
    rank_metrics_from_topk,
    rank_topk,
)
from beatrec.tokenizer.codebook import VQCodebook, codebook_usage, kmeans
from beatrec.tokenizer.config import TokenizerModelConfig
from beatrec.tokenizer.graph import normalized_adjacency, sym_spmm
from beatrec.tokenizer.lightgcn import LightGCN
from beatrec.tokenizer.micro import MicroReconstructor, choose_mask
from beatrec.tokenizer.model import BehaviorTokenizer, Side


def test_normalized_adjacency_hand_values() -> None:
    # users 0,1; items 0,1; edges u0-i0, u0-i1, u1-i1 -> degrees u0:2 u1:1 i0:1 i1:2
    adj = normalized_adjacency(np.array([0, 0, 1]), np.array([0, 1, 1]), 2, 2).to_dense()
    expected = torch.zeros(4, 4)
    for u, i, du, di in ((0, 0, 2, 1), (0, 1, 2, 2), (1, 1, 1, 2)):
        expected[u, 2 + i] = expected[2 + i, u] = 1 / math.sqrt(du * di)
    assert torch.allclose(adj, expected)


def test_sym_spmm_gradient_matches_dense() -> None:
    adj = normalized_adjacency(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3, 3)
    x = torch.randn(6, 4, requires_grad=True)
    w = torch.randn(6, 4)
    (sym_spmm(adj, x) * w).sum().backward()
    dense_grad = adj.to_dense().t() @ w
    assert torch.allclose(x.grad, dense_grad, atol=1e-6)


def test_lightgcn_is_layer_mean() -> None:
    adj = normalized_adjacency(np.array([0, 1, 1]), np.array([0, 0, 1]), 2, 2)
    gcn = LightGCN(2, 2, 3, n_layers=2)
    u, i = gcn(adj)
    a = adj.to_dense()
    e = gcn.embedding.detach()
    ref = (e + a @ e + a @ a @ e) / 3
    assert torch.allclose(torch.cat([u, i]).detach(), ref, atol=1e-6)


def test_codebook_nearest_loss_and_straight_through() -> None:
    cb = VQCodebook(2, 2, eta=0.5)
    cb.weight.data = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    cb.initialized.fill_(True)
    cb.eval()
    x = torch.tensor([[0.2, 0.1], [0.9, 0.6]], requires_grad=True)
    out = cb(x)
    assert out.codes.tolist() == [0, 1]
    assert torch.allclose(out.quantized, cb.weight[out.codes])
    # ‖sg[x]-c‖² + η‖x-sg[c]‖², mean over the 2 vectors: (0.05 + 0.17)/2 * 1.5
    assert out.loss.item() == pytest.approx(1.5 * (0.05 + 0.17) / 2, rel=1e-5)
    out.quantized.sum().backward(retain_graph=True)
    assert torch.allclose(x.grad, torch.ones_like(x) * 1.0 + 0 * x)  # straight-through: d q / d x = I


def test_encode_decode_round_trip() -> None:
    cfg = TokenizerModelConfig(part_dim=4, n_micro=3, code_dim=4, n_codes=8)
    model = BehaviorTokenizer(10, 10, 6, cfg)
    model.train()
    z = torch.randn(10, 16)
    model.user(z)  # k-means initialisation
    codes = model.user.encode(z)  # (10, 4)
    vecs = model.user.decode(codes)  # (10, 4, 4)
    again = torch.cat([model.user.macro.nearest(vecs[:, :1]), model.user.micro.nearest(vecs[:, 1:])], 1)
    assert torch.equal(codes, again)
    assert codes.shape == (10, 1 + cfg.n_micro)


def test_kmeans_init_finds_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centers])
    c = kmeans(x, 3, generator=g)
    d = torch.cdist(centers, c).min(1).values
    assert (d < 0.5).all()


def test_dead_codes_are_restarted() -> None:
    cb = VQCodebook(4, 2, dead_after=2)
    cb.weight.data = torch.tensor([[0.0, 0.0], [100.0, 100.0], [200.0, 200.0], [300.0, 300.0]])
    cb.initialized.fill_(True)
    x = torch.randn(32, 2) * 0.1
    for _ in range(2):
        cb(x)
    assert cb.restarts == 3
    assert cb.weight.data[1:].abs().max() < 5  # re-seeded near the data


def identity_side(macro: list[list[float]], micro: list[list[float]]) -> Side:
    """A Side of 2-d parts, one micro part, identity projections and the given codebooks."""
    side = Side(TokenizerModelConfig(part_dim=2, n_micro=1, code_dim=2, n_codes=len(macro)))
    for proj in (side.proj_macro, side.proj_micro):
        proj.weight.data = torch.eye(2)
        proj.bias.data.zero_()
    side.macro.weight.data = torch.tensor(macro)
    side.micro.weight.data = torch.tensor(micro)
    return side


def test_revive_unused_codes_by_hand() -> None:
    side = identity_side([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0], [60.0, 60.0]],
                         [[0.0, 0.0], [10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    # macro parts (0, .1) -> code 0 (error .01); (1, .2) -> 1 (.04); (3, 0) -> 1 (4): codes 2 and 3 unused.
    # The worst-served part (3, 0) takes code 2; (1, .2) is next but would leave code 1 empty, (0, .1) code 0:
    # code 3 stays unused. Micro parts use codes 0, 1, 2, one each: nothing can move.
    z = torch.tensor([[0.0, 0.1, 0.0, 0.0], [1.0, 0.2, 10.0, 10.0], [3.0, 0.0, 20.0, 21.0]])
    micro_before = side.micro.weight.data.clone()
    assert side.revive_unused(z) == 1 and side.macro.revived == 1
    assert side.macro.weight.data.tolist() == [[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [60.0, 60.0]]
    assert torch.equal(side.micro.weight.data, micro_before)
    assert side.encode(z)[:, 0].tolist() == [0, 1, 2]


def test_revive_unused_finds_the_part_among_several_micro_parts() -> None:
    """Two micro parts per row: the worst-served part is row 1's second micro part (flat position 3)."""
    side = Side(TokenizerModelConfig(part_dim=2, n_micro=2, code_dim=2, n_codes=3))
    for proj in (side.proj_macro, side.proj_micro):
        proj.weight.data = torch.eye(2)
        proj.bias.data.zero_()
    side.macro.weight.data = torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]])
    side.micro.weight.data = torch.tensor([[0.0, 0.0], [1.0, 0.0], [100.0, 100.0]])
    # macro parts (0, 0) -> 0 and (5, 5.1) -> 1: code 2 unused, but each used code holds one part: nothing moves.
    # micro parts: row 0 (0, 0) -> 0, (1, .5) -> 1; row 1 (.1, 0) -> 0, (1, 3) -> 1 (error 9, the worst)
    z = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.5], [5.0, 5.1, 0.1, 0.0, 1.0, 3.0]])
    assert side.revive_unused(z) == 1
    assert side.micro.weight.data[2].tolist() == [1.0, 3.0] and side.macro.weight.data[2].tolist() == [9.0, 9.0]
    assert side.encode(z).tolist() == [[0, 0, 1], [1, 0, 2]]


def test_revive_unused_gives_identical_parts_one_codeword() -> None:
    side = identity_side([[0.0, 0.0], [7.0, 7.0], [50.0, 50.0], [60.0, 60.0]],
                         [[0.0, 0.0], [7.0, 7.0], [50.0, 50.0], [60.0, 60.0]])
    # four rows, two distinct vectors far from code 0: both codes 2 and 3 are dead, but only one new point exists
    # per side beyond what codes 0/1 serve
    z = torch.tensor([[0.0, 0.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0], [3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0]])
    assert side.revive_unused(z) == 2  # (3, 3) once per codebook, not twice
    assert side.encode(z)[:, 0].tolist() == side.encode(z)[:, 1].tolist() == [0, 1, 2, 2]


def test_revive_unused_uses_every_code_and_lowers_every_error() -> None:
    g = torch.Generator().manual_seed(0)
    far = [[100.0 + k, 100.0] for k in range(4)]  # 4 of the 8 codewords serve nothing
    side = identity_side([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], *far],
                         [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], *far])
    z = torch.randn(300, 4, generator=g) * 2
    parts = z.view(300, 2, 2)

    def errors() -> torch.Tensor:  # (300, 2) squared distance of each part to its codeword
        return (parts - side.decode(side.encode(z))).pow(2).sum(-1)

    before = errors()
    assert side.revive_unused(z) == 8
    after = errors()
    assert (after <= before + 1e-6).all() and after.sum() < before.sum()
    codes = side.encode(z)
    assert codebook_usage(codes[:, :1], 8).used_fraction == 1.0
    assert codebook_usage(codes[:, 1:], 8).used_fraction == 1.0
    assert side.revive_unused(z) == 0  # nothing left to repair: a second call changes nothing


def test_revive_mode_is_validated_and_resolved_against_the_graph_mode() -> None:
    from beatrec.errors import ConfigError
    from beatrec.tokenizer.config import TokenizerTrainConfig

    assert not TokenizerTrainConfig().revives  # full graph: auto = off
    assert TokenizerTrainConfig(graph="sampled").revives
    assert TokenizerTrainConfig(revive_unused="on").revives
    assert not TokenizerTrainConfig(graph="sampled", revive_unused="off").revives
    with pytest.raises(ConfigError, match="revive_unused"):
        TokenizerTrainConfig(revive_unused="sometimes").validate()


def test_codebook_usage_hand_values() -> None:
    u = codebook_usage(torch.tensor([0, 1, 2, 3]), 8)
    assert u.used_fraction == 0.5 and u.perplexity == pytest.approx(4.0)
    u = codebook_usage(torch.tensor([5, 5, 5]), 8)
    assert u.n_used == 1 and u.perplexity == pytest.approx(1.0)


def test_choose_mask_counts_fresh_and_seeded() -> None:
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    state = torch.random.get_rng_state()
    m1 = choose_mask(valid, 2, torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is not touched
    assert m1.sum(1).tolist() == [2, 2, 1]
    assert not (m1 & ~valid).any()
    m2 = choose_mask(valid, 2, torch.Generator().manual_seed(1))
    assert torch.equal(m1, m2)
    g = torch.Generator().manual_seed(3)
    draws = {tuple(choose_mask(valid[:1], 2, g)[0].tolist()) for _ in range(30)}
    assert len(draws) > 3  # a fresh random choice per sample


def test_mask_embedding_is_trained() -> None:
    rec = MicroReconstructor(8, 4, 5, attn_dim=8, heads=2)
    assert any(p is rec.mask_embedding for p in rec.parameters())
    phrases = torch.randn(3, 5, 8)
    valid = torch.ones(3, 5, dtype=torch.bool)
    mask = choose_mask(valid, 2, torch.Generator().manual_seed(0))
    memory = torch.randn(3, 2, 4)
    opt = torch.optim.SGD(rec.parameters(), lr=0.1)
    before = rec.mask_embedding.detach().clone()
    for _ in range(2):  # the zero-initialised output layer passes no gradient back on the very first step
        opt.zero_grad()
        rec(phrases, valid, memory, mask).loss.backward()
        opt.step()
    assert rec.mask_embedding.grad is not None and rec.mask_embedding.grad.abs().sum() > 0
    assert not torch.equal(before, rec.mask_embedding.detach())


def test_info_nce_hand_value() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = info_nce(a, a, temperature=1.0)
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 1)), rel=1e-5)


def test_ranking_metrics_hand_computed() -> None:
    heldout = interaction_matrix(np.array([0, 0, 1]), np.array([2, 5, 1]), 2, 6)
    topk = np.array([[2, 3, 5], [0, 3, 4]])
    m = rank_metrics_from_topk(topk, heldout, np.array([0, 1]))
    assert m.hr == pytest.approx(0.5)
    assert m.recall == pytest.approx(0.5)
    # user 0: hits at ranks 1 and 3 -> (1 + 1/log2(4)) / (1 + 1/log2(3)); user 1: 0
    assert m.ndcg == pytest.approx(0.5 * (1 + 0.5) / (1 + 1 / math.log2(3)))
    assert per_user_hits(topk, heldout, np.array([0, 1])).tolist() == [1.0, 0.0]  # their mean is m.hr


def test_evaluate_scores_excludes_known_items() -> None:
    users = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[5.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    exclude = interaction_matrix(np.array([0]), np.array([0]), 1, 3)
    held = interaction_matrix(np.array([0]), np.array([1]), 1, 3)
    m = evaluate_scores(users, items, exclude, held, k=1)
    assert m.hr == 1.0 and m.ndcg == 1.0
    assert rank_topk(users, items, exclude, np.array([0]), k=2).tolist() == [[1, 2]]  # item 0 masked


def test_set_chamfer_by_hand_and_order_free() -> None:
    import torch

    from beatrec.tokenizer.micro import set_chamfer

    pred = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])  # (1, 2, 2)
    target = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [9.0, 9.0]]])
    valid = torch.tensor([[True, True, False]])  # the third target is padding
    # pred->target: min(1, 5)=1 and 0 -> mean 0.5; target->pred: 1 and 0 -> mean 0.5; half the sum = 0.5
    assert torch.isclose(set_chamfer(pred, target, valid), torch.tensor(0.5))
    assert torch.isclose(set_chamfer(pred.flip(1), target, valid), torch.tensor(0.5))  # order of slots is free
    assert set_chamfer(target[:, :2], target[:, :2], valid[:, :2]) == 0


def test_set_objective_trains_and_is_validated() -> None:
    import pytest
    import torch

    from beatrec.config import from_dict
    from beatrec.errors import ConfigError
    from beatrec.tokenizer.config import TokenizerModelConfig
    from beatrec.tokenizer.micro import MicroReconstructor

    with pytest.raises(ConfigError, match="micro_objective"):
        from_dict(TokenizerModelConfig, {"micro_objective": "chamfer"})
    torch.manual_seed(0)
    rec = MicroReconstructor(text_dim=6, code_dim=4, n_phrases=3, attn_dim=8, heads=2)
    phrases, valid = torch.randn(5, 3, 6), torch.ones(5, 3, dtype=torch.bool)
    tokens = torch.randn(5, 2, 4)
    out = rec(phrases, valid, tokens, valid, objective="set")
    assert out.reconstruction.shape == (5, 3, 6) and out.loss > 0
    out.loss.backward()  # the output layer starts at zero: one step, then the tokens get a gradient
    torch.optim.SGD(rec.parameters(), lr=0.1).step()
    rec.zero_grad()
    rec(phrases, valid, tokens, valid, objective="set").loss.backward()
    assert rec.memory.weight.grad is not None and rec.memory.weight.grad.abs().sum() > 0


def test_inductive_users_are_built_from_their_items_only() -> None:
    # users 0,1,2; items 0,1; user 2 has the same items as user 0
    adj = normalized_adjacency(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 0, 1]), 3, 2)
    torch.manual_seed(0)
    gcn = LightGCN(3, 2, 4, n_layers=3, user_ids=False)
    assert torch.equal(gcn.embedding[:3], torch.zeros(3, 4))  # saved as zeros
    u, i = gcn(adj)
    a, e = adj.to_dense(), gcn.embedding.detach()
    ref = (e + a @ e + a @ a @ e + a @ a @ a @ e) / 4  # the plain layer mean of the zero-user E⁰
    assert torch.allclose(torch.cat([u, i]).detach(), ref, atol=1e-6)
    assert torch.allclose(u[0], u[2])  # same items, same vector: no free per-user part
    (u.sum() + i.sum()).backward()
    assert torch.equal(gcn.embedding.grad[:3], torch.zeros(3, 4)) and gcn.embedding.grad[3:].abs().sum() > 0
    with torch.no_grad():  # a value written into a user row (e.g. a loaded checkpoint) is ignored in training
        gcn.embedding[1] += 5.0
    assert torch.allclose(gcn(adj)[0], u.detach(), atol=1e-6)
    free_u, _ = LightGCN(3, 2, 4, n_layers=3)(adj)  # the paper's free user embeddings: users differ
    assert not torch.allclose(free_u[0], free_u[2])


def test_model_config_user_ids_reaches_lightgcn() -> None:
    from beatrec.config import from_dict

    cfg = from_dict(TokenizerModelConfig, {"user_ids": False, "n_codes": 4})
    assert BehaviorTokenizer(3, 2, 6, cfg).gcn.user_ids is False
    assert BehaviorTokenizer(3, 2, 6, TokenizerModelConfig(n_codes=4)).gcn.user_ids is True


def test_early_stopping_tolerance_keeps_latest_epoch_within_band() -> None:
    from beatrec.early_stop import EarlyStopping

    scores = [0.5, 0.6, 0.59, 0.58, 0.5, 0.5, 0.5]
    model = torch.nn.Linear(1, 1)
    band = EarlyStopping(patience=2, tolerance=0.05)  # band: >= 0.57 once the best is 0.6
    stops = []
    for epoch, s in enumerate(scores, 1):
        model.bias.data.fill_(epoch)
        stops.append(band.update(s, epoch, model))
    assert stops == [False, False, False, False, False, True, True]
    assert band.best == 0.6 and band.best_epoch == 4
    band.restore(model)
    assert model.bias.item() == 4  # the weights of epoch 4, not of the best epoch 2
    plain = EarlyStopping(patience=2)  # tolerance 0: the best epoch, and a tie is not an improvement
    for epoch, s in enumerate([0.5, 0.6, 0.6, 0.59], 1):
        plain.update(s, epoch, model)
    assert plain.best_epoch == 2 and plain.stopped


def test_select_tolerance_is_validated() -> None:
    from beatrec.config import from_dict
    from beatrec.errors import ConfigError
    from beatrec.tokenizer.config import TokenizerTrainConfig

    with pytest.raises(ConfigError, match="select_tolerance"):
        from_dict(TokenizerTrainConfig, {"select_tolerance": 1.5})


def test_info_nce_one_way_and_same_key_rows_by_hand() -> None:
    # rows 0 and 1 share a key: row 0's only negative is row 2 (and vice versa), row 2 sees both
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    keys = torch.tensor([7, 7, 3])
    got = info_nce(a, a, temperature=1.0, symmetric=False, keys=keys)
    r01 = -math.log(math.e / (math.e + 1.0))  # positive cos 1 against one negative at cos 0
    r2 = -math.log(math.e / (math.e + 2.0))  # against rows 0 and 1, both at cos 0
    assert got.item() == pytest.approx((2 * r01 + r2) / 3, rel=1e-6)
    plain = info_nce(a, a, temperature=1.0, symmetric=False)  # row 0's twin counts as a negative at cos 1
    assert plain.item() > got.item()
