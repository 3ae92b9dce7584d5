"""Instruction templates of LLM-BS's tasks (Comprehensive Interaction Modeling), all in one place.

Placeholders: ``{history}`` = the history items' code strings in time order, separated by ", ";
``{code}`` = one item's code string; ``{title}`` = an item title. The answer of the sequential-recommendation
task is the next item's code followed by the [CON] summary token (Global Contrast Decompression).
"""

from __future__ import annotations

SEQREC = (
    "A user interacted with these items, in order: {history}. Which item will the user interact with next?",
    "Here is a user's history: {history}. Predict the next item.",
)
CODE_TO_TITLE = ("What is the title of item {code}?",)
TITLE_TO_CODE = ('Which item is titled "{title}"?',)
PREFERENCE = (
    "A user interacted with these items, in order: {history}. Describe the user's preferences.",
)
ANSWER_CUE = "Answer:"
