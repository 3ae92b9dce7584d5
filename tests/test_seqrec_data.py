"""Sequential data: readers, their errors, the leave-one-out split and sliding windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beatrec.errors import DataError
from beatrec.seqrec.data import PAD, item_popularity, leave_one_out, load_seq_dataset, sliding_windows


def _write(root: Path, name: str, text: str, titles: str | None = None) -> Path:
    d = root / name
    d.mkdir()
    (d / f"{name}.txt").write_text(text)
    if titles is not None:
        (d / "item_text.tsv").write_text(titles)
    return d


def test_reads_txt_maps_items_and_drops_short_users(tmp_path: Path) -> None:
    d = _write(tmp_path, "Toy", "1 10 20 30 40\n2 20 50\n\n3 50 10 30\n",
               "item_id\tasin\ttitle\n10\tA\tred pen\n20\tB\tblue pen\n30\tC\t\n50\tE\tink\n")
    ds = load_seq_dataset(d)
    assert ds.name == "Toy" and ds.n_users == 2 and ds.n_dropped_users == 1  # user 2 has 2 items
    assert ds.item_raw_ids.tolist() == [10, 20, 30, 40, 50]  # explicit map, ascending raw ids
    assert [s.tolist() for s in ds.sequences] == [[0, 1, 2, 3], [4, 0, 2]]
    assert ds.user_raw_ids.tolist() == [1, 3]
    assert ds.titles == ["red pen", "blue pen", "", "", "ink"] and ds.n_missing_titles == 2
    assert ds.internal_ids(np.array([30, 99])).tolist() == [2, -1]


def test_reads_inter_json(tmp_path: Path) -> None:
    d = tmp_path / "Inst"
    d.mkdir()
    (d / "Inst.inter.json").write_text(json.dumps({"1": [3, 0, 1], "0": [0, 1, 2, 3]}))
    ds = load_seq_dataset(d)
    assert ds.user_raw_ids.tolist() == [0, 1] and not ds.has_text
    assert [s.tolist() for s in ds.sequences] == [[0, 1, 2, 3], [3, 0, 1]]


@pytest.mark.parametrize(("text", "needle", "row"), [
    ("1 1 2 3\n2 1 x 3\n", "non-integer item id 'x'", 2),
    ("u1 1 2 3\n", "non-integer user id 'u1'", 1),
    ("1 1 2 3\n2\n", "empty sequence", 2),
    ("1 1 2 3\n1 2 3 4\n", "more than one line", 2),
])
def test_txt_errors_name_the_line(tmp_path: Path, text: str, needle: str, row: int) -> None:
    d = _write(tmp_path, "Bad", text)
    with pytest.raises(DataError) as e:
        load_seq_dataset(d)
    assert needle in str(e.value) and e.value.row == row and e.value.file.endswith("Bad.txt")


def test_other_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_seq_dataset(tmp_path / "nope")
    d = _write(tmp_path, "Short", "1 1 2\n2 3\n")
    with pytest.raises(DataError, match="at least 3 items"):
        load_seq_dataset(d)
    d = _write(tmp_path, "Unk", "1 1 2 3\n", "1\ta\tx\n7\tb\ty\n")
    with pytest.raises(DataError, match=r"not in Unk.txt, e.g. \[7\]"):
        load_seq_dataset(d)
    d = _write(tmp_path, "BadText", "1 1 2 3\n", "item_id\tasin\ttitle\nzz\ta\tx\n")
    with pytest.raises(DataError) as e:
        load_seq_dataset(d)
    assert e.value.row == 2 and "non-integer item id 'zz'" in str(e.value)
    j = tmp_path / "J"
    j.mkdir()
    (j / "J.inter.json").write_text(json.dumps({"0": [1, "a", 2]}))
    with pytest.raises(DataError, match="not a non-negative integer"):
        load_seq_dataset(j)
    (j / "J.inter.json").write_text("{oops")
    with pytest.raises(DataError, match="not valid JSON"):
        load_seq_dataset(j)


def test_sliding_windows() -> None:
    seq = np.arange(5)
    hist, tgt = sliding_windows(seq, max_len=2)
    assert [h.tolist() for h in hist] == [[0], [0, 1], [1, 2], [2, 3]]
    assert tgt.tolist() == [1, 2, 3, 4]


def test_leave_one_out(tmp_path: Path) -> None:
    d = _write(tmp_path, "Toy", "1 1 2 3 4 5 6\n2 7 8 9\n")
    ds = load_seq_dataset(d)
    split = leave_one_out(ds, max_len=3)
    # user 0: items 0..5 -> training part 0..3, validation 4, test 5
    assert split.test.target.tolist() == [5, 8] and split.val.target.tolist() == [4, 7]
    assert split.test.history.tolist() == [[2, 3, 4], [PAD, 6, 7]]  # right-aligned, last max_len items
    assert split.val.history.tolist() == [[1, 2, 3], [PAD, PAD, 6]]
    # training windows: only from 0..3 of user 0 (user 1's training part is one item: no window)
    assert split.train.target.tolist() == [1, 2, 3]
    assert split.train.history.tolist() == [[PAD, PAD, 0], [PAD, 0, 1], [0, 1, 2]]
    assert split.train.user.tolist() == [0, 0, 0]
    assert item_popularity(split.train, ds.n_items).tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_subset_users_reindexes_items(tmp_path: Path) -> None:
    d = _write(tmp_path, "Toy", "1 1 2 3\n2 4 5 6\n3 1 5 6\n", "1\ta\tone\n4\tb\tfour\n")
    ds = load_seq_dataset(d)
    sub = ds.subset_users(1, seed=0)
    assert sub.n_users == 1 and sub.n_items == 3
    assert sorted(np.concatenate(sub.sequences).tolist()) == [0, 1, 2]
    assert sub.titles is not None and len(sub.titles) == 3
