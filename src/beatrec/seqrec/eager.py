"""EAGER: two-stream generative recommender with behavior-semantic collaboration (Wang et al., KDD 2024,
arXiv 2406.14017). The TIGER-style baseline is a preset of the same model (:data:`TIGER_PRESET`).

Architecture (paper §3.3):
  - a shared bidirectional transformer encoder over the user's history of item ids, H = Enc(i_1..i_L);
    by default (``tie_items``) item i enters it as the first stream's decoder embedding of i's last-level trie
    node, the vector that also scores i at the last decoding step (SASRec's input/output tying; our choice);
  - one transformer decoder per stream s ∈ {behavior, semantic}, trained with teacher forcing to generate the
    target item's code c^s = (c_1..c_D) (codes: :mod:`beatrec.seqrec.codes`):
    L_gen^s = -Σ_l log p(c_l | c_<l, H)  (the generation loss);
  - global contrastive task (§3.4.1): a summary token [SUM] is appended after the code in each decoder; its
    output h_sum^s is projected and contrasted with the target item's pre-trained embedding e^s (behavior:
    the SASRec item embedding; semantic: the text-encoder embedding of the title) by in-batch InfoNCE,
    L_con^s = -log exp(cos(W h_sum, e_i)/τ) / Σ_j exp(cos(W h_sum, e_j)/τ);
  - semantic-guided transfer task (§3.4.2): an auxiliary decoder reads the behavior code with some positions
    replaced by [MASK] and cross-attends to the semantic summary h_sum^sem; it (a) reconstructs the masked
    behavior codes (L_recon, cross-entropy on masked positions) and (b) recognises whether the code and the
    summary belong to the same item (L_match, binary cross-entropy; negatives: the summaries shuffled in the
    batch);
  - total: L = Σ_s L_gen^s + λ_con Σ_s L_con^s + λ_tr (L_recon + L_match).
Inference (§3.5): trie-constrained beam search in each stream, then a confidence merge of the two ranked
lists (:func:`beatrec.seqrec.beam.merge_streams`; default: each item's normalised likelihood; ``joint``: every
candidate of either beam is scored by both decoders and ranked by the sum of its log-likelihoods, as the
authors' released code reranks).

The loss weights λ_con, λ_tr, τ and the mask rate are our defaults, not values taken from the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from beatrec.config import check
from beatrec.losses import info_nce
from beatrec.seqrec.beam import MERGES, BeamResult, constrained_beam_search, merge_streams, rank_distinct
from beatrec.seqrec.codes import ItemCodes
from beatrec.seqrec.encoder import EncodedHistory, ItemSequenceEncoder
from beatrec.seqrec.trie import Trie

STREAMS = ("behavior", "semantic")
CODE_TOKENS = ("shared", "prefix")
BOS, SUM, MASK, N_SPECIAL = 0, 1, 2, 3  # special decoder tokens; code tokens follow, offset per level

# ``beatrec seqrec train --model tiger``: a single semantic-code stream, no auxiliary tasks, TIGER's token scheme
# (one token per code value and level) over a deeper code (two k-means levels of 32, then the disambiguation).
TIGER_PRESET = ("eager.use_behavior=false", "eager.use_contrastive=false", "eager.use_transfer=false",
                "eager.code_tokens=shared", "eager.tie_items=false", "codes.k=32", "codes.levels=2")


@dataclass
class EagerConfig:
    """EAGER architecture, auxiliary tasks and inference. Each switch turns off one part (ablations)."""

    d_model: int = 128
    n_heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 2
    d_ff: int = 512
    dropout: float = 0.1
    use_behavior: bool = True  # behavior-code stream
    use_semantic: bool = True  # semantic-code stream (off automatically for data without item text)
    use_contrastive: bool = True  # global contrastive task (summary token + InfoNCE)
    use_transfer: bool = True  # semantic-guided transfer task (needs both streams; inactive otherwise)
    contrastive_weight: float = 0.1  # λ_con (the behavior stream's; the semantic stream's is × the scale below)
    semantic_contrastive_scale: float = 1.0  # semantic L_con weight = λ_con × this (the authors' code: 1 and 10)
    # L_con negatives: 0 = the batch's other targets (in-batch); N > 0 = N items drawn uniformly per batch instead,
    # shared by every row (the authors' code: 2048); an item equal to the row's target is not its negative (ours:
    # the released code keeps such collisions)
    contrastive_negatives: int = 0
    transfer_weight: float = 0.1  # λ_tr
    temperature: float = 0.1  # τ of the InfoNCE
    mask_prob: float = 0.5  # share of behavior-code positions masked for reconstruction (>= 1 per sample)
    # L_gen after the first level: softmax over the children of the target's prefix only (its siblings; the
    # authors' code keys level-2 outputs by the first code) instead of over every node of the level. prefix only.
    sibling_softmax: bool = False
    code_tokens: str = "prefix"  # prefix: one token per trie node | shared: one per code value and level (TIGER)
    tie_items: bool = True  # encoder reads items through the first stream's last-level node embeddings (prefix)
    beam_size: int = 20  # per stream
    merge: str = "likelihood"  # likelihood | entropy (beam.merge_streams) | joint (Σ_s log p_s over the union)

    def validate(self) -> None:
        for name in ("d_model", "n_heads", "enc_layers", "dec_layers", "d_ff", "beam_size"):
            check(getattr(self, name) >= 1, f"eager.{name} must be >= 1")
        check(self.d_model % self.n_heads == 0, "eager.d_model must be divisible by eager.n_heads")
        check(0 <= self.dropout < 1, "eager.dropout must be in [0, 1)")
        check(self.use_behavior or self.use_semantic, "eager: at least one of use_behavior/use_semantic")
        check(self.contrastive_weight >= 0 and self.transfer_weight >= 0 and self.semantic_contrastive_scale >= 0,
              "eager loss weights must be >= 0")
        check(self.contrastive_negatives >= 0, "eager.contrastive_negatives must be >= 0")
        check(not self.sibling_softmax or self.code_tokens == "prefix",
              "eager.sibling_softmax needs eager.code_tokens=prefix (one token per trie node)")
        check(self.temperature > 0, "eager.temperature must be > 0")
        check(0 < self.mask_prob <= 1, "eager.mask_prob must be in (0, 1]")
        check(self.merge in MERGES, f"eager.merge must be one of {MERGES}, got {self.merge!r}")
        check(self.code_tokens in CODE_TOKENS, f"eager.code_tokens must be one of {CODE_TOKENS}, "
              f"got {self.code_tokens!r}")
        check(not self.tie_items or self.code_tokens == "prefix",
              "eager.tie_items needs eager.code_tokens=prefix (one last-level token per item); "
              "with shared tokens set eager.tie_items=false")

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(s for s, on in zip(STREAMS, (self.use_behavior, self.use_semantic), strict=True) if on)

    @property
    def transfer_active(self) -> bool:
        return self.use_transfer and self.use_behavior and self.use_semantic


def _decoder_stack(d: int, heads: int, ff: int, dropout: float, layers: int) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(d, heads, ff, dropout, activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerDecoder(layer, layers)


class PrefixIndex(nn.Module):
    """The trie nodes of a code set, numbered per level: node (l, j) is the j-th distinct prefix c_1..c_{l+1}.

    ``child[l][j, c]`` is the level-(l+1) index of prefix j extended by code value c (level 0: j = 0, the root),
    or -1. With ``code_tokens="prefix"`` a decoder gives every node its own token, so the last level is one
    token per item (EAGER's released code keys its second-level tokens by the first code the same way).
    codes (n_items, D) -> buffers child_0 .. child_{D-1}.
    """

    def __init__(self, codes: np.ndarray, vocab_sizes: tuple[int, ...]) -> None:
        super().__init__()
        parent = np.zeros(len(codes), dtype=np.int64)
        sizes = []
        for lvl, v in enumerate(vocab_sizes):
            _, idx = np.unique(codes[:, : lvl + 1], axis=0, return_inverse=True)
            idx = idx.reshape(-1)
            child = torch.full((int(parent.max()) + 1, v), -1, dtype=torch.long)
            child[parent, codes[:, lvl]] = torch.from_numpy(idx)
            self.register_buffer(f"child_{lvl}", child, persistent=False)
            sizes.append(int(idx.max()) + 1)
            parent = idx
        self.sizes = tuple(sizes)  # nodes per level

    def child(self, lvl: int) -> torch.Tensor:
        return getattr(self, f"child_{lvl}")

    def walk(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (..., t) -> (..., t) node index of each prefix c_1..c_{l+1} at its level; -1 from the first code
        that leaves the trie on (the dead hypotheses of a beam search)."""
        node = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
        out = []
        for lvl in range(codes.shape[-1]):
            child = self.child(lvl)
            c = codes[..., lvl]
            ok = (node >= 0) & (c >= 0) & (c < child.shape[1])
            node = torch.where(ok, child[node.clamp_min(0), c.clamp(0, child.shape[1] - 1)], -1)
            out.append(node)
        return torch.stack(out, -1) if out else codes.new_zeros((*codes.shape[:-1], 0))


class CodeDecoder(nn.Module):
    """One stream's decoder: [BOS] c_1 .. c_D [SUM] -> next-code logits per level and the summary state.

    Two token schemes (``code_tokens``):
      - ``"shared"`` (TIGER): the token of code value c at level l is the same whatever the prefix; level l's
        output is a linear head over its V_l values;
      - ``"prefix"``: every trie node (prefix c_1..c_l) is its own token, and level l's output scores all its
        nodes by a dot product with their (tied) embeddings, logit(node) = h·e_node + b_node; the last level
        is then one embedding per item. Training uses the softmax over all nodes of the level; decoding
        restricts it to the children of the current prefix (the trie), so scores stay log-probabilities.

    Args:
        codes: the stream's item codes (D levels).
        target_dim: width of the pre-trained embedding the summary is contrasted with (None: no projector).
    """

    def __init__(self, codes: ItemCodes, d: int, heads: int, ff: int, dropout: float, layers: int,
                 target_dim: int | None, code_tokens: str = "shared") -> None:
        super().__init__()
        vocab_sizes = codes.vocab_sizes
        self.vocab_sizes = vocab_sizes
        self.depth = len(vocab_sizes)
        self.v_max = max(vocab_sizes)
        self.prefix = PrefixIndex(codes.codes, vocab_sizes) if code_tokens == "prefix" else None
        sizes = self.prefix.sizes if self.prefix is not None else vocab_sizes
        self.level_sizes = sizes  # tokens per level
        self._level_start = tuple(int(x) for x in np.cumsum((0, *sizes[:-1])))  # python ints: no device sync
        self.register_buffer("offsets", N_SPECIAL + torch.tensor((0, *np.cumsum(sizes)[:-1].tolist())),
                             persistent=False)
        self.tok_emb = nn.Embedding(N_SPECIAL + sum(sizes), d)
        self.pos_emb = nn.Embedding(self.depth + 2, d)
        self.decoder = _decoder_stack(d, heads, ff, dropout, layers)
        self.norm = nn.LayerNorm(d)
        if self.prefix is None:
            self.heads = nn.ModuleList(nn.Linear(d, v) for v in vocab_sizes)
        else:
            self.node_bias = nn.Parameter(torch.zeros(sum(sizes)))
            # as the encoder's item table (and SASRec's tied output): small init, so the optimiser's steps shape
            # the node embeddings from the first epoch
            nn.init.normal_(self.tok_emb.weight, std=0.02)
            nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.proj = nn.Linear(d, target_dim) if target_dim else None

    def targets(self, codes: torch.Tensor, siblings: bool = False) -> torch.Tensor:
        """codes (N, t) level values -> (N, t) per-level class indices of :meth:`forward`'s logits (with
        ``siblings``, levels after the first are classed by code value among the prefix's children)."""
        cls = codes if self.prefix is None else self.prefix.walk(codes)
        return torch.cat([cls[:, :1], codes[:, 1:]], 1) if siblings else cls

    def item_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (n, D) whole item codes -> (n,) token id of each item's last-level node (``prefix`` scheme)."""
        return self.code_tokens(codes)[:, -1]

    def code_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (..., t) level values -> (..., t) decoder token ids ([MASK] off the trie: dead hypotheses)."""
        cls = self.targets(codes)
        return torch.where(cls >= 0, cls + self.offsets[: codes.shape[-1]], MASK)

    def _node_weights(self, lvl: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo = self._level_start[lvl]
        hi = lo + self.level_sizes[lvl]
        return self.tok_emb.weight[N_SPECIAL + lo: N_SPECIAL + hi], self.node_bias[lo:hi]  # (n_l, d), (n_l,)

    def _all_logits(self, h: torch.Tensor, lvl: int) -> torch.Tensor:
        """h (N, d) -> (N, tokens of level lvl)."""
        if self.prefix is None:
            return self.heads[lvl](h)
        w, b = self._node_weights(lvl)
        return h @ w.t() + b

    def _next_logits(self, h: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """h (..., d) states after ``prefix`` (..., t) -> logits of each code value of level t, (..., v_max)."""
        t = prefix.shape[-1]
        if self.prefix is None:
            logits = self.heads[t](h)  # (..., V_t)
        else:
            parent = self.prefix.walk(prefix)[..., -1] if t else torch.zeros(h.shape[:-1], dtype=torch.long,
                                                                                device=h.device)
            kids = self.prefix.child(t)[parent.clamp_min(0)]  # (..., V_t) node index or -1
            kids = kids.masked_fill((parent < 0)[..., None], -1)
            w, b = self._node_weights(t)
            logits = torch.einsum("...d,...vd->...v", h, w[kids.clamp_min(0)]) + b[kids.clamp_min(0)]
            logits = logits.masked_fill(kids < 0, float("-inf"))
        return F.pad(logits, (0, self.v_max - logits.shape[-1]), value=float("-inf"))

    def _run(self, tokens: torch.Tensor, memory: torch.Tensor, mem_pad: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.tok_emb(tokens) + self.pos_emb.weight[:t]  # (N, T, d)
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=tokens.device), 1)
        h = self.decoder(x, memory, tgt_mask=causal, memory_key_padding_mask=mem_pad)  # (N, T, d)
        return self.norm(h)

    def forward(self, codes: torch.Tensor, memory: torch.Tensor, mem_pad: torch.Tensor, siblings: bool = False
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Teacher forcing. codes (B, D), memory (B, L, d), mem_pad (B, L) ->
        (per-level logits [(B, tokens of level l)] whose classes are :meth:`targets`, summary (B, d)).

        ``siblings``: levels after the first score only the children of the target's prefix, (B, v_max) with
        -inf elsewhere (classes: code values), as decoding does.
        """
        b = codes.shape[0]
        bos = torch.full((b, 1), BOS, dtype=torch.long, device=codes.device)
        summ = torch.full((b, 1), SUM, dtype=torch.long, device=codes.device)
        h = self._run(torch.cat([bos, self.code_tokens(codes), summ], 1), memory, mem_pad)  # (B, D+2, d)
        logits = [self._next_logits(h[:, lvl], codes[:, :lvl]) if siblings and lvl else self._all_logits(h[:, lvl], lvl)
                  for lvl in range(self.depth)]  # position l predicts c_{l+1}
        return logits, h[:, self.depth + 1]

    def next_logits_beams(self, prefix: torch.Tensor, memory: torch.Tensor, mem_pad: torch.Tensor) -> torch.Tensor:
        """Beam-batched next-code logits without copying the memory per beam.

        The b hypotheses of a user are laid side by side in one target sequence of length b·(t+1) with a
        block-diagonal causal mask, so they cross-attend to the user's memory once (the same arithmetic as
        :meth:`next_logits` on each hypothesis; the memory's keys and values are computed once per user, not
        once per beam). prefix (B, b, t), memory (B, L, d), mem_pad (B, L) -> (B, b, v_max).
        """
        return self._next_logits(self._beam_states(prefix, memory, mem_pad)[:, :, -1], prefix)

    def _beam_states(self, prefix: torch.Tensor, memory: torch.Tensor, mem_pad: torch.Tensor) -> torch.Tensor:
        """prefix (B, b, t) -> decoder states after [BOS] c_1 .. c_t of every hypothesis, (B, b, t+1, d)."""
        bsz, nb, t = prefix.shape
        bos = torch.full((bsz, nb, 1), BOS, dtype=torch.long, device=prefix.device)
        tok = torch.cat([bos, self.code_tokens(prefix)], 2)
        x = self.tok_emb(tok) + self.pos_emb.weight[: t + 1]  # (B, b, t+1, d)
        x = x.reshape(bsz, nb * (t + 1), -1)  # (B, b·(t+1), d)
        beam_of = torch.arange(nb, device=prefix.device).repeat_interleave(t + 1)  # (b·(t+1),)
        pos = torch.arange(t + 1, device=prefix.device).repeat(nb)
        blocked = (beam_of[:, None] != beam_of[None, :]) | (pos[None, :] > pos[:, None])  # True = hidden
        h = self.norm(self.decoder(x, memory, tgt_mask=blocked, memory_key_padding_mask=mem_pad))
        return h.reshape(bsz, nb, t + 1, -1)

    def code_log_probs(self, codes: torch.Tensor, memory: torch.Tensor, mem_pad: torch.Tensor, trie: Trie
                       ) -> torch.Tensor:
        """log p(code) of candidate codes under this decoder, as the beam search scores them (each step's
        softmax restricted to the trie's children of the prefix). codes (B, M, D) valid codes -> (B, M)."""
        h = self._beam_states(codes[:, :, :-1], memory, mem_pad)  # (B, M, D, d)
        nodes = torch.zeros(codes.shape[:2], dtype=torch.long, device=codes.device)  # (B, M) trie nodes
        total = torch.zeros(codes.shape[:2], device=codes.device)
        for lvl in range(self.depth):
            logits = self._next_logits(h[:, :, lvl], codes[:, :, :lvl]).float()  # (B, M, v_max)
            allowed = trie.allowed(nodes)  # (B, M, v_max)
            logp = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
            total = total + torch.gather(logp, 2, codes[:, :, lvl: lvl + 1]).squeeze(2)
            nodes = trie.advance(nodes, codes[:, :, lvl])
        return total

    def next_logits(self, prefix: torch.Tensor, memory: torch.Tensor, mem_pad: torch.Tensor) -> torch.Tensor:
        """prefix (N, t) codes so far, memory (N, L, d) -> logits of code t+1, (N, v_max) (-inf beyond V_t)."""
        n, t = prefix.shape
        bos = torch.full((n, 1), BOS, dtype=torch.long, device=prefix.device)
        h = self._run(torch.cat([bos, self.code_tokens(prefix)], 1), memory, mem_pad)  # (N, t+1, d)
        return self._next_logits(h[:, t], prefix)


class TransferDecoder(nn.Module):
    """Semantic-guided transfer (§3.4.2): [CLS] + (masked) behavior code, cross-attending to the semantic summary.

    Returns per-level reconstruction logits and a match logit (is this code the summary's item?).
    """

    def __init__(self, vocab_sizes: tuple[int, ...], d: int, heads: int, ff: int, dropout: float, layers: int
                 ) -> None:
        super().__init__()
        self.depth = len(vocab_sizes)
        self.register_buffer("offsets", N_SPECIAL + torch.tensor((0, *np.cumsum(vocab_sizes)[:-1].tolist())),
                             persistent=False)
        self.tok_emb = nn.Embedding(N_SPECIAL + sum(vocab_sizes), d)
        self.pos_emb = nn.Embedding(self.depth + 1, d)
        self.decoder = _decoder_stack(d, heads, ff, dropout, layers)
        self.norm = nn.LayerNorm(d)
        self.heads = nn.ModuleList(nn.Linear(d, v) for v in vocab_sizes)
        self.match = nn.Linear(d, 1)

    def forward(self, codes: torch.Tensor, masked: torch.Tensor, summary: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """codes (B, D), masked (B, D) bool, summary (B, d) -> ([(B, V_l)] per level, match logit (B,))."""
        b = codes.shape[0]
        tok = torch.where(masked, torch.full_like(codes, MASK), codes + self.offsets)  # (B, D)
        tok = torch.cat([torch.full((b, 1), BOS, dtype=torch.long, device=codes.device), tok], 1)  # (B, D+1)
        x = self.tok_emb(tok) + self.pos_emb.weight[None]  # (B, D+1, d)
        h = self.norm(self.decoder(x, summary[:, None]))  # bidirectional self-attention; (B, D+1, d)
        return [head(h[:, lvl + 1]) for lvl, head in enumerate(self.heads)], self.match(h[:, 0]).squeeze(1)


class EagerOutput(NamedTuple):
    loss: torch.Tensor  # () total
    gen_behavior: torch.Tensor  # () L_gen, behavior stream (0 when off)
    gen_semantic: torch.Tensor  # () L_gen, semantic stream
    con_behavior: torch.Tensor  # () L_con, behavior stream
    con_semantic: torch.Tensor  # () L_con, semantic stream
    recon: torch.Tensor  # () masked behavior-code reconstruction
    match: torch.Tensor  # () code-summary match recognition


class Recommendation(NamedTuple):
    items: torch.Tensor  # (B, k) merged ranking, -1 in empty slots
    streams: dict[str, BeamResult]  # per-stream beam results


class Eager(nn.Module):
    """The EAGER model over ``n_items`` items.

    Args:
        n_items: number of items.
        max_len: longest history.
        codes: {stream: ItemCodes} for every enabled stream.
        cfg: the model config.
        target_dims: {stream: width of its pre-trained item embedding}, for the contrastive projectors.
    """

    def __init__(self, n_items: int, max_len: int, codes: dict[str, ItemCodes], cfg: EagerConfig,
                 target_dims: dict[str, int] | None = None) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.n_items = cfg, n_items
        self._target_streams: tuple[str, ...] = ()  # set by set_training_targets
        self._generator: torch.Generator | None = None
        missing = [s for s in cfg.streams if s not in codes]
        if missing:
            raise ValueError(f"no item codes for stream(s) {missing}")
        self.encoder = ItemSequenceEncoder(n_items, cfg.d_model, cfg.n_heads, cfg.enc_layers, cfg.d_ff,
                                           cfg.dropout, max_len, causal=False, own_items=not cfg.tie_items)
        dims = target_dims or {}
        if cfg.use_contrastive and any(s not in dims for s in cfg.streams):
            raise ValueError("the contrastive task needs target_dims for every enabled stream")
        self.decoders = nn.ModuleDict({
            s: CodeDecoder(codes[s], cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.dec_layers,
                           dims.get(s) if cfg.use_contrastive else None, cfg.code_tokens)
            for s in cfg.streams
        })
        self.codes = {s: codes[s] for s in cfg.streams}
        for s in cfg.streams:
            if codes[s].n_items != n_items:
                raise ValueError(f"{s} codes cover {codes[s].n_items} items, the model {n_items}")
            self.register_buffer(f"codes_{s}", torch.from_numpy(codes[s].codes), persistent=False)
        self.tries = {s: Trie(codes[s].codes, vocab_size=max(codes[s].vocab_sizes)) for s in cfg.streams}
        self.transfer = (TransferDecoder(codes["behavior"].vocab_sizes, cfg.d_model, cfg.n_heads, cfg.d_ff,
                                         cfg.dropout, cfg.dec_layers) if cfg.transfer_active else None)
        if cfg.tie_items:
            tied = self.decoders[cfg.streams[0]]
            assert tied.prefix is not None
            self.register_buffer("item_token", tied.item_tokens(torch.from_numpy(codes[cfg.streams[0]].codes)),
                                 persistent=False)

    def encode(self, history: torch.Tensor) -> EncodedHistory:
        """history (B, L) item ids, PAD = -1 -> the shared encoder's EncodedHistory(states (B, L, d), pad (B, L)).

        With ``tie_items`` each history item is read as its leaf token of the first stream's decoder, so every
        item's input vector is also its output vector (SASRec's weight tying) and is trained by every softmax
        over the last level; only the history's rows are gathered (padded positions are masked by the encoder).
        """
        if not self.cfg.tie_items:
            return self.encoder(history)
        tokens = self.item_token[history.clamp_min(0)]  # (B, L)
        return self.encoder(history, self.decoders[self.cfg.streams[0]].tok_emb(tokens))

    def item_table(self) -> torch.Tensor | None:
        """(n_items + 1, d) the item vectors :meth:`encode` reads, row 0 = padding: with ``tie_items`` the
        last-level node embeddings of the first stream's decoder; else None (the encoder's own table)."""
        if not self.cfg.tie_items:
            return None
        w = self.decoders[self.cfg.streams[0]].tok_emb.weight  # (tokens, d)
        return torch.cat([w.new_zeros(1, w.shape[1]), w[self.item_token]])

    def item_codes(self, stream: str, items: torch.Tensor) -> torch.Tensor:
        """items (B,) -> codes (B, D_stream)."""
        return getattr(self, f"codes_{stream}")[items]

    def set_training_targets(self, target_emb: dict[str, torch.Tensor], generator: torch.Generator | None) -> None:
        """What :meth:`calculate_loss` reads besides the batch: {stream: (n_items, d_s)} pre-trained item embeddings
        (the contrastive task's targets; kept as non-persistent buffers, so they follow the model's device and
        stay out of ``model.safetensors``) and the RNG of the transfer task."""
        self._target_streams = tuple(target_emb)
        for s, e in target_emb.items():
            self.register_buffer(f"target_emb_{s}", e, persistent=False)
        self._generator = generator

    def calculate_loss(self, history: torch.Tensor, target: torch.Tensor) -> EagerOutput:
        """The seqrec training contract: (B, L) histories, (B,) next items -> EagerOutput (total loss first)."""
        emb = {s: getattr(self, f"target_emb_{s}")[target] for s in self._target_streams}
        negatives = None
        if self.cfg.contrastive_negatives and self._target_streams:
            neg = torch.randint(self.n_items, (self.cfg.contrastive_negatives,), generator=self._generator)
            neg = neg.to(target.device)  # drawn on the CPU generator: the same items on every device
            negatives = (neg, {s: getattr(self, f"target_emb_{s}")[neg] for s in self._target_streams})
        return self(history, target, emb, self._generator, negatives)

    def forward(self, history: torch.Tensor, target: torch.Tensor,
                target_emb: dict[str, torch.Tensor] | None = None,
                generator: torch.Generator | None = None,
                negatives: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None) -> EagerOutput:
        """Training losses.

        Args:
            history: (B, L) item ids, right-aligned, PAD = -1.
            target: (B,) next items.
            target_emb: {stream: (B, d_s)} pre-trained embeddings of the targets (needed with the contrastive task).
            generator: RNG of the transfer task's masks and shuffles.
            negatives: (items (N,), {stream: (N, d_s)} their pre-trained embeddings): L_con's negatives instead of
                the batch's other targets.
        """
        enc = self.encode(history)  # states (B, L, d), pad (B, L)
        zero = enc.states.new_zeros(())
        gen = {s: zero for s in STREAMS}
        con = {s: zero for s in STREAMS}
        summaries: dict[str, torch.Tensor] = {}
        sib = self.cfg.sibling_softmax
        for s in self.cfg.streams:
            codes = self.item_codes(s, target)  # (B, D)
            logits, summaries[s] = self.decoders[s](codes, enc.states, enc.pad, sib)  # [(B, classes_l)], (B, d)
            cls = self.decoders[s].targets(codes, sib)  # (B, D)
            gen[s] = torch.stack([F.cross_entropy(lg, cls[:, lvl]) for lvl, lg in enumerate(logits)]).mean()
            if self.cfg.use_contrastive:
                if target_emb is None or s not in target_emb:
                    raise ValueError(f"the contrastive task needs target_emb['{s}']")
                extra = None if negatives is None else (negatives[1][s], negatives[0])
                con[s] = info_nce(self.decoders[s].proj(summaries[s]), target_emb[s], self.cfg.temperature,
                                  symmetric=False, keys=target, negatives=extra)
        recon = match = zero
        if self.transfer is not None:
            recon, match = self._transfer_losses(target, summaries["semantic"], generator)
        con_total = self.cfg.contrastive_weight * (con["behavior"] + self.cfg.semantic_contrastive_scale
                                                   * con["semantic"])
        loss = sum(gen.values()) + con_total + self.cfg.transfer_weight * (recon + match)
        return EagerOutput(loss, gen["behavior"], gen["semantic"], con["behavior"], con["semantic"], recon, match)

    def _transfer_losses(self, target: torch.Tensor, summary: torch.Tensor, generator: torch.Generator | None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.transfer is not None
        codes = self.item_codes("behavior", target)  # (B, D)
        b, d = codes.shape
        # The draws come from the (CPU) generator, so a seed gives the same masks on every device.
        masked = torch.rand(b, d, generator=generator) < self.cfg.mask_prob  # (B, D)
        forced = torch.randint(d, (b,), generator=generator)  # at least one masked position per sample
        masked[torch.arange(b), forced] = True
        masked = masked.to(codes.device)
        perm = torch.randperm(b, generator=generator).to(codes.device)
        both_codes = torch.cat([codes, codes])  # (2B, D): true pairs, then shuffled pairs
        both_summ = torch.cat([summary, summary[perm]])  # (2B, d)
        logits, match_logit = self.transfer(both_codes, torch.cat([masked, masked]), both_summ)
        recon = torch.stack([
            F.cross_entropy(lg[:b][masked[:, lvl]], codes[masked[:, lvl], lvl], reduction="sum")
            for lvl, lg in enumerate(logits)
        ]).sum() / masked.sum()
        label = torch.cat([codes.new_ones(b, dtype=torch.float), (target[perm] == target).float()])  # (2B,)
        return recon, F.binary_cross_entropy_with_logits(match_logit, label)

    @torch.no_grad()
    def topk(self, history: torch.Tensor, k: int) -> np.ndarray:
        """The seqrec ranking contract: (B, L) histories -> (B, k) merged item ids, best first, -1 in empty slots
        (CPU numpy); :meth:`recommend` keeps every stream's beams."""
        return self.recommend(history, k).items.cpu().numpy()

    def recommend(self, history: torch.Tensor, k: int) -> Recommendation:
        """Trie-constrained beam search per stream, merged by confidence -> Recommendation(items (B, k), ...).

        ``history`` may live on any device: it is moved to the model's, and the search runs there.
        """
        dev = self.encoder.pos_emb.weight.device
        enc = self.encode(history.to(dev))
        b = history.shape[0]
        beam = max(self.cfg.beam_size, k)
        results = {}
        for s in self.cfg.streams:
            dec = self.decoders[s]

            def logits_fn(prefix: torch.Tensor, dec: CodeDecoder = dec) -> torch.Tensor:
                return dec.next_logits_beams(prefix, enc.states, enc.pad)  # (B, b, t) -> (B, b, V)

            self.tries[s] = self.tries[s].to(dev)
            results[s] = constrained_beam_search(logits_fn, self.tries[s], b, beam)
        if self.cfg.merge == "joint" and len(results) > 1:
            items = self._joint_merge(results, enc.states, enc.pad, k)
        else:
            items = merge_streams([results[s] for s in self.cfg.streams], k, self.cfg.merge)
        return Recommendation(items, results)

    def _joint_merge(self, results: dict[str, BeamResult], memory: torch.Tensor, mem_pad: torch.Tensor, k: int
                     ) -> torch.Tensor:
        """Rank the union of the streams' beams by Σ_s log p_s(item): every candidate is scored by every
        stream's decoder, whichever stream proposed it. -> (B, k) item ids."""
        items = torch.cat([r.values for r in results.values()], dim=1)  # (B, M), -1 = empty slot
        safe = items.clamp_min(0)
        joint = torch.zeros(items.shape, device=items.device)
        for s in self.cfg.streams:
            joint = joint + self.decoders[s].code_log_probs(self.item_codes(s, safe), memory, mem_pad,
                                                            self.tries[s])
        return rank_distinct(items, joint, k)
