"""Explanation baselines scored beside BEAT by the same harness (one module each).

floor (random training explanation), retrieval (nearest training pair by graph vectors), idgen (ID-based
GRU generator, Att2Seq/NRT/PETER style), itemtext (frozen LM given item title + summary), continuous
(XRec-style LightGCN vectors through an MLP adapter into the frozen LM), history and beat_history (the user's
history titles in the prompt, without or with the behavior tokens; all three in :mod:`beatrec.baselines.stage2`), xrec (XRec's published predictions).
Entry point: :func:`beatrec.baselines.registry.run_baseline`.
"""
