"""Import a script of ``benchmarks/`` as a module (the benchmark tests call its ``main``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py``, freshly executed."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_xrec(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(data root, amazon-named 100-user synthetic dataset, its 1-epoch stage-1 run with 8-code books) for the
    table benchmarks' end-to-end tests."""
    from beatrec.cli import main as cli
    from beatrec.data.synthetic import SyntheticConfig, write_dataset

    root = tmp_path / "xrec"
    data = write_dataset(SyntheticConfig(n_users=100, n_items=60, seed=4), root / "amazon")
    stage1 = tmp_path / "stage1"
    sets = ["model.n_codes=8", "model.part_dim=8", "model.code_dim=8", "train.max_epochs=1", "extractor.kind=splitter"]
    assert cli(["tokenize", "--data", str(data), "--out", str(stage1), "--quiet",
                *(a for s in sets for a in ("--set", s))]) == 0
    return root, data, stage1
