"""SASRec and EAGER on a planted-structure sequence dataset; EAGER's loss breakdown and switches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from beatrec.config import from_dict
from beatrec.runtime import torch_threads
from beatrec.seqrec.codes import CodesConfig, build_codes
from beatrec.seqrec.config import SeqTrainConfig
from beatrec.seqrec.data import PAD, item_popularity, leave_one_out, load_seq_dataset
from beatrec.seqrec.eager import Eager, EagerConfig
from beatrec.seqrec.evaluate import metrics_from_topk, popularity_topk
from beatrec.seqrec.sasrec import SASRec, SASRecConfig
from beatrec.seqrec.synthetic import SyntheticSeqConfig, write_seq_dataset
from beatrec.seqrec.train import fit, predict_topk

SMALL = {"d_model": 32, "n_heads": 2, "enc_layers": 1, "dec_layers": 1, "d_ff": 64, "beam_size": 10}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    root = write_seq_dataset(SyntheticSeqConfig(n_users=240, seed=1), tmp_path_factory.mktemp("seq"))
    ds = load_seq_dataset(root)
    split = leave_one_out(ds, 20)
    n = ds.n_items
    # planted item embeddings: cluster one-hot + position-in-cluster, a little noise
    rng = np.random.default_rng(0)
    emb = np.zeros((n, 20), np.float32)
    raw = ds.item_raw_ids - 1
    emb[np.arange(n), raw // 12] = 1.0
    emb[np.arange(n), 8 + raw % 12] = 0.5
    emb += rng.normal(scale=0.05, size=emb.shape).astype(np.float32)
    return ds, split, torch.from_numpy(emb)


def _pop_ndcg(ds, split) -> float:
    pop = item_popularity(split.train, ds.n_items)
    return metrics_from_topk(popularity_topk(pop, ds.n_users), split.test.target).ndcg10


def test_sasrec_beats_popularity(planted) -> None:
    ds, split, _ = planted
    with torch_threads(1):
        model = SASRec(ds.n_items, 20, SASRecConfig(d_model=32, d_ff=64, dropout=0.1))
        loss_fn, rec = model.calculate_loss, model.topk
        cfg = SeqTrainConfig(lr=3e-3, max_epochs=8, patience=8, batch_size=64)
        res = fit(model, split, cfg, loss_fn, rec, progress=False)
        m = metrics_from_topk(predict_topk(rec, split.test, 256), split.test.target)
    print("sasrec", m, "popularity N@10", _pop_ndcg(ds, split))
    assert res.best_epoch >= 1 and {"loss", "val_ndcg@10"} <= set(res.history.columns)
    assert m.ndcg10 > 2 * _pop_ndcg(ds, split) and m.ndcg10 > 0.3


@pytest.mark.parametrize(("code_tokens", "tie"), [("shared", False), ("prefix", False), ("prefix", True)])
def test_eager_beats_popularity(planted, code_tokens: str, tie: bool) -> None:
    ds, split, emb = planted
    codes = build_codes(emb.numpy(), CodesConfig(k=4, levels=2))
    with torch_threads(1):
        torch.manual_seed(0)
        cfg = from_dict(EagerConfig, {**SMALL, "code_tokens": code_tokens, "tie_items": tie})
        model = Eager(ds.n_items, 20, {"behavior": codes, "semantic": codes}, cfg, {"behavior": 20, "semantic": 20})
        model.set_training_targets({"behavior": emb, "semantic": emb}, torch.Generator().manual_seed(1))
        loss_fn, rec = model.calculate_loss, model.topk
        tcfg = SeqTrainConfig(lr=3e-3, max_epochs=7, patience=7, batch_size=64)
        fit(model, split, tcfg, loss_fn, rec, progress=False)
        top = predict_topk(rec, split.test, 256)
    m = metrics_from_topk(top, split.test.target)
    print("eager", m, "popularity N@10", _pop_ndcg(ds, split))
    assert m.ndcg10 > 2 * _pop_ndcg(ds, split) and m.ndcg10 > 0.3
    assert (top >= 0).all() and all(len(set(r)) == len(r) for r in top.tolist())  # valid, distinct items


def test_eager_losses_and_switches(planted) -> None:
    ds, split, emb = planted
    codes = build_codes(emb.numpy(), CodesConfig(k=4, levels=2))
    hist, tgt = torch.from_numpy(split.train.history[:16]), torch.from_numpy(split.train.target[:16])
    temb = {"behavior": emb[tgt], "semantic": emb[tgt]}
    both = {"behavior": codes, "semantic": codes}
    dims = {"behavior": 20, "semantic": 20}
    torch.manual_seed(0)
    out = Eager(ds.n_items, 20, both, from_dict(EagerConfig, SMALL), dims)(hist, tgt, temb)
    assert all(torch.isfinite(v) and v > 0 for v in out)
    parts = out.gen_behavior + out.gen_semantic + 0.1 * (out.con_behavior + out.con_semantic) \
        + 0.1 * (out.recon + out.match)
    assert torch.allclose(out.loss, parts)
    # switches: no contrastive, no transfer, one stream
    off = from_dict(EagerConfig, {**SMALL, "use_contrastive": False, "use_transfer": False, "use_behavior": False})
    m = Eager(ds.n_items, 20, both, off)
    assert list(m.decoders) == ["semantic"] and m.transfer is None
    o = m(hist, tgt)
    assert o.gen_semantic > 0 and o.gen_behavior == 0 and o.con_semantic == 0 and o.recon == 0 and o.match == 0
    nosem = from_dict(EagerConfig, {**SMALL, "use_semantic": False})
    m = Eager(ds.n_items, 20, both, nosem, dims)
    assert m.transfer is None and not nosem.transfer_active  # the transfer task needs both streams
    rec = m.eval().recommend(hist[:3], 10)
    assert set(rec.streams) == {"behavior"} and rec.items.shape == (3, 10)


def test_eager_official_loss_options(planted) -> None:
    """The authors' auxiliary settings: per-stream contrastive weights, sampled contrastive negatives and the
    sibling-only softmax after the first level, each checked against a hand computation."""
    import torch.nn.functional as F

    from beatrec.errors import ConfigError
    from beatrec.losses import info_nce

    ds, split, emb = planted
    codes = build_codes(emb.numpy(), CodesConfig(k=4, levels=2))
    hist, tgt = torch.from_numpy(split.train.history[:16]), torch.from_numpy(split.train.target[:16])
    temb = {"behavior": emb[tgt], "semantic": emb[tgt]}
    both, dims = {"behavior": codes, "semantic": codes}, {"behavior": 20, "semantic": 20}
    cfg = from_dict(EagerConfig, {**SMALL, "dropout": 0.0, "contrastive_weight": 1.0,
                                  "semantic_contrastive_scale": 10.0, "transfer_weight": 1.0})
    torch.manual_seed(0)
    model = Eager(ds.n_items, 20, both, cfg, dims)
    out = model(hist, tgt, temb, torch.Generator().manual_seed(0))
    parts = out.gen_behavior + out.gen_semantic + out.con_behavior + 10 * out.con_semantic + out.recon + out.match
    assert torch.allclose(out.loss, parts)
    # sampled negatives replace the in-batch ones: row r's logits are [its target, the N items minus r's target]
    neg = torch.cat([tgt[:2], torch.tensor([ds.n_items - 1, 0])])  # two collide with rows 0 and 1
    with_neg = model(hist, tgt, temb, torch.Generator().manual_seed(0), (neg, {s: emb[neg] for s in dims}))
    summ = model.decoders["behavior"](model.item_codes("behavior", tgt), *model.encode(hist))[1]
    a = model.decoders["behavior"].proj(summ)
    an = F.normalize(a, dim=-1)
    pos = (an * F.normalize(emb[tgt], dim=-1)).sum(1, keepdim=True)
    negl = (an @ F.normalize(emb[neg], dim=-1).t()).masked_fill(tgt[:, None] == neg[None, :], float("-inf"))
    expected = F.cross_entropy(torch.cat([pos, negl], 1) / cfg.temperature, torch.zeros(16, dtype=torch.long))
    assert torch.allclose(with_neg.con_behavior, expected, atol=1e-5)
    assert not torch.allclose(with_neg.con_behavior, out.con_behavior)
    assert torch.equal(with_neg.gen_behavior, out.gen_behavior)
    assert info_nce(a, emb[tgt], 0.3, False, tgt, (emb[tgt[:1]], tgt[:1]))[None].isfinite().all()
    with pytest.raises(ValueError, match="a→b direction only"):
        info_nce(a, emb[tgt], 0.3, True, tgt, (emb[neg], neg))
    # through calculate_loss: N items drawn from the model's generator
    model.set_training_targets({"behavior": emb, "semantic": emb}, torch.Generator().manual_seed(3))
    model.cfg.contrastive_negatives = 5
    assert torch.isfinite(model.calculate_loss(hist, tgt).loss)
    # sibling softmax: level 2 is a softmax over the children of the target's level-1 code only
    sib = Eager(ds.n_items, 20, both, from_dict(EagerConfig, {**SMALL, "dropout": 0.0, "sibling_softmax": True}),
                dims)
    sib.load_state_dict(model.state_dict(), strict=False)
    dec = sib.decoders["behavior"]
    c = sib.item_codes("behavior", tgt)
    full_logits, _ = dec(c, *sib.encode(hist))
    sib_logits, _ = dec(c, *sib.encode(hist), siblings=True)
    assert torch.equal(full_logits[0], sib_logits[0])  # the first level is unchanged
    kids = dec.prefix.child(1)[dec.prefix.walk(c)[:, 0]]  # (B, V_2) level-2 nodes under each target's parent
    w, b = dec._node_weights(1)
    for r in range(16):
        ok = kids[r] >= 0
        assert torch.allclose(sib_logits[1][r, : kids.shape[1]][ok], full_logits[1][r, kids[r][ok]], atol=1e-5)
        assert torch.isinf(sib_logits[1][r, : kids.shape[1]][~ok]).all()
    assert torch.equal(dec.targets(c, siblings=True)[:, 1], c[:, 1])
    gen = sib(hist, tgt, temb).gen_behavior
    full = model(hist, tgt, temb).gen_behavior
    assert gen < full  # fewer competitors at level 2 (same weights)
    with pytest.raises(ConfigError, match="sibling_softmax needs eager.code_tokens=prefix"):
        from_dict(EagerConfig, {**SMALL, "sibling_softmax": True, "code_tokens": "shared",
                                "tie_items": False}).validate()


def test_tied_items_are_the_decoders_leaf_embeddings(planted) -> None:
    """tie_items: the encoder has no item table of its own; item i's input vector is the first stream's leaf
    token of item i, so a history item's gradient reaches that decoder row; shared tokens refuse the switch."""
    from beatrec.errors import ConfigError

    ds, split, emb = planted
    codes = build_codes(emb.numpy(), CodesConfig(k=4, levels=2))
    both, dims = {"behavior": codes, "semantic": codes}, {"behavior": 20, "semantic": 20}
    torch.manual_seed(0)
    tied = Eager(ds.n_items, 20, both, from_dict(EagerConfig, SMALL), dims)  # the default
    own = Eager(ds.n_items, 20, both, from_dict(EagerConfig, {**SMALL, "tie_items": False}), dims)
    n_params = [sum(p.numel() for p in m.parameters()) for m in (own, tied)]
    assert tied.encoder.item_emb is None and n_params[0] - n_params[1] == (ds.n_items + 1) * SMALL["d_model"]
    dec = tied.decoders["behavior"]
    leaf = dec.prefix.walk(torch.from_numpy(codes.codes))[:, -1]  # (n_items,) leaf node of each item
    table = tied.item_table()
    assert torch.equal(table[0], torch.zeros(SMALL["d_model"]))
    start = 3 + sum(dec.prefix.sizes[:-1])  # special tokens, then the nodes of the upper levels
    assert torch.equal(table[1:], dec.tok_emb.weight[start + leaf])
    hist = torch.from_numpy(split.train.history[:8])
    with torch.no_grad():  # encode reads exactly the rows of item_table (padded positions masked)
        table_read = tied.eval().encoder(hist, table[hist + 1]).states
        assert torch.allclose(tied.encode(hist).states, table_read, atol=1e-6)
    tied.encode(hist).states.square().sum().backward()  # the encoder alone
    seen = torch.zeros(ds.n_items, dtype=torch.bool)
    seen[hist[hist >= 0]] = True
    touched = dec.tok_emb.weight.grad[start + leaf].abs().sum(1) > 0  # (n_items,)
    assert torch.equal(touched, seen)  # exactly the history items' leaf rows are trained through the encoder
    with pytest.raises(ConfigError, match="tie_items needs eager.code_tokens=prefix"):
        from_dict(EagerConfig, {**SMALL, "tie_items": True, "code_tokens": "shared"}).validate()


