"""``beatrec seqrec train`` / ``evaluate``: one harness for SASRec, EAGER and the TIGER-style baseline.

Stages of an EAGER (or TIGER-style) run, each leaving artifacts in the run directory:
  1. load the dataset, leave-one-out split (``data``);
  2. behavior embeddings: the item embeddings of a SASRec trained on the training windows (a nested run in
     ``RUN/behavior``, or an existing SASRec run given by ``behavior_run``);
  3. semantic embeddings: item titles through the frozen text encoder (only when the dataset has item text;
     otherwise the run is behavior-stream only, and says so in its log and in ``metrics.json``);
  4. balanced hierarchical k-means codes per stream (``codes_<stream>.csv``, code-quality report);
  5. training with early stopping on validation NDCG@10, test evaluation, ``model.safetensors``,
     ``config.yaml`` (the resolved config), ``run.json``, ``history.csv``, ``metrics.json``.
A SASRec run is stages 1 and 5. Training is seeded; with one torch thread it is bit-for-bit repeatable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from beatrec.config import save_yaml
from beatrec.early_stop import EarlyStopping
from beatrec.errors import ConfigError, RunError
from beatrec.plots import plot_seqrec_history
from beatrec.runtime import machine_info, resolve_device, torch_threads
from beatrec.seqrec.audit import warn_if_ordered
from beatrec.seqrec.codes import ItemCodes, build_codes
from beatrec.seqrec.config import (
    SeqRecConfig,
    SeqTrainConfig,
    experiment,
    read_run_config,
)
from beatrec.seqrec.data import (
    LeaveOneOut,
    Samples,
    SeqDataset,
    item_popularity,
    leave_one_out,
    subset_samples,
)
from beatrec.seqrec.eager import STREAMS, Eager, EagerConfig
from beatrec.seqrec.evaluate import KS, SeqMetrics, metrics_from_topk, popularity_topk
from beatrec.seqrec.rundir import (
    CHECKPOINT,
    RANKINGS,
    dataset_fingerprint,
    load_checkpoint,
    load_run_dataset,
    read_run_json,
    save_checkpoint,
    write_rankings,
    write_run_json,
)
from beatrec.seqrec.sasrec import SASRec
from beatrec.text_encoder import TextEncoder

UNTITLED = "untitled product"  # the text embedded for an item whose title is missing


class TextEmbedder(Protocol):
    dim: int

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray: ...


class FitResult(NamedTuple):
    history: pd.DataFrame  # one row per evaluated epoch
    best_epoch: int
    best_val_ndcg10: float
    stopped_early: bool
    out_of_time: bool  # stopped by train.max_minutes
    train_seconds: float


class RunResult(NamedTuple):
    run_dir: Path
    metrics: dict[str, Any]


def _log(progress: bool, msg: str) -> None:
    if progress:
        tqdm.write(msg)


def predict_topk(recommend: Callable[[torch.Tensor, int], np.ndarray], samples: Samples, batch_size: int,
                 k: int = max(KS)) -> np.ndarray:
    """(U, k) ranked item ids for every row of ``samples`` (eval mode, no gradients, batched)."""
    out = []
    with torch.no_grad():
        for s in range(0, len(samples.target), batch_size):
            out.append(recommend(torch.from_numpy(samples.history[s : s + batch_size]), k))
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def fit(model: torch.nn.Module, split: LeaveOneOut, cfg: SeqTrainConfig,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], tuple],
        recommend: Callable[[torch.Tensor, int], np.ndarray], progress: bool = True, desc: str = "train",
        checkpoint: Path | None = None, checkpoint_key: str = "", generators: tuple[torch.Generator, ...] = ()
        ) -> FitResult:
    """Mini-batch training over shuffled training windows; early stopping on validation NDCG@10.

    ``loss_fn(history, target)`` returns a named tuple whose first field is the loss to minimise (the other
    fields are logged as epoch means); ``recommend(history, k)`` returns (B, k) ranked items. On return
    ``model`` holds the weights of the best validation evaluation.

    With ``checkpoint``, the whole training state (weights, optimiser, every random stream incl. the
    ``generators`` that ``loss_fn`` draws from, early-stopping state, history) is written there after each
    evaluation, and an existing checkpoint with the same ``checkpoint_key`` is resumed: an interrupted run
    continues where it stopped and ends bit-for-bit where an uninterrupted one would (one torch thread).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dev = resolve_device(cfg.device)
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val = subset_samples(split.val, cfg.val_users, cfg.seed)
    n = len(split.train.target)
    if n == 0:
        raise ConfigError("no training windows: every user has fewer than 4 items")
    steps = -(-n // cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    rows: list[dict[str, float]] = []
    stopper = EarlyStopping(cfg.patience)
    first, done_seconds, out_of_time = 1, 0.0, False
    if checkpoint is not None and checkpoint.is_file():
        ck = load_checkpoint(checkpoint, checkpoint_key)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        rng.bit_generator.state = ck["np_rng"]
        torch.set_rng_state(ck["torch_rng"])
        for g, st in zip(generators, ck["generators"], strict=True):
            g.set_state(st)
        stopper.load_state_dict(ck["stopper"])
        rows, first, done_seconds = ck["rows"], ck["epoch"] + 1, ck["train_seconds"]
        _log(progress, f"{desc}: resuming from {checkpoint} after epoch {ck['epoch']} "
                       f"(best val N@10 {stopper.best:.4f} at epoch {stopper.best_epoch})")
    t_train = time.perf_counter() - done_seconds
    for epoch in range(first, cfg.max_epochs + 1):
        if stopper.stopped:
            break
        t0 = time.perf_counter()
        model.train()
        perm = rng.permutation(n)
        sums: dict[str, float] = {}
        bar = tqdm(range(steps), desc=f"{desc} epoch {epoch}", leave=False, unit="step",
                   disable=(not progress) or None)
        for step in bar:
            lr = cfg.lr * cfg.lr_factor((epoch - 1) * steps + step)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            out = loss_fn(torch.from_numpy(split.train.history[idx]).to(dev),
                          torch.from_numpy(split.train.target[idx]).to(dev))
            opt.zero_grad(set_to_none=True)
            out[0].backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            for name, v in out._asdict().items():
                sums[name] = sums.get(name, 0.0) + float(v.detach())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(out[0].detach()):.3f}")
        bar.close()
        if epoch % cfg.eval_every and epoch != cfg.max_epochs:
            continue
        model.eval()
        t_eval = time.perf_counter()
        m = metrics_from_topk(predict_topk(recommend, val, cfg.eval_batch_size), val.target)
        row = {"epoch": epoch, "seconds": t_eval - t0, "eval_seconds": time.perf_counter() - t_eval, "lr": lr,
               **{k: v / steps for k, v in sums.items()},
               **{f"val_{k}": v for k, v in m.as_dict().items() if k != "n_users"}}
        rows.append(row)
        _log(progress, f"{desc} epoch {epoch}: loss {row['loss']:.4f} val R@10 {m.recall10:.4f} "
                       f"N@10 {m.ndcg10:.4f} [{row['seconds']:.1f}s + eval {row['eval_seconds']:.1f}s]")
        stop = stopper.update(m.ndcg10, epoch, model)
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "key": checkpoint_key, "epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(),
                "np_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "generators": [g.get_state() for g in generators], "stopper": stopper.state_dict(), "rows": rows,
                "train_seconds": time.perf_counter() - t_train})
        if stop:
            break
        if cfg.max_minutes and time.perf_counter() - t_train > cfg.max_minutes * 60:
            out_of_time = True
            _log(progress, f"{desc}: train.max_minutes={cfg.max_minutes:g} reached after epoch {epoch}; keeping the "
                           f"best epoch ({stopper.best_epoch})")
            break
    stopper.restore(model)
    model.eval()
    return FitResult(pd.DataFrame(rows), stopper.best_epoch, stopper.best, stopper.stopped, out_of_time,
                     time.perf_counter() - t_train)


