"""User (and item) profiles from behavior tokens alone (``beatrec profile``; BEAT paper Fig. 5a).

A run whose stage 2 learnt the ``user_profile`` task (``train.tasks``, :mod:`beatrec.align.tasks`) writes a
profile in the dataset's style from the user's tokens with that task's prompt; an ``item_profile`` run likewise
describes an item from its tokens, no title. A run trained on explanations only is asked, with no
task-specific training, with :data:`PROFILE_INSTRUCTION`: the user's projected tokens and an instruction; no
item, no title, no text about the user.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from beatrec.align.explain import Aligned
from beatrec.align.generate import generate_explanations, generate_from_embeds
from beatrec.align.prompt import cap_words, render_chat
from beatrec.align.tasks import TASKS

PROFILE_INSTRUCTION = (
    "Behavior tokens of a user: {USER}. Based only on these tokens, describe this user's interests and "
    "preferences in one or two sentences."
)


class ProfilePrompt(NamedTuple):
    ids: list[int]  # prompt ids, the user slots hold the pad id
    slots: list[int]  # positions of the user slots


def profile_prompt(a: Aligned, template: str = PROFILE_INSTRUCTION) -> ProfilePrompt:
    """Token ids of the profile prompt with the user's slots (same slot order as the explanation prompt)."""
    marker = "\x01U\x01"
    pre, post = render_chat(a.tok, template.replace("{USER}", marker), "Profile:").split(marker)
    enc = lambda s: a.tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    head = enc(pre)
    n = a.model.n_side_slots
    return ProfilePrompt(head + [a.builder.pad] * n + enc(post), list(range(len(head), len(head) + n)))


def trained_tasks(a: Aligned) -> tuple[str, ...]:
    """The tasks the run's stage 2 learnt (``train.tasks``)."""
    return tuple(a.cfg.train.tasks)


@torch.no_grad()
def learnt_profiles(a: Aligned, task: str, ids: list[int], max_words: int = 60, progress: bool = False) -> list[str]:
    """Profiles written with the prompt of a profile task the run learnt (``user_profile`` / ``item_profile``).

    Args:
        ids: user (item) ids in the run's vocabulary; a run whose prompt holds a history field
            (``model.history_titles`` > 0) gets each user's history titles from its dataset.
    """
    if task not in trained_tasks(a):
        raise ValueError(f"this run's stage 2 did not learn {task!r} (train.tasks = {list(trained_tasks(a))})")
    key = TASKS[task].key
    rows = [{key: int(i), "task": task} for i in ids]
    if a.history is not None and key == "uid":
        a.history.attach(rows)
    return generate_explanations(a.model, a.tok, {task: a.model.prompt_builder(a.tok, task)}, rows, a.cfg.generate,
                                 max_words, progress)


@torch.no_grad()
def user_profiles(a: Aligned, users: list[int], max_words: int = 60, progress: bool = False) -> list[str]:
    """One generated profile per user id (the run's decoding settings, batched; the LM and projector unchanged):
    with the learnt ``user_profile`` prompt when stage 2 learnt it, else the untrained :data:`PROFILE_INSTRUCTION`.

    Args:
        users: ids in the run's vocabulary (cold-start users appended with ``vocab.add_entity`` work too).
    """
    if "user_profile" in trained_tasks(a):
        return learnt_profiles(a, "user_profile", users, max_words, progress)
    p = profile_prompt(a)
    m = a.model
    out: list[str] = []
    for s in range(0, len(users), a.cfg.generate.batch_size):
        ids = torch.tensor(users[s : s + a.cfg.generate.batch_size], dtype=torch.long)
        b = len(ids)
        input_ids = torch.tensor([p.ids] * b)  # (B, L): one prompt length, no padding needed
        tokens = m.lm.get_input_embeddings()(input_ids)  # (B, L, d)
        vu = m.vocab.vectors("user", ids)[:, m.parts]  # (B, S/2, C)
        beh = m.projector(vu).to(tokens.dtype)  # (B, S/2, d): the user slots' own slot embeddings
        pos = torch.tensor(p.slots)[None, :, None].expand(b, -1, tokens.shape[-1])
        embeds = tokens.scatter(1, pos, beh)
        gen = generate_from_embeds(m, a.tok, embeds, torch.ones_like(input_ids), a.cfg.generate, a.builder.pad)
        out += [cap_words(t, max_words) for t in a.tok.batch_decode(gen, skip_special_tokens=True)]
    return out


@torch.no_grad()
def profile_nll(a: Aligned, task: str, ids: list[int], texts: list[str], neutral: bool = False,
                batch_size: int = 16) -> np.ndarray:
    """How well the run's learnt profile prompt predicts each text from an entity's tokens: the mean token NLL
    (nats) of ``texts[j]`` (capped as in training) written after the prompt holding the tokens of ``ids[j]`` --
    or, with ``neutral``, the population-mean tokens (:meth:`~beatrec.align.model.BehaviorLM.neutral_behavior`).

    Scoring a user's own profile with its own tokens, another user's, and neutral ones says how much the LM reads
    the tokens, whatever the decoding. -> (n,) float64.
    """
    import torch.nn.functional as F

    from beatrec.align.batch import IGNORE, collate_train

    if task not in trained_tasks(a):
        raise ValueError(f"this run's stage 2 did not learn {task!r} (train.tasks = {list(trained_tasks(a))})")
    if len(ids) != len(texts):
        raise ValueError(f"ids and texts differ in length ({len(ids)}, {len(texts)})")
    key, m = TASKS[task].key, a.model
    rows = [{key: int(i), "task": task, "target": t} for i, t in zip(ids, texts, strict=True)]
    if a.history is not None and key == "uid":
        a.history.attach(rows)
    builders = {task: m.prompt_builder(a.tok, task)}
    m.eval()
    out = []
    for s in range(0, len(rows), batch_size):
        b = collate_train(builders, rows[s : s + batch_size], a.cfg.model.max_words, a.cfg.model.max_target_tokens)
        embeds = m.embed(b, neutral=neutral)[0]
        logits = m.lm(inputs_embeds=embeds, attention_mask=b.attention_mask).logits[:, :-1].float()  # (B, L-1, V)
        nxt = b.labels[:, 1:]  # (B, L-1): position t predicts token t+1
        tok = F.cross_entropy(logits.transpose(1, 2), nxt.clamp_min(0), reduction="none")  # (B, L-1)
        where = (nxt != IGNORE).float()
        out.append(((tok * where).sum(1) / where.sum(1).clamp_min(1)).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)