def test_lr_schedule_warmup_then_inverse_sqrt(planted) -> None:
    """Hand-computed factors (warmup 4): steps 0..3 -> 1/4..4/4, then sqrt(4/(step+1)); fit applies them per step
    and logs the last lr of each epoch; unknown schedules are refused."""
    from beatrec.errors import ConfigError

    cfg = SeqTrainConfig(lr=0.01, lr_schedule="inverse_sqrt", warmup_steps=4, max_epochs=2, patience=2,
                         max_steps_per_epoch=3, batch_size=32)
    assert [cfg.lr_factor(i) for i in (0, 3)] == [0.25, 1.0]
    assert cfg.lr_factor(4) == pytest.approx(0.8 ** 0.5) and cfg.lr_factor(15) == pytest.approx(0.5)
    assert SeqTrainConfig(warmup_steps=2).lr_factor(0) == 0.5 and SeqTrainConfig(warmup_steps=2).lr_factor(99) == 1.0
    ds, split, _ = planted
    with torch_threads(1):
        model = SASRec(ds.n_items, 20, SASRecConfig(d_model=16, d_ff=32))
        loss_fn, rec = model.calculate_loss, model.topk
        res = fit(model, split, cfg, loss_fn, rec, progress=False)
    assert res.history["lr"].tolist() == pytest.approx([0.01 * 0.75, 0.01 * (4 / 6) ** 0.5])
    with pytest.raises(ConfigError, match="lr_schedule must be one of"):
        SeqTrainConfig(lr_schedule="cosine").validate()


