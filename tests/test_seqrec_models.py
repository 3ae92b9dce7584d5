"""SASRec and EAGER on a planted-structure sequence dataset; EAGER's loss breakdown and switches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from beatrec.config import from_dict
from beatrec.runtime import torch_threads
from beatrec.seqrec.codes import CodesConfig, build_codes
from beatrec.seqrec.data import PAD, item_popularity, leave_one_out, load_seq_dataset
from beatrec.seqrec.eager import Eager, EagerConfig
from beatrec.seqrec.evaluate import metrics_from_topk, popularity_topk
from beatrec.seqrec.sasrec import SASRec, SASRecConfig
from beatrec.seqrec.synthetic import SyntheticSeqConfig, write_seq_dataset
from beatrec.seqrec.train import SeqTrainConfig, _eager_fns, _sasrec_fns, fit, predict_topk

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
        loss_fn, rec = _sasrec_fns(model)
        cfg = SeqTrainConfig(lr=3e-3, max_epochs=8, patience=8, batch_size=64)
        res = fit(model, split, cfg, loss_fn, rec, progress=False)
        m = metrics_from_topk(predict_topk(rec, split.test, 256), split.test.target)
    print("sasrec", m, "popularity N@10", _pop_ndcg(ds, split))
    assert res.best_epoch >= 1 and {"loss", "val_ndcg@10"} <= set(res.history.columns)
    assert m.ndcg10 > 2 * _pop_ndcg(ds, split) and m.ndcg10 > 0.3


def test_eager_beats_popularity(planted) -> None:
    ds, split, emb = planted
    codes = build_codes(emb.numpy(), CodesConfig(k=4, levels=2))
    with torch_threads(1):
        torch.manual_seed(0)
        cfg = from_dict(EagerConfig, SMALL)
        model = Eager(ds.n_items, 20, {"behavior": codes, "semantic": codes}, cfg, {"behavior": 20, "semantic": 20})
        loss_fn, rec = _eager_fns(model, {"behavior": emb, "semantic": emb}, torch.Generator().manual_seed(1))
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


def test_beam_batched_decoder_matches_per_hypothesis(planted) -> None:
    ds, split, emb = planted
    codes = build_codes(emb.numpy(), CodesConfig(k=4, levels=2))
    cfg = from_dict(EagerConfig, {**SMALL, "use_contrastive": False})
    model = Eager(ds.n_items, 20, {"behavior": codes, "semantic": codes}, cfg).eval()
    hist = torch.from_numpy(split.test.history[:3])
    enc = model.encoder(hist)
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
