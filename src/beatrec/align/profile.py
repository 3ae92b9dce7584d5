"""User profiles from behavior tokens alone (``beatrec profile``; BEAT paper Fig. 5a).

The frozen LM is asked, with no task-specific training, to describe a user from the user's behavior tokens
only: the prompt carries the user's projected tokens (the stage-2 projector, trained for explanations) and an
instruction; no item, no title, no text about the user.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from beatrec.align.explain import Aligned
from beatrec.align.generate import generate_from_embeds
from beatrec.align.prompt import cap_words, render_chat

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


@torch.no_grad()
def user_profiles(a: Aligned, users: list[int], max_words: int = 60) -> list[str]:
    """One generated profile per user id (the run's decoding settings, batched; the LM and projector unchanged).

    Args:
        users: ids in the run's vocabulary (cold-start users appended with ``vocab.add_entity`` work too).
    """
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
