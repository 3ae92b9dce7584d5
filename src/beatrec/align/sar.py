"""Semantic Alignment Regularization (BEAT eqs. 10–11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def match_behavior_tokens(text: torch.Tensor, owner: torch.Tensor, behavior: torch.Tensor) -> torch.Tensor:
    """Eq. 10: each text token's nearest (cosine) projected behavior token of its own sample.

    Args:
        text: (M, d) embeddings of explanation tokens; owner: (M,) sample index of each; behavior: (B, S, d).
    Returns:
        (M, d) the matched behavior-token vectors (gradients flow to ``behavior``; the argmax does not).
    """
    mine = behavior[owner]  # (M, S, d)
    sim = torch.einsum("md,msd->ms", F.normalize(text, dim=-1), F.normalize(mine, dim=-1))  # (M, S)
    pick = sim.argmax(dim=1)  # (M,)
    return mine[torch.arange(len(owner)), pick]


def sar_loss(
    text: torch.Tensor, owner: torch.Tensor, behavior: torch.Tensor, pairs: torch.Tensor
) -> torch.Tensor:
    """Eq. 11: mean over sampled token pairs (a, b) of (cos(p_a, p_b) − cos(e_a, e_b))².

    Args:
        text: (M, d) text-token embeddings e; owner: (M,); behavior: (B, S, d) projected behavior tokens;
        pairs: (K, 2) long indices into the M text tokens.
    """
    matched = match_behavior_tokens(text, owner, behavior)  # (M, d)
    a, b = pairs[:, 0], pairs[:, 1]
    cos_p = F.cosine_similarity(matched[a], matched[b], dim=-1)  # (K,)
    cos_e = F.cosine_similarity(text[a], text[b], dim=-1)  # (K,)
    return (cos_p - cos_e).pow(2).mean()


def sample_pairs(m: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(k, 2) random pairs of distinct indices in 0..m-1 (empty when m < 2)."""
    if m < 2:
        return torch.zeros(0, 2, dtype=torch.long)
    a = torch.randint(m, (k,), generator=generator)
    b = (a + torch.randint(1, m, (k,), generator=generator)) % m  # never equal to a
    return torch.stack([a, b], dim=1)