def test_sasrec_no_nan_with_padding() -> None:
    model = SASRec(10, 5, SASRecConfig(d_model=16, d_ff=32)).eval()
    h = torch.tensor([[PAD, PAD, PAD, PAD, 3], [1, 2, 3, 4, 5]])
    out = model(h, torch.tensor([4, 6]))
    assert torch.isfinite(out.scores).all() and torch.isfinite(out.loss)
    # causal attention: the state at position t ignores later items
    a = model.encoder(torch.tensor([[1, 2, 3, 4, 5]])).states
    b = model.encoder(torch.tensor([[1, 2, 3, 9, 8]])).states
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6) and not torch.allclose(a[:, 3:], b[:, 3:])


def test_synthetic_writer(tmp_path: Path) -> None:
    root = write_seq_dataset(SyntheticSeqConfig(n_users=5, with_text=False), tmp_path)
    ds = load_seq_dataset(root)
    assert ds.n_users == 5 and not ds.has_text


@pytest.mark.parametrize("code_tokens", ["shared", "prefix"])
def test_beam_batched_decoder_matches_per_hypothesis(planted, code_tokens: str) -> None:
    ds, split, emb = planted
    codes = build_codes(emb.numpy(), CodesConfig(k=4, levels=2))
    cfg = from_dict(EagerConfig, {**SMALL, "use_contrastive": False, "code_tokens": code_tokens,
                                  "tie_items": code_tokens == "prefix"})
    model = Eager(ds.n_items, 20, {"behavior": codes, "semantic": codes}, cfg).eval()
    hist = torch.from_numpy(split.test.history[:3])
    enc = model.encode(hist)
    dec = model.decoders["behavior"]
    prefix = torch.from_numpy(codes.codes[[[0, 5], [7, 9], [11, 2]]][:, :, :2])  # (B=3, b=2, t=2)
    folded = dec.next_logits_beams(prefix, enc.states, enc.pad)
    flat = dec.next_logits(prefix.reshape(6, 2), enc.states.repeat_interleave(2, 0), enc.pad.repeat_interleave(2, 0))
    assert torch.allclose(folded, flat.reshape(3, 2, -1), atol=1e-5)


