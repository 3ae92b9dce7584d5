"""Generative sequential recommendation: EAGER (two-stream) and its baselines (SASRec, TIGER-style).

Modules, one concept each: ``data`` (readers, leave-one-out split, sliding windows), ``evaluate`` (full-ranking
Recall/NDCG), ``sasrec`` (SASRec, also the behavior encoder), ``codes`` (balanced hierarchical k-means item
codes), ``trie`` (prefix trie of valid code sequences), ``beam`` (trie-constrained beam search and the
two-stream merge), ``eager`` (the EAGER model; TIGER-style is a preset of it), ``train`` (runs, early stopping,
evaluation of a saved run).
"""
