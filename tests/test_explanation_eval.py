"""The evaluation harness (``beatrec evaluate``), prediction files and every baseline on the tiny synthetic
dataset with a tiny random LM: one prediction per test pair, no held-out text read, seeded determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_stage1

from beatrec.baselines.floor import floor_predictions
from beatrec.baselines.idgen import IdGenConfig, WordVocab, idgen_predictions, train_idgen
from beatrec.baselines.itemtext import ItemTextConfig, item_prompts, itemtext_predictions
from beatrec.baselines.registry import BaselineConfig, run_baseline
from beatrec.baselines.retrieval import nearest_training_pairs, retrieval_predictions
from beatrec.cli import main
from beatrec.config import from_dict
from beatrec.data.dataset import load_dataset
from beatrec.data.split import ZeroShotSplit, eval_pairs, training_texts
from beatrec.errors import DataError
from beatrec.evaluate import evaluate_predictions
from beatrec.lm import LMConfig
from beatrec.metrics.explanations import ScoreConfig, Scorer
from beatrec.predictions import read_predictions, write_predictions
from beatrec.tokenizer.embeddings import EMBEDDINGS, load_graph_embeddings

CHEAP = ScoreConfig(bertscore=False, lm_score=False, specificity=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data, run, lm = tiny_stage1(tmp_path_factory, seed=3)
    ds = load_dataset(data)
    split = ZeroShotSplit.load(run / "split.json")
    return {"data": data, "run": run, "lm": lm, "ds": ds, "split": split, "test": eval_pairs(ds, split, "test")}


def test_read_predictions_errors(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    with pytest.raises(DataError, match="not found"):
        read_predictions(p)
    for text, msg in [("", "empty"), ("\n\n", "empty"), ('{"uid": 1, "iid": 2, "prediction": "x"}\nnot json\n', "line 2: not valid JSON"),
                      ('{"uid": 1, "prediction": "x"}\n', "line 1: missing column 'iid'"),
                      ('{"uid": "a", "iid": 2, "prediction": "x"}\n', "uid must be an integer"),
                      ('{"uid": 1, "iid": 2, "prediction": 5}\n', "prediction must be a string"),
                      ('[1, 2]\n', "JSON object"),
                      ('{"uid": 1, "iid": 2, "prediction": "x"}\n{"uid": 1, "iid": 2, "prediction": "y"}\n', "occurs twice")]:
        p.write_text(text)
        with pytest.raises(DataError, match=msg):
            read_predictions(p)
    write_predictions(p, [1, 3], [2, 4], ["a", "b"])
    assert read_predictions(p).to_dict("records") == [{"uid": 1, "iid": 2, "prediction": "a"},
                                                      {"uid": 3, "iid": 4, "prediction": "b"}]


def test_harness_reports_missing_and_extra_pairs(env: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    test, ds, split = env["test"], env["ds"], env["split"]
    assert len(test) >= 5
    # perfect predictions for all but the first two test pairs, plus one pair outside the test set
    keep = test.iloc[2:]
    uids, iids, preds = keep["uid"].tolist() + [99999], keep["iid"].tolist() + [0], keep["explanation"].tolist() + ["x"]
    f = tmp_path / "pred.jsonl"
    write_predictions(f, uids, iids, preds)
    rep = evaluate_predictions(ds, split, read_predictions(f), Scorer(CHEAP), name="perfect")
    assert rep.n_test_pairs == len(test) and rep.scores.n == len(test) - 2
    assert rep.missing == [(int(u), int(i)) for u, i in test[["uid", "iid"]].to_numpy()[:2]]
    assert rep.extra == [(99999, 0)]
    assert rep.scores.bleu1 == pytest.approx(1.0) and rep.scores.rouge_l == pytest.approx(1.0)
    assert rep.floor.bleu1 < 1.0  # the floor is scored on the same pairs
    out = tmp_path / "ev"
    assert main(["evaluate", "--data", str(env["data"]), "--run", str(env["run"]), "--predictions", str(f),
                 "--out", str(out), "--no-bertscore", "--no-lm-score", "--no-specificity", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "2 test pair(s) have NO prediction" in printed and "1 prediction(s) are for pairs outside" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["missing_pairs"]["count"] == 2 and m["extra_pairs"]["count"] == 1 and m["n_scored"] == len(test) - 2
    assert m["missing_pairs"]["first"][0] == {"uid": int(test.uid[0]), "iid": int(test.iid[0])}
    assert m["metrics"]["bertscore_f1"] is None and m["floor"]["bleu1"] == pytest.approx(rep.floor.bleu1)
    md = (out / "metrics.md").read_text()
    assert "| perfect " not in md and "| pred |" in md and "floor" in md and "BLEU-1" in md


def test_harness_errors(env: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["evaluate", "--data", str(env["data"]), "--run", str(env["run"]), "--no-bertscore", "--no-lm-score",
            "--no-specificity", "--quiet", "--out", str(tmp_path / "o")]

    def err(extra: list[str]) -> str:
        assert main(base + extra) == 2
        return capsys.readouterr().err

    assert "not found" in err(["--predictions", str(tmp_path / "nope.jsonl")])
    (tmp_path / "e.jsonl").write_text("")
    assert "empty" in err(["--predictions", str(tmp_path / "e.jsonl")])
    (tmp_path / "c.jsonl").write_text('{"uid": 1, "iid": 2, "prediction": "x"}\n{"uid": 1,\n')
    assert "line 2: not valid JSON" in err(["--predictions", str(tmp_path / "c.jsonl")])
    write_predictions(tmp_path / "w.jsonl", [99999], [0], ["x"])
    assert "none of the" in err(["--predictions", str(tmp_path / "w.jsonl")])
    assert "no stage-2 artifacts" in err([])  # nothing to score and no aligned model to generate with


def test_floor_is_seeded_training_text(env: dict) -> None:
    ds, split = env["ds"], env["split"]
    a, b = floor_predictions(ds, split, 50, seed=1), floor_predictions(ds, split, 50, seed=1)
    assert a == b and a != floor_predictions(ds, split, 50, seed=2)
    assert set(a) <= set(training_texts(ds, split)["explanation"])


def test_embeddings_saved_and_recomputable(env: dict, tmp_path: Path) -> None:
    run = env["run"]
    saved = load_graph_embeddings(run)
    assert saved.user.shape == (env["ds"].n_users, 6 * 8) and saved.item.shape == (env["ds"].n_items, 6 * 8)
    old = tmp_path / "old"  # a stage-1 run written before embeddings.safetensors existed
    shutil.copytree(run, old)
    (old / EMBEDDINGS).unlink()
    again = load_graph_embeddings(old, env["data"])
    assert torch.allclose(again.user, saved.user, atol=1e-6) and torch.allclose(again.item, saved.item, atol=1e-6)


def test_retrieval_returns_only_training_texts(env: dict) -> None:
    ds, split, test = env["ds"], env["split"], env["test"]
    emb = load_graph_embeddings(env["run"])
    train = training_texts(ds, split)
    idx = nearest_training_pairs(ds, split, test, emb)
    assert idx.shape == (len(test),)
    assert set(train["uid"].iloc[idx]) <= set(split.train_users.tolist())  # never a val/test user's text
    preds = retrieval_predictions(ds, split, test, emb)
    assert preds == train["explanation"].iloc[idx].tolist()
    # a training pair's nearest training pair is itself (cosine 1), unless an identical key comes first
    self_idx = nearest_training_pairs(ds, split, train.iloc[:5], emb)
    keys = torch.cat([emb.user[torch.tensor(train.uid.to_numpy())], emb.item[torch.tensor(train.iid.to_numpy())]], 1)
    for j, k in enumerate(self_idx):
        assert k == j or torch.allclose(keys[k], keys[j])


def test_idgen_trains_on_training_users_only_and_is_seeded(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import beatrec.baselines.idgen as G

    ds, split, test = env["ds"], env["split"], env["test"]
    seen: list[str] = []
    real = G.WordVocab.__init__

    def spy(self, texts, *a):  # noqa: ANN001, ANN002
        seen.extend(texts)
        real(self, texts, *a)

    monkeypatch.setattr(G.WordVocab, "__init__", spy)
    cfg = IdGenConfig(emb_dim=8, hidden=16, epochs=4, batch_size=16, lr=1e-2, max_tokens=20)
    t1 = train_idgen(training_texts(ds, split), ds.n_users, ds.n_items, cfg)
    assert set(seen) <= set(training_texts(ds, split)["explanation"])
    held = set(eval_pairs(ds, split, "test")["explanation"]) | set(eval_pairs(ds, split, "val")["explanation"])
    assert not (set(seen) & held - set(training_texts(ds, split)["explanation"]))
    assert t1.losses[-1] < t1.losses[0]
    p1 = idgen_predictions(t1, test)
    t2 = train_idgen(training_texts(ds, split), ds.n_users, ds.n_items, cfg)
    assert p1 == idgen_predictions(t2, test) and len(p1) == len(test)
    assert all(0 < len(p.split()) <= 50 for p in p1)
    # unseen (zero-shot) users get the mean trained user embedding: all test users share one vector
    w = t1.model.user.weight
    assert torch.allclose(w[int(test.uid[0])], w[int(test.uid.iloc[-1])])


def test_word_vocab_round_trip() -> None:
    v = WordVocab(["The user's pick, truly great!", "The user's pick, truly great!"], 100, 2, 50)
    ids = v.encode("The user's pick, truly great!", 50, 80)
    assert v.decode(ids[1:]) == "the user's pick, truly great!"
    assert v.encode("unknown words", 50, 80)[1:-1] == [3, 3]


def test_itemtext_prompts_hold_no_user_information(env: dict) -> None:
    ds, split, test = env["ds"], env["split"], env["test"]
    msgs, own = item_prompts(ds, split, test)
    assert len(msgs) == len(test) and 0 <= own <= len(test)
    train_items = set(training_texts(ds, split)["iid"])
    for m, r in zip(msgs, test.itertuples(), strict=True):
        assert r.title in m and r.user_summary not in m and r.explanation not in m
        if r.iid not in train_items:
            assert r.item_summary.split(".")[0] in m
    cfg = ItemTextConfig(lm=LMConfig(name=str(env["lm"])), max_new_tokens=6, batch_size=4)
    out = itemtext_predictions(ds, split, test.iloc[:6], cfg)
    assert len(out.predictions) == 6 and all(len(p.split()) <= 50 for p in out.predictions)
    cfg.batch_size = 1  # batched (left-padded) greedy generation equals one at a time
    assert itemtext_predictions(ds, split, test.iloc[:6], cfg).predictions == out.predictions


def _bcfg(lm: Path) -> BaselineConfig:
    return from_dict(BaselineConfig, {
        "idgen": {"emb_dim": 8, "hidden": 16, "epochs": 1, "max_tokens": 12},
        "itemtext": {"lm": {"name": str(lm)}, "max_new_tokens": 5},
        "continuous": {"lm": {"name": str(lm)}, "model": {"projector_hidden": 16, "sar_pairs": 16},
                       "train": {"batch_size": 4, "max_steps": 2, "val_pairs": 4},
                       "generate": {"max_new_tokens": 5, "batch_size": 8}}})


@pytest.mark.parametrize("method", ["floor", "retrieval", "idgen", "itemtext", "continuous"])
def test_every_baseline_predicts_each_test_pair(env: dict, method: str) -> None:
    out = run_baseline(method, env["data"], env["run"], _bcfg(env["lm"]))
    test = env["test"]
    p = out.predictions
    assert p[["uid", "iid"]].values.tolist() == test[["uid", "iid"]].values.tolist()
    assert p["prediction"].map(lambda s: isinstance(s, str) and len(s.split()) <= 50).all()
    if method in ("floor", "retrieval"):
        assert set(p["prediction"]) <= set(training_texts(env["ds"], env["split"])["explanation"])
    if method == "continuous":
        meta = json.loads((env["run"] / "align_continuous" / "meta.json").read_text())
        assert meta["source"] == "continuous" and meta["code_dim"] == 8
        assert not (env["run"] / "align").exists()  # BEAT's own stage-2 directory is untouched
    again = run_baseline(method, env["data"], env["run"], _bcfg(env["lm"]))
    assert again.predictions.equals(p)  # seeded


def test_continuous_source_feeds_the_same_slots(env: dict) -> None:
    from beatrec.align.config import AlignModelConfig
    from beatrec.align.continuous import ContinuousVectors
    from beatrec.align.model import BehaviorLM
    from beatrec.lm import load_causal_lm

    src = ContinuousVectors.from_run(env["run"])
    emb = load_graph_embeddings(env["run"])
    ids = torch.tensor([0, 5])
    v = src.vectors("user", ids)
    assert v.shape == (2, 6, 8) and torch.allclose(v.flatten(1) * src.scale, emb.user[ids], atol=1e-6)
    model = BehaviorLM(load_causal_lm(LMConfig(name=str(env["lm"])))[0], src,
                       AlignModelConfig(projector_hidden=16, finetune="frozen"))
    assert model.behavior_embeds(ids, ids).shape == (2, 12, 32)
    assert {k for k, p in model.named_parameters() if p.requires_grad} == {
        "projector.slot", "projector.mlp.0.weight", "projector.mlp.0.bias", "projector.mlp.2.weight",
        "projector.mlp.2.bias"}


def test_xrec_coverage_and_baseline_cli(env: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    test = env["test"]
    half = test.iloc[: len(test) // 2]
    write_predictions(data / "xrec_predictions.jsonl", half.uid.tolist() + [0], half.iid.tolist() + [0],
                      ["xrec says " + t for t in half.explanation] + ["not a test pair"])
    out = tmp_path / "x.jsonl"
    assert main(["baseline", "--data", str(data), "--run", str(env["run"]), "--method", "xrec", "--out", str(out),
                 "--quiet"]) == 0
    assert f"({len(half)} of {len(test)} test pairs covered)" in capsys.readouterr().out
    got = read_predictions(out)
    assert len(got) == len(half) and got["prediction"].str.startswith("xrec says").all()
    assert main(["evaluate", "--data", str(data), "--run", str(env["run"]), "--predictions", str(out),
                 "--no-bertscore", "--no-lm-score", "--no-specificity", "--out", str(tmp_path / "ev")]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["missing_pairs"]["count"] == len(test) - len(half) and m["coverage"] == pytest.approx(len(half) / len(test))
    assert main(["baseline", "--data", str(env["data"]), "--run", str(env["run"]), "--method", "xrec",
                 "--out", str(out)]) == 2
    assert "xrec_predictions.jsonl: XRec's predictions are not in this dataset folder" in capsys.readouterr().err
    assert main(["baseline", "--data", str(env["data"]), "--run", str(env["run"]), "--method", "floor",
                 "--out", str(out), "--set", "seed=3"]) == 0
    assert read_predictions(out)["prediction"].tolist() == floor_predictions(env["ds"], env["split"], len(test), 3)




def test_evaluate_generates_with_the_runs_aligned_model(env: dict, tmp_path: Path) -> None:
    from beatrec.align.config import AlignConfig
    from beatrec.align.train import train_align

    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    cfg = from_dict(AlignConfig, {"lm": {"name": str(env["lm"])}, "model": {"projector_hidden": 16},
                                  "train": {"batch_size": 4, "max_steps": 1, "val_pairs": 4},
                                  "generate": {"max_new_tokens": 4, "batch_size": 8}})
    train_align(run, env["data"], cfg, progress=False)
    assert main(["evaluate", "--data", str(env["data"]), "--run", str(run), "--no-bertscore", "--no-lm-score",
                 "--no-specificity", "--quiet"]) == 0
    m = json.loads((run / "eval" / "beat" / "metrics.json").read_text())
    assert m["n_scored"] == len(env["test"]) and m["missing_pairs"]["count"] == 0
    assert len(read_predictions(run / "test_predictions.jsonl")) == len(env["test"])  # reused next time
    assert main(["evaluate", "--data", str(env["data"]), "--run", str(run), "--no-bertscore", "--no-lm-score",
                 "--no-specificity", "--quiet"]) == 0
    assert (run / "eval" / "test_predictions" / "metrics.json").is_file()
