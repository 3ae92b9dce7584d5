"""Stage-2 checkpoints (``train.checkpoint_every``): a training killed after a checkpoint and started again with
the same config resumes there and ends with the weights, history and validation record of an uninterrupted one
(machine settings such as threads may differ, at the price of float rounding);
a checkpoint of another config is ignored; a finished training leaves no checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_stage1
from safetensors.torch import load_file

from beatrec.align import train as T
from beatrec.align.config import AlignConfig
from beatrec.config import from_dict


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tiny_stage1(tmp_path_factory, seed=3)


def cfg(lm: Path, tasks: list[str], **train: object) -> AlignConfig:
    t = {"batch_size": 4, "epochs": 2, "val_pairs": 8, "log_every": 1, "lr": 1e-2, "evals_per_epoch": 2,
         "checkpoint_every": 3, "tasks": tasks, "anchor_warmup": 2,
         "threads": 1,  # one thread: bit-identical runs even on a loaded machine (MKL may drop threads under load)
         **train}
    return from_dict(AlignConfig, {"lm": {"name": str(lm)},
                                   "model": {"projector_hidden": 16, "sar_pairs": 16, "finetune": "lora",
                                             "lora_dropout": 0.5, "word_anchor": 1.0},
                                   "train": t})


class Killed(Exception):
    pass


@pytest.mark.parametrize("tasks", [["explain"], ["explain", "user_profile"]])
def test_a_resumed_training_ends_like_an_uninterrupted_one(stage1: tuple[Path, Path, Path], tasks: list[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data, run, lm = stage1
    c = cfg(lm, tasks)
    name = "_".join(tasks)
    whole = T.train_align(run, data, c, progress=False, subdir=f"whole_{name}")
    assert not (run / f"whole_{name}" / T.CHECKPOINT).exists()  # a finished training leaves none
    steps = int(whole.history["step"].max())
    assert steps > 6  # the kill below lands mid-training

    written = []
    real = T.write_checkpoint

    def write_then_die(path: Path, state: dict) -> None:  # the process dies right after its second checkpoint
        real(path, state)
        written.append(state["step"])
        if len(written) == 2:
            raise Killed

    monkeypatch.setattr(T, "write_checkpoint", write_then_die)
    with pytest.raises(Killed):
        T.train_align(run, data, c, progress=False, subdir=f"cut_{name}")
    monkeypatch.setattr(T, "write_checkpoint", real)
    assert written == [3, 6] and (run / f"cut_{name}" / T.CHECKPOINT).is_file()
    assert not (run / f"cut_{name}" / "weights.safetensors").exists()
    other_machine = from_dict(AlignConfig, {**_d(c), "train": {**_d(c)["train"], "threads": 2, "log_every": 2,
                                                                 "checkpoint_every": 5}})
    assert T.read_checkpoint(run / f"cut_{name}" / T.CHECKPOINT, other_machine, run)["step"] == 6  # machine settings
    assert T.read_checkpoint(run / f"cut_{name}" / T.CHECKPOINT, c, run / "elsewhere") is None  # other stage 1
    resumed = T.train_align(run, data, c, progress=False, subdir=f"cut_{name}")
    a, b = (load_file(str(run / f"{d}_{name}" / "weights.safetensors")) for d in ("whole", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = (load_file(str(run / f"{d}_{name}" / "adapter" / "adapter_model.safetensors")) for d in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.val_nll == whole.val_nll
    cols = ["step", "epoch", "loss", "nll", "lr"]
    assert resumed.history[cols].equals(whole.history[cols])
    assert not (run / f"cut_{name}" / T.CHECKPOINT).exists()


def _d(c: AlignConfig) -> dict:
    from beatrec.config import to_dict

    return to_dict(c)


def test_a_checkpoint_of_another_config_is_not_resumed(stage1: tuple[Path, Path, Path]) -> None:
    data, run, lm = stage1
    c = cfg(lm, ["explain"])
    T.write_checkpoint(run / "other" / T.CHECKPOINT,
                       {"config": T.checkpoint_identity(cfg(lm, ["explain"], lr=0.5), run), "step": 99})
    assert T.read_checkpoint(run / "other" / T.CHECKPOINT, c, run) is None
    assert T.read_checkpoint(run / "other" / T.CHECKPOINT, cfg(lm, ["explain"], lr=0.5), run)["step"] == 99
    res = T.train_align(run, data, c, progress=False, subdir="other")
    assert int(res.history["step"].iloc[0]) == 1  # trained from the start
    with pytest.raises(Exception, match="checkpoint_every"):
        cfg(lm, ["explain"], checkpoint_every=-1).validate()
