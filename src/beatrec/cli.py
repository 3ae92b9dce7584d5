"""The ``beatrec`` command-line tool.

    beatrec demo [--out runs/demo] [--set align.train.max_steps=20]   # the main job on the embedded default
    beatrec demo-data --out DIR [--users N --items N --seed S]
    beatrec tokenize --data DIR --out RUN [--config FILE] [--set section.key=value ...]
    beatrec align --data DIR --run RUN [--config FILE] [--set ...]   # BEAT stage 2 (torchrun/accelerate ok)
    beatrec explain --run RUN --user U --item I | --pairs FILE --out FILE | --tokens NEW.json --item I
    beatrec tokens --run RUN --items I1,I2,... | --users U1,U2,... [--out NEW.json]   # cold start (fold-in)
    beatrec profile --run RUN --user U | --tokens NEW.json
    beatrec attention --run RUN --user U --item I [--out DIR]
    beatrec vocab --run RUN [--out DIR]
    beatrec evaluate --data DIR --run RUN [--predictions FILE] [--out DIR]   # explanation metrics + floor
    beatrec signal --data DIR [--out FILE.json]   # do the references depend on the user? (before any model)
    beatrec baseline --data DIR --run RUN --method floor|retrieval|idgen|itemtext|continuous|history|beat_history|xrec --out FILE
    beatrec serve --run RUN [--host 127.0.0.1] [--port 8000] [--api-key-env NAME]   # HTTP API + web page
    beatrec seqrec train --data DIR --model eager|sasrec|tiger|llmbs --out RUN [--config FILE] [--set ...]
    beatrec seqrec evaluate --run RUN [--data DIR]

Every bad input ends with one line ``error: <file, line: problem>`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from beatrec.errors import BeatrecError


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (see configs/ for examples); defaults otherwise")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set train.max_epochs=10 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")


def cmd_demo_data(args: argparse.Namespace) -> None:
    from beatrec.data.synthetic import write_dataset
    from beatrec.demo import demo_data_config

    cfg = demo_data_config(args.seed, n_users=args.users, n_items=args.items)  # the demo's dataset
    out = write_dataset(cfg, args.out)
    print(f"wrote synthetic dataset to {out} ({cfg.n_users} users, {cfg.n_items} items, seed {cfg.seed})")


def cmd_tokenize(args: argparse.Namespace) -> None:
    from beatrec.config import load_yaml
    from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

    cfg = load_yaml(TokenizeConfig, args.config, args.overrides)
    run_tokenize(args.data, args.out, cfg, progress=not args.quiet)


def cmd_demo(args: argparse.Namespace) -> None:
    from beatrec.demo import DEMO_SIGNAL_PAIRS, run_demo

    run_demo(Path(args.out), args.seed, args.config, args.overrides, args.quiet, signal_pairs=DEMO_SIGNAL_PAIRS)


def cmd_align(args: argparse.Namespace) -> None:
    from beatrec.align.config import AlignConfig
    from beatrec.align.train import train_align
    from beatrec.config import load_yaml

    cfg = load_yaml(AlignConfig, args.config, args.overrides)
    train_align(args.run, args.data, cfg, progress=not args.quiet)


def cmd_explain(args: argparse.Namespace) -> None:
    import json

    from beatrec.align.explain import check_pairs, explain, load_aligned
    from beatrec.cli_inspect import resolve_pair
    from beatrec.data.jsonl import json_objects
    from beatrec.distributed import gather_strided, init_from_env, rank, world_size
    from beatrec.errors import ConfigError, DataError

    if (args.pairs is None) == (args.user is None and args.item is None and args.tokens is None):
        raise ConfigError("give either --user and --item (or --tokens FILE for a new one), or --pairs FILE --out FILE")
    if args.pairs is None:
        a = load_aligned(args.run, args.overrides)
        uid, iid = resolve_pair(a, args.user, args.item, args.tokens)
        pairs = check_pairs(a, [{"uid": uid, "iid": iid}], "--user/--item")
        print(explain(a, pairs)[0])
        return
    if args.out is None:
        raise ConfigError("--pairs needs --out FILE")
    if not args.pairs.is_file():
        raise DataError(args.pairs, "file not found")
    rows = [obj for _, obj in json_objects(args.pairs)]
    if not rows:
        raise DataError(args.pairs, "no pairs (the file is empty)")
    # under torchrun, process r explains pairs r, r + world, ...; rank 0 writes them all in the file's order
    started = init_from_env()
    try:
        a = load_aligned(args.run, args.overrides)
        pairs = check_pairs(a, rows, str(args.pairs))
        r, world = rank(), world_size()
        if world > 1 and a.cfg.generate.decoder == "generate":
            print(f"[explain] rank {r}: generate.decoder=generate pads each batch into every explanation; the "
                  "default generate.decoder=fast gives output identical to one process", file=sys.stderr)
        preds = gather_strided(explain(a, pairs[r::world], progress=not args.quiet and r == 0), len(pairs))
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()
    if r:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for p, text in zip(pairs, preds, strict=True):
            f.write(json.dumps({"uid": p["uid"], "iid": p["iid"], "prediction": text}) + "\n")
    print(f"wrote {len(preds)} explanations to {args.out}" + (f" ({world} processes)" if world > 1 else ""))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from beatrec.config import load_yaml
    from beatrec.evaluate import EvaluateConfig, evaluate_run

    sets = [*args.overrides, *(f"score.{k}=false" for k in ("bertscore", "lm_score", "specificity")
                               if getattr(args, f"no_{k}"))]
    if args.controls:
        sets.append(f"controls=[{','.join(args.controls)}]")
    cfg = load_yaml(EvaluateConfig, args.config, sets)
    res = evaluate_run(args.data, args.run, args.predictions, args.out, cfg, args.name, progress=not args.quiet)
    from beatrec.metrics.explanations import markdown_table

    print(res.report.summary())
    print(markdown_table([(res.report.name, res.report.scores), ("floor (random training explanation)",
                                                                 res.report.floor)]))
    for c in res.controls:
        from beatrec.metrics.paired import format_paired

        print(f"\nshuffled-{c.side}-token control, paired on {c.report.scores.n} pairs (diff = control - model):")
        print("\n".join(format_paired(c.paired, cfg.alpha)))
    print(f"wrote {res.out_dir / 'metrics.json'} and {res.out_dir / 'metrics.md'}")


def cmd_signal(args: argparse.Namespace) -> None:
    import json

    from beatrec.data.dataset import load_dataset
    from beatrec.data.reference_signal import reference_signal, signal_dict, signal_table, verdict
    from beatrec.text_encoder import TextEncoder, TextEncoderConfig

    ds = load_dataset(args.data)
    sig = reference_signal(ds, TextEncoder(TextEncoderConfig(name=args.encoder)), progress=not args.quiet)
    print(f"reference signal of {ds.root} ({sig.explanations.n_pairs} text pairs; cosine of {args.encoder} "
          "embeddings):\n")
    print(signal_table(sig) + "\n")
    print("\n".join(f"- {line}" for line in verdict(sig)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(signal_dict(sig), indent=2) + "\n")
        print(f"wrote {args.out}")


def cmd_baseline(args: argparse.Namespace) -> None:
    from beatrec.baselines.registry import BaselineConfig, run_baseline
    from beatrec.config import load_yaml
    from beatrec.predictions import write_predictions

    cfg = load_yaml(BaselineConfig, args.config, args.overrides)
    out = run_baseline(args.method, args.data, args.run, cfg, progress=not args.quiet)
    p = out.predictions
    write_predictions(args.out, p["uid"].tolist(), p["iid"].tolist(), p["prediction"].tolist())
    cov = f" ({len(p)} of {out.info['pairs_asked']} test pairs covered)" if len(p) < out.info["pairs_asked"] else ""
    print(f"wrote {len(p)} {args.method} predictions to {args.out}{cov}; "
          f"score them with `beatrec evaluate --data {args.data} --run {args.run} --predictions {args.out}`")


def cmd_seqrec_train(args: argparse.Namespace) -> None:
    from beatrec.seqrec.config import load_seqrec_config
    from beatrec.seqrec.train import train_run

    if args.model == "llmbs":
        from beatrec.config import load_yaml
        from beatrec.seqrec.llmbs.run import LLMBSConfig, train_llmbs

        train_llmbs(args.data, args.out, load_yaml(LLMBSConfig, args.config, args.overrides), progress=not args.quiet)
        return
    cfg = load_seqrec_config(args.model, args.config, args.overrides)
    train_run(args.data, args.out, cfg, progress=not args.quiet)


def cmd_seqrec_evaluate(args: argparse.Namespace) -> None:
    import json

    from beatrec.seqrec.runs import evaluate_any

    result = evaluate_any(args.run, args.data, progress=not args.quiet, device=args.device, merge=args.merge,
                          beam_size=args.beam_size)
    print(json.dumps({"model": result["model"], **result["test"]}))


def cmd_seqrec_compare(args: argparse.Namespace) -> None:
    import json

    from beatrec.seqrec.compare import compare_runs, format_comparison

    c = compare_runs(args.run_a, args.run_b, args.data, n_resamples=args.resamples, seed=args.seed,
                     alpha=args.alpha, file_a=args.file_a, file_b=args.file_b)
    print(format_comparison(c))
    if args.out:
        args.out.write_text(json.dumps(c.as_dict(), indent=2) + "\n")


def _add_seqrec(sub: argparse._SubParsersAction) -> None:
    from beatrec.seqrec.audit import KEYS
    from beatrec.seqrec.config import CLI_MODELS

    p = sub.add_parser("seqrec", help="generative sequential recommendation: EAGER and its baselines")
    ssub = p.add_subparsers(dest="seqrec_command", required=True)
    t = ssub.add_parser("train", help="train EAGER, SASRec or the TIGER-style baseline (leave-one-out)")
    t.add_argument("--data", type=Path, required=True,
                   help="dataset directory (<Name>.txt or <Name>.inter.json, optional item_text.tsv)")
    t.add_argument("--model", choices=CLI_MODELS, default="eager")
    t.add_argument("--out", type=Path, required=True, help="run directory to write")
    _add_config_args(t)
    t.set_defaults(func=cmd_seqrec_train)
    e = ssub.add_parser("evaluate", help="test Recall/NDCG@5/10 of a trained run (writes RUN/evaluation.json)")
    e.add_argument("--run", type=Path, required=True)
    e.add_argument("--data", type=Path, help="the dataset directory, if it moved since training")
    e.add_argument("--device", default="auto",
                   help="where EAGER/SASRec/TIGER runs are scored: auto (CUDA when available), cpu, cuda, cuda:N")
    e.add_argument("--merge", help="EAGER: decode with this stream merge (likelihood, entropy, joint) instead of the "
                                   "run's")
    e.add_argument("--beam-size", type=int, help="EAGER/TIGER: beams per stream instead of the run's")
    e.add_argument("--quiet", action="store_true", help="no progress messages")
    e.set_defaults(func=cmd_seqrec_evaluate)
    c = ssub.add_parser("compare", help="paired test difference B - A of two runs on the same test users "
                                        "(bootstrap interval, sign-flip p-value)")
    c.add_argument("run_a", type=Path)
    c.add_argument("run_b", type=Path)
    c.add_argument("--data", type=Path, help="the dataset directory, if it moved since training")
    c.add_argument("--resamples", type=int, default=2000, help="bootstrap and sign-flip resamples")
    c.add_argument("--alpha", type=float, default=0.05, help="1 - the interval's level")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--file-a", help="A's rankings file in its run (default: test_top10.csv, else "
                                    "evaluation_test_top10.csv)")
    c.add_argument("--file-b", help="B's rankings file in its run (same default)")
    c.add_argument("--out", type=Path, help="also write the comparison as JSON")
    c.set_defaults(func=cmd_seqrec_compare)
    a = ssub.add_parser("audit", help="are the sequences ordered by item id or ASIN (a leak of leave-one-out)?")
    a.add_argument("--data", type=Path, required=True, help="dataset directory (as for `seqrec train`)")
    a.add_argument("--key", default="auto", choices=KEYS,
                   help="the order to test: asin (needs item_text.tsv or item_id2asin.tsv), id, auto (asin if any)")
    a.add_argument("--shuffles", type=int, default=200, help="within-user shuffles of the permutation test")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", type=Path, help="also write the audit as JSON")
    a.set_defaults(func=cmd_seqrec_audit)


def cmd_seqrec_audit(args: argparse.Namespace) -> None:
    import json

    from beatrec.seqrec.audit import audit_order
    from beatrec.seqrec.data import load_seq_dataset

    res = audit_order(load_seq_dataset(args.data), args.key, args.shuffles, args.seed)
    print(res.summary())
    if res.key == "id" and res.ids_by_first_appearance > 0.99:
        print("note: item ids are numbered in order of first appearance, so increasing ids partly reflect that "
              "numbering; the ASIN audit (item_text.tsv / item_id2asin.tsv) is the informative one")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res._asdict(), indent=2) + "\n")


def cmd_serve(args: argparse.Namespace) -> None:
    from beatrec.serve.server import serve

    serve(args.run, args.host, args.port, args.api_key_env, args.config, args.overrides, args.quiet)


def build_parser() -> argparse.ArgumentParser:
    from beatrec.align.controls import SIDES

    ap = argparse.ArgumentParser(prog="beatrec", description="LLM-based recommendation with behavior tokens.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the main job (tokenize, align, explain) on the embedded synthetic dataset")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--seed", type=int, default=0)
    _add_config_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("demo-data", help="write the seeded synthetic dataset (planted structure)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--items", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("tokenize", help="BEAT stage 1: learn behavior tokens for every user and item")
    p.add_argument("--data", type=Path, required=True, help="dataset directory (interactions.csv, explanations.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    _add_config_args(p)
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("align", help="BEAT stage 2: teach a frozen LM to read the behavior tokens")
    p.add_argument("--data", type=Path, required=True, help="the dataset directory the run was tokenized from")
    p.add_argument("--run", "--run-dir", dest="run", type=Path, required=True,
                   help="a `beatrec tokenize` run directory (spell it --run-dir under torchrun, whose own "
                        "--run-path option would swallow --run)")
    _add_config_args(p)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("explain", help="explain why a user would like an item (needs `beatrec align`)")
    p.add_argument("--run", "--run-dir", dest="run", type=Path, required=True,
                   help="a run with stage 2 (spell it --run-dir under torchrun, whose --run-path would swallow --run)")
    p.add_argument("--user", type=int)
    p.add_argument("--item", type=int)
    p.add_argument("--pairs", type=Path, help="jsonl with uid, iid (and optionally title) per line")
    p.add_argument("--out", type=Path, help="jsonl to write (uid, iid, prediction)")
    p.add_argument("--tokens", type=Path, help="a new user's or item's tokens from `beatrec tokens --out`")
    _add_config_args(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("evaluate", help="score explanations on the zero-shot test pairs (metrics.json, metrics.md)")
    p.add_argument("--data", type=Path, required=True, help="the dataset directory of the run")
    p.add_argument("--run", type=Path, required=True, help="a run directory (split.json; align/ to generate)")
    p.add_argument("--predictions", type=Path, help="jsonl of uid, iid, prediction (default: "
                   "RUN/test_predictions.jsonl, else generated with the run's stage-2 model)")
    p.add_argument("--out", type=Path, help="output directory (default RUN/eval/NAME)")
    p.add_argument("--name", help="method name in the table (default: the predictions file's stem)")
    for k, what in (("bertscore", "BERTScore-MiniLM"), ("lm-score", "LM-score (loads the LM)"),
                    ("specificity", "specificity")):
        p.add_argument(f"--no-{k}", action="store_true", help=f"skip {what}")
    p.add_argument("--controls", nargs="+", choices=SIDES, default=[],
                   help="also explain every pair with another test user's (item's) behavior tokens and compare "
                        "pair by pair: bootstrap interval and permutation p-value per metric")
    _add_config_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("signal", help="do a dataset's reference explanations and profiles depend on the user? "
                                      "(the check to run before reading a shuffled-user control)")
    p.add_argument("--data", type=Path, required=True, help="dataset directory (interactions.csv, explanations.jsonl)")
    p.add_argument("--out", type=Path, help="also write the measurements and the verdict as JSON")
    p.add_argument("--encoder", default="minilm", help="sentence encoder: minilm (packaged) or a local path")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_signal)

    from beatrec.baselines.registry import METHODS

    p = sub.add_parser("baseline", help="predict test-pair explanations with a baseline (score with `evaluate`)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--run", type=Path, required=True, help="a `beatrec tokenize` run directory")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--out", type=Path, required=True, help="jsonl to write (uid, iid, prediction)")
    _add_config_args(p)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("serve", help="serve a trained run over HTTP: recommendations with explanations, and a web page")
    p.add_argument("--run", type=Path, required=True, help="a run with stages 1 and 2 (`beatrec align`)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: a free one, printed at start)")
    p.add_argument("--api-key-env", metavar="NAME",
                   help="guard every /v1 route with the API key in environment variable NAME (header X-API-Key)")
    _add_config_args(p)
    p.set_defaults(func=cmd_serve)

    from beatrec.cli_inspect import add_inspect_commands

    add_inspect_commands(sub, _add_config_args)
    _add_seqrec(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BeatrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