def _stream_plan(cfg: SeqRecConfig, ds: SeqDataset, progress: bool) -> tuple[EagerConfig, str]:
    """The streams this run can use; without item text the semantic stream (and transfer task) go off."""
    ecfg = dataclasses.replace(cfg.eager)
    note = "both streams" if ecfg.use_behavior and ecfg.use_semantic else f"{'+'.join(ecfg.streams)} stream only"
    if ecfg.use_semantic and not ds.has_text:
        if not ecfg.use_behavior:
            raise ConfigError(f"{ds.root}: the {cfg.model} model needs item text (item_text.tsv) for semantic "
                              "codes, and this dataset has none")
        ecfg.use_semantic = False
        note = "behavior stream only: the dataset has no item text (item_text.tsv)"
        _log(progress, f"[streams] {note}; the semantic stream and the transfer task are off")
    ecfg.validate()
    return ecfg, note


def _write_common(out: Path, cfg: SeqRecConfig, ds: SeqDataset, data: str | Path, model: torch.nn.Module,
                  fit_res: FitResult) -> None:
    save_yaml(cfg, out / "config.yaml")
    write_run_json(out, data, cfg.model, ds)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    fit_res.history.to_csv(out / "history.csv", index=False)
    plot_seqrec_history(fit_res.history, out / "history.png")


