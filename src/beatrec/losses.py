"""The training losses shared by BEAT stage 1, EAGER and LLM-BS (one implementation each)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking loss, mean of −log σ(s⁺ − s⁻) (BEAT eq. 5). pos, neg: (B,)."""
    return F.softplus(neg - pos).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, symmetric: bool = True,
             keys: torch.Tensor | None = None,
             negatives: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
    """InfoNCE with cosine similarity and in-batch negatives (BEAT eq. 6; EAGER's L_con; LLM-BS's GCD).

    Row r of ``a`` (B, T) is scored against every row of ``b`` (B, T), its positive being row r.

    Args:
        temperature: τ of the logits cos(a_r, b_s) / τ.
        symmetric: average the a→b and b→a cross-entropies (BEAT, LLM-BS), else a→b only (EAGER).
        keys: (B,) optional identities (e.g. item ids): other rows with the same key as row r are not used as its
            negatives (two windows with the same target item).
        negatives: optional (vectors (N, T), their keys (N,) or None): the negatives of every row of ``a``
            *instead of* the other rows of ``b`` (EAGER's released code: 2048 items drawn per batch); one whose key
            equals row r's key is not r's negative. a→b only (needs ``symmetric=False``).
    Returns:
        () the mean loss.
    """
    if negatives is not None:
        if symmetric:
            raise ValueError("info_nce: sampled negatives are for the a→b direction only (symmetric=False)")
        vec, nkeys = negatives
        an = F.normalize(a, dim=-1)
        pos = (an * F.normalize(b, dim=-1)).sum(-1, keepdim=True) / temperature  # (B, 1)
        neg = an @ F.normalize(vec, dim=-1).t() / temperature  # (B, N)
        if keys is not None and nkeys is not None:
            neg = neg.masked_fill(keys[:, None] == nkeys[None, :], float("-inf"))
        return F.cross_entropy(torch.cat([pos, neg], 1), torch.zeros(len(a), dtype=torch.long, device=a.device))
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / temperature  # (B, B)
    if keys is not None:
        same = (keys[:, None] == keys[None, :]) & ~torch.eye(len(keys), dtype=torch.bool, device=a.device)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, target)
    return 0.5 * (loss + F.cross_entropy(logits.t(), target)) if symmetric else loss
