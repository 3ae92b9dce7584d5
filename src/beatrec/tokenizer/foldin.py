"""Cold start: behavior tokens for a user (or item) the trained graph has never seen, without retraining.

A new user u known only by the items S it interacted with is *folded into* the trained LightGCN (eqs. 2–3).
With the trained free embeddings E⁰ and the normalised training graph Â, the per-layer item vectors
H_l = Âˡ E⁰ are fixed, so u's layer outputs are one aggregation each (the new user's own effect on its items'
vectors is second order and ignored):

    h_u^l = Σ_{i∈S} h_i^{l-1} / sqrt(d_u · d_i)             (l = 1..L, d_u = |S|, d_i = item degree + 1)
    z_u   = (e_u + Σ_l h_u^l) / (L + 1)                       (eq. 3)

The free embedding e_u has no data to learn from; it is predicted from a = Σ_l h_u^l by a ridge map fitted on
the trained entities of the same side (e ≈ a·W), which makes an in-graph user folded back in land close to its
trained z. z_u is then projected and quantised by the trained codebooks (eq. 4).

When S is small (fewer than ``min_interactions``), z_u is blended with its neighbours (the paper's cold-start
borrowing, Fig. 4): *collaborative* neighbours are trained users nearest to the folded-in z by cosine;
*semantic* neighbours are trained users whose interacted items' texts are nearest to those of S (each
entity's semantic vector is the mean MiniLM embedding of its training explanations). The blend weight of the
neighbours is α = shrink / (shrink + |S|). Provenance lists every neighbour (kind, similarity, weight, tokens)
and, per token position, which neighbours carry the chosen token. Items are folded in the same way from
their users.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from beatrec.config import check
from beatrec.errors import ConfigError, RunError
from beatrec.tokenizer.graph import normalized_bipartite
from beatrec.tokenizer.lightgcn import e0_from_state

SIDES = ("user", "item")


@dataclass
class FoldInConfig:
    """Cold-start settings.

    Attributes:
        min_interactions: below this many interactions the new entity borrows from neighbours.
        shrink: α = shrink / (shrink + n) is the neighbours' share of the blended vector when borrowing.
        n_neighbours: neighbours of each kind (collaborative, semantic).
        ridge: L2 strength of the map that predicts the free embedding e from the propagated layers.
    """

    min_interactions: int = 5
    shrink: float = 2.0
    n_neighbours: int = 5
    ridge: float = 1.0

    def validate(self) -> None:
        check(self.min_interactions >= 0, f"min_interactions must be >= 0, got {self.min_interactions}")
        check(self.shrink >= 0, f"shrink must be >= 0, got {self.shrink}")
        check(self.n_neighbours >= 0, f"n_neighbours must be >= 0, got {self.n_neighbours}")
        check(self.ridge > 0, f"ridge must be > 0, got {self.ridge}")


class Neighbour(NamedTuple):
    id: int
    kind: str  # "collaborative" | "semantic"
    similarity: float  # cosine
    weight: float  # share of the blended vector (0 when not borrowing)
    tokens: list[int]  # its trained 1+N tokens


class FoldInResult(NamedTuple):
    side: str  # "user" | "item"
    interactions: list[int]  # ids of the counterpart entities it was folded in from
    tokens: list[int]  # (1+N,) macro then micro codes
    folded_tokens: list[int]  # (1+N,) tokens of the pure fold-in, before borrowing
    alpha: float  # neighbours' share of the blended vector
    neighbours: list[Neighbour]
    token_sources: list[list[int]]  # per position: ids of neighbours whose token there equals the chosen one
    z: torch.Tensor  # (D,) the blended continuous vector that was quantised

    def to_dict(self) -> dict:
        d = self._asdict()
        d["neighbours"] = [n._asdict() for n in self.neighbours]
        d.pop("z")
        return d


class FoldIn:
    """A trained stage-1 model ready to fold new users and items in.

    Args:
        e0: (U+I, D) trained free embeddings E⁰ (users first); n_users: U.
        users, items: (E,) training edges the model was trained on (minus any entities to treat as unseen).
        n_layers: LightGCN depth L.
        sides: {"user": Side, "item": Side} trained projection + codebooks (:class:`beatrec.tokenizer.model.Side`).
        semantic: optional {"user": (U, T), "item": (I, T)} semantic vectors (rows of zeros = no text).
        exclude: {"user": ids, "item": ids} entities treated as unseen: their edges are dropped from the graph,
            and they are never neighbours.
        tokens: {"user": (U, 1+N), "item": (I, 1+N)} trained tokens (default: quantise the graph's z).
    """

    def __init__(self, e0: torch.Tensor, n_users: int, users: np.ndarray, items: np.ndarray, n_layers: int,
                 sides: dict, cfg: FoldInConfig | None = None, semantic: dict[str, torch.Tensor] | None = None,
                 exclude: dict[str, np.ndarray] | None = None, tokens: dict[str, torch.Tensor] | None = None) -> None:
        self.cfg = cfg or FoldInConfig()
        self.cfg.validate()
        self.sides = sides
        self.n_layers = n_layers
        self.n_users, self.n_items = n_users, e0.shape[0] - n_users
        exclude = {s: np.asarray((exclude or {}).get(s, []), np.int64) for s in SIDES}
        keep = ~np.isin(users, exclude["user"]) & ~np.isin(items, exclude["item"])
        users, items = np.asarray(users)[keep], np.asarray(items)[keep]
        self.bip, self.deg_user, self.deg_item = normalized_bipartite(users, items, self.n_users, self.n_items)
        r = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(self.n_users, self.n_items))
        r.data[:] = 1.0
        self.known = {"user": r.tocsr(), "item": r.T.tocsr()}  # interactions of each trained entity
        e0 = e0.detach().double().numpy()
        eu, ei = e0[: self.n_users], e0[self.n_users :]
        # Per-layer vectors of the (possibly reduced) training graph: H_l = Â^l E⁰, l = 0..L.
        hu, hi = [eu], [ei]
        for _ in range(n_layers):
            hu, hi = hu + [self.bip @ hi[-1]], hi + [self.bip.T @ hu[-1]]
        self.layers = {"user": hu, "item": hi}
        self.z = {"user": sum(hu) / (n_layers + 1), "item": sum(hi) / (n_layers + 1)}  # (n, D) trained z
        self.trained_mask = {"user": self.deg_user > 0, "item": self.deg_item > 0}
        for s in SIDES:
            self.trained_mask[s][exclude[s]] = False
        self.e_map = {s: self._fit_e_map(s) for s in SIDES}
        # Trained entities' tokens (the run's stored ones when given: what stage 2 reads for them).
        self.tokens = tokens or {s: self._quantise(s, torch.from_numpy(self.z[s]).float()) for s in SIDES}
        self.semantic = semantic
        self._sem_profile = None if semantic is None else {
            "user": self._row_mean(self.known["user"], semantic["item"]),
            "item": self._row_mean(self.known["item"], semantic["user"]),
        }

    @staticmethod
    def _row_mean(known: sp.csr_matrix, vecs: torch.Tensor) -> np.ndarray:
        """Mean of the counterparts' semantic vectors that exist (non-zero rows). -> (n, T)."""
        v = vecs.double().numpy()
        has = (np.abs(v).sum(1) > 0).astype(np.float64)
        s = known @ v
        c = known @ has
        return s / np.maximum(c, 1.0)[:, None]

    def _aggregate(self, side: str, counterparts: np.ndarray) -> np.ndarray:
        """Σ_l h^l of a new entity of ``side`` linked to ``counterparts`` (eq. 2 for one row). -> (D,)."""
        other = "item" if side == "user" else "user"
        deg_other = (self.deg_item if side == "user" else self.deg_user)[counterparts] + 1.0
        w = 1.0 / np.sqrt(len(counterparts) * deg_other)  # (n,)
        return sum(w @ self.layers[other][k - 1][counterparts] for k in range(1, self.n_layers + 1))

    def _fit_e_map(self, side: str) -> np.ndarray:
        """Ridge W: e ≈ a·W over trained entities of ``side``, a = Σ_{l≥1} h^l. -> (D, D)."""
        m = self.trained_mask[side]
        a = sum(self.layers[side][1:])[m]
        e = self.layers[side][0][m]
        d = a.shape[1]
        return np.linalg.solve(a.T @ a + self.cfg.ridge * np.eye(d), a.T @ e)

    @torch.no_grad()
    def _quantise(self, side: str, z: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 1+N) codes with the trained projection and codebooks (eq. 4)."""
        return self.sides[side].encode(z.float())

    def fold_vector(self, side: str, counterparts: list[int] | np.ndarray) -> np.ndarray:
        """The pure fold-in z of a new entity (no borrowing). -> (D,)."""
        c = self._check(side, counterparts)
        a = self._aggregate(side, c)
        return (a @ self.e_map[side] + a) / (self.n_layers + 1)

    def _check(self, side: str, counterparts: list[int] | np.ndarray) -> np.ndarray:
        if side not in SIDES:
            raise ConfigError(f"side must be 'user' or 'item', got {side!r}")
        other = "item" if side == "user" else "user"
        n_other = self.n_items if side == "user" else self.n_users
        c = np.asarray(list(counterparts), dtype=np.int64)
        if c.size == 0:
            raise ConfigError(f"a new {side} needs at least one {other} it interacted with (got an empty list)")
        bad = c[(c < 0) | (c >= n_other)]
        if bad.size:
            raise ConfigError(f"unknown {other} id(s) {sorted(set(bad.tolist()))[:10]} (the run has {other}s 0..{n_other - 1})")
        return np.unique(c)

    def neighbours(self, side: str, counterparts: np.ndarray, z: np.ndarray) -> list[tuple[int, str, float]]:
        """(id, kind, cosine) of the collaborative and the semantic neighbours (trained entities only)."""
        k = self.cfg.n_neighbours
        if k == 0:
            return []
        mask = self.trained_mask[side]
        out: list[tuple[int, str, float]] = []
        cands = [("collaborative", self.z[side], z)]
        if self._sem_profile is not None:
            other = "item" if side == "user" else "user"
            sv = self.semantic[other].double().numpy()[counterparts]
            sv = sv[np.abs(sv).sum(1) > 0]
            if len(sv):
                cands.append(("semantic", self._sem_profile[side], sv.mean(0)))
        for kind, table, q in cands:
            norms = np.linalg.norm(table, axis=1) * max(np.linalg.norm(q), 1e-12)
            cos = np.where(mask & (norms > 0), table @ q / np.maximum(norms, 1e-12), -np.inf)
            top = np.argsort(-cos, kind="stable")[:k]
            out += [(int(i), kind, float(cos[i])) for i in top if np.isfinite(cos[i])]
        return out

    def fold(self, side: str, counterparts: list[int] | np.ndarray) -> FoldInResult:
        """Tokens (with provenance) of a new ``side`` entity that interacted with ``counterparts``."""
        c = self._check(side, counterparts)
        z_fold = self.fold_vector(side, c)
        folded = self._quantise(side, torch.from_numpy(z_fold)[None].float())[0]
        nbrs = self.neighbours(side, c, z_fold)
        n = len(c)
        alpha = self.cfg.shrink / (self.cfg.shrink + n) if (nbrs and n < self.cfg.min_interactions) else 0.0
        ids = sorted({i for i, _, _ in nbrs})
        weights = {i: 0.0 for i in ids}
        if alpha > 0:
            sims = np.array([max(s, 0.0) for _, _, s in nbrs]) + 1e-6
            for (i, _, _), s in zip(nbrs, sims / sims.sum(), strict=True):
                weights[i] += float(s)
        z = (1 - alpha) * z_fold + alpha * sum((weights[i] * self.z[side][i] for i in ids), np.zeros_like(z_fold))
        codes = self._quantise(side, torch.from_numpy(z)[None].float())[0]
        trained = self.tokens[side]
        neighbours = [Neighbour(i, kind, round(sim, 4), round(alpha * weights[i], 4), trained[i].tolist())
                      for i, kind, sim in nbrs]
        sources = [[i for i in ids if int(trained[i][p]) == int(codes[p])] for p in range(len(codes))]
        return FoldInResult(side, c.tolist(), codes.tolist(), folded.tolist(), round(alpha, 4), neighbours, sources,
                            torch.from_numpy(z).float())


def semantic_vectors(rows, n_users: int, n_items: int, column: str, encoder) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Each entity's mean text embedding over its training rows' ``column`` (zeros where it has none).

    Args:
        rows: training text rows (uid, iid, ``column``): :func:`beatrec.data.split.training_texts`.
        encoder: a :class:`beatrec.text_encoder.TextEncoder` (cached, so re-runs are cheap).
    Returns:
        {"user": (U, T), "item": (I, T)} float32.
    """
    texts = rows[column].astype(str).tolist()
    emb = torch.from_numpy(encoder.encode(texts)) if texts else torch.zeros(0, encoder.dim)
    out = {}
    for side, key, n in (("user", "uid", n_users), ("item", "iid", n_items)):
        ids = torch.as_tensor(rows[key].to_numpy(np.int64).copy())
        acc = torch.zeros(n, emb.shape[1]).index_add_(0, ids, emb.float())
        cnt = torch.zeros(n).index_add_(0, ids, torch.ones(len(ids)))
        out[side] = acc / cnt.clamp_min(1)[:, None]
    return out


def load_foldin(run: str | Path, data: str | Path | None = None, cfg: FoldInConfig | None = None,
                exclude: dict[str, np.ndarray] | None = None, semantic: bool = True,
                encoder=None) -> FoldIn:  # noqa: ANN001
    """A :class:`FoldIn` for a ``beatrec tokenize`` run.

    Args:
        run: stage-1 run directory (``tokenizer.safetensors``, ``config.yaml``, ``split.json``, token tables).
        data: its dataset directory (default: the one recorded in the run's ``metrics.json``).
        exclude: entities to treat as unseen (their edges are dropped): the cold-start benchmark and tests.
        semantic: also find semantic neighbours (embeds the training explanations with the run's text encoder).
    Raises:
        RunError: a stage-1 artifact is missing or unreadable, or the run does not match the dataset.
    """
    from safetensors.torch import load_file

    from beatrec.align.vocab import read_token_table
    from beatrec.data.split import ZeroShotSplit, training_texts
    from beatrec.tokenizer.model import Side
    from beatrec.tokenizer.pipeline import open_stage1_run

    run = Path(run)
    need = ("tokenizer.safetensors", "config.yaml", "split.json", "user_tokens.parquet", "item_tokens.parquet")
    tcfg, ds = open_stage1_run(run, data, need)
    try:
        state = load_file(str(run / "tokenizer.safetensors"))
    except Exception as e:  # safetensors raises its own error types on a corrupt file
        raise RunError(f"{run / 'tokenizer.safetensors'}: cannot be read ({e})") from e
    e0 = e0_from_state(state)
    if e0 is None or e0.shape[0] != ds.n_users + ds.n_items:
        raise RunError(f"{run / 'tokenizer.safetensors'}: no LightGCN embedding of {ds.n_users}+{ds.n_items} "
                       f"entities (was the run tokenized from {data}?)")
    sides = {}
    for s in SIDES:
        side = Side(tcfg.model)
        own = {k[len(s) + 1:]: v for k, v in state.items() if k.startswith(s + ".")}
        try:
            side.load_state_dict(own)
        except RuntimeError as e:
            raise RunError(f"{run / 'tokenizer.safetensors'}: the {s} codebooks do not fit config.yaml ({e})") from e
        sides[s] = side.eval()
    tokens = {s: torch.from_numpy(read_token_table(run / f"{s}_tokens.parquet").copy()) for s in SIDES}
    tr = ds.interactions[ds.interactions["split"] == "train"]
    sem = None
    if semantic:
        from beatrec.text_encoder import TextEncoder

        rows = training_texts(ds, ZeroShotSplit.load(run / "split.json"))
        if exclude is not None:
            rows = rows[~rows["uid"].isin(exclude.get("user", [])) & ~rows["iid"].isin(exclude.get("item", []))]
        sem = semantic_vectors(rows, ds.n_users, ds.n_items, tcfg.macro_text,
                               encoder or TextEncoder(tcfg.text_encoder))
    return FoldIn(e0.float(), ds.n_users, tr["user"].to_numpy(np.int64), tr["item"].to_numpy(np.int64),
                  tcfg.model.n_layers, sides, cfg, sem, exclude, tokens)
