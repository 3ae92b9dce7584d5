"""``beatrec tokenize``: dataset directory -> run directory of behavior tokens (BEAT stage 1, end to end).

Stages, each handing off artifacts on disk (DESIGN.md house style 5):
  1. load and validate the dataset; zero-shot user-disjoint split (``split.json``);
  2. training texts only (rows of training users) -> LLM phrase extraction per user and item (cached on disk,
     ``phrases_users.jsonl`` / ``phrases_items.jsonl`` in the run);
  3. frozen text encoder: macro texts and phrases -> embeddings (cached on disk, keyed by hashes);
  4. LightGCN + VQ training with early stopping on validation HR@k;
  5. tokens (Parquet), weights, codebooks and continuous LightGCN vectors (safetensors), ``metrics.json``,
     ``history.csv``, plots.

No row of a validation or test user is passed to steps 2–4 (see :func:`beatrec.data.split.training_texts`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from beatrec.config import save_yaml
from beatrec.data.dataset import XRecDataset, load_dataset
from beatrec.data.split import ZeroShotSplit, make_zero_shot_split, stage1_texts
from beatrec.extract.base import PhraseExtractor
from beatrec.extract.cache import extract_phrases
from beatrec.extract.registry import make_extractor
from beatrec.metrics.ranking import evaluate_scores, interaction_matrix
from beatrec.runtime import machine_info, torch_threads
from beatrec.text_encoder import TextEncoder
from beatrec.tokenizer.codebook import codebook_usage
from beatrec.tokenizer.config import TokenizeConfig
from beatrec.tokenizer.embeddings import EMBEDDINGS
from beatrec.tokenizer.graph import normalized_adjacency
from beatrec.tokenizer.model import BehaviorTokenizer
from beatrec.tokenizer.train import PhraseTable, TokenizerData, TrainResult, make_accelerator, train_tokenizer


class TokenizeResult(NamedTuple):
    run_dir: Path
    metrics: dict
    train: TrainResult


def entity_documents(rows: pd.DataFrame, key: str, columns: tuple[str, ...]) -> dict[int, list[str]]:
    """Each entity's training texts: the given columns of its rows, de-duplicated in order, blanks dropped."""
    docs: dict[int, list[str]] = {}
    for eid, group in rows.groupby(key, sort=True):
        seen: dict[str, None] = {}
        for col in columns:
            for t in group[col].tolist():
                t = t.strip()
                if t:
                    seen.setdefault(t, None)
        if seen:
            docs[int(eid)] = list(seen)
    return docs


def phrase_table(phrases: dict[int, list[str]], encoder: TextEncoder, n: int) -> PhraseTable:
    """Embed each entity's first n phrases. -> PhraseTable(ids (M,), emb (M, n, T), valid (M, n))."""
    ids = sorted(phrases)
    emb = torch.zeros(len(ids), n, encoder.dim)
    valid = torch.zeros(len(ids), n, dtype=torch.bool)
    flat = [p for eid in ids for p in phrases[eid][:n]]
    vecs = torch.from_numpy(encoder.encode(flat)) if flat else torch.zeros(0, encoder.dim)
    k = 0
    for row, eid in enumerate(ids):
        m = len(phrases[eid][:n])
        emb[row, :m] = vecs[k : k + m]
        valid[row, :m] = True
        k += m
    return PhraseTable(torch.tensor(ids, dtype=torch.long), emb, valid)


def _write_jsonl(path: Path, records: dict[int, list[str]], key: str) -> None:
    with path.open("w") as f:
        for eid in sorted(records):
            f.write(json.dumps({key: eid, "phrases": records[eid]}) + "\n")


def _tokens_frame(codes: torch.Tensor, n_micro: int) -> pd.DataFrame:
    c = codes.numpy()
    cols = {"id": np.arange(len(c), dtype=np.int64), "macro": c[:, 0].astype(np.int32)}
    for j in range(n_micro):
        cols[f"micro_{j + 1}"] = c[:, j + 1].astype(np.int32)
    return pd.DataFrame(cols)


def run_tokenize(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: TokenizeConfig | None = None,
    progress: bool = True,
    encoder: TextEncoder | None = None,
    extractor: PhraseExtractor | None = None,
    dataset: XRecDataset | None = None,
) -> TokenizeResult:
    """Run BEAT stage 1 on a dataset directory and write the run directory ``out_dir``.

    ``encoder``/``extractor``/``dataset`` may be passed in (tests use this to spy on what training reads).
    Under ``torchrun`` every process trains (DDP) and the main process alone writes the run; the others return
    a result with empty metrics.
    """
    cfg = cfg or TokenizeConfig()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out_dir)
    acc = make_accelerator()
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
    with torch_threads(cfg.train.threads):
        return _run(Path(data_dir), out, cfg, progress and acc.is_main_process, encoder, extractor, dataset,
                    t_start, timings, acc)


