"""A prefix trie over integer token sequences, packed into dense tensors for batched constrained decoding.

Generic: any set of distinct sequences of tokens in ``0..vocab_size-1`` (equal or different lengths), each
carrying an integer payload (an item id). Nodes are numbered from the root (0); ``children[node, token]`` is
the child node or -1; ``value[node]`` is the payload of the sequence ending at ``node`` or -1. A caller whose
tokens live in a larger vocabulary (e.g. code tokens appended to an LM's vocabulary) maps them to
``0..vocab_size-1`` before building the trie and shifts the masks back.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch


class Trie:
    """Prefix trie of ``sequences`` with payloads ``values`` (default: the sequence's index).

    Raises:
        ValueError: on a duplicate sequence, an empty one, or a token outside ``0..vocab_size-1``.
    """

    ROOT = 0

    def __init__(self, sequences: Sequence[Sequence[int]] | np.ndarray, values: Sequence[int] | None = None,
                 vocab_size: int | None = None) -> None:
        seqs = [[int(t) for t in s] for s in sequences]
        vals = list(range(len(seqs))) if values is None else [int(v) for v in values]
        if len(vals) != len(seqs):
            raise ValueError("one value per sequence")
        if not seqs or any(len(s) == 0 for s in seqs):
            raise ValueError("a trie needs at least one sequence and no empty sequence")
        top = max(max(s) for s in seqs)
        if min(min(s) for s in seqs) < 0 or (vocab_size is not None and top >= vocab_size):
            raise ValueError(f"tokens must lie in 0..{(vocab_size or top + 1) - 1}")
        self.vocab_size = int(vocab_size if vocab_size is not None else top + 1)
        edges: list[dict[int, int]] = [{}]
        value = [-1]
        depth = [0]
        for s, v in zip(seqs, vals, strict=True):
            node = self.ROOT
            for t in s:
                nxt = edges[node].get(t)
                if nxt is None:
                    nxt = len(edges)
                    edges[node][t] = nxt
                    edges.append({})
                    value.append(-1)
                    depth.append(depth[node] + 1)
                node = nxt
            if value[node] != -1:
                raise ValueError(f"duplicate sequence {s}")
            value[node] = v
        children = torch.full((len(edges), self.vocab_size), -1, dtype=torch.long)
        for node, e in enumerate(edges):
            if e:
                children[node, list(e)] = torch.tensor(list(e.values()))
        self.children = children  # (n_nodes, V)
        self.value = torch.tensor(value, dtype=torch.long)  # (n_nodes,)
        self.node_depth = torch.tensor(depth, dtype=torch.long)  # (n_nodes,)
        self.max_len = max(len(s) for s in seqs)
        self.min_len = min(len(s) for s in seqs)
        self.n_sequences = len(seqs)

    def to(self, device: torch.device | str) -> Trie:
        """A copy of this trie whose tensors live on ``device`` (self when they already do)."""
        device = torch.device(device)
        if self.children.device == device:
            return self
        out = copy.copy(self)
        out.children, out.value, out.node_depth = (t.to(device) for t in (self.children, self.value, self.node_depth))
        return out

    @property
    def n_nodes(self) -> int:
        return int(self.children.shape[0])

    def allowed(self, nodes: torch.Tensor) -> torch.Tensor:
        """Which next tokens keep a valid prefix: nodes (...,) -> bool (..., V). A dead node (-1) allows none."""
        ok = self.children[nodes.clamp_min(0)] >= 0
        return ok & (nodes >= 0)[..., None]

    def advance(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Follow ``tokens`` from ``nodes`` (same shape) -> child nodes, -1 where the step is invalid."""
        child = self.children[nodes.clamp_min(0), tokens.clamp(0, self.vocab_size - 1)]
        bad = (nodes < 0) | (tokens < 0) | (tokens >= self.vocab_size)
        return torch.where(bad, torch.full_like(child, -1), child)

    def values_at(self, nodes: torch.Tensor) -> torch.Tensor:
        """Payloads of complete sequences ending at ``nodes`` (-1 for inner or dead nodes)."""
        return torch.where(nodes >= 0, self.value[nodes.clamp_min(0)], torch.full_like(nodes, -1))

    def walk(self, seq: Sequence[int]) -> int:
        """The node reached by ``seq`` from the root, -1 if it is not a prefix of a stored sequence."""
        node = torch.tensor(self.ROOT)
        for t in seq:
            node = self.advance(node, torch.tensor(int(t)))
        return int(node)

    def lookup(self, seq: Sequence[int]) -> int:
        """Payload of ``seq`` (-1 if it is not a complete stored sequence)."""
        return int(self.values_at(torch.tensor(self.walk(seq))))

    def __contains__(self, seq: Sequence[int]) -> bool:
        return self.lookup(seq) != -1

    def sequences(self) -> list[tuple[tuple[int, ...], int]]:
        """Every stored (sequence, value), depth-first in token order."""
        out: list[tuple[tuple[int, ...], int]] = []
        stack: list[tuple[int, tuple[int, ...]]] = [(self.ROOT, ())]
        while stack:
            node, prefix = stack.pop()
            if self.value[node] >= 0:
                out.append((prefix, int(self.value[node])))
            kids = (self.children[node] >= 0).nonzero().squeeze(1).tolist()
            stack.extend((int(self.children[node, t]), prefix + (t,)) for t in reversed(kids))
        return out
