"""The bad-input suite: for every CLI command, the malformed inputs a user will hit each exit 2 with one line
naming the problem (no traceback), and leave no half-written run that looks complete."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import tiny_stage1

from beatrec.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dataset, a stage-1 run, and malformed variants of both."""
    data, run, _ = tiny_stage1(tmp_path_factory, seed=21)
    root = tmp_path_factory.mktemp("bad")
    w = {"data": data, "run": run, "missing": root / "nowhere", "empty_dir": root / "empty"}
    w["empty_dir"].mkdir()

    def dataset(name: str, interactions: str) -> Path:
        d = root / name
        d.mkdir()
        (d / "interactions.csv").write_text(interactions)
        shutil.copy(data / "explanations.jsonl", d / "explanations.jsonl")
        return d

    w["empty_csv"] = dataset("empty_csv", "")
    w["wrong_columns"] = dataset("wrong_columns", "person,thing\n0,1\n")
    w["non_integer"] = dataset("non_integer", "user,item\n0,1\nzero,2\n")
    corrupt = root / "corrupt_run"
    shutil.copytree(run, corrupt)
    blob = (corrupt / "tokenizer.safetensors").read_bytes()
    (corrupt / "tokenizer.safetensors").write_bytes(blob[: len(blob) // 3])  # truncated checkpoint
    w["corrupt_run"] = corrupt
    seq = root / "seqrec_run"  # a run directory of another command
    seq.mkdir()
    (seq / "run.json").write_text(json.dumps({"model": "sasrec", "n_items": 3, "n_users": 2, "data": str(data),
                                              "items_fingerprint": "0"}))
    w["seqrec_run"] = seq
    bad_json = root / "bad_json_run"
    bad_json.mkdir()
    (bad_json / "run.json").write_text("{not json")
    w["bad_json_run"] = bad_json
    return w


CASES: list[tuple[str, Callable[[dict[str, Path], Path], list[str]], str]] = [
    # (id, argv from (world, tmp), a piece of the expected one-line message)
    ("tokenize-missing-data", lambda w, t: ["tokenize", "--data", str(w["missing"]), "--out", str(t / "o")],
     "nowhere"),
    ("tokenize-empty-file", lambda w, t: ["tokenize", "--data", str(w["empty_csv"]), "--out", str(t / "o")],
     "interactions.csv"),
    ("tokenize-wrong-columns", lambda w, t: ["tokenize", "--data", str(w["wrong_columns"]), "--out", str(t / "o")],
     "user"),
    ("tokenize-unknown-graph-mode", lambda w, t: ["tokenize", "--data", str(w["data"]), "--out", str(t / "o"),
                                                  "--set", "train.graph=subgraph"], "train.graph"),
    ("tokenize-fanouts-per-layer", lambda w, t: ["tokenize", "--data", str(w["data"]), "--out", str(t / "o"),
                                                 "--set", "train.graph=sampled", "--set", "train.fanouts=[5,5]"],
     "one fan-out per LightGCN layer"),
    ("tokenize-zero-fanout", lambda w, t: ["tokenize", "--data", str(w["data"]), "--out", str(t / "o"),
                                           "--set", "train.fanouts=[5,0,5]"], "train.fanouts"),
    ("tokenize-non-integer-id", lambda w, t: ["tokenize", "--data", str(w["non_integer"]), "--out", str(t / "o")],
     "zero"),
    ("tokenize-unknown-key", lambda w, t: ["tokenize", "--data", str(w["data"]), "--out", str(t / "o"),
                                           "--set", "train.learning_rate=1e-3"], "learning_rate"),
    ("tokenize-wrong-type", lambda w, t: ["tokenize", "--data", str(w["data"]), "--out", str(t / "o"),
                                          "--set", "train.max_epochs=many"], "train.max_epochs"),
    ("align-not-a-run", lambda w, t: ["align", "--data", str(w["data"]), "--run", str(w["empty_dir"])], "empty"),
    ("align-wrong-type", lambda w, t: ["align", "--data", str(w["data"]), "--run", str(w["run"]),
                                       "--set", "train.lr=fast"], "train.lr"),
    ("explain-no-stage2", lambda w, t: ["explain", "--run", str(w["run"]), "--user", "0", "--item", "0"],
     "align"),
    ("explain-not-a-run", lambda w, t: ["explain", "--run", str(w["missing"]), "--user", "0", "--item", "0"],
     "nowhere"),
    ("evaluate-missing-predictions", lambda w, t: ["evaluate", "--data", str(w["data"]), "--run", str(w["run"]),
                                                   "--predictions", str(t / "none.jsonl")], "none.jsonl"),
    ("baseline-not-a-run", lambda w, t: ["baseline", "--data", str(w["data"]), "--run", str(w["empty_dir"]),
                                         "--method", "floor", "--out", str(t / "o")], "empty"),
    ("serve-not-a-run", lambda w, t: ["serve", "--run", str(w["empty_dir"]), "--port", "0"], "empty"),
    ("tokens-non-integer-item", lambda w, t: ["tokens", "--run", str(w["run"]), "--items", "1,two"], "two"),
    ("tokens-unknown-item", lambda w, t: ["tokens", "--run", str(w["run"]), "--items", "1,999999"], "999999"),
    ("tokens-corrupt-checkpoint", lambda w, t: ["tokens", "--run", str(w["corrupt_run"]), "--items", "1,2"],
     "tokenizer.safetensors"),
    ("tokens-run-of-another-command", lambda w, t: ["tokens", "--run", str(w["seqrec_run"]), "--items", "1"],
     "seqrec_run"),
    ("signal-missing-data", lambda w, t: ["signal", "--data", str(w["missing"])], "nowhere"),
    ("signal-non-integer-id", lambda w, t: ["signal", "--data", str(w["non_integer"])], "zero"),
    ("tokenize-unknown-init", lambda w, t: ["tokenize", "--data", str(w["data"]), "--out", str(t / "o"),
                                            "--set", "model.init=zeros"], "model.init"),
    ("align-unknown-task", lambda w, t: ["align", "--data", str(w["data"]), "--run", str(w["run"]),
                                         "--set", "train.tasks=[explain,poem]"], "train.tasks"),
    ("profile-no-stage2", lambda w, t: ["profile", "--run", str(w["run"]), "--user", "0"], "align"),
    ("attention-no-stage2", lambda w, t: ["attention", "--run", str(w["run"]), "--user", "0", "--item", "0"],
     "align"),
    ("vocab-not-a-run", lambda w, t: ["vocab", "--run", str(w["empty_dir"])], "empty"),
    ("demo-config-missing", lambda w, t: ["demo", "--out", str(t / "o"), "--config", str(t / "none.yaml")],
     "none.yaml"),
    ("seqrec-train-missing-data", lambda w, t: ["seqrec", "train", "--data", str(w["missing"]), "--model", "sasrec",
                                                "--out", str(t / "o")], "nowhere"),
    ("seqrec-train-wrong-type", lambda w, t: ["seqrec", "train", "--data", str(w["missing"]), "--model", "sasrec",
                                              "--out", str(t / "o"), "--set", "train.lr=fast"], "train.lr"),
    ("seqrec-evaluate-not-a-run", lambda w, t: ["seqrec", "evaluate", "--run", str(w["empty_dir"])], "run.json"),
    ("seqrec-evaluate-corrupt-run-json", lambda w, t: ["seqrec", "evaluate", "--run", str(w["bad_json_run"])],
     "corrupt"),
    ("seqrec-evaluate-beat-run", lambda w, t: ["seqrec", "evaluate", "--run", str(w["run"])], "run.json"),
    ("seqrec-compare-not-runs", lambda w, t: ["seqrec", "compare", str(w["empty_dir"]), str(w["missing"])],
     "run.json"),
]


@pytest.mark.parametrize(("argv", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(world: dict[str, Path], tmp_path: Path, argv, expected: str,  # noqa: ANN001
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(argv(world, tmp_path))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if "Loading weights" not in ln]  # a model's load bar may come first
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert expected in lines[0], err
    out = tmp_path / "o"  # nothing that looks like a finished run
    assert not any((out / f).exists() for f in ("metrics.json", "run.json", "user_tokens.parquet"))


def test_every_command_has_a_bad_input_case() -> None:
    from beatrec.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    covered = {c[0].split("-")[0] for c in CASES} | {"demo-data"}  # demo-data: see test_synthetic's CLI errors
    assert set(sub.choices) <= covered | {"demo"}, set(sub.choices) - covered
