"""Training loop of the behavior tokenizer: L = L_behave + L_vq + α·L_macro + β·L_micro (BEAT eq. 9).

Every step propagates the graph once and reuses the result for all losses; early stopping watches the
validation HitRatio@k of the *quantised* vectors (patience ``train.patience``) and restores the best weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from beatrec.early_stop import EarlyStopping
from beatrec.metrics.ranking import RankingMetrics, evaluate_scores
from beatrec.runtime import torch_threads
from beatrec.tokenizer.codebook import codebook_usage
from beatrec.tokenizer.config import TokenizerTrainConfig
from beatrec.tokenizer.micro import choose_mask
from beatrec.tokenizer.model import BehaviorTokenizer


@dataclass
class PhraseTable:
    """Phrase embeddings of the entities of one side that have extracted phrases.

    ids: (M,) entity ids; emb: (M, n, T) phrase embeddings (zeros in empty slots); valid: (M, n) bool.
    """

    ids: torch.Tensor
    emb: torch.Tensor
    valid: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class TokenizerData:
    """Everything the training loop reads. Built by :mod:`beatrec.tokenizer.pipeline` from training data only."""

    adj: torch.Tensor  # (U+I, U+I) CSR Â of training edges
    train_users: np.ndarray  # (E,)
    train_items: np.ndarray  # (E,)
    train_matrix: sp.csr_matrix  # (U, I) training edges
    val_matrix: sp.csr_matrix  # (U, I) validation edges (early stopping)
    text_users: torch.Tensor  # (P,) text pairs of training users only
    text_items: torch.Tensor  # (P,)
    text_emb: torch.Tensor  # (P, T)
    user_phrases: PhraseTable
    item_phrases: PhraseTable


class EpochLog(NamedTuple):
    epoch: int
    seconds: float
    loss: float
    behave: float
    vq: float
    macro: float
    micro: float
    val_hr: float
    val_ndcg: float
    val_hr_continuous: float
    user_micro_usage: float
    item_micro_usage: float
    restarts: int


class TrainResult(NamedTuple):
    history: list[EpochLog]
    best_epoch: int
    best_val_hr: float  # validation HR of the kept epoch (best_epoch)
    stopped_early: bool


def sample_negatives(users: np.ndarray, train: sp.csr_matrix, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random non-interacted item per user (collisions are re-drawn, up to 5 times)."""
    n_items = train.shape[1]
    neg = rng.integers(0, n_items, size=len(users))
    for _ in range(5):
        clash = np.asarray(train[users, neg]).ravel() > 0
        if not clash.any():
            break
        neg[clash] = rng.integers(0, n_items, size=int(clash.sum()))
    return neg


def evaluate_model(
    model: BehaviorTokenizer, adj: torch.Tensor, exclude: sp.csr_matrix, heldout: sp.csr_matrix, k: int
) -> tuple[RankingMetrics, RankingMetrics, dict[str, torch.Tensor]]:
    """(quantised, continuous) ranking metrics of held-out edges, and the vectors they were computed from."""
    was_training = model.training
    model.eval()
    v = model.all_vectors(adj)
    q = evaluate_scores(v["user_quant"], v["item_quant"], exclude, heldout, k)
    c = evaluate_scores(v["user_cont"], v["item_cont"], exclude, heldout, k)
    model.train(was_training)
    return q, c, v


def train_tokenizer(
    model: BehaviorTokenizer, data: TokenizerData, cfg: TokenizerTrainConfig, progress: bool = True
) -> TrainResult:
    """Train in place; on return ``model`` holds the weights of the best validation epoch."""
    with torch_threads(cfg.threads):
        return _train(model, data, cfg, progress)


def _train(model: BehaviorTokenizer, data: TokenizerData, cfg: TokenizerTrainConfig, progress: bool) -> TrainResult:
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n_edges = len(data.train_users)
    n_steps = max(1, int(np.ceil(n_edges / cfg.batch_size)))
    n_pairs = int(data.text_users.shape[0])
    history: list[EpochLog] = []
    stopper = EarlyStopping(cfg.patience, cfg.select_tolerance)
    stopped_early = False
    model.train()
    for epoch in range(1, cfg.max_epochs + 1):
        t0 = time.perf_counter()
        perm = rng.permutation(n_edges)
        sums = np.zeros(5)
        bar = tqdm(range(n_steps), desc=f"epoch {epoch}", leave=False, disable=(not progress) or None, unit="step")
        for step in bar:
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            u_np = data.train_users[idx]
            users = torch.from_numpy(u_np)
            pos = torch.from_numpy(data.train_items[idx])
            neg = torch.from_numpy(sample_negatives(u_np, data.train_matrix, rng))
            zu, zi = model.propagate(data.adj)  # once per step, shared by all losses
            behave, vq = model.behave_loss(zu, zi, users, pos, neg, cfg.continuous_weight, gen)
            l2 = cfg.l2 * (zu[users].pow(2).sum(1).mean() + zi[pos].pow(2).sum(1).mean())
            macro = torch.zeros(())
            if n_pairs >= 2 and cfg.alpha > 0:
                j = torch.randint(n_pairs, (min(cfg.text_batch_size, n_pairs),), generator=gen)
                macro = model.macro_loss(zu, zi, data.text_users[j], data.text_items[j], data.text_emb[j])
            micro = torch.zeros(())
            if cfg.beta > 0:
                for side, z, table in (("user", zu, data.user_phrases), ("item", zi, data.item_phrases)):
                    if len(table) == 0:
                        continue
                    j = torch.randint(len(table), (min(cfg.micro_batch_size, len(table)),), generator=gen)
                    valid = table.valid[j]
                    mask = choose_mask(valid, model.cfg.n_masked, gen)  # fresh random positions per sample
                    micro = micro + model.micro_loss(side, z, table.ids[j], table.emb[j], valid, mask)
            loss = behave + vq + cfg.alpha * macro + cfg.beta * micro + l2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += [loss.item(), behave.item(), vq.item(), macro.item(), micro.item()]
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        means = sums / n_steps
        if epoch % cfg.eval_every and epoch != cfg.max_epochs:
            continue
        q, c, v = evaluate_model(model, data.adj, data.train_matrix, data.val_matrix, cfg.eval_k)
        n_codes = model.cfg.n_codes
        log = EpochLog(
            epoch, time.perf_counter() - t0, *map(float, means), q.hr, q.ndcg, c.hr,
            codebook_usage(v["user_codes"][:, 1:], n_codes).used_fraction,
            codebook_usage(v["item_codes"][:, 1:], n_codes).used_fraction,
            sum(cb.restarts for cb in (model.user.macro, model.user.micro, model.item.macro, model.item.micro)),
        )
        history.append(log)
        if progress:
            tqdm.write(
                f"epoch {epoch}: loss {log.loss:.4f} (behave {log.behave:.3f} vq {log.vq:.3f} macro {log.macro:.3f} "
                f"micro {log.micro:.3f}) val HR@{cfg.eval_k} quant {q.hr:.4f} cont {c.hr:.4f} "
                f"micro usage u/i {log.user_micro_usage:.2f}/{log.item_micro_usage:.2f} [{log.seconds:.1f}s]"
            )
        if stopper.update(q.hr, epoch, model) and epoch * n_steps >= cfg.min_steps:
            stopped_early = True
            break
    stopper.restore(model)
    model.eval()
    kept = next((h.val_hr for h in history if h.epoch == stopper.best_epoch), stopper.best)
    return TrainResult(history, stopper.best_epoch, kept, stopped_early)
