"""End-to-end tests of ``beatrec tokenize`` on the synthetic dataset: artifacts, planted-structure recovery,
the zero-shot guarantee, determinism, and the CLI's error paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score, roc_auc_score
from sklearn.model_selection import cross_val_predict

from beatrec.cli import main
from beatrec.config import from_dict
from beatrec.data.synthetic import SyntheticConfig, write_dataset
from beatrec.extract.base import ExtractorConfig
from beatrec.extract.registry import make_extractor
from beatrec.text_encoder import TextEncoder, TextEncoderConfig
from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

FAST = {
    "model": {"n_codes": 16, "part_dim": 16, "code_dim": 16},
    "train": {"batch_size": 256, "max_epochs": 8, "patience": 3, "seed": 0},
    "extractor": {"kind": "splitter"},
}


def fast_config(**train: object) -> TokenizeConfig:
    d = json.loads(json.dumps(FAST))
    d["train"].update(train)
    return from_dict(TokenizeConfig, d)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATREC_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(TextEncoderConfig(), cache=False)


def test_run_directory_artifacts(planted_run: tuple[Path, Path]) -> None:
    data, run = planted_run
    for name in ("config.yaml", "split.json", "user_tokens.parquet", "item_tokens.parquet", "codebooks.safetensors",
                 "tokenizer.safetensors", "metrics.json", "history.csv", "loss_curves.png", "codebook_usage.png",
                 "phrases_users.jsonl", "phrases_items.jsonl"):
        assert (run / name).is_file(), name
    cfg = from_dict(TokenizeConfig, yaml.safe_load((run / "config.yaml").read_text()))
    assert cfg.model.n_codes == 16 and cfg.train.beta == 5.0
    users = pd.read_parquet(run / "user_tokens.parquet")
    assert list(users.columns) == ["id", "macro"] + [f"micro_{j}" for j in range(1, 6)]
    assert len(users) == 400 and users["macro"].between(0, 15).all()
    m = json.loads((run / "metrics.json").read_text())
    test = m["ranking"]["test"]
    assert test["quantized_hr@20"] > 2 * test["popularity_hr@20"]
    assert test["quantized_hr@20"] >= 0.8 * test["continuous_hr@20"]
    assert m["codebooks"]["user_micro"]["used_fraction"] >= 0.5


def _intent_probe_auc(bags: np.ndarray, has_intent: np.ndarray) -> float:
    """Mean over intents of the 5-fold cross-validated ROC AUC of a logistic probe predicting 'user has
    intent k' from the user's bag of micro codes (0.5 = no information)."""
    aucs = []
    for k in range(has_intent.shape[1]):
        y = has_intent[:, k]
        if y.sum() < 5 or (1 - y).sum() < 5:
            continue
        p = cross_val_predict(LogisticRegression(max_iter=2000), bags, y, cv=5, method="predict_proba")[:, 1]
        aucs.append(roc_auc_score(y, p))
    return float(np.mean(aucs))


def test_tokens_recover_planted_structure(planted_run: tuple[Path, Path]) -> None:
    data, run = planted_run
    planted = json.loads((data / "planted.json").read_text())
    users = pd.read_parquet(run / "user_tokens.parquet")
    genre = np.asarray(planted["user_genre"])
    rng = np.random.default_rng(0)
    nmi = normalized_mutual_info_score(genre, users["macro"])
    chance = max(normalized_mutual_info_score(rng.permutation(genre), users["macro"]) for _ in range(20))
    assert nmi > 0.5 and nmi > 3 * chance, (nmi, chance)
    items = pd.read_parquet(run / "item_tokens.parquet")
    assert normalized_mutual_info_score(np.asarray(planted["item_genre"]), items["macro"]) > 0.5
    # Micro tokens carry the planted intents of the users whose texts supervised them (training users).
    split = json.loads((run / "split.json").read_text())
    held = set(split["test_users"]) | set(split["val_users"])
    text_users = np.array(sorted(set(pd.read_json(data / "explanations.jsonl", lines=True)["uid"]) - held))
    micro = users[[f"micro_{j}" for j in range(1, 6)]].to_numpy()[text_users]  # (n, 5)
    bags = np.zeros((len(text_users), 16))
    for j in range(micro.shape[1]):
        np.add.at(bags, (np.arange(len(text_users)), micro[:, j]), 1.0)
    intents = np.asarray(planted["user_intents"])[text_users]  # (n, k)
    has = np.zeros((len(text_users), int(np.max(planted["user_intents"])) + 1))
    np.put_along_axis(has, intents, 1.0, axis=1)
    real = _intent_probe_auc(bags, has)
    shuffled = [_intent_probe_auc(bags, has[rng.permutation(len(has))]) for _ in range(3)]
    print(f"macro NMI {nmi:.3f} (chance {chance:.3f}); micro intent probe AUC {real:.3f} (shuffled {shuffled})")
    assert real > max(shuffled) + 0.06 and real > 0.58, (real, shuffled)


def test_zero_shot_texts_never_reach_training(tmp_path: Path, encoder: TextEncoder) -> None:
    data = write_dataset(SyntheticConfig(n_users=200, n_items=120, seed=3), tmp_path / "data")
    marker = "ZQXHELDOUTMARKER"
    rows = pd.read_json(data / "explanations.jsonl", lines=True)
    from beatrec.data.dataset import load_dataset
    from beatrec.data.split import make_zero_shot_split

    cfg = fast_config(max_epochs=2)
    split = make_zero_shot_split(load_dataset(data), cfg.split)
    held = set(split.val_users.tolist()) | set(split.test_users.tolist())
    is_held = rows["uid"].isin(held)
    for col in ("user_summary", "item_summary", "explanation", "title"):
        rows.loc[is_held, col] = rows.loc[is_held, col] + f" {marker}"
    rows.to_json(data / "explanations.jsonl", orient="records", lines=True)
    assert marker in (data / "explanations.jsonl").read_text()  # the test can fail

    seen_encoder: list[str] = []
    seen_extractor: list[str] = []
    encoder.on_encode = seen_encoder.extend
    inner = make_extractor(ExtractorConfig(kind="splitter"))

    class Spy:
        identity = inner.identity
        n_phrases = inner.n_phrases

        def extract(self, kind: str, docs: list[list[str]], progress: bool = False) -> list[list[str] | None]:
            seen_extractor.extend(t for d in docs for t in d)
            return inner.extract(kind, docs, progress)

    run = tmp_path / "run"
    try:
        run_tokenize(data, run, cfg, progress=False, encoder=encoder, extractor=Spy())
    finally:
        encoder.on_encode = None
    assert seen_encoder and seen_extractor  # training did read texts
    assert not any(marker in t for t in seen_encoder + seen_extractor)
    cache = Path(__import__("os").environ["BEATREC_CACHE"])
    for f in list(run.rglob("*")) + list(cache.rglob("*")):
        if f.is_file():
            assert marker.encode() not in f.read_bytes(), f
    # and the held-out users' edges stay in the graph: they still get tokens
    users = pd.read_parquet(run / "user_tokens.parquet")
    assert set(held) <= set(users["id"])


def test_same_seed_same_tokens(tmp_path: Path, synthetic_dir: Path, encoder: TextEncoder) -> None:
    # threads=1: with several threads, BLAS reductions may be ordered differently from run to run
    cfg = fast_config(max_epochs=2, threads=1)
    a = run_tokenize(synthetic_dir, tmp_path / "a", cfg, progress=False, encoder=encoder).run_dir
    b = run_tokenize(synthetic_dir, tmp_path / "b", cfg, progress=False, encoder=encoder).run_dir
    pd.testing.assert_frame_equal(pd.read_parquet(a / "user_tokens.parquet"), pd.read_parquet(b / "user_tokens.parquet"))
    assert (a / "split.json").read_text() == (b / "split.json").read_text()


def test_cli_demo_data_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo-data", "--out", str(out), "--users", "120", "--items", "80"]) == 0
    assert (out / "interactions.csv").is_file()
    # missing dataset directory
    assert main(["tokenize", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err
    # unknown config key
    assert main(["tokenize", "--data", str(out), "--out", str(tmp_path / "r"), "--set", "train.epochz=3"]) == 2
    assert "epochz" in capsys.readouterr().err
    # a corrupt row: non-integer id, named with file and line
    csv = out / "interactions.csv"
    lines = csv.read_text().splitlines()
    lines[3] = "abc," + lines[3].split(",", 1)[1]
    csv.write_text("\n".join(lines) + "\n")
    assert main(["tokenize", "--data", str(out), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "interactions.csv" in err and "line 4" in err
    # a config file that is not YAML
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["tokenize", "--data", str(out), "--out", str(tmp_path / "r"), "--config", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_min_steps_holds_off_early_stopping(tmp_path: Path, synthetic_dir: Path, encoder: TextEncoder) -> None:
    # patience 1 stops this seeded run early; a floor of steps above the whole budget makes it run every epoch
    def training(name: str, **train: object) -> dict:
        cfg = fast_config(max_epochs=6, patience=1, threads=1, **train)
        run = run_tokenize(synthetic_dir, tmp_path / name, cfg, progress=False, encoder=encoder).run_dir
        return json.loads((run / "metrics.json").read_text())["training"]

    free, held = training("free", min_steps=0), training("held", min_steps=10_000)
    assert free["stopped_early"] and free["epochs_run"] < 6
    assert not held["stopped_early"] and held["epochs_run"] == 6
    hist = pd.read_csv(tmp_path / "held" / "history.csv")
    assert held["best_val_hr"] == pytest.approx(hist.loc[hist.epoch == held["best_epoch"], "val_hr"].item())
