"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from beatrec.data.synthetic import SyntheticConfig, write_dataset


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic XRec-layout dataset (300 users, 200 items), written once per test session."""
    return write_dataset(SyntheticConfig(n_users=300, n_items=200), tmp_path_factory.mktemp("synthetic"))


def tiny_stage1(factory: pytest.TempPathFactory, seed: int) -> tuple[Path, Path, Path]:
    """(data dir, tokenized run dir, tiny LM dir): a 120-user synthetic dataset tokenized in seconds with
    8-code books and the phrase splitter, plus a tiny random causal LM (for stage-2 and baseline tests)."""
    import os

    from tiny_lm import save_tiny_lm

    from beatrec.config import from_dict
    from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

    os.environ.setdefault("BEATREC_CACHE", str(factory.mktemp("cache")))
    data = write_dataset(SyntheticConfig(n_users=120, n_items=80, seed=seed), factory.mktemp("data"))
    run = factory.mktemp("run")
    cfg = from_dict(TokenizeConfig, {"model": {"n_codes": 8, "part_dim": 8, "code_dim": 8},
                                     "train": {"max_epochs": 2, "batch_size": 512},
                                     "extractor": {"kind": "splitter"}})
    run_tokenize(data, run, cfg, progress=False)
    return data, run, save_tiny_lm(factory.mktemp("lm") / "tiny")


class PlantedPhraseExtractor:
    """Extracts exactly the planted intent phrases a text mentions (ranked by count): it isolates the tokenizer's
    ability to absorb micro supervision from the quality of an LLM or the rule-based splitter."""

    identity = "planted-phrases"
    n_phrases = 5

    def extract(self, kind: str, docs: list[list[str]], progress: bool = False) -> list[list[str] | None]:
        from beatrec.data.synthetic import INTENT_PHRASES

        out: list[list[str] | None] = []
        for texts in docs:
            text = " ".join(texts)
            count = {p: text.count(p) for p in INTENT_PHRASES if p in text}
            out.append(sorted(count, key=lambda p: -count[p])[: self.n_phrases] or None)
        return out


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir, run dir): a well-trained stage-1 run on a dataset with clear structure (400 users, 16-code
    books, 12 epochs, micro supervision weighted up: beta=5), shared by the tokenizer and cold-start tests."""
    import os

    from beatrec.config import from_dict
    from beatrec.text_encoder import TextEncoder, TextEncoderConfig
    from beatrec.tokenizer.pipeline import TokenizeConfig, run_tokenize

    os.environ.setdefault("BEATREC_CACHE", str(tmp_path_factory.mktemp("cache")))
    data = write_dataset(SyntheticConfig(n_users=400, n_items=240, seed=1), tmp_path_factory.mktemp("planted"))
    run = tmp_path_factory.mktemp("planted_run")
    cfg = from_dict(TokenizeConfig, {"model": {"n_codes": 16, "part_dim": 16, "code_dim": 16},
                                     "train": {"batch_size": 64, "max_epochs": 12, "patience": 12, "seed": 0,
                                               "beta": 5.0},
                                     "extractor": {"kind": "splitter"}})
    enc = TextEncoder(TextEncoderConfig(), cache=False)
    run_tokenize(data, run, cfg, progress=False, encoder=enc, extractor=PlantedPhraseExtractor())
    return data, run


def tiny_aligned(factory: pytest.TempPathFactory, seed: int, generate: dict) -> tuple[Path, Path]:
    """(data dir, run dir): :func:`tiny_stage1` plus a 2-step stage 2 on its tiny random LM, decoding with
    ``generate`` (GenerateConfig fields)."""
    from beatrec.align.config import AlignConfig
    from beatrec.align.train import train_align
    from beatrec.config import from_dict

    data, run, lm = tiny_stage1(factory, seed=seed)
    cfg = from_dict(AlignConfig, {"lm": {"name": str(lm)}, "model": {"projector_hidden": 16, "sar_pairs": 16},
                                  "train": {"batch_size": 4, "max_steps": 2, "val_pairs": 4},
                                  "generate": generate})
    train_align(run, data, cfg, progress=False)
    return data, run


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir, run dir): a tiny run with stage 2 (greedy, 6 new tokens), for the service tests."""
    return tiny_aligned(tmp_path_factory, seed=7, generate={"max_new_tokens": 6, "num_beams": 1})
