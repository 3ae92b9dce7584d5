"""The registry of stage-2 tasks: what a prompt holds and which text it is trained to write (issue #37).

BEAT's stage 2 teaches the LM one task, the explanation of a (user, item) pair (eq. 12). A user's explanation
references mostly depend on the item (``beatrec signal``), so the LM can do well on them without reading the
user's tokens. Two more tasks make the tokens themselves the only source of the answer:

- ``user_profile``: the user's behavior tokens alone -> the user's ``user_summary`` (a profile written from
  the user's reviews; it depends on the user, and the graph predicts it);
- ``item_profile``: the item's behavior tokens alone, no title -> the item's ``item_summary``.

Each task has its own instruction; ``train.tasks`` names the tasks stage 2 learns (multitask training on
training users' texts only) and ``train.profile_ratio`` how many examples of each profile task are drawn per
explanation pair.
"""

from __future__ import annotations

from typing import NamedTuple

USER_PROFILE_TASK = "In one or two sentences, describe this user's interests and preferences."
ITEM_PROFILE_TASK = "In one or two sentences, describe this item and who would enjoy it."


class TaskSpec(NamedTuple):
    """One stage-2 task.

    Attributes:
        name: registry key. sides: which entities' behavior tokens fill slots (user slots first).
        title: the prompt shows the item's title. instruction: the task sentence (``None``: ``model.task``).
        target: the dataset column the task writes. key: the id column of the entity one example is about
            (profile tasks have one example per entity). cue: the answer cue of LMs without a chat template.
    """

    name: str
    sides: tuple[str, ...]
    title: bool
    instruction: str | None
    target: str
    key: str | None
    cue: str


TASKS: dict[str, TaskSpec] = {
    "explain": TaskSpec("explain", ("user", "item"), True, None, "explanation", None, "Explanation:"),
    "user_profile": TaskSpec("user_profile", ("user",), False, USER_PROFILE_TASK, "user_summary", "uid", "Profile:"),
    "item_profile": TaskSpec("item_profile", ("item",), False, ITEM_PROFILE_TASK, "item_summary", "iid",
                             "Description:"),
}
TASK_NAMES = tuple(TASKS)
TASK_IDS = {name: k for k, name in enumerate(TASK_NAMES)}  # the integer a batch carries
EXPLAIN = "explain"  # its instruction is ``model.task``
