"""LLM-BS: a decoder-only LM recommender whose vocabulary is extended with dual-source item codes."""
