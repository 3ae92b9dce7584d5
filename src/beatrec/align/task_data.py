"""Stage-2 examples of every task (:mod:`beatrec.align.tasks`) and batches that hold one task each."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from beatrec.align.tasks import EXPLAIN, TASKS


def task_rows(frame: pd.DataFrame, tasks: Sequence[str], profile_ratio: float = 1.0, title_dropout: float = 0.0,
              seed: int = 0, profile_frame: pd.DataFrame | None = None) -> list[dict]:
    """Examples of ``tasks`` from the text rows ``frame`` (columns of ``explanations.jsonl``).

    ``explain``: one per row (uid, iid, title, explanation; ``title_dropout`` of them, seeded, with the title
    withheld). A profile task: one per distinct entity with a non-empty profile in ``profile_frame`` (default
    ``frame``; its first row), at most ``profile_ratio`` × len(frame) of them (a seeded subset). Each example
    carries ``task`` and ``target``. Only the rows given are read: pass training users' rows for training.
    """
    profile_frame = frame if profile_frame is None else profile_frame
    rng = np.random.default_rng([seed, 37])
    out: list[dict] = []
    for task in tasks:
        spec = TASKS[task]
        if task == EXPLAIN:
            drop = rng.random(len(frame)) < title_dropout
            for r, d in zip(frame[["uid", "iid", "title", "explanation"]].to_dict("records"), drop, strict=True):
                out.append({**r, "title": "" if d else r["title"], "task": task, "target": r["explanation"]})
            continue
        pf = profile_frame
        rows = pf.loc[pf[spec.target].astype(str).str.strip() != ""].drop_duplicates(spec.key)
        cap = max(1, int(profile_ratio * len(frame)))
        if len(rows) > cap:
            rows = rows.iloc[np.sort(rng.choice(len(rows), cap, replace=False))]
        for r in rows[[spec.key, spec.target]].to_dict("records"):
            out.append({spec.key: int(r[spec.key]), "task": task, "target": str(r[spec.target])})
    return out


class TaskBatches(Sampler[list[int]]):
    """Batches of row indices, each of one task: every task's rows in ``batch_size`` chunks (shuffled within
    the task when ``generator`` is given), and the chunks of all tasks in a shuffled order."""

    def __init__(self, rows: Sequence[dict], batch_size: int, generator: torch.Generator | None = None) -> None:
        self.tasks = [r.get("task", EXPLAIN) for r in rows]
        self.batch_size, self.generator = batch_size, generator

    def _chunks(self) -> list[list[int]]:
        out = []
        for task in dict.fromkeys(self.tasks):
            idx = torch.tensor([k for k, t in enumerate(self.tasks) if t == task])
            if self.generator is not None:
                idx = idx[torch.randperm(len(idx), generator=self.generator)]
            out += [idx[s : s + self.batch_size].tolist() for s in range(0, len(idx), self.batch_size)]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        chunks = self._chunks()
        order = range(len(chunks)) if self.generator is None else torch.randperm(len(chunks), generator=self.generator)
        for k in order:
            yield chunks[int(k)]

    def __len__(self) -> int:
        return sum(-(-self.tasks.count(t) // self.batch_size) for t in dict.fromkeys(self.tasks))
