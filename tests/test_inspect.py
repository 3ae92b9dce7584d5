"""Cold start (fold-in), the behavior-vocabulary report, user profiles and attention maps (issue: RQ3/RQ4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_aligned

from beatrec.cli import main
from beatrec.data.synthetic import GENRES
from beatrec.errors import ConfigError, RunError
from beatrec.text_encoder import TextEncoder, TextEncoderConfig
from beatrec.tokenizer.foldin import FoldInConfig, load_foldin
from beatrec.tokenizer.vocab_report import carriers, load_report


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(TextEncoderConfig(), cache=False)


def test_fold_in_recovers_trained_tokens(planted_run: tuple[Path, Path]) -> None:
    """Users removed from the graph and folded back in from their items get their trained tokens back far
    above chance (chance = agreement with the tokens of other removed users)."""
    _, run = planted_run
    full = load_foldin(run, semantic=False)
    rng = np.random.default_rng(0)
    gone = rng.choice(full.n_users, 40, replace=False)
    fi = load_foldin(run, exclude={"user": gone}, semantic=False)
    assert not fi.trained_mask["user"][gone].any()
    folded = np.array([fi.fold("user", full.known["user"][u].indices).folded_tokens for u in gone])  # (40, 1+N)
    trained = full.tokens["user"].numpy()[gone]
    chance = np.mean([(folded == np.roll(trained, s, axis=0)).mean(0) for s in range(1, len(gone))], axis=0)
    agree = (folded == trained).mean(0)
    assert agree[0] > 3 * chance[0] and agree[0] >= 0.35, (agree, chance)  # macro
    assert agree[1:].mean() > 2 * chance[1:].mean(), (agree, chance)  # micro


def test_fold_in_of_an_in_graph_user_matches_its_layers(planted_run: tuple[Path, Path]) -> None:
    """Eq. 2 for one row: the aggregation of a user's items equals its propagated layers Σ_l h^l (up to the
    +1 in the item degrees, which is tiny for well-connected items)."""
    _, run = planted_run
    fi = load_foldin(run, semantic=False)
    u = 7
    a = fi._aggregate("user", fi.known["user"][u].indices)
    b = sum(fi.layers["user"][1:])[u]
    assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


def test_provenance_lists_only_real_neighbours(planted_run: tuple[Path, Path], encoder: TextEncoder) -> None:
    _, run = planted_run
    gone = np.array([3, 5])
    fi = load_foldin(run, cfg=FoldInConfig(min_interactions=5, shrink=2.0, n_neighbours=4),
                     exclude={"user": gone}, encoder=encoder)
    items = load_foldin(run, semantic=False).known["user"][3].indices[:2]
    r = fi.fold("user", items)
    assert r.alpha == pytest.approx(2 / (2 + 2))  # 2 interactions < 5: borrow
    kinds = {n.kind for n in r.neighbours}
    assert kinds == {"collaborative", "semantic"}
    ids = {n.id for n in r.neighbours}
    assert not ids & set(gone.tolist())  # removed users are never neighbours
    assert all(fi.trained_mask["user"][i] for i in ids)
    assert sum({n.id: n.weight for n in r.neighbours}.values()) == pytest.approx(r.alpha, abs=1e-3)
    for pos, src in enumerate(r.token_sources):
        assert set(src) <= ids
        assert all(int(fi.tokens["user"][i][pos]) == r.tokens[pos] for i in src)
    many = fi.fold("user", load_foldin(run, semantic=False).known["user"][3].indices)
    assert many.alpha == 0.0 and many.tokens == many.folded_tokens  # enough interactions: no borrowing


def test_fold_in_items_and_determinism(planted_run: tuple[Path, Path]) -> None:
    _, run = planted_run
    fi = load_foldin(run, semantic=False)
    r1 = fi.fold("item", [1, 2, 3, 4, 5, 6])
    r2 = load_foldin(run, semantic=False).fold("item", [6, 5, 4, 3, 2, 1, 1])
    assert r1.tokens == r2.tokens and r1.interactions == [1, 2, 3, 4, 5, 6]
    assert len(r1.tokens) == 1 + fi.sides["item"].n_micro
    assert all(0 <= t < 16 for t in r1.tokens)


def test_fold_in_errors(planted_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, run = planted_run
    fi = load_foldin(run, semantic=False)
    with pytest.raises(ConfigError, match="at least one item"):
        fi.fold("user", [])
    with pytest.raises(ConfigError, match=r"unknown item id\(s\) \[240, 999\]"):
        fi.fold("user", [1, 240, 999])
    with pytest.raises(RunError, match="no stage-1 artifacts"):
        load_foldin(tmp_path)
    assert main(["tokens", "--run", str(run), "--items", "1,x"]) == 2
    assert "'x' is not an integer id" in capsys.readouterr().err
    assert main(["tokens", "--run", str(run), "--items", " , "]) == 2
    assert "no ids given" in capsys.readouterr().err
    assert main(["tokens", "--run", str(run), "--items", "5000"]) == 2
    assert "unknown item id(s) [5000]" in capsys.readouterr().err
    assert main(["tokens", "--run", str(run)]) == 2
    assert "--items" in capsys.readouterr().err


def test_tokens_cli_writes_provenance(planted_run: tuple[Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, run = planted_run
    out = tmp_path / "new_user.json"
    assert main(["tokens", "--run", str(run), "--items", "4,9", "--no-semantic", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "<user_macro_" in text and "borrowed" in text and "collaborative" in text
    d = json.loads(out.read_text())
    assert d["side"] == "user" and d["interactions"] == [4, 9] and len(d["tokens"]) == 6
    assert len(d["neighbours"]) == 5 and len(d["token_sources"]) == 6


def test_vocab_report_names_planted_genres(planted_run: tuple[Path, Path], tmp_path: Path) -> None:
    """Item macro tokens were supervised by genre-bearing texts: most used codes list their carriers'
    majority genre among their top terms."""
    data, run = planted_run
    rep = load_report(run, top_terms=8)
    genre = np.asarray(json.loads((data / "planted.json").read_text())["item_genre"])
    book = rep.books["item_macro"]
    assert sum(e.n_entities for e in book) == rep.n_items  # every item carries exactly one macro code
    micro = rep.books["user_micro"]
    assert sum(e.n_entities for e in micro) >= rep.n_users  # N micro positions, de-duplicated per user
    hits, used = 0, 0
    codes = {e.code: e for e in book}
    per_code = carriers(np.asarray(pd_tokens(run, "item")), "macro", rep.n_codes)
    for c, ids in enumerate(per_code):
        if len(ids) < 5 or not codes[c].terms:
            continue
        used += 1
        name = GENRES[int(np.bincount(genre[ids]).argmax())].name.split()[0].replace("'s", "")
        hits += any(name in t for t in codes[c].terms)
    assert used >= 5 and hits / used >= 0.6, (hits, used)
    assert main(["vocab", "--run", str(run), "--out", str(tmp_path / "v")]) == 0
    page = (tmp_path / "v" / "vocab.html").read_text()
    assert page.count("<table>") == 4 and "&lt;item_macro_" in page and "filter" in page
    md = (tmp_path / "v" / "vocab.md").read_text()
    assert "## item macro" in md and "| <item_macro_" in md


def pd_tokens(run: Path, side: str) -> np.ndarray:
    from beatrec.align.vocab import read_token_table

    return read_token_table(run / f"{side}_tokens.parquet")


def test_carriers_by_hand() -> None:
    codes = np.array([[0, 1, 1], [2, 1, 0], [0, 2, 2]])  # 3 entities, macro + 2 micro
    assert [c.tolist() for c in carriers(codes, "macro", 3)] == [[0, 2], [], [1]]
    assert [c.tolist() for c in carriers(codes, "micro", 3)] == [[1], [0, 1], [2]]


# --- stage 2 on a tiny random LM: explain with cold-start tokens, profiles, attention ---------------------


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_aligned(tmp_path_factory, seed=5, generate={"max_new_tokens": 8, "batch_size": 3})


def test_explain_with_cold_start_tokens(aligned: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    _, run = aligned
    tok = tmp_path / "u.json"
    assert main(["tokens", "--run", str(run), "--items", "1,2,3", "--no-semantic", "--out", str(tok)]) == 0
    capsys.readouterr()
    assert main(["explain", "--run", str(run), "--tokens", str(tok), "--item", "4"]) == 0
    assert capsys.readouterr().out.strip() != ""
    assert main(["explain", "--run", str(run), "--tokens", str(tok), "--user", "4"]) == 2
    assert "describes a new user" in capsys.readouterr().err
    item = tmp_path / "i.json"  # a brand-new item, from the users who interacted with it
    assert main(["tokens", "--run", str(run), "--users", "0,1", "--out", str(item)]) == 0
    assert "new item folded in from 2 users" in capsys.readouterr().out
    assert main(["explain", "--run", str(run), "--tokens", str(item), "--user", "4"]) == 0
    assert capsys.readouterr().out.strip() != ""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"side": "user", "tokens": [1, 2]}))
    assert main(["explain", "--run", str(run), "--tokens", str(bad), "--item", "4"]) == 2
    assert "a user needs 6 tokens" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["explain", "--run", str(run), "--tokens", str(bad), "--item", "4"]) == 2
    assert "not JSON" in capsys.readouterr().err


def test_profile_from_tokens_only_keeps_lm_frozen(aligned: tuple[Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from beatrec.align.explain import load_aligned
    from beatrec.align.profile import profile_prompt, user_profiles

    _, run = aligned
    a = load_aligned(run)
    before = {k: v.clone() for k, v in a.model.lm.state_dict().items()}
    p = profile_prompt(a)
    assert len(p.slots) == a.model.n_side_slots and all(p.ids[s] == a.builder.pad for s in p.slots)
    texts = user_profiles(a, [0, 1, 2])
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert all(torch.equal(before[k], v) for k, v in a.model.lm.state_dict().items())
    assert main(["profile", "--run", str(run), "--user", "1"]) == 0
    assert main(["profile", "--run", str(run), "--user", "100000"]) == 2
    assert "unknown user id 100000" in capsys.readouterr().err


def test_attention_shares_sum_to_one(aligned: tuple[Path, Path], tmp_path: Path) -> None:
    from beatrec.align.attention import attention_map
    from beatrec.align.explain import load_aligned

    _, run = aligned
    a = load_aligned(run)
    impl = a.model.lm.config._attn_implementation
    am = attention_map(a, 0, 1)  # title from the dataset, as the CLI does
    assert a.model.lm.config._attn_implementation == impl  # eager only for the measuring pass
    assert am.slot_share.shape == (len(am.words), 2 * a.model.n_side_slots)
    np.testing.assert_allclose(am.slot_share.sum(1) + am.text_share, 1.0, atol=1e-5)
    assert (am.slot_share >= 0).all() and 0 <= am.user_share + am.item_share <= 1 + 1e-6
    assert am.token_labels[0].startswith("user macro") and am.token_labels[-1].startswith("item micro_")
    assert main(["attention", "--run", str(run), "--user", "0", "--item", "1", "--out", str(tmp_path)]) == 0
    d = json.loads((tmp_path / "attention_u0_i1.json").read_text())
    assert d["words"] == am.words and (tmp_path / "attention_u0_i1.png").stat().st_size > 1000


def test_distinct_terms_and_boilerplate() -> None:
    from beatrec.tokenizer.vocab_report import boilerplate_terms, distinct_terms

    assert distinct_terms(["lord rings", "rings", "lord", "hobbit", "tolkien"], 3) == ["lord rings", "hobbit", "tolkien"]
    names = ["apple", "brick", "cloud", "delta", "ember", "fjord", "grove", "haven", "islet", "jewel", "koala",
             "lemon", "maple", "noble", "ocean"]
    docs = ["the user would likely enjoy dragons"] * 5 + [f"unique {w} here" for w in names]  # 20 documents
    stop = set(boilerplate_terms(docs, max_share=0.2))
    assert {"likely", "enjoy", "dragons", "the", "here", "unique"} <= stop  # in 25% or more of the documents
    assert not stop & set(names)  # each in 5%
