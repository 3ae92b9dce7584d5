"""benchmarks/seqrec_protocol.py: the ASIN-sorted copy of a dataset, the no-training rows, and the report end to end."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from bench_script import load_benchmark
from test_seqrec_audit import planted
from test_seqrec_benchmark import TINY

from beatrec.seqrec.audit import audit_order, key_ranks
from beatrec.seqrec.data import load_seq_dataset
from beatrec.seqrec.synthetic import SyntheticSeqConfig, write_seq_dataset


def test_asin_copy_sorts_each_user_and_keeps_users_items_and_files(tmp_path: Path) -> None:
    src = planted(tmp_path, "random")
    bench = load_benchmark("seqrec_protocol")
    out = bench.write_asin_order(src, tmp_path / "copy")
    a, b = load_seq_dataset(src), load_seq_dataset(out)
    _, rank = key_ranks(b, "asin")
    assert out.name == src.name and (out / "item_text.tsv").is_symlink()
    assert np.array_equal(a.user_raw_ids, b.user_raw_ids) and np.array_equal(a.item_raw_ids, b.item_raw_ids)
    for s, t in zip(a.sequences, b.sequences, strict=True):
        assert sorted(s.tolist()) == sorted(t.tolist()) and np.all(np.diff(rank[t]) > 0)
    assert audit_order(b, "asin", 200).flagged and not audit_order(a, "asin", 200).flagged
    # the copy is made once: a second call leaves the file alone
    mtime = (out / f"{src.name}.txt").stat().st_mtime_ns
    assert bench.write_asin_order(src, tmp_path / "copy") == out
    assert (out / f"{src.name}.txt").stat().st_mtime_ns == mtime


def test_no_training_rows_by_hand(tmp_path: Path) -> None:
    """Three items with ASINs C < A < B by id order; the heuristic recommends what follows the last history item."""
    d = tmp_path / "Hand"
    d.mkdir()
    (d / "Hand.txt").write_text("1 1 2 3\n2 2 1 3\n3 3 1 2\n")
    (d / "item_text.tsv").write_text("item_id\tasin\ttitle\n1\tB2\ta\n2\tB3\tb\n3\tB1\tc\n")
    rows = load_benchmark("seqrec_protocol").heuristic_scores(load_seq_dataset(d))
    # ASIN order: item 3 (B1), 1 (B2), 2 (B3). User 1: last history 2 -> nothing follows; target 3: miss.
    # User 2: last history 1 -> [2]; target 3: miss. User 3: last history 1 -> [2]; target 2 at rank 1: hit.
    assert rows["next-ASIN heuristic"].recall10.tolist() == [0.0, 0.0, 1.0]
    assert rows["next-ASIN heuristic"].ndcg10.tolist() == [0.0, 0.0, 1.0]
    # popularity from the training parts (first items 1, 2, 3, one each): every item is in the top 10
    assert rows["popularity"].recall10.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.slow
def test_protocol_benchmark_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATREC_CACHE", os.environ.get("BEATREC_CACHE", str(tmp_path / "cache")))
    write_seq_dataset(SyntheticSeqConfig(n_users=40), tmp_path / "data", name="Texted")
    out = tmp_path / "protocol.md"
    base = ["--data-root", str(tmp_path / "data"), "--dataset", "Texted", "--runs", str(tmp_path / "runs"),
            "--out", str(out), *[a for s in TINY for a in ("--set", s)]]
    bench = load_benchmark("seqrec_protocol")
    # one chain per process, as the benchmark is run: seed 0 in ASIN order, then both seeds of the shipped order
    assert bench.main([*base, "--orders", "asin", "--seeds", "0", "--report-seeds", "0", "1"]) == 0
    md = out.read_text()
    assert "**Not run yet:** SASRec (as shipped), EAGER (as shipped)." in md
    assert bench.main([*base, "--orders", "shipped", "--seeds", "0", "1", "--report-seeds", "0", "1"]) == 0
    md = out.read_text()
    assert "Not run yet" not in md
    assert re.search(r"\| SASRec \| as shipped \| 2 \| 0\.\d{4} ± 0\.\d{4} \|", md)
    assert re.search(r"\| SASRec \| re-sorted by ASIN \| 1 \| 0\.\d{4} \|", md)
    did = md[md.index("## Difference in differences"):]
    assert re.search(r"\| EAGER \| 0 \| [+-]0\.\d{4} \| \[[+-]0\.\d{4}, [+-]0\.\d{4}\] \|", did)  # seed 0: all four
    # pairs use the seeds both sides have: shipped has seeds 0 and 1, ASIN only 0, so the pair is seed 0's runs
    per_seed = md[md.index("## Per seed"):]
    shipped0 = re.search(r"\| SASRec \| as shipped \| (0\.\d{4}) \| 0\.\d{4} \|", per_seed).group(1)
    asin0 = re.search(r"\| SASRec \| re-sorted by ASIN \| (0\.\d{4}) \| — \|", per_seed).group(1)
    assert f"| SASRec | 0 | {shipped0} | {asin0} |" in md
    assert re.search(r"\| EAGER \| re-sorted by ASIN \| 0\.\d{4} \| — \|", md[md.index("## Per seed"):])
    # the EAGER runs read the SASRec of their own order and seed
    cfg = (tmp_path / "runs" / "Texted" / "asin" / "seed0" / "eager" / "requested.yaml").read_text()
    assert str(tmp_path / "runs" / "Texted" / "asin" / "seed0" / "sasrec") in cfg
    # --report-only trains nothing and reproduces the tables
    import beatrec.seqrec.train as tr

    monkeypatch.setattr(tr, "train_run", lambda *a, **k: pytest.fail("--report-only trained a row"))
    assert bench.main([*base, "--seeds", "0", "1", "--report-only"]) == 0
    strip = lambda t: t[t.index("## Test metrics"):]  # noqa: E731
    assert strip(out.read_text()) == strip(md)
