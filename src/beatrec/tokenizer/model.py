"""The BEAT behavior tokenizer (stage 1, paper eqs. 2–9).

Each entity's LightGCN vector z is split into 1 macro part and N micro parts (eq. 3). Every part goes through
a linear projection and is quantised by its codebook (eq. 4): a macro and a micro codebook for users and
separate ones for items. The interaction signal is reconstructed from the quantised vectors (eq. 5: BPR on
q_u·q_i with sampled negatives), macro codes are aligned with the pair's text embedding (eq. 6, InfoNCE) and
micro codes reconstruct masked preference phrases (eqs. 7–8).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from beatrec.distributed import broadcast_from_main_
from beatrec.losses import bpr, info_nce
from beatrec.tokenizer.codebook import VQCodebook
from beatrec.tokenizer.config import TokenizerModelConfig, TokenizerTrainConfig
from beatrec.tokenizer.lightgcn import LightGCN
from beatrec.tokenizer.micro import MicroReconstructor
from beatrec.tokenizer.sampling import SampledGraph


class Quantized(NamedTuple):
    continuous: torch.Tensor  # (B, 1+N, code_dim) projected vectors before quantisation
    quantized: torch.Tensor  # (B, 1+N, code_dim) straight-through quantised vectors
    codes: torch.Tensor  # (B, 1+N) long: [macro, micro_1..micro_N]
    vq_loss: torch.Tensor  # () eq. 5 codebook + commitment loss


class Side(nn.Module):
    """Projection + macro/micro codebooks for one entity type (users or items)."""

    def __init__(self, cfg: TokenizerModelConfig) -> None:
        super().__init__()
        self.n_micro = cfg.n_micro
        self.part_dim = cfg.part_dim
        self.proj_macro = nn.Linear(cfg.part_dim, cfg.code_dim)
        self.proj_micro = nn.Linear(cfg.part_dim, cfg.code_dim)  # shared by the N micro parts
        self.macro = VQCodebook(cfg.n_codes, cfg.code_dim, cfg.eta, cfg.dead_after)
        self.micro = VQCodebook(cfg.n_codes, cfg.code_dim, cfg.eta, cfg.dead_after)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, (1+N)·part_dim) -> projected parts (B, 1+N, code_dim)."""
        parts = z.view(z.shape[0], 1 + self.n_micro, self.part_dim)  # (B, 1+N, P)
        return torch.cat([self.proj_macro(parts[:, :1]), self.proj_micro(parts[:, 1:])], dim=1)

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> Quantized:
        x = self.project(z)  # (B, 1+N, C)
        mac = self.macro(x[:, 0], generator)  # quantized (B, C)
        mic = self.micro(x[:, 1:], generator)  # quantized (B, N, C)
        q = torch.cat([mac.quantized[:, None], mic.quantized], dim=1)
        codes = torch.cat([mac.codes[:, None], mic.codes], dim=1)
        return Quantized(x, q, codes, mac.loss + mic.loss)

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Token ids without gradients. z (B, (1+N)·P) -> codes (B, 1+N)."""
        x = self.project(z)
        return torch.cat([self.macro.nearest(x[:, :1]), self.micro.nearest(x[:, 1:])], dim=1)

    @torch.no_grad()
    def revive_unused(self, z: torch.Tensor, chunk: int = 65536, rounds: int = 3) -> int:
        """Re-seed each codebook's codes that no row of ``z`` uses at the projected parts it serves worst.

        With every entity's exact vector z (U, (1+N)·P): the parts are quantised (eq. 4) ``chunk`` rows at a time,
        keeping only codes and squared errors ‖x − c‖²; a codebook's m unused codes take, one each, the m parts of
        the largest (non-zero) error among those whose code keeps another part (k-means' usual repair of an empty
        cluster, never emptying one in turn); identical parts share one new codeword. A re-seeded part's error
        drops to 0 and no part's error grows (only unused codewords move). Parts that then switch to a new codeword
        can leave another code unused, so this repeats up to ``rounds`` times. Deterministic. Returns the number
        of codes re-seeded."""
        n = 0
        for _ in range(rounds):
            moved = self._revive_round(z, chunk)
            n += moved
            # rank 0's count decides (under DDP the processes' vectors may differ in the last bit): every process
            # runs the same rounds, so all reach the same broadcasts
            if int(broadcast_from_main_(torch.tensor([moved])).item()) == 0:
                break
        return n

    def _revive_round(self, z: torch.Tensor, chunk: int) -> int:
        """One round of :meth:`revive_unused`; every codebook broadcasts (under DDP), whatever it re-seeds."""
        codes, errors = [], []
        for zc in z.split(chunk):
            x = self.project(zc)  # (c, 1+N, C)
            cc = torch.cat([self.macro.nearest(x[:, :1]), self.micro.nearest(x[:, 1:])], dim=1)  # (c, 1+N)
            codes.append(cc)
            errors.append((x - self.decode(cc)).pow(2).sum(-1))  # (c, 1+N)
        width = 1 + self.n_micro
        code = torch.cat(codes) if codes else torch.zeros(0, width, dtype=torch.long)  # (U, 1+N)
        err = torch.cat(errors) if errors else torch.zeros(0, width)  # (U, 1+N)
        n = 0
        for book, cols in ((self.macro, slice(0, 1)), (self.micro, slice(1, width))):
            c, e = code[:, cols].reshape(-1), err[:, cols].reshape(-1)  # (U·w,) flat parts, rows of width w
            left = torch.bincount(c, minlength=book.n_codes)  # parts each code serves
            dead = (left == 0).nonzero().squeeze(1)  # (d,)
            take: list[int] = []
            # worst-served first; a part is skipped only when its code has no other part left (at most once per
            # code), so the first d + K candidates always hold enough
            for pos in e.topk(min(len(dead) + book.n_codes, len(e))).indices.tolist():
                if len(take) == len(dead) or e[pos] <= 0:  # a part served exactly gains nothing from a new code
                    break
                if left[c[pos]] > 1:
                    left[c[pos]] -= 1
                    take.append(pos)
            pos = torch.tensor(take, dtype=torch.long)
            rows, parts = pos // (cols.stop - cols.start), pos % (cols.stop - cols.start) + cols.start
            vec = self.project(z[rows])[torch.arange(len(take)), parts]  # (m, C)
            if len(vec):  # identical parts (e.g. entities with the same vector) get one codeword between them
                vec = vec[torch.from_numpy(np.sort(np.unique(vec.numpy(), axis=0, return_index=True)[1]))]
            book.reseed(dead[: len(vec)], vec)
            n += len(vec)
        return n

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codeword vectors of token ids. codes (B, 1+N) -> (B, 1+N, code_dim)."""
        return torch.cat([self.macro.lookup(codes[:, :1]), self.micro.lookup(codes[:, 1:])], dim=1)


