"""Multitask stage 2 (issue #37): the task registry's prompts, task rows from training users only, one task per
batch, each side's own slot embeddings, training and the learnt profile prompt, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_stage1

from beatrec.align.batch import collate_prompt, collate_train
from beatrec.align.config import AlignConfig, AlignModelConfig
from beatrec.align.model import BehaviorLM
from beatrec.align.task_data import TaskBatches, task_rows
from beatrec.align.tasks import TASK_IDS
from beatrec.align.vocab import BehaviorVocab
from beatrec.cli import main
from beatrec.config import from_dict
from beatrec.errors import ConfigError
from beatrec.lm import LMConfig, load_causal_lm

TASKS3 = ["explain", "user_profile", "item_profile"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tiny_stage1(tmp_path_factory, seed=4)


def cfg(lm: Path, **train: object) -> AlignConfig:
    t = {"batch_size": 4, "max_steps": 4, "val_pairs": 8, "log_every": 1, "lr": 1e-2, "select_best": False,
         "evals_per_epoch": 1, "schedule": "constant", "warmup_frac": 0.0, "tasks": TASKS3, **train}
    return from_dict(AlignConfig, {"lm": {"name": str(lm)}, "model": {"projector_hidden": 16, "sar_pairs": 16,
                                                                       "finetune": "frozen"},
                                   "train": t, "generate": {"max_new_tokens": 6, "batch_size": 3}})


def frame() -> pd.DataFrame:
    return pd.DataFrame({"uid": [0, 0, 1, 2], "iid": [5, 6, 5, 7], "title": ["A", "B", "A", "C"],
                         "user_summary": ["u0", "u0", "", "u2"], "item_summary": ["i5", "i6", "i5", "i7"],
                         "explanation": ["e0", "e1", "e2", "e3"]})


def test_task_rows_one_profile_per_entity_and_title_dropout() -> None:
    rows = task_rows(frame(), TASKS3)
    by = {t: [r for r in rows if r["task"] == t] for t in TASKS3}
    assert [r["target"] for r in by["explain"]] == ["e0", "e1", "e2", "e3"]
    assert [(r["uid"], r["target"]) for r in by["user_profile"]] == [(0, "u0"), (2, "u2")]  # user 1: empty
    assert sorted((r["iid"], r["target"]) for r in by["item_profile"]) == [(5, "i5"), (6, "i6"), (7, "i7")]
    capped = task_rows(frame(), ["user_profile"], profile_ratio=0.25)
    assert len(capped) == 1
    big = pd.concat([frame()] * 250, ignore_index=True)
    dropped = np.mean([r["title"] == "" for r in task_rows(big, ["explain"], title_dropout=0.3, seed=1)])
    assert 0.25 < dropped < 0.35


def test_task_batches_hold_one_task_and_cover_every_row() -> None:
    rows = task_rows(pd.concat([frame()] * 5, ignore_index=True), TASKS3)
    sampler = TaskBatches(rows, 3, torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(k for b in batches for k in b) == list(range(len(rows)))
    assert all(len({rows[k]["task"] for k in b}) == 1 for b in batches)
    assert [rows[b[0]]["task"] for b in batches] != sorted(rows[b[0]]["task"] for b in batches)  # interleaved


def test_profile_prompts_hold_one_side_and_no_title(stage1: tuple[Path, Path, Path]) -> None:
    _, run, lm_dir = stage1
    lm, tok = load_causal_lm(LMConfig(name=str(lm_dir)))
    m = BehaviorLM(lm, BehaviorVocab.from_run(run), AlignModelConfig(projector_hidden=16))
    up, ip, ex = (m.prompt_builder(tok, t) for t in ("user_profile", "item_profile", "explain"))
    assert (up.n_user, up.n_item, up.title) == (m.n_item_slots, 0, False)
    assert (ip.n_user, ip.n_item, ip.title) == (0, m.n_item_slots, False)
    text = tok.decode(up.prompt().ids)
    assert "describe this user" in text and "Item title" not in text and "item:" not in text
    assert "Item title: The Harbor" in tok.decode(ex.prompt("The Harbor").ids)
    batch = collate_prompt({"user_profile": up}, [{"uid": 3, "task": "user_profile"}])
    assert batch.slot_pos.shape == (1, m.n_item_slots) and int(batch.task[0]) == TASK_IDS["user_profile"]
    with pytest.raises(ValueError, match="one task"):
        collate_train({"explain": ex, "user_profile": up}, [{"uid": 1, "task": "user_profile", "target": "x"},
                                                            {"uid": 1, "iid": 2, "title": "t", "explanation": "y"}],
                      50, 32)


def test_each_side_keeps_its_slot_embeddings(stage1: tuple[Path, Path, Path]) -> None:
    _, run, lm_dir = stage1
    lm, _ = load_causal_lm(LMConfig(name=str(lm_dir)))
    m = BehaviorLM(lm, BehaviorVocab.from_run(run), AlignModelConfig(projector_hidden=16))
    with torch.no_grad():
        m.projector.slot.normal_()  # distinct slot embeddings (they start at 0)
    u, i = torch.tensor([1, 2]), torch.tensor([3, 4])
    both = m.behavior_embeds(u, i)  # (2, 2S, d)
    s = m.n_item_slots
    assert torch.allclose(m.behavior_embeds(u, i, ("user",)), both[:, :s])
    assert torch.allclose(m.behavior_embeds(u, i, ("item",)), both[:, s:])


def test_multitask_training_reads_training_users_only_and_writes_profiles(
        stage1: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import beatrec.align.train as T
    from beatrec.align.explain import load_aligned
    from beatrec.align.profile import learnt_profiles, user_profiles

    data, run, lm_dir = stage1
    split = json.loads((run / "split.json").read_text())
    texts = pd.read_json(data / "explanations.jsonl", lines=True)
    train_users = set(split["train_users"])
    train_items = set(texts.loc[texts["uid"].isin(train_users), "iid"])
    seen: dict[str, set] = {"trained_tasks": set(), "trained_users": set(), "trained_items": set(),
                            "validated_users": set()}
    real = T.collate_train

    def spy(builders, rows, **kw):  # noqa: ANN001, ANN003
        if torch.is_grad_enabled():
            seen["trained_tasks"].add(rows[0]["task"])
            seen["trained_users"].update(int(r["uid"]) for r in rows if "uid" in r)
            seen["trained_items"].update(int(r["iid"]) for r in rows if r["task"] == "item_profile")
        else:
            seen["validated_users"].update(int(r["uid"]) for r in rows if "uid" in r)
        return real(builders, rows, **kw)

    monkeypatch.setattr(T, "collate_train", spy)
    res = T.train_align(run, data, cfg(lm_dir, max_steps=0, epochs=1, val_pairs=0), progress=False)
    assert seen["trained_tasks"] == set(TASKS3)
    assert seen["trained_users"] <= train_users and seen["trained_items"] <= train_items
    assert seen["validated_users"] <= set(split["val_users"])
    assert not (seen["trained_users"] | seen["validated_users"]) & set(split["test_users"])
    metrics = json.loads((res.out_dir / "metrics.json").read_text())
    assert set(metrics["train_examples"]) == set(TASKS3) and metrics["train_examples"]["user_profile"] > 0

    a = load_aligned(run)
    test = split["test_users"][:3]
    got = user_profiles(a, test)
    assert got == learnt_profiles(a, "user_profile", test) and len(got) == 3
    assert len(learnt_profiles(a, "item_profile", [0, 1])) == 2
    assert main(["profile", "--run", str(run), "--user", str(test[0]), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == got[0]

    # profile_nll: each row's value is the training loss of that row alone, whatever the batch
    from beatrec.align.profile import profile_nll

    refs = ["cozy mysteries and strong characters", "fast pacing", "twist endings and clear instructions"]
    nll = profile_nll(a, "user_profile", test, refs)
    assert np.allclose(nll, profile_nll(a, "user_profile", test, refs, batch_size=1), atol=1e-5)
    builders = {"user_profile": a.model.prompt_builder(a.tok, "user_profile")}
    for j in range(3):
        one = collate_train(builders, [{"uid": test[j], "task": "user_profile", "target": refs[j]}],
                            a.cfg.model.max_words, a.cfg.model.max_target_tokens)
        with torch.no_grad():
            assert nll[j] == pytest.approx(a.model(one).nll.item(), rel=1e-4)
    neutral = profile_nll(a, "user_profile", test, refs, neutral=True)
    assert neutral.shape == (3,) and np.abs(neutral - nll).max() > 1e-6  # other tokens, other values
    with pytest.raises(ValueError, match="differ in length"):
        profile_nll(a, "user_profile", test, refs[:2])


def test_unknown_task_is_a_config_error(stage1: tuple[Path, Path, Path]) -> None:
    with pytest.raises(ConfigError, match="train.tasks"):
        cfg(stage1[2], tasks=["explain", "poem"])
