"""Item-text prompting: the frozen LM sees only the item's title and summary (no user information).

The same frozen causal LM as BEAT (:func:`beatrec.lm.load_causal_lm`, chat template when it has one) is asked
:data:`ITEM_PROMPT`; generation is batched (left padding) and greedy with the stage-2 decoding settings,
capped at ``max_words`` words. It shows how far naming and describing the item goes, which matters when
reading specificity (DESIGN.md).

Item summary source: the item summary of a *training* user's row of the same item when there is one (item
summaries are one per item in the XRec data); otherwise the summary stored on the evaluated row itself. The
latter is an item-side profile given at inference time, never trained on; :func:`itemtext_predictions`
reports how many pairs needed it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd
import torch

from beatrec.align.prompt import cap_words
from beatrec.config import check
from beatrec.data.dataset import XRecDataset
from beatrec.data.split import ZeroShotSplit, training_texts
from beatrec.lm import LMConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ITEM_PROMPT = (
    "Item title: {title}. Item description: {summary} "
    "In one or two sentences, explain why a user would enjoy this item."
)


@dataclass
class ItemTextConfig:
    """Item-text prompting settings (decoding defaults = BEAT's :class:`~beatrec.align.config.GenerateConfig`)."""

    lm: LMConfig = field(default_factory=LMConfig)
    batch_size: int = 16
    max_new_tokens: int = 72
    max_words: int = 50
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 3
    max_summary_words: int = 120

    def validate(self) -> None:
        self.lm.validate()
        for name in ("batch_size", "max_new_tokens", "max_words", "max_summary_words"):
            check(getattr(self, name) >= 1, f"itemtext.{name} must be >= 1, got {getattr(self, name)}")
        check(self.repetition_penalty > 0, "itemtext.repetition_penalty must be > 0")
        check(self.no_repeat_ngram_size >= 0, "itemtext.no_repeat_ngram_size must be >= 0")


class ItemTextOutput(NamedTuple):
    predictions: list[str]
    n_summary_from_eval_row: int  # pairs whose item had no training row (summary taken from the pair itself)


def item_prompts(ds: XRecDataset, split: ZeroShotSplit, pairs: pd.DataFrame,
                 max_summary_words: int = 120) -> tuple[list[str], int]:
    """The user message for each row of ``pairs`` (uid, iid, title, item_summary) and how many used the row's
    own summary."""
    train = training_texts(ds, split)
    summary = dict(zip(train["iid"].astype(int), train["item_summary"].astype(str), strict=True))
    titles = dict(zip(train["iid"].astype(int), train["title"].astype(str), strict=True))
    msgs, own = [], 0
    for r in pairs.itertuples(index=False):
        iid = int(r.iid)
        s = summary.get(iid, "").strip()
        if not s:
            s = str(getattr(r, "item_summary", "") or "").strip()
            own += bool(s)
        t = titles.get(iid) or str(getattr(r, "title", "") or "")
        msgs.append(ITEM_PROMPT.format(title=t.strip(), summary=cap_words(s, max_summary_words)).strip())
    return msgs, own


@torch.no_grad()
def itemtext_predictions(ds: XRecDataset, split: ZeroShotSplit, pairs: pd.DataFrame, cfg: ItemTextConfig,
                         lm: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None) -> ItemTextOutput:
    """Greedy explanations from the item's title and summary only, one per row of ``pairs``."""
    from beatrec.lm import load_causal_lm

    cfg.validate()
    model, tok = lm or load_causal_lm(cfg.lm)
    msgs, own = item_prompts(ds, split, pairs, cfg.max_summary_words)
    if getattr(tok, "chat_template", None):
        texts = [tok.apply_chat_template([{"role": "user", "content": m}], tokenize=False, add_generation_prompt=True)
                 for m in msgs]
    else:
        texts = [m + "\nExplanation:" for m in msgs]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[str] = []
    for s in range(0, len(texts), cfg.batch_size):
        chunk = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[s : s + cfg.batch_size]]
        width = max(len(x) for x in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # left padding
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for b, x in enumerate(chunk):
            ids[b, width - len(x):] = torch.tensor(x)
            mask[b, width - len(x):] = 1
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cfg.max_new_tokens,
                                 do_sample=False, temperature=None, top_p=None, top_k=None,
                                 repetition_penalty=cfg.repetition_penalty,
                                 no_repeat_ngram_size=cfg.no_repeat_ngram_size or None,
                                 pad_token_id=pad, eos_token_id=tok.eos_token_id, use_cache=True)
        out += [cap_words(t, cfg.max_words) for t in tok.batch_decode(gen[:, width:], skip_special_tokens=True)]
    return ItemTextOutput(out, own)
