"""``beatrec demo``: the whole BEAT pipeline on the embedded synthetic dataset, and proof that the behavior
tokens carry the planted signal.

The synthetic generator (:mod:`beatrec.data.synthetic`) knows each item's genre and each user's and item's
intents. After printing five zero-shot explanations, the demo explains every zero-shot test pair (or a seeded
``signal_pairs`` of them) three ways — with the pair's own tokens, with another test user's tokens and with
another test item's tokens (:mod:`beatrec.align.controls`) — and counts how often each names the item's
planted genre and an intent the user and item share (:mod:`beatrec.data.planted_signal`), beside chance (the
model's own explanations shuffled across pairs) and the references. The table is printed and written to
``RUN/demo_signal.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from beatrec.data.planted_signal import ProfileRates, SignalRates
from beatrec.data.synthetic import SyntheticConfig

# The demo's departures from the stage-1 defaults (each can be overridden with --set): a 600-user dataset needs
# far fewer than 512 codes per codebook, and the rule-based splitter reads the templated synthetic texts in a
# second, where the packaged SmolLM2 extractor needs ~10 minutes on 2 cores (--set extractor.kind=smollm2).
# Inductive users (a user's vector from its items) with a BPR term on the continuous vectors carry the planted
# intents into the zero-shot users' tokens (`benchmarks/intent_probe_sweep.md`, validation users, 3 seeds: token
# ids 0.385 top-3 intent precision vs 0.263 without, chance 0.15; codewords 0.674 vs 0.459).
DEMO_OVERRIDES = ("model.n_codes=64", "extractor.kind=splitter", "train.beta=5", "train.lr=1e-2",
                  "model.user_ids=false", "train.continuous_weight=20")
# Stage 2 of the demo (``--set align.KEY=VALUE`` overrides): a seeded 240 of the 720 training pairs at lr 1e-3
# (the default 5e-4 is tuned for thousands of pairs), and beside them the 240 training users' profiles (user tokens
# -> user_summary), with word anchoring and 300 passes of projector-only anchor warm-up (the projected tokens start
# out reading like their users' distinctive words; :mod:`beatrec.align.anchor`), in bfloat16 autocast; greedy
# decoding (the default 4-beam search costs ~3x the decoding time). Chosen on the demo's validation users
# (`benchmarks/demo_profiles.md`, variant demo_multitask): profiles name 0.30 of their planted intents against
# 0.089 with another user's tokens (3.4x).
DEMO_ALIGN_OVERRIDES = ("train.max_train_pairs=240", "train.val_pairs=40", "train.lr=1e-3", "generate.num_beams=1",
                        "train.tasks=[explain,user_profile]", "model.word_anchor=1", "train.anchor_warmup=100",
                        "train.precision=bfloat16")
DEMO_SIGNAL_PAIRS = 45  # test pairs explained three ways for the signal table (a seeded subset; 0 = all 90)
# The demo's dataset: a user's intents choose its items in and out of its genre (weight 30 per shared intent, 60%
# in genre), so the interaction graph itself holds the intents (the oracle graph probe finds them; with the
# generator's defaults, 80% in genre and weight 4, a spectral embedding of the graph finds them at chance).
DEMO_DATA = {"in_genre": 0.6, "intent_weight": 30.0, "intent_across_genres": True}
N_EXAMPLES = 5


class ProfileRow(NamedTuple):
    label: str
    rates: ProfileRates


class ProbeRow(NamedTuple):
    label: str
    precision: float  # top-k intent precision of zero-shot test users
    chance: float
    genre_accuracy: float


def demo_data_config(seed: int = 0, **extra: object) -> SyntheticConfig:
    """The demo's synthetic dataset config (:data:`DEMO_DATA` on top of the generator's defaults)."""
    from beatrec.config import from_dict

    return from_dict(SyntheticConfig, {**DEMO_DATA, "seed": seed, **extra})


def profile_table(rows: list[ProfileRow]) -> str:
    """The printed table of zero-shot profiles: how often they name the user's planted intents and genre."""
    lines = [f"planted intents in zero-shot users' profiles ({rows[0].rates.n} test users, written from their "
             "behavior tokens alone):",
             f"  {'':34s} {'intent recall':>14s} {'intent precision':>17s} {'names user genre':>17s}"]
    lines += [f"  {r.label:34s} {r.rates.intent_recall:14.2f} {r.rates.intent_precision:17.2f} {r.rates.genre:17.2f}"
              for r in rows]
    lines.append("  (intent recall: share of the user's planted intents the profile names; precision: share of the "
                 "named intents that are the user's)")
    return "\n".join(lines)