class _TestBlock(NamedTuple):
    test: SeqMetrics
    val: SeqMetrics
    popularity: SeqMetrics  # the most popular training items for everyone, on the test users
    per_1000: float  # test inference seconds per 1,000 users
    test_top: np.ndarray  # (U, 10) ranked internal item ids of the test users (-1: empty slot)


def _test_block(recommend: Callable, split: LeaveOneOut, cfg: SeqTrainConfig, n_items: int) -> _TestBlock:
    t = time.perf_counter()
    top = predict_topk(recommend, split.test, cfg.eval_batch_size)
    test = metrics_from_topk(top, split.test.target)
    per_1000 = (time.perf_counter() - t) / max(len(split.test.target), 1) * 1000
    val = metrics_from_topk(predict_topk(recommend, split.val, cfg.eval_batch_size), split.val.target)
    pop = item_popularity(split.train, n_items)
    popm = metrics_from_topk(popularity_topk(pop, len(split.test.target)), split.test.target)
    return _TestBlock(test, val, popm, per_1000, top)


def train_run(data: str | Path, out_dir: str | Path, cfg: SeqRecConfig | None = None, progress: bool = True,
              encoder: TextEmbedder | None = None, dataset: SeqDataset | None = None, audit: bool = True
              ) -> RunResult:
    """Train ``cfg.model`` on a dataset directory and write the run directory ``out_dir``.

    ``encoder`` (anything with ``dim`` and ``encode(texts)``) and ``dataset`` may be passed in (tests).
    ``audit``: run the order audit of :mod:`beatrec.seqrec.audit` on the data (off for a nested behavior
    encoder, whose parent run audits the same data).
    """
    cfg = cfg or SeqRecConfig()
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch_threads(cfg.train.threads):
        return _train_run(data, out, cfg, progress, encoder, dataset, audit)


