"""CLI commands that look inside a trained run (BEAT paper RQ3/RQ4): cold-start tokens, user profiles,
attention maps and the behavior vocabulary.

    beatrec tokens --run RUN --items I1,I2,... [--out tokens.json]      # a brand-new user, folded in
    beatrec tokens --run RUN --users U1,U2,... [--out tokens.json]      # a brand-new item
    beatrec explain --run RUN --tokens tokens.json --item I             # explain for the new user (or --user U)
    beatrec profile --run RUN --user U | --tokens tokens.json
    beatrec attention --run RUN --user U --item I [--out DIR]           # JSON + heatmap PNG
    beatrec vocab --run RUN [--out DIR]                                 # vocab.md + vocab.html
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from beatrec.errors import ConfigError, DataError


def parse_ids(text: str, what: str) -> list[int]:
    """"3,17, 42" -> [3, 17, 42]; ConfigError names the bad entry or an empty list."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"{what}: no ids given (expected a comma-separated list such as 3,17,42)")
    try:
        return [int(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not p.lstrip("-").isdigit())
        raise ConfigError(f"{what}: {bad!r} is not an integer id") from None


def read_tokens_file(path: Path) -> dict:
    """A ``beatrec tokens --out`` file: {"side": "user"|"item", "tokens": [...], ...}."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        d = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(path, f"not JSON ({e})") from e
    if not isinstance(d, dict) or d.get("side") not in ("user", "item") or not isinstance(d.get("tokens"), list):
        raise DataError(path, "not a `beatrec tokens` file (needs 'side': user|item and a 'tokens' list)")
    return d


def cmd_tokens(args: argparse.Namespace) -> None:
    from beatrec.config import load_yaml
    from beatrec.tokenizer.foldin import FoldInConfig, load_foldin

    if (args.items is None) == (args.users is None):
        raise ConfigError("give --items I1,I2,... (a new user) or --users U1,U2,... (a new item)")
    side, ids = ("user", parse_ids(args.items, "--items")) if args.items is not None else \
        ("item", parse_ids(args.users, "--users"))
    cfg = load_yaml(FoldInConfig, args.config, args.overrides)
    fi = load_foldin(args.run, args.data, cfg, semantic=not args.no_semantic)
    r = fi.fold(side, ids)
    names = ["macro"] + [f"micro_{j}" for j in range(1, len(r.tokens))]
    other = "item" if side == "user" else "user"
    print(f"new {side} folded in from {len(r.interactions)} {other}s: {', '.join(map(str, r.interactions))}")
    print("tokens: " + " ".join(f"<{side}_{n}_{t}>" for n, t in zip(names, r.tokens, strict=True)))
    if r.alpha > 0:
        print(f"borrowed {r.alpha:.0%} of the vector from {len(r.neighbours)} neighbours "
              f"({len(r.interactions)} < min_interactions {cfg.min_interactions}); pure fold-in tokens: {r.folded_tokens}")
    if r.neighbours:
        print(f"neighbours ({side} id, kind, cosine, weight, tokens):")
        for n in r.neighbours:
            print(f"  {n.id:>7}  {n.kind:<13} {n.similarity:+.3f}  {n.weight:.3f}  {n.tokens}")
        for name, t, src in zip(names, r.tokens, r.token_sources, strict=True):
            print(f"  {name:<8} = {t:<5} also carried by: {', '.join(map(str, src)) or '—'}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**r.to_dict(), "run": str(args.run)}, indent=2) + "\n")
        print(f"wrote {args.out} (feed it to `beatrec explain --run {args.run} --tokens {args.out} ...`)")


def resolve_pair(a, user: int | None, item: int | None, tokens: Path | None, need_item: bool = True):  # noqa: ANN001, ANN201
    """(uid, iid) from --user/--item, where --tokens replaces the side it describes with a new entity."""
    if tokens is not None:
        d = read_tokens_file(tokens)
        new = a.model.vocab.add_entity(d["side"], d["tokens"])
        if d["side"] == "user":
            if user is not None:
                raise ConfigError(f"{tokens} describes a new user: give --item, not --user")
            user = new
        else:
            if item is not None:
                raise ConfigError(f"{tokens} describes a new item: give --user, not --item")
            item = new
    if user is None or (need_item and item is None):
        raise ConfigError("give --user and --item (either may come from --tokens FILE)" if need_item else
                          "give --user U or --tokens FILE (a new user from `beatrec tokens`)")
    return user, item


def cmd_profile(args: argparse.Namespace) -> None:
    from beatrec.align.explain import check_pairs, load_aligned
    from beatrec.align.profile import user_profiles

    if args.tokens is not None and read_tokens_file(args.tokens)["side"] != "user":
        raise ConfigError(f"{args.tokens} describes an item; a profile needs a user")
    a = load_aligned(args.run, args.overrides)
    uid, _ = resolve_pair(a, args.user, None, args.tokens, need_item=False)
    check_pairs(a, [{"uid": uid, "iid": 0}], "--user")
    print(user_profiles(a, [uid])[0])


def cmd_attention(args: argparse.Namespace) -> None:
    from beatrec.align.attention import attention_map, plot_attention
    from beatrec.align.explain import check_pairs, load_aligned

    a = load_aligned(args.run, args.overrides)
    uid, iid = resolve_pair(a, args.user, args.item, args.tokens)
    p = check_pairs(a, [{"uid": uid, "iid": iid}], "--user/--item")[0]
    am = attention_map(a, p["uid"], p["iid"], p["title"])
    out = args.out or Path(args.run) / "attention"
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"attention_u{uid}_i{iid}"
    stem.with_suffix(".json").write_text(json.dumps(am.to_dict(), indent=2) + "\n")
    plot_attention(am, stem.with_suffix(".png"))
    print(am.explanation)
    print(f"attention share (mean over {len(am.words)} words): user tokens {am.user_share:.3f}, "
          f"item tokens {am.item_share:.3f}, prompt text {float(am.text_share.mean()):.3f}")
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")


def cmd_vocab(args: argparse.Namespace) -> None:
    from beatrec.tokenizer.vocab_report import load_report, write_report

    report = load_report(args.run, args.data, args.top_terms)
    md, page = write_report(report, args.out or Path(args.run) / "vocab")
    used = {k: sum(e.n_entities > 0 for e in v) for k, v in report.books.items()}
    print("codes used: " + ", ".join(f"{k} {n}/{report.n_codes}" for k, n in used.items()))
    print(f"wrote {md} and {page}")


def add_inspect_commands(sub: argparse._SubParsersAction, add_config_args) -> None:  # noqa: ANN001
    p = sub.add_parser("tokens", help="behavior tokens for a brand-new user or item, folded in without retraining")
    p.add_argument("--run", type=Path, required=True, help="a `beatrec tokenize` run directory")
    p.add_argument("--items", help="comma-separated item ids a new user interacted with")
    p.add_argument("--users", help="comma-separated user ids that interacted with a new item")
    p.add_argument("--data", type=Path, help="the dataset directory (default: the one the run recorded)")
    p.add_argument("--out", type=Path, help="write the tokens and provenance as JSON (input of explain --tokens)")
    p.add_argument("--no-semantic", action="store_true", help="collaborative neighbours only (no text encoder)")
    add_config_args(p)
    p.set_defaults(func=cmd_tokens)

    p = sub.add_parser("profile", help="a short profile of a user's interests from behavior tokens alone")
    p.add_argument("--run", type=Path, required=True, help="a run with stage 2 (`beatrec align`)")
    p.add_argument("--user", type=int)
    p.add_argument("--tokens", type=Path, help="a new user's tokens from `beatrec tokens --out`")
    add_config_args(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("attention", help="attention of a generated explanation on the behavior tokens (JSON + PNG)")
    p.add_argument("--run", type=Path, required=True, help="a run with stage 2 (`beatrec align`)")
    p.add_argument("--user", type=int)
    p.add_argument("--item", type=int)
    p.add_argument("--tokens", type=Path, help="a new user's or item's tokens from `beatrec tokens --out`")
    p.add_argument("--out", type=Path, help="output directory (default RUN/attention)")
    add_config_args(p)
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("vocab", help="browsable report of what each behavior token means (markdown + HTML)")
    p.add_argument("--run", type=Path, required=True, help="a `beatrec tokenize` run directory")
    p.add_argument("--data", type=Path, help="the dataset directory (default: the one the run recorded)")
    p.add_argument("--out", type=Path, help="output directory (default RUN/vocab)")
    p.add_argument("--top-terms", type=int, default=8)
    p.set_defaults(func=cmd_vocab)
