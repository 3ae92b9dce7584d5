"""Training loop of the behavior tokenizer: L = L_behave + L_vq + α·L_macro + β·L_micro (BEAT eq. 9).

Every step propagates the graph once — the whole graph (``train.graph=full``) or the L-hop sampled
neighbourhood of the step's users and items (``sampled``) — and reuses the result for all losses; early
stopping watches the validation HitRatio@k of the *quantised* vectors (patience ``train.patience``) and
restores the best weights.

Under ``torchrun`` (several processes), the model is wrapped in DDP through Accelerate: every process takes its
share of each epoch's batches (the same shuffled order everywhere), gradients are averaged, codebook restarts are
rank 0's (see :class:`~beatrec.tokenizer.codebook.VQCodebook`) and the early-stopping score is rank 0's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from beatrec.distributed import broadcast_from_main_
from beatrec.early_stop import EarlyStopping
from beatrec.metrics.ranking import RankingMetrics, evaluate_scores
from beatrec.runtime import torch_threads
from beatrec.tokenizer.codebook import codebook_usage
from beatrec.tokenizer.config import TokenizerTrainConfig
from beatrec.tokenizer.graph import csr_to_scipy
from beatrec.tokenizer.lazy_adam import LazyAdam
from beatrec.tokenizer.micro import choose_mask
from beatrec.tokenizer.model import BehaviorTokenizer, MicroBatch, StepBatch
from beatrec.tokenizer.sampling import NeighborSampler, SampledGraph


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
    seconds: float  # training steps of the epoch (evaluation excluded)
    eval_seconds: float
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
    restarts: int  # dead codes re-seeded in training steps so far (all four codebooks)
    revived: int  # unused codes re-seeded at evaluations so far (train.revive_unused)


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
    model: BehaviorTokenizer, adj: torch.Tensor, exclude: sp.csr_matrix, heldout: sp.csr_matrix, k: int,
    revive: bool = False,
) -> tuple[RankingMetrics, RankingMetrics, dict[str, torch.Tensor]]:
    """(quantised, continuous) ranking metrics of held-out edges, and the vectors they were computed from
    (user vectors of the users with held-out edges only, in id order; every user's and item's codes).
    ``revive``: re-seed unused codes first (``train.revive_unused``; the metrics are those of the result)."""
    was_training = model.training
    model.eval()
    users = np.flatnonzero(np.diff(heldout.indptr) > 0)
    v = model.all_vectors(adj, torch.from_numpy(users), revive=revive)
    ex, held = exclude[users], heldout[users]  # rows = the evaluated users, in the order of their vectors
    q = evaluate_scores(v["user_quant"], v["item_quant"], ex, held, k)
    c = evaluate_scores(v["user_cont"], v["item_cont"], ex, held, k)
    model.train(was_training)
    return q, c, v


def eval_subset(heldout: sp.csr_matrix, n_users: int, seed: int) -> sp.csr_matrix:
    """``heldout`` with only a seeded sample of ``n_users`` of its users kept (0 or more than there are = all)."""
    users = np.flatnonzero(np.diff(heldout.indptr) > 0)
    if n_users == 0 or n_users >= len(users):
        return heldout
    keep = np.zeros(heldout.shape[0])
    keep[np.random.default_rng(seed).choice(users, n_users, replace=False)] = 1.0
    return sp.csr_matrix(sp.diags(keep) @ heldout)


def make_accelerator():  # noqa: ANN201
    """The Accelerate handle: one process by default; under ``torchrun`` a gloo/NCCL group of several (DDP).

    ``find_unused_parameters``: a step without text pairs or phrases leaves those heads without gradient.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    return Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def make_optimizers(model: BehaviorTokenizer, cfg: TokenizerTrainConfig) -> list[torch.optim.Optimizer]:
    """Adam (lr ``train.lr``) on every parameter; in sampled mode the ID embedding table gets sparse gradients
    and lazy Adam (SparseAdam's update: only the rows a step read move; :class:`LazyAdam`)."""
    if not model.gcn.table.sparse:
        return [torch.optim.Adam(model.parameters(), lr=cfg.lr)]
    emb = model.gcn.embedding
    rest = [p for p in model.parameters() if p is not emb]
    return [LazyAdam([emb], lr=cfg.lr), torch.optim.Adam(rest, lr=cfg.lr)]