def probe_table(rows: list[ProbeRow]) -> str:
    lines = ["intent probe (logistic, fitted on other users, scored on the zero-shot test users):",
             f"  {'':54s} {'top-3 intent precision':>23s} {'chance':>7s} {'genre accuracy':>15s}"]
    lines += [f"  {r.label:54s} {r.precision:23.2f} {r.chance:7.2f} {r.genre_accuracy:15.2f}" for r in rows]
    return "\n".join(lines)


class SignalRow(NamedTuple):
    label: str
    rates: SignalRates


def signal_table(rows: list[SignalRow]) -> str:
    """The printed table: one line per row, genre and shared-intent rates."""
    n = rows[0].rates
    lines = [f"planted signal in zero-shot explanations ({n.n} test pairs; {n.n_with_shared} share an intent "
             "between user and item):", f"  {'':34s} {'names item genre':>17s} {'names a shared intent':>22s}"]
    lines += [f"  {r.label:34s} {r.rates.genre:17.2f} {r.rates.shared_intent:22.2f}" for r in rows]
    lines.append("  (every prompt holds the item's title, whose noun is genre-specific: a genre named as often with "
                 "another item's tokens comes from the title, not the tokens)")
    return "\n".join(lines)


def run_demo(out: Path, seed: int = 0, config: Path | None = None, overrides: list[str] | None = None,
             quiet: bool = False, signal_pairs: int = 0) -> list[SignalRow]:
    """Write the synthetic dataset to ``out/data``, run stages 1 and 2 into ``out/run``, print five zero-shot
    explanations and the planted-signal table; returns the table's rows."""
    from beatrec.align.config import AlignConfig
    from beatrec.align.controls import derangement, shuffled_pairs
    from beatrec.align.explain import check_pairs, explain, load_aligned
    from beatrec.align.profile import user_profiles
    from beatrec.align.train import train_align
    from beatrec.align.vocab import read_token_table
    from beatrec.config import load_yaml
    from beatrec.data.dataset import load_dataset
    from beatrec.data.intent_probe import codeword_features, intent_probe, one_hot_tokens, spectral_embedding
    from beatrec.data.planted_signal import chance_rates, load_planted, profile_rates, signal_rates
    from beatrec.data.split import ZeroShotSplit, eval_pairs
    from beatrec.data.synthetic import write_dataset
    from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

    t0 = time.perf_counter()
    overrides = overrides or []
    data_dir = write_dataset(demo_data_config(seed), out / "data")
    print(f"synthetic dataset: {data_dir}")
    tok_sets = [o for o in overrides if not o.startswith("align.")]
    align_sets = [o[len("align."):] for o in overrides if o.startswith("align.")]
    demo = list(DEMO_OVERRIDES) if config is None else []  # a config file replaces the demo settings
    cfg = load_yaml(TokenizeConfig, config, [*demo, *tok_sets])
    acfg = load_yaml(AlignConfig, None, [*DEMO_ALIGN_OVERRIDES, *align_sets])
    run = out / "run"
    print("\n== BEAT stage 1: behavior tokenizer ==")
    run_tokenize(data_dir, run, cfg, progress=not quiet)
    print(f"\n== BEAT stage 2: teaching the LM to read behavior tokens ({acfg.model.finetune}) ==")
    train_align(run, data_dir, acfg, progress=not quiet)
    print("\n== explanations for zero-shot test users (never trained on their texts) ==")
    ds = load_dataset(data_dir)
    test = all_test = eval_pairs(ds, ZeroShotSplit.load(run / "split.json"), "test")
    rng = np.random.default_rng(seed)
    if signal_pairs and len(test) > signal_pairs:
        test = test.iloc[np.sort(rng.choice(len(test), signal_pairs, replace=False))].reset_index(drop=True)
    a = load_aligned(run)
    pairs = check_pairs(a, test[["uid", "iid", "title"]].to_dict("records"), "demo test pairs")
    texts = explain(a, pairs, progress=not quiet)
    planted = load_planted(data_dir)
    split = ZeroShotSplit.load(run / "split.json")
    users = np.unique(all_test["uid"].to_numpy())  # every zero-shot test user (profiles need no pair)
    learnt = "user_profile" in a.cfg.train.tasks
    profiles = dict(zip(users.tolist(), user_profiles(a, users.tolist(), progress=not quiet), strict=True))
    show = np.sort(np.random.default_rng(seed).choice(len(test), min(N_EXAMPLES, len(test)), replace=False))
    for k in show:
        r = test.iloc[k]
        print(f"\nuser {r.uid}, item {r.iid} ({r.title})\n  beatrec:   {texts[k]}\n  reference: {r.explanation}"
              f"\n  profile of user {r.uid} from its tokens alone: {profiles[int(r.uid)]}"
              f"\n  its reference profile:                     {r.user_summary}")
    u, i = test["uid"].to_numpy(), test["iid"].to_numpy()
    rows = [SignalRow("BEAT (own tokens)", signal_rates(planted, u, i, texts))]
    for side in ("user", "item"):
        ctrl = explain(a, shuffled_pairs(pairs, side, seed), progress=not quiet)
        rows.append(SignalRow(f"shuffled {side} tokens (control)", signal_rates(planted, u, i, ctrl)))
    rows.append(SignalRow("chance (explanations shuffled)", chance_rates(planted, u, i, texts, seed=seed)))
    rows.append(SignalRow("reference explanations", signal_rates(planted, u, i, test["explanation"].tolist())))
    print("\n" + signal_table(rows))

    # profiles of the zero-shot users: own tokens against another test user's (a seeded derangement)
    stand_in = users[derangement(len(users), np.random.default_rng(seed))]
    own = [profiles[int(x)] for x in users]
    prows = [ProfileRow("BEAT (own tokens)" + ("" if learnt else ", untrained prompt"),
                        profile_rates(planted, users, own)),
             ProfileRow("shuffled user tokens (control)",
                        profile_rates(planted, users, user_profiles(a, stand_in.tolist(), progress=not quiet))),
             ProfileRow("reference profiles", profile_rates(planted, users, [
                 all_test.loc[all_test["uid"] == x, "user_summary"].iloc[0] for x in users]))]
    print("\n" + profile_table(prows))

    # what the graph holds, and what the zero-shot users' tokens hold (fitted on every other user)
    others = np.setdiff1d(np.arange(ds.n_users), split.test_users)
    graph = intent_probe(spectral_embedding(ds.interactions, ds.n_users, ds.n_items, seed=seed), planted, others,
                         users)
    text_users = np.intersect1d(others, split.train_users)
    tok = intent_probe(one_hot_tokens(read_token_table(run / "user_tokens.parquet")), planted, text_users, users)
    words = intent_probe(codeword_features(run), planted, text_users, users)
    probes = [ProbeRow("oracle: spectral embedding of the training graph", graph.mean, graph.chance,
                       graph.genre_accuracy),
              ProbeRow("the users' token ids, one-hot (fitted on text users)", tok.mean, tok.chance, tok.genre_accuracy),
              ProbeRow("the users' codeword vectors (the projector's input)", words.mean, words.chance,
                       words.genre_accuracy)]
    print("\n" + probe_table(probes))
    (run / "demo_signal.json").write_text(json.dumps(
        {"pairs": len(test), "distinct_explanations": len(set(texts)),
         "rows": {r.label: r.rates._asdict() for r in rows},
         "profiles": {r.label: r.rates._asdict() for r in prows},
         "probes": {r.label: r._asdict() for r in probes}}, indent=2) + "\n")
    print(f"\ndone in {time.perf_counter() - t0:.0f}s; run directory: {run}")
    return rows