def test_trie_to_device_keeps_the_trie() -> None:
    from beatrec.seqrec.trie import Trie

    trie = Trie([[0, 1], [1, 0], [1, 2]], vocab_size=3)
    assert trie.to("cpu") is trie  # already there: no copy
    dev = "cuda" if torch.cuda.is_available() else "meta"
    moved = trie.to(dev)
    assert moved is not trie and moved.children.device.type == dev and trie.children.device.type == "cpu"
    assert (moved.max_len, moved.n_nodes, moved.vocab_size) == (trie.max_len, trie.n_nodes, trie.vocab_size)


def test_prefix_index_numbers_trie_nodes_per_level() -> None:
    """Hand-checked: 6 codes -> 2 first-level nodes, 4 second-level prefixes, 6 leaves; off-trie codes -> -1."""
    from beatrec.seqrec.eager import PrefixIndex

    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 2, 0], [1, 2, 1]])
    idx = PrefixIndex(codes, (2, 3, 2))
    assert idx.sizes == (2, 4, 6)
    assert idx.walk(torch.from_numpy(codes)).tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [1, 3, 4],
                                                          [1, 3, 5]]
    assert idx.walk(torch.tensor([[0, 2, 0], [1, 2, 1], [0, 1, 1]])).tolist() == [[0, -1, -1], [1, 3, 5], [0, 1, -1]]
    assert idx.child(1).tolist() == [[0, 1, -1], [2, -1, 3]]


