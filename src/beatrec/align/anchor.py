"""Word anchoring of projected behavior tokens (not in the BEAT paper; ``model.word_anchor``, issue #37).

Stage 2 trains the projector only through the LM's next-token loss. When the target text is largely a template
(a profile: "This user enjoys ... and values ..."), the LM learns the template first and the few words that
depend on the user carry too little of the loss for the projector to learn to say them: the LM writes one
profile for everyone. Word anchoring gives the projector a direct signal. Each projected token is read as a
distribution over the LM's vocabulary (cosine to the input-embedding rows, temperature τ); a sample's tokens form
a mixture, and the loss is the negative log-likelihood of the sample's distinctive target words under it:

    p_b(w) = 1/S Σ_s softmax_w(cos(h_{b,s}, E_w) / τ)          (h: projected token, E: the LM's embeddings)
    L_anchor = − Σ_b Σ_w q_{b,w} log p_b(w) / Σ_b Σ_w q_{b,w}

where q_b is 1 on the distinct target token ids of sample b that occur in at most half of the batch's targets
(template and function words drop out; what tells samples apart stays). So the tokens of a user who values
"lyrical prose" start to look, to the LM, like those words, which an instruction-tuned LM copies readily.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from beatrec.align.batch import IGNORE
from beatrec.align.tasks import EXPLAIN, TASK_NAMES

TAU = 0.1  # temperature of the cosine logits
WARMUP_LR = 1e-3  # :func:`anchor_warmup`'s AdamW learning rate


def anchor_targets(labels: torch.Tensor, vocab_size: int, ignore: int = -100) -> torch.Tensor:
    """(B, L) label ids (``ignore`` outside the target) -> (B, V) 0/1 float: each sample's distinct target ids
    that occur in at most half of the batch's samples (a batch of one keeps none)."""
    b = len(labels)
    where = labels != ignore
    hot = torch.zeros(b, vocab_size, dtype=torch.float32, device=labels.device)  # (B, V)
    rows = where.nonzero()[:, 0]
    hot[rows, labels[where]] = 1.0
    df = hot.sum(0, keepdim=True)  # (1, V) samples holding each id
    return hot * (df <= b / 2)


def word_anchor_loss(behavior: torch.Tensor, embeddings: torch.Tensor, targets: torch.Tensor,
                     tau: float = TAU) -> torch.Tensor:
    """L_anchor above.

    Args:
        behavior: (B, S, d) projected behavior tokens h (S >= 1).
        embeddings: (V, d) the LM's input-embedding matrix E (no gradient needed).
        targets: (B, V) q from :func:`anchor_targets`.
    Returns:
        () the loss; 0 (with a graph to ``behavior``) when no sample has a distinctive target word.
    """
    logits = F.normalize(behavior.float(), dim=-1) @ F.normalize(embeddings.float(), dim=-1).T / tau  # (B, S, V)
    logp = torch.logsumexp(F.log_softmax(logits, dim=-1), dim=1) - torch.log(torch.tensor(float(behavior.shape[1])))
    total = targets.sum()
    if total == 0:
        return behavior.sum() * 0.0
    return -(logp * targets).sum() / total  # logp: (B, V)


def anchor_warmup(model: torch.nn.Module, loader: Iterable, epochs: int, lr: float = WARMUP_LR) -> list[float]:
    """Train the projector alone on L_anchor for ``epochs`` passes over ``loader``, before stage 2's LM training
    (``train.anchor_warmup``): the projected tokens start out reading, to the LM, like their samples' distinctive
    words, instead of learning that within the few LM steps of a small dataset. No LM forward pass: a step costs
    one cosine matrix. The softmax runs over the token ids the training targets use (the union over the loader's
    batches) rather than the whole vocabulary: the distinctive words compete with every word the texts use, at a
    fraction of the cost where the texts use few (the demo's ~10^2 of SmolLM2's 49k). The loader's batches are
    collated once and reused, in the same order, by every pass. Only the projector's parameters change (AdamW,
    constant ``lr``); every gradient is cleared on return.

    Args:
        model: a :class:`~beatrec.align.model.BehaviorLM` (``behavior_embeds``, ``sides``, ``projector``, ``lm``).
        loader: training batches (:class:`~beatrec.align.batch.PairBatch`).
    Returns:
        the mean L_anchor of each pass.
    """
    params = list(model.projector.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    means: list[float] = []
    batches = list(loader) if epochs else []  # tokenised once: a pass costs the projector and the cosines only
    if not batches:
        return means
    used = torch.unique(torch.cat([b.labels[b.labels >= 0] for b in batches]))  # (V',) ids the targets use
    emb = model.lm.get_input_embeddings().weight.detach()[used]  # (V', d)
    steps = []  # per batch: what the projector reads and the batch's distinctive words, computed once
    for b in batches:
        sides = model.sides(EXPLAIN if b.task is None else TASK_NAMES[int(b.task[0])])
        targets = anchor_targets(b.labels, int(used.max()) + 1, IGNORE)[:, used]  # (B, V')
        if sides and targets.sum() > 0:  # a batch of one (or without slots) has nothing to anchor: no step
            steps.append((b.users, b.items, sides, targets))
    for _ in range(epochs):
        total = 0.0
        for users, items, sides, targets in steps:
            beh = model.behavior_embeds(users, items, sides)  # (B, S, d)
            loss = word_anchor_loss(beh, emb, targets)
            opt.zero_grad(set_to_none=True)  # the projector's (the whole model's would walk every LM module)
            loss.backward()
            opt.step()
            total += loss.item()
        means.append(total / max(len(steps), 1))
    model.zero_grad(set_to_none=True)  # nothing of the warm-up (trainable codebooks too) reaches the first LM step
    return means
