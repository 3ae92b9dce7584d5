"""A seeded synthetic sequence dataset with planted structure, in the ``seqrec`` layout (tests, demos).

Items form ``n_clusters`` clusters of ``cluster_size`` consecutive ids; a user picks a cluster and a start
item and walks through the cluster in id order (cyclically), so the next item is (with probability
``1 - noise``) the successor of the last one. A popularity ranker cannot exploit this; a sequential model
can. Optional titles (``item_text.tsv``) name the cluster, so semantic codes can find it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beatrec.config import check


@dataclass
class SyntheticSeqConfig:
    n_users: int = 300
    n_clusters: int = 8
    cluster_size: int = 12
    min_len: int = 5
    max_len: int = 10
    noise: float = 0.05  # probability that a step jumps to a random item instead of the successor
    with_text: bool = True
    seed: int = 0

    def validate(self) -> None:
        check(self.n_users >= 1 and self.n_clusters >= 1 and self.cluster_size >= 2, "sizes must be positive")
        check(3 <= self.min_len <= self.max_len, "need 3 <= min_len <= max_len")
        check(0 <= self.noise <= 1, "noise must be in [0, 1]")


def write_seq_dataset(cfg: SyntheticSeqConfig, out: str | Path, name: str = "Synthetic") -> Path:
    """Write ``out/<name>/<name>.txt`` (ids from 1) and, with ``with_text``, ``item_text.tsv``; return the folder."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    root = Path(out) / name
    root.mkdir(parents=True, exist_ok=True)
    n_items = cfg.n_clusters * cfg.cluster_size
    lines = []
    used: set[int] = set()
    for u in range(cfg.n_users):
        c = rng.integers(cfg.n_clusters)
        pos = rng.integers(cfg.cluster_size)
        seq = []
        for _ in range(rng.integers(cfg.min_len, cfg.max_len + 1)):
            if rng.random() < cfg.noise:
                seq.append(int(rng.integers(n_items)))
            else:
                seq.append(int(c * cfg.cluster_size + pos))
            pos = (pos + 1) % cfg.cluster_size
        used.update(seq)
        lines.append(" ".join(str(x) for x in [u + 1, *[i + 1 for i in seq]]))
    (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    if cfg.with_text:
        rows = ["item_id\tasin\ttitle"]
        for i in sorted(used):  # titles only for items that occur (others would be unknown ids)
            c, j = divmod(i, cfg.cluster_size)
            rows.append(f"{i + 1}\tA{i:06d}\tcollection {c} piece {j}")
        (root / "item_text.tsv").write_text("\n".join(rows) + "\n")
    return root
