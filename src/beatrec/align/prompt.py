"""The stage-2 prompt: task words, placeholder slots for user and item behavior tokens, the item title.

Placeholders are *positions*, not new vocabulary: the prompt is tokenized around them and each slot holds the
pad id, whose embedding the model overwrites with a projected behavior token. The frozen LM's vocabulary and
embedding matrix are never touched.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from transformers import PreTrainedTokenizerBase

INSTRUCTION = (
    "Behavior tokens of a user: {USER}. Behavior tokens of an item: {ITEM}. Item title: {TITLE}. "
    "In one or two sentences, explain why this user would enjoy this item."
)
_WORD = re.compile(r"\S+")


def cap_words(text: str, max_words: int) -> str:
    """The first ``max_words`` whitespace-separated words of ``text`` (whitespace normalised)."""
    return " ".join(_WORD.findall(text)[:max_words])


def render_chat(tok: PreTrainedTokenizerBase, text: str, answer_cue: str) -> str:
    """``text`` as one user turn of the LM's chat template, ready for the answer (plain text + cue without one)."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return text + "\n" + answer_cue


class PromptIds(NamedTuple):
    ids: list[int]  # prompt token ids, slots hold the pad id
    slots: list[int]  # positions of the S placeholder slots, in slot order (user slots, then item slots)


class PromptBuilder:
    """Tokenizes prompts with ``n_user`` + ``n_item`` placeholder slots (chat template when the LM has one)."""

    def __init__(self, tok: PreTrainedTokenizerBase, n_user: int, n_item: int) -> None:
        self.tok, self.n_user, self.n_item = tok, n_user, n_item
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        marker_u, marker_i, marker_t = "\x01U\x01", "\x01I\x01", "\x01T\x01"
        text = INSTRUCTION.replace("{USER}", marker_u).replace("{ITEM}", marker_i).replace("{TITLE}", marker_t)
        rendered = render_chat(tok, text, "Explanation:")
        pre, rest = rendered.split(marker_u)
        mid, rest = rest.split(marker_i)
        self._title_pre, self._post = rest.split(marker_t)
        enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        self._pre, self._mid = enc(pre), enc(mid)
        self._title_pre_ids = enc(self._title_pre)
        self._enc = enc

    @property
    def n_slots(self) -> int:
        return self.n_user + self.n_item

    def prompt(self, title: str) -> PromptIds:
        """Token ids and slot positions of the prompt for an item titled ``title``."""
        ids = list(self._pre)
        slots = list(range(len(ids), len(ids) + self.n_user))
        ids += [self.pad] * self.n_user + self._mid
        slots += list(range(len(ids), len(ids) + self.n_item))
        ids += [self.pad] * self.n_item + self._title_pre_ids + self._enc(title.strip() + self._post)
        return PromptIds(ids, slots)

    def target(self, explanation: str, max_words: int, max_tokens: int) -> list[int]:
        """Token ids of the (word-capped) explanation followed by EOS."""
        ids = self._enc(" " + cap_words(explanation, max_words) if not self._post.endswith("\n") else
                        cap_words(explanation, max_words))
        return ids[: max_tokens - 1] + [self.tok.eos_token_id]
