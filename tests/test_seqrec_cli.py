"""``beatrec seqrec train`` / ``evaluate`` end to end on tiny generated datasets."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from beatrec.cli import main
from beatrec.seqrec.codes import ItemCodes
from beatrec.seqrec.config import load_seqrec_config
from beatrec.seqrec.synthetic import SyntheticSeqConfig, write_seq_dataset
from beatrec.seqrec.train import evaluate_run, train_run

TINY = ["train.max_epochs=2", "behavior_train.max_epochs=2", "train.threads=1", "behavior_train.threads=1",
        "codes.k=4", "eager.d_model=16", "eager.n_heads=2", "eager.d_ff=32", "eager.enc_layers=1",
        "eager.dec_layers=1", "eager.beam_size=10", "sasrec.d_model=16", "sasrec.d_ff=32",
        "train.device=cpu", "behavior_train.device=cpu"]  # seeding and bit-for-bit resume are CPU guarantees


class ClusterEncoder:
    """Stand-in text encoder: 'collection c piece j' -> a vector that knows the cluster."""

    dim = 12

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            m = re.search(r"collection (\d+) piece (\d+)", t)
            assert m, t
            out[i, int(m.group(1)) % 8] = 1.0
            out[i, 8 + int(m.group(2)) % 4] = 0.3
        return out


def _sets(xs: list[str]) -> list[str]:
    return [a for x in xs for a in ("--set", x)]


def test_cli_train_and_evaluate_behavior_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_seq_dataset(SyntheticSeqConfig(n_users=80, with_text=False), tmp_path)
    run = tmp_path / "run"
    assert main(["seqrec", "train", "--data", str(data), "--model", "eager", "--out", str(run), "--quiet",
                 *_sets(TINY)]) == 0
    for f in ("config.yaml", "run.json", "model.safetensors", "metrics.json", "history.csv", "history.png",
              "codes_behavior.csv",
              "behavior/model.safetensors", "behavior/metrics.json"):
        assert (run / f).is_file(), f
    assert not (run / "codes_semantic.csv").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["streams"] == ["behavior"] and "no item text" in metrics["streams_note"]
    assert metrics["tasks"] == {"contrastive": True, "transfer": False}
    assert set(metrics["test"]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10", "n_users"}
    assert metrics["codes"]["behavior"]["unique_prefix_fraction"] <= 1.0
    assert "use_semantic: false" in (run / "config.yaml").read_text()  # the config that actually ran
    capsys.readouterr()
    assert main(["seqrec", "evaluate", "--run", str(run), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"])  # reloaded model, same ranking
    assert (run / "evaluation.json").is_file()
    # per-user rankings: written by training and by evaluate (the same lists), compared pairwise by `compare`
    pd.testing.assert_frame_equal(pd.read_csv(run / "evaluation_test_top10.csv"), pd.read_csv(run / "test_top10.csv"))
    sasrec = json.loads((run / "behavior/metrics.json").read_text())["test"]
    # the order audit runs once per run: on the EAGER run's data, not again for its nested behavior encoder
    assert metrics["order_audit"]["n_users"] == metrics["dataset"]["n_users"]
    assert json.loads((run / "behavior/metrics.json").read_text())["order_audit"] is None
    assert main(["seqrec", "compare", str(run / "behavior"), str(run), "--resamples", "200",
                 "--out", str(tmp_path / "cmp.json")]) == 0
    assert "| ndcg@10 |" in capsys.readouterr().out
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["n_users"] == metrics["test"]["n_users"] == 80
    for m in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):  # the per-user means are the runs' own test metrics
        assert cmp["metrics"][m]["a"] == pytest.approx(sasrec[m]) and cmp["metrics"][m]["b"] == pytest.approx(
            metrics["test"][m])


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_seq_dataset(SyntheticSeqConfig(n_users=10, with_text=False), tmp_path)
    assert main(["seqrec", "train", "--data", str(data), "--model", "tiger", "--out", str(tmp_path / "r"),
                 "--quiet", *_sets(TINY)]) == 2
    assert "needs item text" in capsys.readouterr().err
    assert main(["seqrec", "evaluate", "--run", str(tmp_path / "nothing")]) == 2
    assert "run.json missing" in capsys.readouterr().err
    assert main(["seqrec", "train", "--data", str(data), "--out", str(tmp_path / "r"),
                 "--set", "eager.merge=vote"]) == 2
    assert "eager.merge" in capsys.readouterr().err
    (data / "Synthetic.txt").write_text("1 1 2 3\n2 4 x\n")
    assert main(["seqrec", "train", "--data", str(data), "--model", "sasrec", "--out", str(tmp_path / "r")]) == 2
    assert "Synthetic.txt, line 2: non-integer item id 'x'" in capsys.readouterr().err


def test_two_stream_run_is_seeded(tmp_path: Path) -> None:
    data = write_seq_dataset(SyntheticSeqConfig(n_users=60), tmp_path)
    cfg = load_seqrec_config("eager", None, [*TINY, "train.max_epochs=1", "behavior_train.max_epochs=1"])
    a = train_run(data, tmp_path / "a", cfg, progress=False, encoder=ClusterEncoder())
    b = train_run(data, tmp_path / "b", cfg, progress=False, encoder=ClusterEncoder())
    assert a.metrics["streams"] == ["behavior", "semantic"] and a.metrics["tasks"]["transfer"]
    assert a.metrics["test"] == b.metrics["test"]
    wa, wb = load_file(str(tmp_path / "a/model.safetensors")), load_file(str(tmp_path / "b/model.safetensors"))
    assert all((wa[k] == wb[k]).all() for k in wa)
    sem = ItemCodes.load(tmp_path / "a/codes_semantic.csv")
    raw = pd.read_csv(tmp_path / "a/codes_semantic.csv", comment="#")["raw_item"].to_numpy() - 1
    # titles name the cluster: items of one cluster share the first semantic code
    for c in range(8):
        assert len(set(sem.codes[raw // 12 == c, 0])) == 1
    assert evaluate_run(tmp_path / "a", progress=False)["test"] == a.metrics["test"]
    # decoding another way without retraining: recorded in evaluation.json; a bad merge is a config error
    joint = evaluate_run(tmp_path / "a", progress=False, merge="joint", beam_size=12)
    assert (joint["merge"], joint["beam_size"]) == ("joint", 12)
    assert json.loads((tmp_path / "a/evaluation.json").read_text())["merge"] == "joint"
    aside = evaluate_run(tmp_path / "a", progress=False, merge="entropy", out_name="evaluation_entropy.json")
    assert json.loads((tmp_path / "a/evaluation_entropy.json").read_text()) == aside
    assert json.loads((tmp_path / "a/evaluation.json").read_text())["merge"] == "joint"  # left as it was
    assert main(["seqrec", "evaluate", "--run", str(tmp_path / "a"), "--merge", "vote", "--quiet"]) == 2
    assert main(["seqrec", "evaluate", "--run", str(tmp_path / "a" / "behavior"), "--merge", "joint",
                 "--quiet"]) == 2  # SASRec has no streams to merge


def test_interrupted_run_resumes_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A two-stream EAGER run killed after its 2nd epoch resumes from RUN/checkpoint.pt (the finished behavior
    encoder is reused, not retrained) and ends with exactly the weights, history and metrics of an
    uninterrupted run, also under another thread count; a changed config or a corrupt checkpoint is refused with a message, the file kept."""
    import beatrec.seqrec.train as tr
    from beatrec.errors import RunError

    data = write_seq_dataset(SyntheticSeqConfig(n_users=60), tmp_path)
    cfg = load_seqrec_config("eager", None, [*TINY, "train.max_epochs=3", "behavior_train.max_epochs=1",
                                             "train.patience=5"])
    full = train_run(data, tmp_path / "full", cfg, progress=False, encoder=ClusterEncoder())
    assert not (tmp_path / "full" / tr.CHECKPOINT).exists()  # removed once the run is complete
    save = tr.save_checkpoint

    def killed_after_epoch_2(path: Path, state: dict) -> None:
        save(path, state)
        if path.parent.name == "cut" and state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(tr, "save_checkpoint", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_run(data, tmp_path / "cut", cfg, progress=False, encoder=ClusterEncoder())
    ck = tmp_path / "cut" / tr.CHECKPOINT
    assert ck.is_file() and not (tmp_path / "cut" / "metrics.json").exists()
    behavior_mtime = (tmp_path / "cut" / "behavior" / "model.safetensors").stat().st_mtime_ns
    other = load_seqrec_config("eager", None, [*TINY, "train.max_epochs=3", "behavior_train.max_epochs=1",
                                               "train.patience=5", "train.lr=0.01"])
    with pytest.raises(RunError, match="another configuration"):
        train_run(data, tmp_path / "cut", other, progress=False, encoder=ClusterEncoder())
    shutil.copytree(tmp_path / "cut", tmp_path / "cut2")
    resumed = train_run(data, tmp_path / "cut", cfg, progress=False, encoder=ClusterEncoder())
    assert (tmp_path / "cut" / "behavior" / "model.safetensors").stat().st_mtime_ns == behavior_mtime
    assert resumed.metrics["test"] == full.metrics["test"] and resumed.metrics["training"] == full.metrics["training"]
    wa, wb = load_file(str(tmp_path / "full/model.safetensors")), load_file(str(tmp_path / "cut/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ha, hb = (pd.read_csv(tmp_path / d / "history.csv") for d in ("full", "cut"))
    pd.testing.assert_frame_equal(ha.drop(columns=["seconds", "eval_seconds"]),
                                  hb.drop(columns=["seconds", "eval_seconds"]))
    # threads and device are runtime settings: a run resumes on another thread count (epochs 1-2 come from the
    # checkpoint, so they match the uninterrupted run exactly; epoch 3 may differ in the last bits)
    other_threads = load_seqrec_config("eager", None, [*TINY, "train.max_epochs=3", "behavior_train.max_epochs=1",
                                                       "train.patience=5", "train.threads=2"])
    train_run(data, tmp_path / "cut2", other_threads, progress=False, encoder=ClusterEncoder())
    h2 = pd.read_csv(tmp_path / "cut2" / "history.csv")
    assert len(h2) == len(ha) == 3
    pd.testing.assert_frame_equal(ha.drop(columns=["seconds", "eval_seconds"])[:2],
                                  h2.drop(columns=["seconds", "eval_seconds"])[:2])
    ck.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="corrupt checkpoint"):
        train_run(data, tmp_path / "cut", cfg, progress=False, encoder=ClusterEncoder())
    assert ck.read_bytes() == b"not a checkpoint"


def test_tiger_preset(tmp_path: Path) -> None:
    cfg = load_seqrec_config("tiger", None, ["eager.beam_size=5"])
    assert cfg.model == "tiger" and cfg.eager.streams == ("semantic",)
    assert not cfg.eager.use_contrastive and not cfg.eager.use_transfer and cfg.eager.beam_size == 5
    data = write_seq_dataset(SyntheticSeqConfig(n_users=40), tmp_path)
    r = train_run(data, tmp_path / "t", load_seqrec_config("tiger", None, [*TINY, "train.max_epochs=1"]),
                  progress=False, encoder=ClusterEncoder())
    assert r.metrics["streams"] == ["semantic"] and not (tmp_path / "t/behavior").exists()


def test_eager_official_preset(tmp_path: Path) -> None:
    cfg = load_seqrec_config("eager-official", None, ["train.patience=3"])
    e = cfg.eager
    assert cfg.model == "eager-official" and e.streams == ("behavior", "semantic")
    assert (e.contrastive_weight, e.semantic_contrastive_scale, e.temperature, e.contrastive_negatives,
            e.transfer_weight, e.sibling_softmax) == (1.0, 10.0, 0.3, 2048, 1.0, True)
    assert (cfg.train.lr_schedule, cfg.train.warmup_steps, cfg.train.val_users) == ("inverse_sqrt", 2000, 0)
    assert cfg.train.patience == 3  # --set wins over the preset
    data = write_seq_dataset(SyntheticSeqConfig(n_users=40), tmp_path)
    sets = [*TINY, "train.max_epochs=1", "eager.contrastive_negatives=16"]
    r = train_run(data, tmp_path / "o", load_seqrec_config("eager-official", None, sets), progress=False,
                  encoder=ClusterEncoder())
    assert r.metrics["model"] == "eager-official" and r.metrics["streams"] == ["behavior", "semantic"]


def test_llmbs_cli_end_to_end_tiny_lm(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`seqrec train --model llmbs` on a tiny random LM: index, tasks, both stages, metrics with and without the
    annealing adapter, only valid items recommended (full-ranking metrics computed from the constrained lists)."""
    from tiny_lm import save_tiny_lm

    data = write_seq_dataset(SyntheticSeqConfig(n_users=30), tmp_path)
    lm = save_tiny_lm(tmp_path / "lm")
    run = tmp_path / "run"
    assert main(["seqrec", "train", "--data", str(data), "--model", "llmbs", "--out", str(run), "--quiet",
                 *_sets([f"lm.name={lm}", "index.k=4", "tasks.preference=10", "train.batch_size=16",
                         "behavior_train.max_epochs=1", "beam=10",
                         "anneal_users=10", "eval_batch_size=8"])]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["index"] == "dual" and m["stage1"]["steps"] >= 1 and m["anneal"]["steps"] == 1
    for key in ("test", "val", "test_without_adapter"):
        assert set(m[key]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10", "n_users"} and m[key]["n_users"] == 30
    assert (run / "codes_llmbs.csv").is_file() and (run / "llmbs_trained.safetensors").is_file()
    assert "anneal_users: 10" in (run / "config.yaml").read_text()
    # `seqrec evaluate` rebuilds the run (code tokens, both adapters, trained rows) and ranks exactly as trained
    capsys.readouterr()
    assert main(["seqrec", "evaluate", "--run", str(run), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ev = json.loads((run / "evaluation.json").read_text())
    for key in ("test", "val", "test_without_adapter"):
        assert ev[key] == pytest.approx(m[key]), key
    assert printed["model"] == "llmbs" and printed["ndcg@10"] == pytest.approx(m["test"]["ndcg@10"])
    trained = pd.read_csv(run / "test_top10.csv")
    assert trained.shape == (30, 11) and trained.iloc[:, 1:].nunique(axis=1).eq(10).all()
    pd.testing.assert_frame_equal(pd.read_csv(run / "evaluation_test_top10.csv"), trained)  # the same 300 items
    (run / "llmbs_trained.safetensors").write_bytes(b"\0" * 10)
    assert main(["seqrec", "evaluate", "--run", str(run), "--quiet"]) == 2
    assert "llmbs_trained.safetensors: corrupt" in capsys.readouterr().err
    assert main(["seqrec", "train", "--data", str(data), "--model", "llmbs", "--out", str(run), "--quiet",
                 "--set", "beam=5"]) == 2
    assert "beam must be >= 10" in capsys.readouterr().err


def test_device_resolution_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from beatrec.errors import ConfigError
    from beatrec.runtime import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="not a torch device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
        data = write_seq_dataset(SyntheticSeqConfig(n_users=10, with_text=False), tmp_path)
        assert main(["seqrec", "train", "--data", str(data), "--model", "sasrec", "--out", str(tmp_path / "r"),
                     "--quiet", *_sets([*TINY, "train.device=cuda"])]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_two_stream_run_on_cuda(tmp_path: Path) -> None:
    """Training, beam search and evaluation on the GPU: valid rankings, CPU weights on disk, reloadable on the
    CPU with the same test metrics (the CUDA and CPU rankings of one model agree)."""
    data = write_seq_dataset(SyntheticSeqConfig(n_users=60), tmp_path)
    cfg = load_seqrec_config("eager", None, [*TINY, "train.device=cuda", "behavior_train.device=cuda"])
    res = train_run(data, tmp_path / "g", cfg, progress=False, encoder=ClusterEncoder())
    assert res.metrics["machine"]["device"].startswith("cuda")
    assert all(v.device.type == "cpu" for v in load_file(str(tmp_path / "g/model.safetensors")).values())
    on_cpu = evaluate_run(tmp_path / "g", progress=False, device="cpu")
    assert on_cpu["test"]["ndcg@10"] == pytest.approx(res.metrics["test"]["ndcg@10"], abs=0.02)


def test_time_budget_stops_after_first_evaluation(tmp_path: Path) -> None:
    data = write_seq_dataset(SyntheticSeqConfig(n_users=40, with_text=False), tmp_path)
    cfg = load_seqrec_config("sasrec", None, [*TINY, "train.max_epochs=5", "train.max_minutes=0.000001"])
    res = train_run(data, tmp_path / "r", cfg, progress=False)
    assert res.metrics["training"]["epochs_run"] == 1 and res.metrics["training"]["out_of_time"]
    assert not res.metrics["training"]["stopped_early"]
    assert len(pd.read_csv(tmp_path / "r/history.csv")) == 1


def test_saved_config_predating_an_option_reads_as_what_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run config saved before an option existed takes that option's legacy value (what it ran with), not
    today's default; a file that names the option keeps its own value."""
    import beatrec.seqrec.config as tr
    from beatrec.config import save_yaml
    from beatrec.errors import ConfigError

    monkeypatch.setattr(tr, "LEGACY", {**tr.LEGACY, "eager.beam_size": 7})
    cfg = load_seqrec_config("eager", None, ["eager.code_tokens=prefix", "eager.beam_size=9"])
    save_yaml(cfg, tmp_path / "new.yaml")
    assert tr.read_run_config(tmp_path / "new.yaml") == cfg
    text = (tmp_path / "new.yaml").read_text()
    old = "\n".join(ln for ln in text.splitlines() if not any(k in ln for k in ("code_tokens", "tie_items", "beam_size")))
    (tmp_path / "old.yaml").write_text(old)
    got = tr.read_run_config(tmp_path / "old.yaml")
    assert (got.eager.code_tokens, got.eager.tie_items, got.eager.beam_size) == ("shared", False, 7)
    (tmp_path / "bad.yaml").write_text("eager: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        tr.read_run_config(tmp_path / "bad.yaml")


def test_an_option_at_its_legacy_value_is_not_part_of_the_experiment() -> None:
    """experiment() leaves out options at the value runs had before the option existed, so a checkpoint or a
    finished benchmark row saved before the option was added is still the same experiment."""
    from beatrec.seqrec.config import experiment

    base = experiment(load_seqrec_config("eager", None, ["eager.tie_items=false"]))  # as before the option
    assert "tie_items" not in base["eager"] and base["eager"]["code_tokens"] == "prefix"
    tied = experiment(load_seqrec_config("eager"))  # today's default
    assert tied["eager"]["tie_items"] is True and tied != base
    tied["eager"].pop("tie_items")
    assert tied == base
    assert "code_tokens" not in experiment(load_seqrec_config("tiger"))["eager"]  # shared: the legacy scheme
    for sec in ("train", "behavior_train"):
        assert not {"lr_schedule", "warmup_steps"} & set(base[sec])
    decayed = experiment(load_seqrec_config("sasrec", None, ["train.lr_schedule=inverse_sqrt", "train.warmup_steps=9"]))
    assert (decayed["train"]["lr_schedule"], decayed["train"]["warmup_steps"]) == ("inverse_sqrt", 9)
