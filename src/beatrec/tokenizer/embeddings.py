"""The continuous LightGCN vectors of a stage-1 run (``embeddings.safetensors``), for vector-based baselines.

``beatrec tokenize`` writes ``embeddings.safetensors`` with ``user`` (U, D) and ``item`` (I, D) float32: the
LightGCN outputs z (eq. 3) before the macro/micro split and quantisation, D = (1+N)·part_dim. Runs written
before that file existed are handled by recomputing the same vectors from ``tokenizer.safetensors`` (the
free embeddings E⁰) and the dataset's training edges.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from beatrec.errors import RunError

EMBEDDINGS = "embeddings.safetensors"


class GraphEmbeddings(NamedTuple):
    user: torch.Tensor  # (U, D) float32
    item: torch.Tensor  # (I, D) float32


def load_graph_embeddings(run: str | Path, data: str | Path | None = None) -> GraphEmbeddings:
    """The run's continuous user and item vectors.

    Args:
        run: a ``beatrec tokenize`` run directory.
        data: its dataset directory, needed only for runs without ``embeddings.safetensors``.

    Raises:
        RunError: neither the file nor (tokenizer weights + config + dataset) to recompute it is there.
    """
    from safetensors.torch import load_file

    run = Path(run)
    path = run / EMBEDDINGS
    if path.is_file():
        try:
            t = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types on a corrupt file
            raise RunError(f"{path}: cannot be read ({e})") from e
        if not {"user", "item"} <= set(t) or t["user"].ndim != 2 or t["user"].shape[1] != t["item"].shape[1]:
            raise RunError(f"{path}: needs 'user' (U, D) and 'item' (I, D) tensors of the same width")
        return GraphEmbeddings(t["user"].float(), t["item"].float())
    return _recompute(run, data)


def _recompute(run: Path, data: str | Path | None) -> GraphEmbeddings:
    from safetensors.torch import load_file

    from beatrec.config import load_yaml
    from beatrec.data.dataset import load_dataset
    from beatrec.tokenizer.config import TokenizeConfig
    from beatrec.tokenizer.graph import normalized_adjacency
    from beatrec.tokenizer.lightgcn import LightGCN, e0_from_state

    weights, conf = run / "tokenizer.safetensors", run / "config.yaml"
    if not (weights.is_file() and conf.is_file()) or data is None:
        raise RunError(f"{run}: no {EMBEDDINGS}, and it cannot be recomputed (needs tokenizer.safetensors, "
                       "config.yaml and the dataset directory); re-run `beatrec tokenize`")
    cfg = load_yaml(TokenizeConfig, conf)
    emb = e0_from_state(load_file(str(weights)))
    ds = load_dataset(data)
    if emb is None or emb.shape[0] != ds.n_users + ds.n_items:
        raise RunError(f"{weights}: no LightGCN embedding of {ds.n_users}+{ds.n_items} entities "
                       f"(was the run tokenized from {data}?)")
    tr = ds.interactions[ds.interactions["split"] == "train"]
    adj = normalized_adjacency(tr["user"].to_numpy(), tr["item"].to_numpy(), ds.n_users, ds.n_items)
    gcn = LightGCN(ds.n_users, ds.n_items, emb.shape[1], cfg.model.n_layers)
    with torch.no_grad():
        gcn.embedding.copy_(emb)
        zu, zi = gcn(adj)
    return GraphEmbeddings(zu.float(), zi.float())