def n_pairs_ok(data: TokenizerData, cfg: TokenizerTrainConfig) -> bool:
    """Whether every step has a macro (eq. 6) loss: at least 2 text pairs and α > 0."""
    return int(data.text_users.shape[0]) >= 2 and cfg.alpha > 0


def localize(ids: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Unique ids of several id tensors and each tensor re-expressed as positions among them."""
    flat = torch.cat(ids)
    uniq, inv = torch.unique(flat, return_inverse=True)
    return uniq, list(torch.split(inv, [len(x) for x in ids]))


def sampled_step_input(batch: StepBatch, sampler: NeighborSampler, n_users: int, rng: np.random.Generator
                       ) -> tuple[SampledGraph, StepBatch]:
    """The sampled neighbourhood of a step's users and items (seeds: users first), and the batch with its ids
    replaced by seed positions (users index the seed users, items the seed items)."""
    u_ids = [batch.users, batch.text_users] + [m.ids for m in batch.micro if m.side == "user"]
    i_ids = [batch.pos, batch.neg, batch.text_items] + [m.ids for m in batch.micro if m.side == "item"]
    uu, u_loc = localize(u_ids)
    ii, i_loc = localize(i_ids)
    graph = sampler.sample(np.concatenate([uu.numpy(), ii.numpy() + n_users]), rng)
    micro, ku, ki = [], 2, 3
    for m in batch.micro:
        if m.side == "user":
            micro.append(m._replace(ids=u_loc[ku]))
            ku += 1
        else:
            micro.append(m._replace(ids=i_loc[ki]))
            ki += 1
    return graph, batch._replace(users=u_loc[0], text_users=u_loc[1], pos=i_loc[0], neg=i_loc[1],
                                 text_items=i_loc[2], micro=tuple(micro))


def train_tokenizer(
    model: BehaviorTokenizer, data: TokenizerData, cfg: TokenizerTrainConfig, progress: bool = True,
    accelerator=None,  # noqa: ANN001
) -> TrainResult:
    """Train in place; on return ``model`` holds the weights of the best validation epoch (in every process)."""
    with torch_threads(cfg.threads):
        return _train(model, data, cfg, progress, accelerator or make_accelerator())


def _train(model: BehaviorTokenizer, data: TokenizerData, cfg: TokenizerTrainConfig, progress: bool,
           acc) -> TrainResult:  # noqa: ANN001
    world, rank = acc.num_processes, acc.process_index
    progress = progress and acc.is_main_process
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    rng = np.random.default_rng(cfg.seed)  # the epoch order: the same in every process
    local_rng = rng if world == 1 else np.random.default_rng([cfg.seed, rank])  # negatives, neighbour samples
    torch.manual_seed(cfg.seed)
    model.gcn.table.sparse = cfg.graph == "sampled"
    if model.cfg.init == "spectral":  # the same in every process (a seeded, deterministic SVD)
        model.gcn.init_spectral(data.adj, cfg.seed)
    opts = make_optimizers(model, cfg)
    wrapped = model
    if world > 1:  # plain PyTorch DDP (Accelerate formed the process group)
        from torch.nn.parallel import DistributedDataParallel

        unused = not (n_pairs_ok(data, cfg) and cfg.beta > 0 and len(data.user_phrases) and len(data.item_phrases))
        wrapped = DistributedDataParallel(model, find_unused_parameters=unused)
    sampler = NeighborSampler(csr_to_scipy(data.adj), cfg.fanouts) if cfg.graph == "sampled" else None
    val = eval_subset(data.val_matrix, cfg.eval_users, cfg.seed)
    n_edges = len(data.train_users)
    n_batches = max(1, int(np.ceil(n_edges / cfg.batch_size)))
    n_steps = -(-n_batches // world)  # per process; the last round wraps around to the epoch's first batches
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
            b = (step * world + rank) % n_batches
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            u_np = data.train_users[idx]
            batch = _step_batch(data, cfg, model, u_np, idx, local_rng, gen)
            graph: torch.Tensor | SampledGraph = data.adj
            if sampler is not None:
                graph, batch = sampled_step_input(batch, sampler, model.n_users, local_rng)
            out = wrapped(graph, batch, cfg, gen)
            acc.backward(out.total)
            for opt in opts:
                opt.step()
                opt.zero_grad(set_to_none=True)  # now, not before the next forward: the gradients are freed early
            sums += [out.total.item(), out.behave.item(), out.vq.item(), out.macro.item(), out.micro.item()]
            if step % 20 == 0:
                bar.set_postfix(loss=f"{out.total.item():.3f}")
        bar.close()
        train_s = time.perf_counter() - t0
        means = sums / n_steps
        if epoch % cfg.eval_every and epoch != cfg.max_epochs:
            continue
        t1 = time.perf_counter()
        q, c, v = evaluate_model(model, data.adj, data.train_matrix, val, cfg.eval_k, cfg.revives)
        score = torch.tensor([q.hr], dtype=torch.float64)
        broadcast_from_main_(score)  # under DDP, rank 0's score: every process makes the same early-stopping decision
        n_codes = model.cfg.n_codes
        books = (model.user.macro, model.user.micro, model.item.macro, model.item.micro)
        log = EpochLog(
            epoch, train_s, time.perf_counter() - t1, *map(float, means), float(score), q.ndcg, c.hr,
            codebook_usage(v["user_codes"][:, 1:], n_codes).used_fraction,
            codebook_usage(v["item_codes"][:, 1:], n_codes).used_fraction,
            sum(cb.restarts for cb in books), sum(cb.revived for cb in books),
        )
        history.append(log)
        if progress:
            tqdm.write(
                f"epoch {epoch}: loss {log.loss:.4f} (behave {log.behave:.3f} vq {log.vq:.3f} macro {log.macro:.3f} "
                f"micro {log.micro:.3f}) val HR@{cfg.eval_k} quant {q.hr:.4f} cont {c.hr:.4f} "
                f"micro usage u/i {log.user_micro_usage:.2f}/{log.item_micro_usage:.2f} "
                f"{f'(revived {log.revived}) ' if cfg.revives else ''}"
                f"[{log.seconds:.1f}s + eval {log.eval_seconds:.1f}s]"
            )
        if stopper.update(float(score), epoch, model) and epoch * n_steps >= cfg.min_steps:
            stopped_early = True
            break
    stopper.restore(model)
    model.eval()
    kept = next((h.val_hr for h in history if h.epoch == stopper.best_epoch), stopper.best)
    return TrainResult(history, stopper.best_epoch, kept, stopped_early)


def _step_batch(data: TokenizerData, cfg: TokenizerTrainConfig, model: BehaviorTokenizer, u_np: np.ndarray,
                idx: np.ndarray, rng: np.random.Generator, gen: torch.Generator) -> StepBatch:
    """One step's BPR triples, text pairs (eq. 6) and phrase samples (eqs. 7–8), in global ids."""
    users = torch.from_numpy(u_np)
    pos = torch.from_numpy(data.train_items[idx])
    neg = torch.from_numpy(sample_negatives(u_np, data.train_matrix, rng))
    empty = torch.zeros(0, dtype=torch.long)
    tu, ti, te = empty, empty, data.text_emb[:0]
    if n_pairs_ok(data, cfg):
        n_pairs = int(data.text_users.shape[0])
        j = torch.randint(n_pairs, (min(cfg.text_batch_size, n_pairs),), generator=gen)
        tu, ti, te = data.text_users[j], data.text_items[j], data.text_emb[j]
    micro = []
    if cfg.beta > 0:
        for side, table in (("user", data.user_phrases), ("item", data.item_phrases)):
            if len(table) == 0:
                continue
            j = torch.randint(len(table), (min(cfg.micro_batch_size, len(table)),), generator=gen)
            valid = table.valid[j]
            mask = choose_mask(valid, model.cfg.n_masked, gen)  # fresh random positions per sample
            micro.append(MicroBatch(side, table.ids[j], table.emb[j], valid, mask))
    return StepBatch(users, pos, neg, tu, ti, te, tuple(micro))
