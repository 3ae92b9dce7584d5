"""The training losses shared by BEAT stage 1, EAGER and LLM-BS (one implementation each)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking loss, mean of −log σ(s⁺ − s⁻) (BEAT eq. 5). pos, neg: (B,)."""
    return F.softplus(neg - pos).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, symmetric: bool = True,
             keys: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with cosine similarity and in-batch negatives (BEAT eq. 6; EAGER's L_con; LLM-BS's GCD).

    Row r of ``a`` (B, T) is scored against every row of ``b`` (B, T), its positive being row r.

    Args:
        temperature: τ of the logits cos(a_r, b_s) / τ.
        symmetric: average the a→b and b→a cross-entropies (BEAT, LLM-BS), else a→b only (EAGER).
        keys: (B,) optional identities (e.g. item ids): other rows with the same key as row r are not used as its
            negatives (two windows with the same target item).
    Returns:
        () the mean loss.
    """
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / temperature  # (B, B)
    if keys is not None:
        same = (keys[:, None] == keys[None, :]) & ~torch.eye(len(keys), dtype=torch.bool, device=a.device)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, target)
    return 0.5 * (loss + F.cross_entropy(logits.t(), target)) if symmetric else loss