def test_prefix_tokens_score_only_children_and_tie_embeddings(planted) -> None:
    """code_tokens=prefix: one token per trie node; next-code logits are -inf outside the current prefix's
    children, the last level's logits are the dot products with the item's own leaf embedding, and
    beam search returns a distribution over valid items only."""
    ds, split, emb = planted
    codes = build_codes(emb.numpy(), CodesConfig(k=4, levels=2))
    model = Eager(ds.n_items, 20, {"behavior": codes}, from_dict(EagerConfig, {
        **SMALL, "use_semantic": False, "use_contrastive": False, "code_tokens": "prefix"})).eval()
    dec = model.decoders["behavior"]
    assert dec.tok_emb.num_embeddings == 3 + sum(dec.prefix.sizes) and dec.prefix.sizes[-1] == ds.n_items
    hist = torch.from_numpy(split.test.history[:4])
    enc = model.encode(hist)
    item = 7
    prefix = torch.from_numpy(codes.codes[item, :-1]).expand(4, -1)  # (4, D-1)
    with torch.no_grad():
        logits = dec.next_logits(prefix, enc.states, enc.pad)  # (4, v_max)
        siblings = np.flatnonzero((codes.codes[:, :-1] == codes.codes[item, :-1]).all(1))
        valid = torch.zeros(dec.v_max, dtype=torch.bool)
        valid[codes.codes[siblings, -1]] = True
        assert torch.isfinite(logits[:, valid]).all() and torch.isinf(logits[:, ~valid]).all()
        # the item's logit = its leaf embedding · the state + its bias (tied output)
        bos = torch.full((4, 1), 0, dtype=torch.long)
        h = dec._run(torch.cat([bos, dec.code_tokens(prefix)], 1), enc.states, enc.pad)[:, -1]
        leaf = int(dec.prefix.walk(torch.from_numpy(codes.codes[item:item + 1]))[0, -1])
        w, b = dec._node_weights(codes.depth - 1)
        expect = h @ w[leaf] + b[leaf]
        assert torch.allclose(logits[:, codes.codes[item, -1]], expect, atol=1e-5)
        rec = model.recommend(hist, 10)
    res = rec.streams["behavior"]
    assert (res.values >= 0).all() and torch.equal(torch.from_numpy(codes.codes[res.values.numpy()]), res.tokens)
    assert (res.scores.exp().sum(1) <= 1 + 1e-5).all()


