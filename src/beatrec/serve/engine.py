"""The model side of ``beatrec serve``: one trained run loaded once, answering recommend / explain / fold-in /
inspect calls. Not thread-safe by design: the app runs every call on one model worker thread.

Recommendations score every item by the quantised behavior vectors, q_u · q_i summed over the 1+N parts (the
tokenizer's quantised HR@k, BEAT eq. 4 codewords), and leave out the items the user already interacted with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Hashable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from beatrec.align.explain import Aligned, explain, load_aligned
from beatrec.align.train import ALIGN_DIR, WEIGHTS
from beatrec.align.vocab import BehaviorVocab
from beatrec.errors import ConfigError, RunError
from beatrec.serve.config import ServeConfig

PART_NAMES = ("macro",)  # then micro_1..micro_N


class UnknownEntity(LookupError):
    """A user or item id the run does not hold (the app answers 404)."""


class Recommendation(NamedTuple):
    item: int
    title: str
    score: float


class NewUser(NamedTuple):
    """A cold-start user folded in at run time (kept until restart)."""

    items: list[int]
    provenance: dict  # FoldInResult.to_dict()


def part_names(n_micro: int) -> list[str]:
    return [*PART_NAMES, *(f"micro_{j}" for j in range(1, n_micro + 1))]


def file_digest(paths: list[Path]) -> str:
    """A short content hash of the stage-2 weights: the model version the API reports and caches by."""
    h = hashlib.sha256()
    for p in paths:
        if p.is_file():
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:12]


class Engine:
    """A trained BEAT run (stages 1 and 2) ready to serve.

    Args:
        run: a run directory with stage-1 artifacts and ``align/``.
        cfg: service limits.
        overrides: stage-2 config overrides (``generate.num_beams=1`` ...), as for ``beatrec explain``.
    Raises:
        RunError: missing or corrupt artifacts, or a run whose prompt does not read behavior tokens.
    """

    def __init__(self, run: str | Path, cfg: ServeConfig | None = None, overrides: list[str] | None = None) -> None:
        from beatrec.data.dataset import load_dataset

        self.run = Path(run)
        self.cfg = cfg or ServeConfig()
        self.cfg.validate()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.started = time.time()
        self.a: Aligned = load_aligned(self.run, overrides)
        if not isinstance(self.a.model.vocab, BehaviorVocab):
            raise RunError(f"{self.run}: stage 2 reads continuous vectors (model.source=continuous); "
                           "serve needs a behavior-token run")
        self.vocab: BehaviorVocab = self.a.model.vocab
        self.a.cfg.generate.batch_size = self.cfg.max_batch
        self.greedy = dataclasses.replace(self.a.cfg.generate, num_beams=1)  # a request's decoding="greedy"
        meta = json.loads((self.run / ALIGN_DIR / "meta.json").read_text())
        self.data = Path(meta["data"])
        if not (self.data / "interactions.csv").is_file():
            raise RunError(f"{self.run}: its dataset {self.data} is no longer there (serve needs its interactions)")
        self.ds = load_dataset(self.data)
        self.n_users, self.n_items = self.vocab.n_users, self.vocab.n_items
        inter = self.ds.interactions
        seen = sp.csr_matrix((np.ones(len(inter)), (inter["user"].to_numpy(), inter["item"].to_numpy())),
                             shape=(self.n_users, self.n_items))
        self.seen = seen.tocsr()
        self.degree = {"user": np.diff(self.seen.indptr), "item": np.bincount(inter["item"], minlength=self.n_items)}
        with torch.no_grad():  # (I, (1+N)·C) quantised item vectors, fixed for the server's life
            self.item_vecs = self.vocab.vectors("item", torch.arange(self.n_items)).flatten(1)
        self.new_users: dict[int, NewUser] = {}
        adir = self.run / ALIGN_DIR
        self.version = file_digest([adir / WEIGHTS, adir / "adapter" / "adapter_model.safetensors"])
        self.meta = meta
        self._foldin = None
        self._report = None
        self._titles_lower = {i: t.lower() for i, t in self.a.titles.items()}
        self._stream = None  # the continuous-batching decoder, built on first use
        why = self.stream_unavailable() if self.cfg.batching == "continuous" else "serve batching=window"
        self.batching = "continuous" if why is None else f"window ({why})"

    # ---- identity -------------------------------------------------------------------------------------------
    def identity(self) -> dict:
        m = self.a.cfg.model
        return {"run": str(self.run), "dataset": self.ds.name, "lm": self.a.cfg.lm.name, "finetune": m.finetune,
                "model_version": self.version, "users": self.n_users, "items": self.n_items,
                "new_users": len(self.new_users), "tokens_per_entity": 1 + self.vocab.n_micro,
                "batching": self.batching,
                "uptime_s": round(time.time() - self.started, 1)}

    # ---- ids ------------------------------------------------------------------------------------------------
    def check_user(self, uid: int) -> None:
        if not (0 <= uid < self.n_users or uid in self.new_users):
            raise UnknownEntity(f"unknown user {uid} (the run has users 0..{self.n_users - 1}"
                                + (f" and {len(self.new_users)} new ones)" if self.new_users else ")"))

    def check_item(self, iid: int) -> None:
        if not 0 <= iid < self.n_items:
            raise UnknownEntity(f"unknown item {iid} (the run has items 0..{self.n_items - 1})")

    def title(self, iid: int) -> str:
        return self.a.titles.get(iid, "")

    def user_items(self, uid: int) -> np.ndarray:
        """Items the user interacted with: the dataset's edges, or a new user's given items."""
        if uid in self.new_users:
            return np.asarray(self.new_users[uid].items, np.int64)
        return self.seen.indices[self.seen.indptr[uid]:self.seen.indptr[uid + 1]]

    def codes(self, side: str, eid: int) -> list[int]:
        return self.vocab.codes(side, torch.tensor([eid]))[0].tolist()

    # ---- recommend ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, uid: int, k: int) -> list[Recommendation]:
        """Top-``k`` items the user has not interacted with, by quantised q_u · q_i."""
        self.check_user(uid)
        qu = self.vocab.vectors("user", torch.tensor([uid])).flatten(1)  # (1, D)
        scores = (self.item_vecs @ qu[0]).clone()  # (I,)
        scores[torch.from_numpy(self.user_items(uid).astype(np.int64))] = float("-inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        top = torch.topk(scores, k)
        return [Recommendation(int(i), self.title(int(i)), float(s))
                for i, s in zip(top.indices.tolist(), top.values.tolist(), strict=True)]

    # ---- explain --------------------------------------------------------------------------------------------
    def pair(self, uid: int, iid: int, decoding: str = "beam") -> dict:
        """A validated pair; ``decoding`` "greedy" decodes it with one beam, "beam" with the run's settings."""
        self.check_user(uid)
        self.check_item(iid)
        if uid in self.new_users and self.a.history is not None:
            raise ConfigError("this run's prompt lists the user's history titles, which a new user does not have "
                              "in the training graph; explain it with a run trained without model.history_titles")
        return {"uid": uid, "iid": iid, "title": self.title(iid), "decoding": decoding}

    def cache_key(self, p: dict) -> tuple:
        """What an explanation depends on: both sides' tokens, the title, the history (if read) and the model."""
        hist = p["uid"] if self.a.history is not None else None
        return (tuple(self.codes("user", p["uid"])), tuple(self.codes("item", p["iid"])), p["title"], hist,
                self.version, p.get("decoding", "beam"))

    def explain(self, pairs: list[dict]) -> list[str]:
        """Batched generation for validated pairs (:meth:`pair`): one call per decoding the pairs ask for."""
        out: list[str] = [""] * len(pairs)
        for decoding in dict.fromkeys(p.get("decoding", "beam") for p in pairs):
            idx = [k for k, p in enumerate(pairs) if p.get("decoding", "beam") == decoding]
            gen = self.greedy if decoding == "greedy" else self.a.cfg.generate
            for k, text in zip(idx, explain(self.a, [pairs[k] for k in idx], generate=gen), strict=True):
                out[k] = text
        return out

    def stream_unavailable(self) -> str | None:
        """Why continuous batching cannot decode this run's explanations (None: it can)."""
        g = self.a.cfg.generate
        if g.decoder != "fast":
            return f"generate.decoder={g.decoder}; continuous batching steps the fast decoder"
        if g.guidance != 1 or g.do_sample:
            return "behavior-token guidance or sampling decode through generate"
        if self.a.model.fast_step(g.fast_weights, g.pack) is None:
            from beatrec.align.fastlm import supported

            return f"the fast decoder cannot run this LM ({supported(self.a.model.lm)})"
        return None

    def stream_step(self, new: list[tuple[Hashable, dict]]) -> list[tuple[Hashable, str]]:
        """Continuous batching (:mod:`beatrec.align.stream`): admit validated pairs (:meth:`pair`) keyed by the
        caller, run one decode step over everything decoding. -> the (key, explanation) of the pairs that ended."""
        from beatrec.align.batch import collate_prompt
        from beatrec.align.prompt import cap_words, pad_id
        from beatrec.align.stream import StreamDecoder

        a, tok = self.a, self.a.tok
        if self._stream is None:
            g = a.cfg.generate
            self._stream = StreamDecoder(a.model.lm, a.model.fast_step(g.fast_weights, g.pack), pad_id(tok),
                                         tok.eos_token_id)
        with torch.no_grad():
            for decoding in dict.fromkeys(p.get("decoding", "beam") for _, p in new):
                group = [(k, dict(p)) for k, p in new if p.get("decoding", "beam") == decoding]
                rows = [p for _, p in group]
                if a.history is not None:
                    a.history.attach(rows)
                batch = collate_prompt(a.builder, rows)
                embeds = a.model.embed(batch)[0]
                self._stream.admit(embeds, batch.attention_mask, self.greedy if decoding == "greedy" else
                                   a.cfg.generate, [k for k, _ in group])
            ended = self._stream.step()
        return [(f.key, cap_words(tok.decode(f.ids, skip_special_tokens=True), a.cfg.model.max_words))
                for f in ended]

    def stream_reset(self) -> None:
        if self._stream is not None:
            self._stream.reset()

    # ---- cold start -----------------------------------------------------------------------------------------
    def fold_user(self, items: list[int]) -> tuple[int, dict]:
        """A new user from the items it interacted with (fold-in, no retraining). -> (its id, provenance)."""
        from beatrec.tokenizer.foldin import FoldInConfig, load_foldin

        for i in items:
            self.check_item(int(i))
        if len(self.new_users) >= self.cfg.max_new_users:
            raise OverflowError(f"{len(self.new_users)} new users already (serve max_new_users); restart to clear")
        if self._foldin is None:
            self._foldin = load_foldin(self.run, self.data, FoldInConfig(), semantic=self.cfg.semantic)
        r = self._foldin.fold("user", items)
        uid = self.vocab.add_entity("user", r.tokens)
        prov = r.to_dict()
        self.new_users[uid] = NewUser(list(r.interactions), prov)
        return uid, prov

    # ---- inspect --------------------------------------------------------------------------------------------
    def report(self):  # noqa: ANN201 - VocabReport
        if self._report is None:
            from beatrec.tokenizer.vocab_report import load_report

            rep = load_report(self.run, self.data, self.cfg.top_terms)
            self._report = {name: {e.code: e for e in entries} for name, entries in rep.books.items()}
        return self._report

    def tokens(self, side: str, eid: int) -> list[dict]:
        """Each token of an entity with its slot, the token string and its meaning (vocabulary report)."""
        rep = self.report()
        out = []
        for name, code in zip(part_names(self.vocab.n_micro), self.codes(side, eid), strict=True):
            book = f"{side}_{'macro' if name == 'macro' else 'micro'}"
            e = rep[book].get(code)
            out.append({"slot": name, "code": int(code), "token": f"<{side}_{name}_{code}>",
                        "terms": list(e.terms) if e else [], "carriers": int(e.n_entities) if e else 0,
                        "source": e.source if e else "none"})
        return out

    def profile(self, uid: int) -> str:
        from beatrec.align.profile import user_profiles

        return user_profiles(self.a, [uid])[0]

    def attention(self, uid: int, iid: int) -> dict:
        from beatrec.align.attention import attention_map

        p = self.pair(uid, iid)
        return attention_map(self.a, uid, iid, p["title"]).to_dict()

    def search_items(self, query: str, limit: int) -> list[dict]:
        """Items whose title contains ``query`` (case-insensitive) or whose id is ``query``, most popular first."""
        q = query.strip().lower()
        if q.isdigit() and int(q) < self.n_items:
            hits = [int(q)]
        else:
            hits = [i for i, t in self._titles_lower.items() if q in t]
            hits.sort(key=lambda i: -int(self.degree["item"][i]))
        return [{"item": i, "title": self.title(i), "interactions": int(self.degree["item"][i])} for i in hits[:limit]]

    def user_ids(self, limit: int) -> list[int]:
        """A few users to start from: the zero-shot test users first (what BEAT is for), then the rest."""
        from beatrec.data.split import ZeroShotSplit

        split = ZeroShotSplit.load(self.run / "split.json")
        first = [int(u) for u in split.test_users][:limit]
        taken = set(first)
        return first + [u for u in range(self.n_users) if u not in taken][: max(0, limit - len(first))]