def _train_run(data: str | Path, out: Path, cfg: SeqRecConfig, progress: bool, encoder: TextEmbedder | None,
               dataset: SeqDataset | None, audit: bool) -> RunResult:
    t_start = time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    ds = dataset or load_run_dataset(data, cfg.max_users, cfg.subset_seed)
    order = warn_if_ordered(ds)._asdict() if audit else None
    split = leave_one_out(ds, cfg.max_len)
    _log(progress, f"[data] {ds.name}: {ds.n_users} users, {ds.n_items} items, {ds.n_interactions} interactions, "
                   f"{len(split.train.target)} training windows; dropped {ds.n_dropped_users} users with < 3 items"
                   f"; item text: {'yes' if ds.has_text else 'no'}")
    extra: dict[str, Any] = {}
    timings: dict[str, float] = {}
    gens: tuple[torch.Generator, ...] = ()
    code_digest = ""  # EAGER: the item codes are part of what a checkpoint must match
    if cfg.model == "sasrec":
        model: torch.nn.Module = SASRec(ds.n_items, cfg.max_len, cfg.sasrec)
    else:
        ecfg, note = _stream_plan(cfg, ds, progress)
        cfg = dataclasses.replace(cfg, eager=ecfg)
        emb: dict[str, torch.Tensor] = {}
        t = time.perf_counter()
        need_behavior = ecfg.use_behavior
        if need_behavior:
            emb["behavior"] = behavior_embeddings(data, out, cfg, ds, progress)
        timings["behavior_encoder_s"] = time.perf_counter() - t
        t = time.perf_counter()
        if ecfg.use_semantic:
            assert ds.titles is not None
            enc = encoder or TextEncoder(cfg.text_encoder)
            texts = [ti if ti else UNTITLED for ti in ds.titles]
            emb["semantic"] = torch.from_numpy(enc.encode(texts, progress=progress)).float()
            _log(progress, f"[semantic] embedded {len(texts)} titles ({ds.n_missing_titles} missing -> "
                           f"{UNTITLED!r})")
        timings["text_encoding_s"] = time.perf_counter() - t
        t = time.perf_counter()
        codes: dict[str, ItemCodes] = {}
        reports = {}
        resuming = (out / CHECKPOINT).is_file()
        for s in ecfg.streams:
            if resuming and (out / f"codes_{s}.csv").is_file():  # the codes the checkpoint was trained with
                codes[s] = ItemCodes.load(out / f"codes_{s}.csv")
                _log(progress, f"[codes] {s}: read from {out / f'codes_{s}.csv'} (resuming)")
            else:
                x = torch.nn.functional.normalize(emb[s], dim=1)  # cosine geometry for the k-means
                codes[s] = build_codes(x.numpy(), cfg.codes)
                codes[s].save(out / f"codes_{s}.csv", ds.item_raw_ids)
            reports[s] = codes[s].report().as_dict()
            r = reports[s]
            _log(progress, f"[codes] {s}: depth {r['depth']} vocab {r['vocab_sizes']}, unique-prefix fraction "
                           f"{r['unique_prefix_fraction']:.3f}, level usage "
                           f"{[round(u, 2) for u in r['level_used_fraction']]}")
        timings["codes_s"] = time.perf_counter() - t
        code_digest = "|".join(hashlib.sha256(np.ascontiguousarray(codes[s].codes).tobytes()).hexdigest()[:16]
                               for s in ecfg.streams)
        dims = {s: int(e.shape[1]) for s, e in emb.items()}
        model = Eager(ds.n_items, cfg.max_len, codes, ecfg, dims)
        gens = (torch.Generator().manual_seed(cfg.train.seed + 1),)  # the transfer task's code masking
        model.set_training_targets({s: emb[s] for s in ecfg.streams if ecfg.use_contrastive}, gens[0])
        extra = {"streams": list(ecfg.streams), "streams_note": note, "codes": reports,
                 "tasks": {"contrastive": ecfg.use_contrastive, "transfer": ecfg.transfer_active},
                 "merge": ecfg.merge, "beam_size": ecfg.beam_size}
    n_params = sum(p.numel() for p in model.parameters())
    _log(progress, f"[train] {cfg.model}: {n_params:,} parameters")
    # Threads and device are left out: a run may resume on another machine or thread count.
    key = hashlib.sha256(f"{dataset_fingerprint(ds)}|{ds.n_users}|{json.dumps(experiment(cfg), sort_keys=True)}|"
                         f"{code_digest}".encode()).hexdigest()
    fit_res = fit(model, split, cfg.train, model.calculate_loss, model.topk, progress, desc=cfg.model,
                  checkpoint=out / CHECKPOINT, checkpoint_key=key, generators=gens)
    timings["training_s"] = fit_res.train_seconds
    _write_common(out, cfg, ds, data, model, fit_res)
    test, val, popm, per_1000, test_top = _test_block(model.topk, split, cfg.train, ds.n_items)
    write_rankings(out / RANKINGS, ds, split.test.user, test_top)
    timings["inference_s_per_1000_users"] = per_1000
    timings["total_s"] = time.perf_counter() - t_start
    metrics = {
        "model": cfg.model,
        "dataset": {"path": str(Path(data).resolve()), "name": ds.name, "n_users": ds.n_users,
                    "n_items": ds.n_items, "n_interactions": ds.n_interactions,
                    "n_train_windows": int(len(split.train.target)), "dropped_users_lt3": ds.n_dropped_users,
                    "has_text": ds.has_text},
        "test": test.as_dict(), "val": val.as_dict(), "popularity_test": popm.as_dict(),
        "training": {"epochs_run": int(len(fit_res.history)), "best_epoch": fit_res.best_epoch,
                     "best_val_ndcg@10": fit_res.best_val_ndcg10, "stopped_early": fit_res.stopped_early,
                     "out_of_time": fit_res.out_of_time},
        "n_parameters": n_params,
        "order_audit": order,
        **extra,
        "timings": timings,
        "machine": machine_info(resolve_device(cfg.train.device)),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: model.safetensors holds the best weights
    _log(progress, f"[test] {cfg.model}: R@5 {test.recall5:.4f} R@10 {test.recall10:.4f} N@5 {test.ndcg5:.4f} "
                   f"N@10 {test.ndcg10:.4f} (popularity N@10 {popm.ndcg10:.4f}); wrote {out} "
                   f"in {timings['total_s']:.0f}s")
    return RunResult(out, metrics)


def behavior_embeddings(data: str | Path, out: Path, cfg: SeqRecConfig, ds: SeqDataset, progress: bool
                         ) -> torch.Tensor:
    """(n_items, d) SASRec item embeddings: from ``cfg.behavior_run`` or a SASRec trained into RUN/behavior."""
    if cfg.behavior_run:
        run = Path(cfg.behavior_run)
        info = read_run_json(run)
        if info["model"] != "sasrec":
            raise RunError(f"{run}: behavior_run must be a SASRec run, this one is {info['model']!r}")
        if info["items_fingerprint"] != dataset_fingerprint(ds):
            raise RunError(f"{run}: behavior_run was trained on other items than this dataset")
        model = load_model(run, ds)
        _log(progress, f"[behavior] SASRec item embeddings from {run}")
    else:
        sub = dataclasses.replace(cfg, model="sasrec", train=cfg.behavior_train, behavior_run="")
        done = out / "behavior"
        reusable = (done / "metrics.json").is_file() and \
            experiment(read_run_config(done / "config.yaml")) == experiment(sub) and \
            read_run_json(done)["items_fingerprint"] == dataset_fingerprint(ds)
        if reusable:
            _log(progress, f"[behavior] SASRec (behavior encoder) already trained in {done}: reused")
        else:
            _log(progress, f"[behavior] training SASRec (behavior encoder) into {done}")
            train_run(data, done, sub, progress=progress, dataset=ds, audit=False)
        model = load_model(done, ds)
    assert isinstance(model, SASRec)
    return model.item_embeddings().detach().clone()


def load_model(run: str | Path, ds: SeqDataset | None = None) -> torch.nn.Module:
    """Rebuild a trained model from its run directory (config.yaml, codes_*.csv, model.safetensors)."""
    run = Path(run)
    info = read_run_json(run)
    cfg = read_run_config(run / "config.yaml")
    n_items = int(info["n_items"]) if ds is None else ds.n_items
    if n_items != info["n_items"]:
        raise RunError(f"{run}: trained on {info['n_items']} items, the dataset has {n_items}")
    wfile = run / "model.safetensors"
    if not wfile.is_file():
        raise RunError(f"{run}: model.safetensors missing")
    state = load_file(str(wfile))
    if cfg.model == "sasrec":
        model: torch.nn.Module = SASRec(n_items, cfg.max_len, cfg.sasrec)
    else:
        codes = {s: ItemCodes.load(run / f"codes_{s}.csv") for s in cfg.eager.streams}
        dims = {s: int(state[f"decoders.{s}.proj.weight"].shape[0]) for s in STREAMS
                if f"decoders.{s}.proj.weight" in state}
        model = Eager(n_items, cfg.max_len, codes, cfg.eager, dims)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise RunError(f"{wfile}: does not match config.yaml ({str(e).splitlines()[0]})") from e
    return model.eval()


def evaluate_run(run: str | Path, data: str | Path | None = None, progress: bool = True, device: str = "auto",
                 merge: str | None = None, beam_size: int | None = None, out_name: str = "evaluation.json"
                 ) -> dict[str, Any]:
    """Reload a run, score the test (and validation) users on ``device``, write ``RUN/<out_name>`` and return it.
    ``merge`` / ``beam_size`` (generative runs) decode with another stream merge or beam width than the run was
    trained with; the result records what was used."""
    run = Path(run)
    info = read_run_json(run)
    if info["model"] == "llmbs":
        raise RunError(f"{run}: an LLM-BS run; evaluate it with beatrec.seqrec.runs.evaluate_any "
                       "(what `beatrec seqrec evaluate` calls)")
    cfg = read_run_config(run / "config.yaml")
    with torch_threads(cfg.train.threads):
        ds = load_run_dataset(data or info["data"], cfg.max_users, cfg.subset_seed)
        if dataset_fingerprint(ds) != info["items_fingerprint"]:
            raise RunError(f"{run}: the dataset's items differ from those the run was trained on")
        split = leave_one_out(ds, cfg.max_len)
        model = load_model(run, ds).to(resolve_device(device))
        decoding: dict[str, Any] = {}
        if isinstance(model, SASRec):
            if merge is not None or beam_size is not None:
                raise ConfigError(f"{run}: --merge and --beam-size apply to generative runs, not to SASRec")
        else:
            assert isinstance(model, Eager)
            asked = {"merge": merge, "beam_size": beam_size}
            model.cfg = dataclasses.replace(model.cfg, **{k: v for k, v in asked.items() if v is not None})
            model.cfg.validate()
            decoding = {"merge": model.cfg.merge, "beam_size": model.cfg.beam_size}
        test, val, popm, per_1000, test_top = _test_block(model.topk, split, cfg.train, ds.n_items)
        write_rankings(run / f"{Path(out_name).stem}_{RANKINGS}", ds, split.test.user, test_top)
    result = {"model": cfg.model, "run": str(run), **decoding, "test": test.as_dict(), "val": val.as_dict(),
              "popularity_test": popm.as_dict(), "inference_s_per_1000_users": per_1000}
    (run / out_name).write_text(json.dumps(result, indent=2))
    _log(progress, f"{cfg.model} test: R@5 {test.recall5:.4f} R@10 {test.recall10:.4f} "
                   f"N@5 {test.ndcg5:.4f} N@10 {test.ndcg10:.4f}")
    return result
