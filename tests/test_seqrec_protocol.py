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
    results = tmp_path / "records.json"
    base = ["--data-root", str(tmp_path / "data"), "--dataset", "Texted", "--runs", str(tmp_path / "runs"),
            "--out", str(out), "--results", str(results),
            *[a for s in [*TINY, "train.patience=2"] for a in ("--set", s)]]
    bench = load_benchmark("seqrec_protocol")
    # one chain per process, as the benchmark is run: seed 0 in ASIN order, then both seeds of the shipped order
    assert bench.main([*base, "--orders", "asin", "--seeds", "0", "--report-seeds", "0", "1"]) == 0
    md = out.read_text()
    assert "**Not run yet:** SASRec (as shipped), EAGER (as shipped)." in md
    # the shipped chain also trains the authors' losses (part 3), on the shipped order only
    three = ["--models", "SASRec", "EAGER", "EAGER (official losses)"]
    assert bench.main([*base, *three, "--orders", "shipped", "--seeds", "0", "1", "--report-seeds", "0", "1"]) == 0
    md = out.read_text()
    assert "**Not run yet:** EAGER (official losses) (re-sorted by ASIN)." in md
    variants = md[md.index("## Paired: the authors' settings - EAGER"):]
    got = re.search(r"\| EAGER \(official losses\) \| as shipped \| 0, 1 \| ([+-]0\.\d{4}) \| .*? \| "
                    r"([+-]0\.\d{4}) ± (0\.\d{4}) \|", variants)
    # the per-seed column: the difference within each seed (from the per-seed table), mean ± sample std
    per_seed = md[md.index("## Per seed"):]
    by_seed = {label: [float(v) for v in re.search(rf"\| {re.escape(label)} \| as shipped \| (0\.\d{{4}}) \| "
                                                   r"(0\.\d{4}) \|", per_seed).groups()]
               for label in ("EAGER", "EAGER (official losses)")}
    diffs = np.subtract(by_seed["EAGER (official losses)"], by_seed["EAGER"])
    assert float(got.group(2)) == pytest.approx(diffs.mean(), abs=2e-4)
    assert float(got.group(3)) == pytest.approx(diffs.std(ddof=1), abs=3e-4)  # 4-digit rounding
    assert float(got.group(1)) == pytest.approx(float(got.group(2)), abs=1e-4)  # mean over users and seeds
    from beatrec.seqrec.config import read_run_config

    cfg = read_run_config(tmp_path / "runs" / "Texted" / "shipped" / "seed1" / "eager-official-losses" / "requested.yaml")
    assert cfg.eager.contrastive_negatives == 2048 and cfg.train.patience == 2  # the preset, the common budget
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
    assert bench.main([*base, *three, "--seeds", "0", "1", "--report-only"]) == 0
    strip = lambda t: t[t.index("## Test metrics"):]  # noqa: E731
    assert strip(out.read_text()) == strip(md)
    # every finished run is recorded: 2 orders x SASRec and EAGER, shipped with seeds 0 and 1, ASIN with seed 0
    recs = bench.read_records(results)
    assert sorted((r["order"], r["seed"], r["slug"]) for r in recs) == [
        ("asin", 0, "eager"), ("asin", 0, "sasrec"), ("shipped", 0, "eager"), ("shipped", 0, "eager-official-losses"),
        ("shipped", 0, "sasrec"), ("shipped", 1, "eager"), ("shipped", 1, "eager-official-losses"),
        ("shipped", 1, "sasrec")]
    assert all(r["behavior"] is None if r["slug"] == "sasrec" else len(r["behavior"]) == 16 for r in recs)
    # the runs folder gone (a new machine or session): the report comes from the records alone, and a chain
    # whose rows are recorded trains nothing
    import shutil

    shutil.rmtree(tmp_path / "runs" / "Texted")
    assert bench.main([*base, *three, "--seeds", "0", "1", "--report-seeds", "0", "1", "--orders", "shipped"]) == 0
    assert strip(out.read_text()) == strip(md)
    # an EAGER record counts only with the SASRec record it was trained on: a re-trained SASRec whose ranks
    # differ drops it from the report
    changed = [dict(r, model="0" * 16) if (r["order"], r["seed"], r["slug"]) == ("asin", 0, "sasrec")
               else r for r in recs]
    results.write_text(__import__("json").dumps({"records": changed}))
    assert bench.main([*base, "--seeds", "0", "1", "--report-only"]) == 0
    assert "**Not run yet:** EAGER (re-sorted by ASIN)." in out.read_text()


def test_rank_strings_round_trip_and_give_the_metrics() -> None:
    bench = load_benchmark("seqrec_protocol")
    ranks = np.array([0, 1, 2, 10, 0, 5])
    text = bench.encode_ranks(ranks)
    assert text == "-019-4"
    assert np.array_equal(bench.decode_ranks(text), ranks)
    sc = bench.scores_from_ranks(bench.decode_ranks(text))
    assert sc.recall10.tolist() == [0, 1, 1, 1, 0, 1]
    assert np.allclose(sc.ndcg10, [0, 1, 1 / np.log2(3), 1 / np.log2(11), 0, 1 / np.log2(6)])
    with pytest.raises(ValueError, match="0..10"):
        bench.encode_ranks(np.array([11]))
    with pytest.raises(ValueError, match="only 0-9"):
        bench.decode_ranks("01x")


def test_records_update_replaces_the_same_run_only_by_a_newer_one(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    bench = load_benchmark("seqrec_protocol")
    path = tmp_path / "r.json"
    rec = {"dataset": "D", "users": "u", "order": "asin", "seed": 0, "row": "SASRec", "slug": "sasrec",
           "experiment": {"a": 1}, "finished": "2026-01-02T00:00:00+00:00", "model": "m1", "ranks": "01"}
    bench.update_records(path, [rec])
    # seed 1 is added; an older run of seed 0 (a leftover folder) does not replace the newer record
    bench.update_records(path, [dict(rec, seed=1), dict(rec, ranks="--", model="m0", finished="2026-01-01T00:00:00+00:00")])
    assert sorted((r["seed"], r["ranks"]) for r in bench.read_records(path)) == [(0, "01"), (1, "01")]
    # a newer run with other weights replaces it, and says so
    bench.update_records(path, [dict(rec, ranks="--", model="m2", finished="2026-01-03T00:00:00+00:00")])
    assert sorted((r["seed"], r["ranks"]) for r in bench.read_records(path)) == [(0, "--"), (1, "01")]
    assert "EAGER records trained on the old SASRec no longer count" in capsys.readouterr().out
    # another budget or other users: records of their own
    bench.update_records(path, [dict(rec, experiment={"a": 2}), dict(rec, users="v")])
    assert len(bench.read_records(path)) == 4
    assert not list(tmp_path.glob(".*.tmp"))
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="not a records file"):
        bench.read_records(path)
