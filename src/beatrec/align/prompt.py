"""The stage-2 prompt: task words, placeholder slots for user and item behavior tokens, the item title.

Placeholders are *positions*, not new vocabulary: the prompt is tokenized around them and each slot holds the
pad id, whose embedding the model overwrites with a projected behavior token. The frozen LM's vocabulary and
embedding matrix are never touched.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from transformers import PreTrainedTokenizerBase

from beatrec.align.config import DEFAULT_TASK

USER_FIELD = "Behavior tokens of a user: {USER}. "
HISTORY_FIELD = "Items this user interacted with: {HISTORY}. "
ITEM_TOKENS_FIELD = "Behavior tokens of an item: {ITEM}. "
TITLE_FIELD = "Item title: {TITLE}. "
ITEM_FIELD = ITEM_TOKENS_FIELD + TITLE_FIELD
INSTRUCTION = USER_FIELD + ITEM_FIELD + DEFAULT_TASK  # BEAT's prompt with the default task sentence
_SLOT_MARKERS = {"\x01S\x01": "soft", "\x01U\x01": "user", "\x01I\x01": "item"}
_TEXT_MARKERS = {"\x01T\x01": "title", "\x01H\x01": "history"}
_MARKER = re.compile("(" + "|".join(map(re.escape, [*_SLOT_MARKERS, *_TEXT_MARKERS])) + ")")
_WORD = re.compile(r"\S+")


def cap_words(text: str, max_words: int) -> str:
    """The first ``max_words`` whitespace-separated words of ``text`` (whitespace normalised)."""
    return " ".join(_WORD.findall(text)[:max_words])


def pad_id(tok: PreTrainedTokenizerBase) -> int:
    """The id that fills slots and left padding: the LM's pad token, else its EOS."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def render_chat(tok: PreTrainedTokenizerBase, text: str, answer_cue: str) -> str:
    """``text`` as one user turn of the LM's chat template, ready for the answer (plain text + cue without one)."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return text + "\n" + answer_cue


class PromptIds(NamedTuple):
    ids: list[int]  # prompt token ids, slots hold the pad id
    slots: list[int]  # positions of the S behavior-token slots, in slot order (user slots, then item slots)
    soft: list[int]  # positions of the shared soft-prompt slots (empty without them)


class PromptBuilder:
    """Tokenizes prompts with ``n_user`` + ``n_item`` behavior-token slots (chat template when the LM has one).

    The user turn reads ``[n_soft soft-prompt slots]`` + :data:`USER_FIELD` (when ``n_user`` > 0) +
    :data:`HISTORY_FIELD` (when ``history``) + :data:`ITEM_TOKENS_FIELD` (when ``n_item`` > 0) +
    :data:`TITLE_FIELD` (when ``title``) + ``task``; with the defaults it is :data:`INSTRUCTION`. ``cue`` ends
    the prompt of an LM without a chat template. The profile tasks (:mod:`beatrec.align.tasks`) use the same
    builder with one side's slots and no title. Each variable text (title, history) is tokenized together with
    the constant text that
    follows it; constant text after a slot run is tokenized on its own, so slot positions are exact.
    """

    def __init__(self, tok: PreTrainedTokenizerBase, n_user: int, n_item: int, task: str = DEFAULT_TASK,
                 n_soft: int = 0, history: bool = False, title: bool = True, cue: str = "Explanation:") -> None:
        self.tok, self.n_user, self.n_item, self.n_soft, self.history = tok, n_user, n_item, n_soft, history
        self.title = title
        self.pad = pad_id(tok)
        text = ("\x01S\x01" if n_soft else "") + (USER_FIELD if n_user else "") + \
            (HISTORY_FIELD if history else "") + (ITEM_TOKENS_FIELD if n_item else "") + \
            (TITLE_FIELD if title else "") + task
        text = text.replace("{USER}", "\x01U\x01").replace("{ITEM}", "\x01I\x01").replace("{TITLE}", "\x01T\x01")
        text = text.replace("{HISTORY}", "\x01H\x01")
        rendered = render_chat(tok, text, cue)
        self._enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        parts = _MARKER.split(rendered)  # const, marker, const, marker, ..., const
        self._head = self._enc(parts[0])
        # per marker: (kind, constant text after it, its ids when it follows a slot run)
        self._segments = [(parts[i], parts[i + 1], self._enc(parts[i + 1]) if parts[i] in _SLOT_MARKERS else None)
                          for i in range(1, len(parts), 2)]
        self._post = parts[-1]

    @property
    def n_slots(self) -> int:
        return self.n_user + self.n_item

    def prompt(self, title: str = "", history: str | None = None) -> PromptIds:
        """Token ids and slot positions of the prompt for an item titled ``title`` (and the user's history
        text, required when the builder was made with ``history=True``)."""
        if self.history and history is None:
            raise ValueError("this prompt has a history field: pass the user's history text")
        ids = list(self._head)
        slots: list[int] = []
        soft: list[int] = []
        values = {"title": title, "history": history or ""}
        for marker, after, after_ids in self._segments:
            if marker in _SLOT_MARKERS:
                kind = _SLOT_MARKERS[marker]
                n = {"soft": self.n_soft, "user": self.n_user, "item": self.n_item}[kind]
                (soft if kind == "soft" else slots).extend(range(len(ids), len(ids) + n))
                ids += [self.pad] * n + after_ids
            else:
                ids += self._enc(values[_TEXT_MARKERS[marker]].strip() + after)
        return PromptIds(ids, slots, soft)

    def target(self, explanation: str, max_words: int, max_tokens: int) -> list[int]:
        """Token ids of the (word-capped) explanation followed by EOS."""
        ids = self._enc(" " + cap_words(explanation, max_words) if not self._post.endswith("\n") else
                        cap_words(explanation, max_words))
        return ids[: max_tokens - 1] + [self.tok.eos_token_id]
