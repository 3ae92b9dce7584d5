"""beatrec: LLM-based recommendation with behavior tokens (BEAT, EAGER, LLM-BS)."""

import os

# PyTorch's CPU allocator puts tensors of 2 MiB or more on transparent huge pages when this is set before its
# first allocation (a documented torch switch, off by default). beatrec's large-graph steps allocate, and gather rows
# from, tensors of hundreds of MB; on the 2-core VMs we run on, filling a freshly allocated 0.5 GB tensor took
# ~0.15 s on 4 KiB pages and ~0.03 s on huge pages, and 1M-user stage-1 steps ran 1.3x faster
# (benchmarks/tokenizer_scale.md, side by side).
# A value the user set (e.g. 0) is kept.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