class MicroBatch(NamedTuple):
    """Entities of one side whose masked phrases are reconstructed this step (eqs. 7–8)."""

    side: str  # "user" | "item"
    ids: torch.Tensor  # (M,) rows of that side's z
    phrases: torch.Tensor  # (M, n, T)
    valid: torch.Tensor  # (M, n) bool
    mask: torch.Tensor  # (M, n) bool, the slots to reconstruct


class StepBatch(NamedTuple):
    """One training step's ids. Ids index the users/items that :meth:`LightGCN.forward` returns: global ids
    for a full-graph step, positions among the sampled graph's seeds for a sampled one."""

    users: torch.Tensor  # (B,) BPR users
    pos: torch.Tensor  # (B,) their training items
    neg: torch.Tensor  # (B,) sampled negatives
    text_users: torch.Tensor  # (P,) text pairs for eq. 6 (P may be 0)
    text_items: torch.Tensor  # (P,)
    text_emb: torch.Tensor  # (P, T)
    micro: tuple[MicroBatch, ...]


class TokenizerLosses(NamedTuple):
    total: torch.Tensor
    behave: torch.Tensor  # BPR on quantised scores (+ continuous BPR, weighted)
    vq: torch.Tensor
    macro: torch.Tensor
    micro: torch.Tensor


