"""The registry of phrase extractors: ``extractor.kind`` -> the class that implements it."""

from __future__ import annotations

from collections.abc import Callable

from beatrec.extract.base import ExtractorConfig, PhraseExtractor


def _hf(cfg: ExtractorConfig) -> PhraseExtractor:
    from beatrec.extract.hf_lm import HFExtractor  # loads torch/transformers: imported only when chosen

    return HFExtractor(cfg)


def _openai(cfg: ExtractorConfig) -> PhraseExtractor:
    from beatrec.extract.openai_http import OpenAIExtractor

    return OpenAIExtractor(cfg)


def _splitter(cfg: ExtractorConfig) -> PhraseExtractor:
    from beatrec.extract.splitter import SplitterExtractor

    return SplitterExtractor(cfg)


EXTRACTORS: dict[str, Callable[[ExtractorConfig], PhraseExtractor]] = {
    "smollm2": _hf, "hf": _hf, "openai": _openai, "splitter": _splitter,
}


def make_extractor(cfg: ExtractorConfig) -> PhraseExtractor:
    """Build the extractor ``cfg.kind`` names (local LMs are loaded here)."""
    cfg.validate()
    return EXTRACTORS[cfg.kind](cfg)
