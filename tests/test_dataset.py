"""Tests of the XRec-layout dataset loader: good data round-trips, every bad input names file, line, problem."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from beatrec.data.dataset import TEXT_COLUMNS, XRecDataset, assign_edge_split, load_dataset
from beatrec.errors import DataError

EDGES = [(0, 0, "train"), (0, 1, "train"), (0, 2, "val"), (1, 1, "train"), (1, 3, "test"), (2, 0, "train"),
         (2, 4, "train"), (3, 2, "train"), (3, 3, "val"), (4, 4, "train"), (5, 0, "train")]


def text_row(uid: int, iid: int, **kw: object) -> dict:
    row = {"uid": uid, "iid": iid, "title": f"Title {iid}", "user_summary": f"User {uid} likes things.",
           "item_summary": f"Item {iid} is good.", "explanation": f"The user would enjoy item {iid}."}
    row.update(kw)
    return row


TEXTS = [text_row(0, 0), text_row(0, 1), text_row(1, 3), text_row(2, 4), text_row(3, 2)]


def csv_text(edges=EDGES, header: str = "user,item,split") -> str:
    n_cols = len(header.split(","))
    return header + "\n" + "".join(",".join(map(str, e[:n_cols])) + "\n" for e in edges)


def jsonl_text(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def write(root: Path, csv: str | None = None, texts: str | None = None, test: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "interactions.csv").write_text(csv_text() if csv is None else csv)
    (root / "explanations.jsonl").write_text(jsonl_text(TEXTS) if texts is None else texts)
    if test is not None:
        (root / "test.jsonl").write_text(test)
    return root


def expect_error(root: Path, file: str, line: int | None, *words: str) -> DataError:
    """Load ``root`` and check the DataError names ``file``, ``line`` and every word of the problem."""
    with pytest.raises(DataError) as info:
        load_dataset(root)
    err = info.value
    msg = str(err)
    assert Path(err.file).name == file and file in msg, msg
    assert err.row == line, msg
    if line is not None:
        assert f"line {line}" in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"
    return err


# ---------------------------------------------------------------- good data


def test_good_dataset_round_trips(tmp_path: Path) -> None:
    ds = load_dataset(write(tmp_path / "d"))
    assert isinstance(ds, XRecDataset)
    assert ds.name == "d" and ds.n_users == 6 and ds.n_items == 5 and ds.test_texts is None
    assert list(ds.interactions.columns) == ["user", "item", "split"]
    assert ds.interactions["user"].dtype == np.int64 and ds.interactions["item"].dtype == np.int64
    assert [tuple(r) for r in ds.interactions.itertuples(index=False)] == EDGES
    assert list(ds.texts.columns) == list(TEXT_COLUMNS)
    assert ds.texts["uid"].dtype == np.int64 and ds.texts["iid"].dtype == np.int64
    assert ds.texts.to_dict("records") == TEXTS


def test_empty_summaries_and_title_allowed_extra_keys_ignored(tmp_path: Path) -> None:
    rows = [text_row(0, 0, title="", user_summary="", item_summary="  ", extra=1)]
    ds = load_dataset(write(tmp_path / "d", texts=jsonl_text(rows)))
    assert ds.texts.loc[0, "title"] == "" and list(ds.texts.columns) == list(TEXT_COLUMNS)


def test_test_jsonl_loaded_and_may_overlap(tmp_path: Path) -> None:
    ds = load_dataset(write(tmp_path / "d", test=jsonl_text([text_row(3, 2), text_row(5, 0)])))
    assert ds.test_texts is not None and ds.test_texts["uid"].tolist() == [3, 5]


def test_blank_lines_trailing_csv_and_any_jsonl_tolerated(tmp_path: Path) -> None:
    texts = "\n" + jsonl_text(TEXTS[:2]) + "   \n" + jsonl_text(TEXTS[2:]) + "\n\n"
    ds = load_dataset(write(tmp_path / "d", csv=csv_text() + "\n\n", texts=texts))
    assert len(ds.interactions) == len(EDGES) and len(ds.texts) == len(TEXTS)


def test_missing_split_column_gets_seeded_split(tmp_path: Path) -> None:
    root = write(tmp_path / "d", csv=csv_text(header="user,item"))
    a, b = load_dataset(root, edge_split_seed=3), load_dataset(root, edge_split_seed=3)
    assert a.interactions["split"].tolist() == b.interactions["split"].tolist()
    assert set(a.interactions["split"]) <= {"train", "val", "test"}


def test_assign_edge_split_proportions_determinism_and_train_per_user() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 3000, size=40_000)
    a, b, c = assign_edge_split(users, 1), assign_edge_split(users, 1), assign_edge_split(users, 2)
    assert (a == b).all() and (a != c).any()
    frac = {s: float(np.mean(a == s)) for s in ("train", "val", "test")}
    assert abs(frac["train"] - 0.8) < 0.01 and abs(frac["val"] - 0.1) < 0.01 and abs(frac["test"] - 0.1) < 0.01
    assert set(users[a == "train"]) == set(users)


def test_large_csv_loads_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400_000
    flat = rng.choice(20_000 * 20_000, size=n, replace=False)
    root = tmp_path / "big"
    root.mkdir()
    lines = np.char.add(np.char.add((flat // 20_000).astype(str), ","), (flat % 20_000).astype(str))
    (root / "interactions.csv").write_text("user,item\n" + "\n".join(lines) + "\n")
    (root / "explanations.jsonl").write_text(jsonl_text([text_row(int(flat[0] // 20_000), int(flat[0] % 20_000))]))
    ds = load_dataset(root)  # vectorised parsing: ~1 s here (no wall-clock assert in the fast suite)
    assert len(ds.interactions) == n


# ---------------------------------------------------------------- missing / empty


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="directory not found") as info:
        load_dataset(tmp_path / "nope")
    assert "nope" in str(info.value)


@pytest.mark.parametrize("name", ["interactions.csv", "explanations.jsonl"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    root = write(tmp_path / "d")
    (root / name).unlink()
    expect_error(root, name, None, "file not found")


@pytest.mark.parametrize("content", ["", "user,item,split\n"])
def test_empty_csv(tmp_path: Path, content: str) -> None:
    expect_error(write(tmp_path / "d", csv=content), "interactions.csv", None, "empty file")


@pytest.mark.parametrize("name", ["explanations.jsonl", "test.jsonl"])
def test_empty_jsonl(tmp_path: Path, name: str) -> None:
    root = write(tmp_path / "d", test=jsonl_text([text_row(0, 0)]))
    (root / name).write_text("\n")
    expect_error(root, name, None, "empty file")


# ---------------------------------------------------------------- interactions.csv rows


def test_missing_column(tmp_path: Path) -> None:
    expect_error(write(tmp_path / "d", csv="user,split\n0,train\n"), "interactions.csv", 1,
                 "missing required column 'item'")


@pytest.mark.parametrize("bad,words", [("abc", ["non-integer", "'abc'", "column 'item'"]),
                                       ("1.5", ["non-integer", "'1.5'"]),
                                       ("", ["missing value", "column 'item'"])])
def test_non_integer_id(tmp_path: Path, bad: str, words: list[str]) -> None:
    edges = list(EDGES)
    edges[3] = (1, bad, "train")  # data row 4 -> line 5
    expect_error(write(tmp_path / "d", csv=csv_text(edges)), "interactions.csv", 5, *words)


def test_negative_id(tmp_path: Path) -> None:
    edges = list(EDGES)
    edges[6] = (-2, 4, "train")
    expect_error(write(tmp_path / "d", csv=csv_text(edges)), "interactions.csv", 8, "negative id -2", "'user'")


def test_bad_split_value(tmp_path: Path) -> None:
    edges = list(EDGES)
    edges[2] = (0, 2, "dev")
    expect_error(write(tmp_path / "d", csv=csv_text(edges)), "interactions.csv", 4, "'dev'", "train/val/test")


def test_duplicate_edge(tmp_path: Path) -> None:
    edges = [*EDGES[:5], (0, 1, "test"), *EDGES[5:]]  # duplicate of line 3 placed on line 7
    err = expect_error(write(tmp_path / "d", csv=csv_text(edges)), "interactions.csv", 7, "duplicate edge")
    assert "line 3" in err.problem


def test_blank_line_inside_csv(tmp_path: Path) -> None:
    lines = csv_text().splitlines()
    csv = "\n".join([*lines[:4], "", *lines[4:]]) + "\n"
    expect_error(write(tmp_path / "d", csv=csv), "interactions.csv", 5, "blank line")


def test_malformed_csv_row(tmp_path: Path) -> None:
    lines = csv_text().splitlines()
    lines[3] += ",extra"
    expect_error(write(tmp_path / "d", csv="\n".join(lines) + "\n"), "interactions.csv", 4, "malformed")


# ---------------------------------------------------------------- jsonl rows


def _with_row(line_no: int, row: object) -> str:
    rows: list = list(TEXTS)
    rows.insert(line_no - 1, row)
    return jsonl_text(rows)


@pytest.mark.parametrize("name", ["explanations.jsonl", "test.jsonl"])
@pytest.mark.parametrize("row,words", [
    ('{"uid": 1, "iid": ', ["not valid json"]),
    ("[1, 2, 3]", ["not a json object", "list"]),
    ({k: v for k, v in text_row(1, 1).items() if k != "item_summary"}, ["missing key", "'item_summary'"]),
    (text_row(9, 1), ["uid 9", "never appears as a user", "interactions.csv"]),
    (text_row(1, 7), ["iid 7", "never appears as an item"]),
    (text_row("1", 1), ["'uid'", "integer", "'1'"]),
    (text_row(True, 1), ["'uid'", "integer"]),
    (text_row(1, 1.0), ["'iid'", "integer"]),
    (text_row(1, -1), ["'iid'", "integer >= 0"]),
    (text_row(1, 1, explanation=""), ["empty", "'explanation'"]),
    (text_row(1, 1, explanation=" \t "), ["whitespace", "'explanation'"]),
    (text_row(1, 1, title=None), ["'title'", "must be a string"]),
    (text_row(1, 1, user_summary=3), ["'user_summary'", "must be a string"]),
])
def test_bad_jsonl_row(tmp_path: Path, name: str, row: object, words: list[str]) -> None:
    if name == "explanations.jsonl":
        root = write(tmp_path / "d", texts=_with_row(3, row))
    else:
        root = write(tmp_path / "d", test=_with_row(3, row))
    expect_error(root, name, 3, *words)


@pytest.mark.parametrize("name", ["explanations.jsonl", "test.jsonl"])
def test_duplicate_text_pair(tmp_path: Path, name: str) -> None:
    content = _with_row(5, text_row(1, 3, explanation="Another text."))  # TEXTS[2] (line 3) is (1, 3)
    root = write(tmp_path / "d", texts=content) if name == "explanations.jsonl" else \
        write(tmp_path / "d", test=content)
    err = expect_error(root, name, 5, "duplicate pair", "uid 1", "iid 3")
    assert "line 3" in err.problem


def test_line_numbers_count_blank_jsonl_lines(tmp_path: Path) -> None:
    texts = jsonl_text(TEXTS[:2]) + "\n" + jsonl_text([text_row(8, 0)])
    expect_error(write(tmp_path / "d", texts=texts), "explanations.jsonl", 4, "uid 8")


# ---------------------------------------------------------------- real data (slow)

XREC = Path(__file__).parents[1] / ".." / "shared" / "data" / "xrec"
# rows / users / items from ../shared/data/README.md
XREC_SIZES = {"amazon": (360_839, 15_349, 15_247), "google": (411_840, 22_582, 16_557),
              "yelp": (393_680, 15_962, 14_085)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(XREC_SIZES))
def test_real_xrec_datasets_load(name: str) -> None:
    root = XREC / name
    if not root.is_dir():
        pytest.skip(f"../shared/data/xrec not found: {root.resolve()} is absent")
    t0 = time.perf_counter()
    ds = load_dataset(root)
    assert time.perf_counter() - t0 < 5.0
    n_rows, n_users, n_items = XREC_SIZES[name]
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (n_rows, n_users, n_items)
    assert ds.interactions["user"].nunique() == n_users and ds.interactions["item"].nunique() == n_items
    frac = ds.interactions["split"].value_counts(normalize=True)
    assert abs(frac["train"] - 0.8) < 0.01
    assert 2_300 <= len(ds.texts) <= 2_500
    assert ds.test_texts is None