def _run(
    data_dir: Path,
    out: Path,
    cfg: TokenizeConfig,
    progress: bool,
    encoder: TextEncoder | None,
    extractor: PhraseExtractor | None,
    dataset: XRecDataset | None,
    t_start: float,
    timings: dict[str, float],
    acc,  # noqa: ANN001
) -> TokenizeResult:
    torch.manual_seed(cfg.train.seed)
    main = acc.is_main_process

    def log(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    # 1. data and split -----------------------------------------------------------------------------------
    t = time.perf_counter()
    ds = dataset or load_dataset(data_dir)
    split: ZeroShotSplit = make_zero_shot_split(ds, cfg.split)
    if main:
        split.save(out / "split.json")
    else:
        acc.wait_for_everyone()  # the main process fills the phrase and embedding caches first (steps 2-3)
    rows = stage1_texts(ds, split)  # the ONLY text stage 1 reads (train users, minus cross-fitted stage-2 users)
    log(f"[1/5] {ds.root}: {ds.n_users} users, {ds.n_items} items, {len(ds.interactions)} edges; "
        f"text users train/val/test {len(split.train_users)}/{len(split.val_users)}/{len(split.test_users)}, "
        f"{len(rows)} training text pairs" + (f" ({len(split.stage2_users)} train users held out for stage 2)"
                                             if len(split.stage2_users) else ""))
    timings["load_split_s"] = time.perf_counter() - t

    # 2. phrase extraction (cached) ----------------------------------------------------------------------
    t = time.perf_counter()
    extractor = extractor or make_extractor(cfg.extractor)
    user_docs = entity_documents(rows, "uid", cfg.user_texts)
    item_docs = entity_documents(rows, "iid", cfg.item_texts)
    log(f"[2/5] phrase extraction ({cfg.extractor.kind}) for {len(user_docs)} users and {len(item_docs)} items")
    user_phr, ustats = extract_phrases(user_docs, "user", extractor, progress=progress)
    item_phr, istats = extract_phrases(item_docs, "item", extractor, progress=progress)
    if main:
        _write_jsonl(out / "phrases_users.jsonl", user_phr, "uid")
        _write_jsonl(out / "phrases_items.jsonl", item_phr, "iid")
    timings["phrase_extraction_s"] = time.perf_counter() - t

    # 3. text embeddings (cached) ------------------------------------------------------------------------
    t = time.perf_counter()
    encoder = encoder or TextEncoder(cfg.text_encoder)
    macro_texts = rows[cfg.macro_text].tolist()
    text_emb = torch.from_numpy(encoder.encode(macro_texts, progress=progress)) if macro_texts else \
        torch.zeros(0, encoder.dim)
    n = cfg.model.n_phrases
    uphr, iphr = phrase_table(user_phr, encoder, n), phrase_table(item_phr, encoder, n)
    log(f"[3/5] embedded {len(macro_texts)} pair texts and {int(uphr.valid.sum() + iphr.valid.sum())} phrases")
    timings["text_encoding_s"] = time.perf_counter() - t
    if main:
        acc.wait_for_everyone()

    # 4. graph + training --------------------------------------------------------------------------------
    t = time.perf_counter()
    inter = ds.interactions
    parts = {s: inter[inter["split"] == s] for s in ("train", "val", "test")}
    tr = parts["train"]
    mats = {s: interaction_matrix(p["user"].to_numpy(), p["item"].to_numpy(), ds.n_users, ds.n_items)
            for s, p in parts.items()}
    data = TokenizerData(
        adj=normalized_adjacency(tr["user"].to_numpy(), tr["item"].to_numpy(), ds.n_users, ds.n_items),
        train_users=tr["user"].to_numpy(np.int64),
        train_items=tr["item"].to_numpy(np.int64),
        train_matrix=mats["train"],
        val_matrix=mats["val"],
        text_users=torch.tensor(rows["uid"].to_numpy(np.int64)),
        text_items=torch.tensor(rows["iid"].to_numpy(np.int64)),
        text_emb=text_emb,
        user_phrases=uphr,
        item_phrases=iphr,
    )
    model = BehaviorTokenizer(ds.n_users, ds.n_items, encoder.dim, cfg.model)
    log(f"[4/5] training ({cfg.train.graph} graph"
        + (f", fan-outs {'-'.join(map(str, cfg.train.fanouts))}" if cfg.train.graph == "sampled" else "")
        + f", {acc.num_processes} process{'es' * (acc.num_processes > 1)}): {len(tr)} training edges, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters")
    result = train_tokenizer(model, data, cfg.train, progress=progress, accelerator=acc)
    timings["training_s"] = time.perf_counter() - t
    if not main:
        acc.wait_for_everyone()
        return TokenizeResult(out, {}, result)

    # 5. artifacts ---------------------------------------------------------------------------------------
    t = time.perf_counter()
    with torch.no_grad():
        v = model.all_vectors(data.adj)
    k = cfg.train.eval_k
    test_exclude = mats["train"] + mats["val"]
    pop = torch.from_numpy(np.asarray(mats["train"].sum(0)).ravel().astype(np.float32))
    ranking = {}
    for name, exclude, held in (("val", mats["train"], mats["val"]), ("test", test_exclude, mats["test"])):
        q = evaluate_scores(v["user_quant"], v["item_quant"], exclude, held, k)
        c = evaluate_scores(v["user_cont"], v["item_cont"], exclude, held, k)
        p = evaluate_scores(None, None, exclude, held, k, item_bias=pop)
        ranking[name] = {
            "n_users": q.n_users,
            f"quantized_hr@{k}": q.hr, f"quantized_ndcg@{k}": q.ndcg,
            f"continuous_hr@{k}": c.hr, f"continuous_ndcg@{k}": c.ndcg,
            f"popularity_hr@{k}": p.hr, f"popularity_ndcg@{k}": p.ndcg,
            "quantized_over_continuous_hr": q.hr / c.hr if c.hr > 0 else float("nan"),
        }
    n_codes = cfg.model.n_codes
    usage = {}
    for side in ("user", "item"):
        codes = v[f"{side}_codes"]
        for part, sl in (("macro", codes[:, :1]), ("micro", codes[:, 1:])):
            u = codebook_usage(sl, n_codes)
            usage[f"{side}_{part}"] = {"used_fraction": u.used_fraction, "perplexity": u.perplexity,
                                       "n_used": u.n_used, "n_codes": n_codes}
    _tokens_frame(v["user_codes"], cfg.model.n_micro).to_parquet(out / "user_tokens.parquet", index=False)
    _tokens_frame(v["item_codes"], cfg.model.n_micro).to_parquet(out / "item_tokens.parquet", index=False)
    save_file({
        "user_macro": model.user.macro.weight.detach().contiguous(),
        "user_micro": model.user.micro.weight.detach().contiguous(),
        "item_macro": model.item.macro.weight.detach().contiguous(),
        "item_micro": model.item.micro.weight.detach().contiguous(),
    }, str(out / "codebooks.safetensors"))
    save_file({k_: t_.detach().contiguous() for k_, t_ in model.state_dict().items()},
              str(out / "tokenizer.safetensors"))
    zu, zi = model.propagate(data.adj)  # continuous LightGCN vectors (eq. 3), for baselines that read vectors
    save_file({"user": zu.float().contiguous(), "item": zi.float().contiguous()}, str(out / EMBEDDINGS))
    hist = pd.DataFrame([h._asdict() for h in result.history])
    hist.to_csv(out / "history.csv", index=False)
    timings["artifacts_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    epoch_s = hist["seconds"].tolist()
    metrics = {
        "dataset": str(ds.root),
        "n_users": ds.n_users, "n_items": ds.n_items, "n_train_edges": len(tr),
        "ranking": ranking,
        "codebooks": usage,
        "training": {
            "epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "best_val_hr": result.best_val_hr, "stopped_early": result.stopped_early,
            "mean_epoch_s": float(np.mean(epoch_s)) if epoch_s else 0.0,
            "graph": cfg.train.graph, "processes": acc.num_processes,
        },
        "phrases": {"users": ustats._asdict(), "items": istats._asdict()},
        "timings": timings,
        "machine": machine_info(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from beatrec.plots import plot_codebook_usage, plot_loss_curves

    plot_loss_curves(hist, out / "loss_curves.png")
    plot_codebook_usage({f"{s}_{p}": v[f"{s}_codes"][:, sl] for s in ("user", "item")
                         for p, sl in (("macro", slice(0, 1)), ("micro", slice(1, None)))},
                        n_codes, out / "codebook_usage.png")
    t_ = ranking["test"]
    log(f"[5/5] test HR@{k}: quantised {t_[f'quantized_hr@{k}']:.4f}, continuous {t_[f'continuous_hr@{k}']:.4f}, "
        f"popularity {t_[f'popularity_hr@{k}']:.4f}; micro codebook usage user/item "
        f"{usage['user_micro']['used_fraction']:.2f}/{usage['item_micro']['used_fraction']:.2f}; "
        f"wrote {out} in {timings['total_s']:.0f}s")
    acc.wait_for_everyone()
    return TokenizeResult(out, metrics, result)


def open_stage1_run(run: str | Path, data: str | Path | None, need: tuple[str, ...]
                    ) -> tuple[TokenizeConfig, XRecDataset]:
    """The config and dataset of a ``beatrec tokenize`` run, for tools that read its artifacts.

    Args:
        need: artifact file names that must exist in ``run``.
        data: the dataset directory (default: the one recorded in the run's ``metrics.json``).
    Raises:
        RunError: an artifact is missing, or the dataset directory is not given and not recorded.
    """
    from beatrec.config import load_yaml
    from beatrec.errors import RunError

    run = Path(run)
    missing = [f for f in need if not (run / f).is_file()]
    if missing:
        raise RunError(f"{run}: no stage-1 artifacts ({', '.join(missing)} missing); run `beatrec tokenize` first")
    cfg = load_yaml(TokenizeConfig, run / "config.yaml")
    if data is None:
        try:
            data = json.loads((run / "metrics.json").read_text())["dataset"]
        except (OSError, ValueError, KeyError) as e:
            raise RunError(f"{run}: the dataset directory is not recorded (metrics.json); pass --data DIR") from e
    return cfg, load_dataset(data)
