"""LLM-BS training examples as next-token prediction (seed paper §3.2).

Three tasks over the training part of the leave-one-out split (no validation or test item is ever a target or
in a history here):

- **sequential recommendation**: history codes -> next item's code + [CON];
- **semantic reconstruction**: code -> title and title -> code (items with a title);
- **preference reconfiguration**: history -> a description of the user's preferences. The paper asks a large LM
  for these descriptions; offline we derive them from the history's titles (the most recent titles and the
  words the titles share most), a labelled simplification.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from beatrec.config import check
from beatrec.seqrec.data import PAD, Samples
from beatrec.seqrec.llmbs import templates as T

_STOP = {"the", "a", "an", "of", "and", "for", "with", "to", "in", "on", "by", "&", "-", "oz", "pack", "set"}


@dataclass
class TaskConfig:
    """Which tasks to build and how many examples of each (0 = none; -1 = all)."""

    seqrec: int = -1
    semantic: int = -1
    preference: int = 2000
    max_history: int = 10  # history items shown in a prompt (the most recent)
    seed: int = 0

    def validate(self) -> None:
        for name in ("seqrec", "semantic", "preference"):
            check(getattr(self, name) >= -1, f"tasks.{name} must be >= -1")
        check(self.max_history >= 1, "tasks.max_history must be >= 1")


class Example(NamedTuple):
    task: str  # "seqrec" | "code_to_title" | "title_to_code" | "preference"
    prompt: str
    target: str  # the answer text (seqrec: the code string; [CON] is appended by the collator)
    item: int  # the target item of seqrec examples (-1 otherwise)


def history_text(history: np.ndarray, code_text: list[str], max_history: int) -> str:
    items = [int(i) for i in history if i != PAD][-max_history:]
    return ", ".join(code_text[i] for i in items)


def preference_text(history: np.ndarray, titles: list[str]) -> str:
    """A templated preference description from the history's titles (most recent three, shared words)."""
    items = [int(i) for i in history if i != PAD]
    recent = [titles[i] for i in items[-3:] if titles[i]]
    words = Counter(w for i in items for w in set(re.findall(r"[a-z]+", titles[i].lower())) if w not in _STOP
                    and len(w) > 2)
    common = [w for w, c in words.most_common(3) if c > 1]
    text = "The user recently chose " + "; ".join(recent) + "." if recent else "The user has few titled items."
    if common:
        text += " They keep coming back to " + ", ".join(common) + "."
    return text


def _take(n: int, total: int, rng: np.random.Generator) -> np.ndarray:
    if n == -1 or n >= total:
        return np.arange(total)
    return np.sort(rng.choice(total, n, replace=False))


def build_examples(train: Samples, code_text: list[str], titles: list[str] | None, cfg: TaskConfig) -> list[Example]:
    """Examples of every configured task from the training windows (seeded subsets, deterministic)."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    out: list[Example] = []
    for r in _take(cfg.seqrec, len(train.target), rng):
        tpl = T.SEQREC[int(r) % len(T.SEQREC)]
        out.append(Example("seqrec", tpl.format(history=history_text(train.history[r], code_text, cfg.max_history)),
                           code_text[int(train.target[r])], int(train.target[r])))
    if titles is not None:
        titled = [i for i, t in enumerate(titles) if t]
        for i in _take(cfg.semantic, len(titled), rng):
            item = titled[int(i)]
            out.append(Example("code_to_title", T.CODE_TO_TITLE[0].format(code=code_text[item]), titles[item], -1))
            out.append(Example("title_to_code", T.TITLE_TO_CODE[0].format(title=titles[item]), code_text[item], -1))
        for r in _take(cfg.preference, len(train.target), rng):
            out.append(Example("preference", T.PREFERENCE[0].format(
                history=history_text(train.history[r], code_text, cfg.max_history)),
                preference_text(train.history[r], titles), -1))
    return out
