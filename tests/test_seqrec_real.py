"""The seqrec readers on the real datasets in ../shared/data/seqrec (slow; skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from beatrec.seqrec.data import leave_one_out, load_seq_dataset

SEQREC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "seqrec"
# (name, users, items, interactions, has_text) from ../shared/data/README.md
EXPECTED = [
    ("Beauty", 22363, 12101, 198502, True),
    ("Sports_and_Outdoors", 35598, 18357, 296337, False),
    ("Yelp", 30431, 20033, 316354, False),
    ("Instruments", 24772, 9922, 206153, False),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "users", "items", "inter", "text"), EXPECTED)
def test_real_dataset_stats(name: str, users: int, items: int, inter: int, text: bool) -> None:
    path = SEQREC / name
    if not path.is_dir():
        pytest.skip(f"{path} not found: the shared seqrec data is not mounted")
    ds = load_seq_dataset(path)
    assert ds.n_users + ds.n_dropped_users == users
    assert ds.n_items == items and ds.has_text == text
    if ds.n_dropped_users == 0:
        assert ds.n_interactions == inter
    split = leave_one_out(ds, 20)
    assert len(split.test.target) == ds.n_users
    assert len(split.train.target) == ds.n_interactions - 3 * ds.n_users  # every item but the first and last two
    if text:
        assert ds.titles is not None and ds.n_missing_titles == items - 12094
