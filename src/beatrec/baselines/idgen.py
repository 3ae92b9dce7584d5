"""An ID-based neural explanation generator in the style of Att2Seq / NRT / PETER, trained from scratch.

User and item ID embeddings condition a GRU decoder over a word vocabulary built from the training users'
explanations: the initial state is tanh(W[e_u ‖ e_i]) and [e_u ‖ e_i] is also fed at every step beside the
previous word (teacher forcing in training, greedy decoding at test time, at most ``max_words`` words).
Words are the BLEU tokens (:func:`beatrec.metrics.text.tokenize`); rare ones map to ``<unk>``, which is never
generated.

Zero-shot users never occur in training, so their ID embeddings would stay at their random initialisation;
with ``unseen: mean`` (default) an entity without training text is given the mean embedding of the trained
ones instead (``unseen: init`` keeps the random vector). This is the cold-start weakness of pure-ID
generators that BEAT's behavior tokens address.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from beatrec.align.prompt import cap_words
from beatrec.config import check
from beatrec.metrics.text import tokenize
from beatrec.runtime import torch_threads

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


@dataclass
class IdGenConfig:
    """ID-based generator settings.

    Attributes:
        emb_dim: width of the user, item and word embeddings; hidden: GRU width.
        max_vocab: most frequent words kept; min_count: rarer words become ``<unk>``.
        max_words: explanations capped at this many words (targets and generations); max_tokens: token cap.
        epochs, batch_size, lr, dropout: training; seed: initialisation and shuffling.
        unseen: ``"mean"`` (entities without training text get the mean trained embedding) or ``"init"``.
        threads: torch threads (0 = leave as is).
    """

    emb_dim: int = 64
    hidden: int = 256
    max_vocab: int = 5000
    min_count: int = 2
    max_words: int = 50
    max_tokens: int = 80
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    dropout: float = 0.2
    seed: int = 0
    unseen: str = "mean"
    threads: int = 0

    def validate(self) -> None:
        for name in ("emb_dim", "hidden", "max_vocab", "min_count", "max_words", "epochs", "batch_size"):
            check(getattr(self, name) >= 1, f"idgen.{name} must be >= 1, got {getattr(self, name)}")
        check(self.max_tokens >= 2, f"idgen.max_tokens must be >= 2, got {self.max_tokens}")
        check(self.lr > 0, f"idgen.lr must be > 0, got {self.lr}")
        check(0 <= self.dropout < 1, f"idgen.dropout must be in [0, 1), got {self.dropout}")
        check(self.unseen in ("mean", "init"), f"idgen.unseen must be 'mean' or 'init', got {self.unseen!r}")
        check(self.threads >= 0, f"idgen.threads must be >= 0, got {self.threads}")


class WordVocab:
    """Word <-> id map built from training texts; ids 0..3 are :data:`SPECIALS`."""

    def __init__(self, texts: list[str], max_vocab: int, min_count: int, max_words: int) -> None:
        counts = Counter(w for t in texts for w in tokenize(cap_words(t, max_words)))
        kept = [w for w, c in sorted(counts.items(), key=lambda x: (-x[1], x[0])) if c >= min_count][:max_vocab]
        self.words = list(SPECIALS) + kept
        self.index = {w: k for k, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, max_words: int, max_tokens: int) -> list[int]:
        """BOS + word ids + EOS (at most ``max_tokens`` ids in all)."""
        ids = [self.index.get(w, UNK) for w in tokenize(cap_words(text, max_words))][: max_tokens - 2]
        return [BOS, *ids, EOS]

    def decode(self, ids: list[int]) -> str:
        """Ids (no BOS) up to the first EOS -> detokenized text (no space before punctuation, "user ' s" -> "user's")."""
        words = []
        for k in ids:
            if k == EOS:
                break
            if k >= len(SPECIALS):
                words.append(self.words[k])
        text = " ".join(words)
        text = re.sub(r" ([.,!?;:%)])", r"\1", text)
        text = re.sub(r"\( ", "(", text)
        return re.sub(r" ' ", "'", text)


class IdGenerator(nn.Module):
    """e_u, e_i -> GRU decoder over words.

    Args:
        n_users, n_items: ID table sizes; n_words: vocabulary size; cfg: widths.
    """

    def __init__(self, n_users: int, n_items: int, n_words: int, cfg: IdGenConfig) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, cfg.emb_dim)
        self.item = nn.Embedding(n_items, cfg.emb_dim)
        self.word = nn.Embedding(n_words, cfg.emb_dim, padding_idx=PAD)
        self.init = nn.Linear(2 * cfg.emb_dim, cfg.hidden)
        self.gru = nn.GRU(3 * cfg.emb_dim, cfg.hidden, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, n_words)
        for emb in (self.user, self.item, self.word):
            nn.init.normal_(emb.weight, std=0.1)

    def context(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,), (B,) -> (B, 2E) [e_u ‖ e_i]."""
        return torch.cat([self.user(users), self.item(items)], dim=1)

    def step_logits(self, ctx: torch.Tensor, words: torch.Tensor, h: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ctx (B, 2E), words (B, T) input ids, h (1, B, H) or None -> logits (B, T, V), new h (1, B, H)."""
        if h is None:
            h = torch.tanh(self.init(ctx))[None]  # (1, B, H)
        x = torch.cat([self.word(words), ctx[:, None].expand(-1, words.shape[1], -1)], dim=2)  # (B, T, 3E)
        y, h = self.gru(self.drop(x), h)  # (B, T, H)
        return self.out(self.drop(y)), h

    def forward(self, users: torch.Tensor, items: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """Teacher-forced NLL. seq (B, T) = BOS w1 .. wn EOS PAD..; -> () mean NLL over non-pad targets."""
        logits, _ = self.step_logits(self.context(users, items), seq[:, :-1], None)  # (B, T-1, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seq[:, 1:].reshape(-1), ignore_index=PAD)

    @torch.no_grad()
    def greedy(self, users: torch.Tensor, items: torch.Tensor, max_tokens: int) -> list[list[int]]:
        """Greedy decoding (never ``<unk>``/``<pad>``/``<bos>``). -> B lists of word ids ending at EOS or the cap."""
        ctx = self.context(users, items)
        cur = torch.full((len(users), 1), BOS, dtype=torch.long)
        h = None
        out = torch.zeros((len(users), 0), dtype=torch.long)
        done = torch.zeros(len(users), dtype=torch.bool)
        for _ in range(max_tokens):
            logits, h = self.step_logits(ctx, cur, h)
            logits = logits[:, -1]
            logits[:, [PAD, BOS, UNK]] = float("-inf")
            cur = logits.argmax(1, keepdim=True)  # (B, 1)
            out = torch.cat([out, cur], dim=1)
            done |= cur[:, 0] == EOS
            if done.all():
                break
        return out.tolist()


class TrainedIdGen(NamedTuple):
    model: IdGenerator
    vocab: WordVocab
    cfg: IdGenConfig
    losses: list[float]  # mean training NLL per epoch


def train_idgen(train_rows: pd.DataFrame, n_users: int, n_items: int, cfg: IdGenConfig) -> TrainedIdGen:
    """Train on training users' pairs only (columns uid, iid, explanation), seeded."""
    cfg.validate()
    with torch_threads(cfg.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        texts = train_rows["explanation"].tolist()
        vocab = WordVocab(texts, cfg.max_vocab, cfg.min_count, cfg.max_words)
        model = IdGenerator(n_users, n_items, len(vocab), cfg)
        seqs = [vocab.encode(t, cfg.max_words, cfg.max_tokens) for t in texts]
        users = torch.tensor(train_rows["uid"].to_numpy(np.int64))
        items = torch.tensor(train_rows["iid"].to_numpy(np.int64))
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        losses = []
        model.train()
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(seqs), generator=gen)
            tot, k = 0.0, 0
            for s in range(0, len(perm), cfg.batch_size):
                idx = perm[s : s + cfg.batch_size]
                width = max(len(seqs[j]) for j in idx)
                seq = torch.full((len(idx), width), PAD, dtype=torch.long)
                for b, j in enumerate(idx.tolist()):
                    seq[b, : len(seqs[j])] = torch.tensor(seqs[j])
                loss = model(users[idx], items[idx], seq)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                tot, k = tot + loss.item(), k + 1
            losses.append(tot / max(k, 1))
        model.eval()
        if cfg.unseen == "mean":
            with torch.no_grad():
                for table, seen in ((model.user, users), (model.item, items)):
                    known = torch.zeros(table.num_embeddings, dtype=torch.bool)
                    known[seen] = True
                    table.weight[~known] = table.weight[known].mean(0)
    return TrainedIdGen(model, vocab, cfg, losses)


def idgen_predictions(trained: TrainedIdGen, pairs: pd.DataFrame, batch_size: int = 256) -> list[str]:
    """Greedy explanations for the rows of ``pairs`` (uid, iid), each at most ``cfg.max_words`` words."""
    m, v, cfg = trained.model, trained.vocab, trained.cfg
    out: list[str] = []
    with torch_threads(cfg.threads):
        for s in range(0, len(pairs), batch_size):
            part = pairs.iloc[s : s + batch_size]
            ids = m.greedy(torch.tensor(part["uid"].to_numpy(np.int64)), torch.tensor(part["iid"].to_numpy(np.int64)),
                           cfg.max_tokens)
            out += [cap_words(v.decode(x), cfg.max_words) for x in ids]
    return out
