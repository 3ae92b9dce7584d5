"""LLM-BS item indices and code tokens on a tiny random LM: conflict-free dual-source codes, the alternatives,
code tokens added and embedded, and a trie that admits exactly the valid item codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_lm import save_tiny_lm

from beatrec.lm import LMConfig, load_causal_lm
from beatrec.seqrec.llmbs.indices import IndexConfig, build_index, lm_item_embeddings
from beatrec.seqrec.llmbs.vocab import CON, add_code_tokens, code_token


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny")


def planted_embeddings(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Semantic vectors clustered by one label, behavior vectors by another, independent label."""
    rng = np.random.default_rng(seed)
    ls, lb = rng.permutation(np.arange(n) % 4), rng.permutation(np.arange(n) % 4)  # balanced, like the codes
    cs, cb = rng.normal(size=(4, 8)) * 5, rng.normal(size=(4, 8)) * 5
    return cs[ls] + rng.normal(size=(n, 8)), cb[lb] + rng.normal(size=(n, 8)), ls, lb


def test_dual_index_is_conflict_free_and_uses_both_sources() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    sem, beh, ls, lb = planted_embeddings()
    codes = build_index(IndexConfig(kind="dual", k=4), len(sem), sem, beh)
    assert len({tuple(r) for r in codes.codes}) == codes.n_items  # conflict-free
    assert codes.depth in (4, 5) and codes.n_kmeans_levels == 4
    assert nmi(ls, codes.codes[:, 0]) > 0.9 and nmi(lb, codes.codes[:, 2]) > 0.9  # level 1 semantic, level 3 behavior
    sem_only = build_index(IndexConfig(kind="semantic", k=4), len(sem), sem)
    assert nmi(lb, sem_only.codes[:, 0]) < 0.2  # a semantic-only index does not see the behavior clusters


def test_index_alternatives_and_errors() -> None:
    sem, beh, _, _ = planted_embeddings(50)
    unit = build_index(IndexConfig(kind="unit"), 50)
    assert unit.depth == 1 and unit.codes[:, 0].tolist() == list(range(50))
    r1 = build_index(IndexConfig(kind="random", k=4, seed=3), 50)
    r2 = build_index(IndexConfig(kind="random", k=4, seed=3), 50)
    assert np.array_equal(r1.codes, r2.codes) and len({tuple(r) for r in r1.codes}) == 50
    assert build_index(IndexConfig(kind="behavior", k=4), 50, behavior=beh).n_items == 50
    with pytest.raises(ValueError, match="needs semantic embeddings"):
        build_index(IndexConfig(kind="dual"), 50, None, beh)
    with pytest.raises(ValueError, match="needs behavior embeddings of all 50"):
        build_index(IndexConfig(kind="dual"), 50, sem, beh[:10])


def test_lm_item_embeddings_mean_over_real_tokens(tiny: Path) -> None:
    lm, tok = load_causal_lm(LMConfig(name=str(tiny)))
    texts = ["cozy mysteries", "The user would buy this book because they love strong characters."]
    batch = lm_item_embeddings(lm, tok, texts, batch_size=2)
    single = torch.cat([lm_item_embeddings(lm, tok, [t]) for t in texts])
    assert batch.shape == (2, lm.config.hidden_size)
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-4)  # padding never enters the mean
    assert tok.padding_side == "left"  # restored


def test_code_tokens_added_embedded_and_trie_exact(tiny: Path) -> None:
    lm, tok = load_causal_lm(LMConfig(name=str(tiny)))
    n_before = lm.get_input_embeddings().weight.shape[0]
    before = lm.get_input_embeddings().weight[:n_before].clone()
    sem, beh, _, _ = planted_embeddings(60)
    codes = build_index(IndexConfig(kind="dual", k=4), 60, sem, beh)
    cv = add_code_tokens(lm, tok, codes)
    n_new = sum(codes.vocab_sizes) + 1
    w = lm.get_input_embeddings().weight
    assert w.shape[0] == len(tok) == n_before + n_new
    torch.testing.assert_close(w[:n_before], before)  # existing rows untouched
    spread = (w[n_before:] - before.mean(0)).norm(dim=1) / before.std() / w.shape[1] ** 0.5
    assert (spread < 0.05).all() and (spread > 0).all()  # new rows start near the mean embedding, not equal
    assert cv.con_id == tok.convert_tokens_to_ids(CON) and cv.first_new_id == n_before
    # the tokenizer reads an item's code string as exactly its code ids
    for item in (0, 17, 59):
        text = cv.text(item, tok)
        assert text.startswith(code_token(0, int(codes.codes[item, 0])))
        assert tok(text, add_special_tokens=False)["input_ids"] == cv.item_ids[item].tolist()
    # the trie admits exactly the 60 valid codes
    seqs = {tuple(s) for s, _ in cv.trie.sequences()}
    assert seqs == {tuple(r) for r in cv.item_ids.tolist()}
    assert cv.trie.lookup(cv.item_ids[5].tolist()) == 5
    bad = cv.item_ids[0].tolist()
    bad[-1] = cv.con_id
    assert bad not in cv.trie