class BehaviorTokenizer(nn.Module):
    """LightGCN + per-side macro/micro codebooks + text supervision heads.

    Args:
        n_users, n_items: graph size.
        text_dim: width of the frozen text encoder's embeddings (384 for MiniLM).
        cfg: architecture config.
    """

    def __init__(self, n_users: int, n_items: int, text_dim: int, cfg: TokenizerModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_users, self.n_items, self.text_dim = n_users, n_items, text_dim
        self.gcn = LightGCN(n_users, n_items, (1 + cfg.n_micro) * cfg.part_dim, cfg.n_layers, cfg.user_ids)
        self.user = Side(cfg)
        self.item = Side(cfg)
        # f_s: fuses the user's and item's quantised macro vectors into the text space (eq. 6).
        self.fuse = nn.Sequential(
            nn.Linear(2 * cfg.code_dim, cfg.attn_dim), nn.GELU(), nn.Linear(cfg.attn_dim, text_dim)
        )
        self.user_micro = MicroReconstructor(text_dim, cfg.code_dim, cfg.n_phrases, cfg.attn_dim, cfg.attn_heads)
        self.item_micro = MicroReconstructor(text_dim, cfg.code_dim, cfg.n_phrases, cfg.attn_dim, cfg.attn_heads)

    def forward(self, graph: torch.Tensor | SampledGraph, batch: StepBatch, cfg: TokenizerTrainConfig,
                generator: torch.Generator | None = None) -> TokenizerLosses:
        """One training step's loss, eq. 9: L = L_behave + L_vq + α·L_macro + β·L_micro (+ L2 on the batch's z).

        The graph is propagated once (whole, or the batch's sampled neighbourhood) and shared by every loss.
        """
        zu, zi = self.gcn(graph)
        behave, vq = self.behave_loss(zu, zi, batch.users, batch.pos, batch.neg, cfg.continuous_weight, generator)
        l2 = cfg.l2 * (zu[batch.users].pow(2).sum(1).mean() + zi[batch.pos].pow(2).sum(1).mean())
        macro = torch.zeros(())
        if len(batch.text_users) >= 2 and cfg.alpha > 0:
            macro = self.macro_loss(zu, zi, batch.text_users, batch.text_items, batch.text_emb)
        micro = torch.zeros(())
        for m in batch.micro:
            micro = micro + self.micro_loss(m.side, zu if m.side == "user" else zi, m.ids, m.phrases, m.valid, m.mask)
        total = behave + vq + cfg.alpha * macro + cfg.beta * micro + l2
        return TokenizerLosses(total, behave, vq, macro, micro)

    def propagate(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 3 for every user and item, without gradients (chunked over embedding columns). -> (U, D), (I, D)."""
        return self.gcn.propagate_all(adj)

    @staticmethod
    def score(qu: torch.Tensor, qi: torch.Tensor) -> torch.Tensor:
        """Row-wise q_u·q_i over all 1+N parts. (B, 1+N, C) x (B, 1+N, C) -> (B,)."""
        return (qu * qi).sum(dim=(1, 2))

    def behave_loss(
        self,
        zu: torch.Tensor,
        zi: torch.Tensor,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        continuous_weight: float,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 5: BPR on quantised scores (+ weighted BPR on continuous scores) and the VQ losses.

        Args:
            zu (U, D), zi (I, D): propagated embeddings; users, pos, neg: (B,) ids.
        Returns:
            (behave, vq) scalar losses.
        """
        items = torch.cat([pos, neg])
        qu = self.user(zu[users], generator)  # (B, 1+N, C)
        qi = self.item(zi[items], generator)  # (2B, 1+N, C)
        b = users.shape[0]
        loss = bpr(self.score(qu.quantized, qi.quantized[:b]), self.score(qu.quantized, qi.quantized[b:]))
        if continuous_weight > 0:
            cu, ci = qu.continuous, qi.continuous
            loss = loss + continuous_weight * bpr(self.score(cu, ci[:b]), self.score(cu, ci[b:]))
        return loss, qu.vq_loss + qi.vq_loss

    def macro_loss(
        self, zu: torch.Tensor, zi: torch.Tensor, users: torch.Tensor, items: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 6: InfoNCE between f_s(c_u^macro, c_i^macro) and the pair's text embedding.

        Args:
            users, items: (B,) ids of text pairs (aligned row by row); text: (B, T).
        """
        mu = self.user(zu[users]).quantized[:, 0]  # (B, C)
        mi = self.item(zi[items]).quantized[:, 0]  # (B, C)
        return info_nce(self.fuse(torch.cat([mu, mi], dim=-1)), text, self.cfg.temperature)

    def micro_loss(
        self,
        side: str,
        z: torch.Tensor,
        ids: torch.Tensor,
        phrases: torch.Tensor,
        valid: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Eqs. 7–8 for ``side`` in {"user", "item"}. ids (B,), phrases (B, n, T), valid/mask (B, n)."""
        quant = (self.user if side == "user" else self.item)(z[ids]).quantized[:, 1:]  # (B, N, C)
        recon = self.user_micro if side == "user" else self.item_micro
        return recon(phrases, valid, quant, mask, self.cfg.micro_objective).loss

    @torch.no_grad()
    def all_vectors(self, adj: torch.Tensor, users: torch.Tensor | None = None,
                    chunk: int = 65536, revive: bool = False) -> dict[str, torch.Tensor]:
        """Continuous and quantised vectors and codes of every user and item (eval mode, no restarts),
        ``chunk`` entities at a time so that the code distances stay small at a million users.

        Args:
            users: (u,) ids whose user *vectors* are wanted (default: all); codes are always every user's.
            revive: first re-seed the codes no user (item) uses, :meth:`Side.revive_unused`; the vectors and codes
                returned are those of the repaired codebooks.
        Returns keys user_cont, user_quant (rows of ``users``), user_codes, item_cont, item_quant, item_codes;
        vectors are flattened to (n, (1+N)·C), codes (n, 1+N).
        """
        zu, zi = self.propagate(adj)
        if revive:
            self.user.revive_unused(zu, chunk)
            self.item.revive_unused(zi, chunk)
        out: dict[str, torch.Tensor] = {}
        for name, side, z, rows in (("user", self.user, zu, users), ("item", self.item, zi, None)):
            codes = torch.cat([side.encode(zc) for zc in z.split(chunk)]) if len(z) else \
                torch.zeros(0, 1 + self.cfg.n_micro, dtype=torch.long)  # (n, 1+N)
            zv, cv = (z, codes) if rows is None else (z[rows], codes[rows])
            out[f"{name}_cont"] = torch.cat([side.project(c).flatten(1) for c in zv.split(chunk)]) if len(zv) else \
                torch.zeros(0, (1 + self.cfg.n_micro) * self.cfg.code_dim)  # (n, (1+N)·C)
            out[f"{name}_quant"] = side.decode(cv).flatten(1)
            out[f"{name}_codes"] = codes
        return out
