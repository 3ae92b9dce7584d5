"""LLM phrase extraction for BEAT micro supervision (paper eqs. 7-8).

``make_extractor(ExtractorConfig(...))`` builds an extractor (packaged SmolLM2, any local HF causal LM, an
OpenAI-compatible endpoint, or the rule-based splitter); ``extract_phrases`` runs it over entities with an
on-disk cache. Prompt and JSON validation live in ``extract.prompt``.
"""

from beatrec.extract.base import ExtractionError, ExtractorConfig, PhraseExtractor
from beatrec.extract.cache import ExtractionStats, extract_phrases
from beatrec.extract.prompt import build_messages, parse_phrases
from beatrec.extract.registry import make_extractor

__all__ = [
    "ExtractionError",
    "ExtractionStats",
    "ExtractorConfig",
    "PhraseExtractor",
    "build_messages",
    "extract_phrases",
    "make_extractor",
    "parse_phrases",
]