@pytest.mark.parametrize("code_tokens", ["shared", "prefix"])
def test_joint_merge_rescores_candidates_in_both_streams(planted, code_tokens: str) -> None:
    """merge=joint: a decoder's teacher-forced log p(code) equals the beam score it found the item with, and the
    merged list is the union of both beams ranked by the sum of the two streams' log-likelihoods."""
    ds, split, emb = planted
    beh = build_codes(emb.numpy(), CodesConfig(k=4, levels=2))
    sem = build_codes(emb.numpy()[:, ::-1].copy(), CodesConfig(k=3, levels=2, seed=1))
    torch.manual_seed(0)
    model = Eager(ds.n_items, 20, {"behavior": beh, "semantic": sem}, from_dict(EagerConfig, {
        **SMALL, "use_contrastive": False, "code_tokens": code_tokens, "merge": "joint",
        "tie_items": code_tokens == "prefix"})).eval()
    hist = torch.from_numpy(split.test.history[:5])
    rec = model.recommend(hist, 10)
    enc = model.encode(hist)
    for s, r in rec.streams.items():
        lp = model.decoders[s].code_log_probs(model.item_codes(s, r.values), enc.states, enc.pad, model.tries[s])
        assert torch.allclose(lp, r.scores, atol=1e-4)  # same numbers as the beam search
    union = torch.cat([r.values for r in rec.streams.values()], 1)  # (5, 20)
    joint = sum(model.decoders[s].code_log_probs(model.item_codes(s, union), enc.states, enc.pad, model.tries[s])
                for s in rec.streams)
    for row in range(5):
        best = {}
        for item, sc in zip(union[row].tolist(), joint[row].tolist(), strict=True):
            best[item] = max(best.get(item, -np.inf), sc)
        expect = sorted(best, key=lambda i: -best[i])[:10]
        assert rec.items[row].tolist() == expect
    assert torch.equal(model.recommend(hist, 10).items, rec.items)  # deterministic
    assert np.array_equal(model.topk(hist, 10), rec.items.cpu().numpy())  # the ranking contract


def test_ranking_contract_topk_of_sasrec_and_eager(planted) -> None:  # noqa: ANN001
    """Every seqrec model ranks through ``topk(history, k) -> (B, k)`` numpy ids, best first."""
    ds, split, _ = planted
    hist = torch.from_numpy(split.test.history[:4])
    torch.manual_seed(0)
    sas = SASRec(ds.n_items, 20, SASRecConfig(d_model=16, d_ff=32)).eval()
    with torch.no_grad():
        top = sas.topk(hist, 5)
        scores = sas(hist).scores.numpy()
    assert isinstance(top, np.ndarray) and top.shape == (4, 5)
    best = np.take_along_axis(scores, top, 1)
    assert (np.diff(best, axis=1) <= 0).all() and np.allclose(best[:, 0], scores.max(1))
    loss = sas.eval().calculate_loss(hist, torch.from_numpy(split.test.target[:4]))
    assert loss[0].requires_grad and loss[0].item() == pytest.approx(sas(hist, torch.from_numpy(split.test.target[:4])).loss.item())
