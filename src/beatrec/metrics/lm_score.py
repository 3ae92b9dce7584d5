"""LM-score: how likely a causal LM finds the reference after reading the candidate (a BARTScore stand-in).

BARTScore (Yuan et al., 2021) scores a text pair by the mean token log-likelihood of one text given the
other under BART. No BART weights ship offline, so beatrec uses a causal LM instead (the packaged
SmolLM2-135M-Instruct by default): for each pair the LM reads

    ``LM_SCORE_PREFIX.format(candidate=...)`` followed by ``" " + reference``

and the score is the mean natural-log probability of the reference's tokens (the prefix is context only),
averaged over pairs. Higher (closer to 0) is better. Label it "LM-score", never "BARTScore".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LM_SCORE_PREFIX = "Explanation: {candidate}\nThe same explanation in other words:"


def pair_token_ids(tok: PreTrainedTokenizerBase, candidate: str, reference: str,
                   max_tokens: int = 128) -> tuple[list[int], list[int]]:
    """(context ids, reference ids) of one pair, each capped at ``max_tokens``; no special tokens."""
    ctx = tok(LM_SCORE_PREFIX.format(candidate=candidate.strip()), add_special_tokens=False)["input_ids"]
    ref = tok(" " + reference.strip(), add_special_tokens=False)["input_ids"]
    return ctx[-max_tokens:], ref[:max_tokens]


def lm_log_likelihoods(candidates: list[str], references: list[str], lm: PreTrainedModel,
                       tok: PreTrainedTokenizerBase, batch_size: int = 16, max_tokens: int = 128) -> list[float]:
    """Per pair: mean log p(reference token | context, previous reference tokens). -> P floats (NaN if the
    reference has no token)."""
    import torch

    if len(candidates) != len(references):
        raise ValueError(f"need equally many candidates and references, got {len(candidates)}/{len(references)}")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    pairs = [pair_token_ids(tok, c, r, max_tokens) for c, r in zip(candidates, references, strict=True)]
    out = [float("nan")] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    lm.eval()
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            seqs = [pairs[i][0] + pairs[i][1] for i in idx]
            width = max(len(x) for x in seqs)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)  # right padding
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            target = torch.zeros((len(idx), width), dtype=torch.bool)  # positions holding reference tokens
            for b, (i, x) in enumerate(zip(idx, seqs, strict=True)):
                ids[b, : len(x)] = torch.tensor(x)
                mask[b, : len(x)] = 1
                target[b, len(pairs[i][0]) : len(x)] = True
            dev = lm.get_input_embeddings().weight.device
            logits = lm(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float().cpu()  # (b, L, V)
            logp = torch.log_softmax(logits[:, :-1], dim=-1)  # (b, L-1, V): position t predicts token t+1
            tok_lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (b, L-1)
            tgt = target[:, 1:]  # the first reference token is predicted from the last context token
            for b, i in enumerate(idx):
                n = int(tgt[b].sum())
                if n:
                    out[i] = float(tok_lp[b][tgt[b]].sum() / n)
    return out


def lm_score(candidates: list[str], references: list[str], lm: PreTrainedModel, tok: PreTrainedTokenizerBase,
             batch_size: int = 16) -> float:
    """Mean over pairs of :func:`lm_log_likelihoods` (pairs whose reference has no token are skipped)."""
    if not candidates:
        raise ValueError("need at least one pair")
    vals = [v for v in lm_log_likelihoods(candidates, references, lm, tok, batch_size) if v == v]
    return sum(vals) / len(vals) if vals else float("nan")
