"""beatrec: LLM-based recommendation with behavior tokens (BEAT, EAGER, LLM-BS)."""

__version__ = "0.1.0"
