"""Item-code tokens added to the LM's vocabulary (LLM-BS §3.1): one new token per (level, code) and [CON].

Level l's code c is the token ``<L_c>`` with L = "a", "b", ... (e.g. ``<a_3><b_17><c_0><d_9>``), so a code
sequence is a short string the tokenizer maps to exactly one id per level. New input (and, for untied heads,
output) embedding rows start at the mean of the existing rows plus seeded noise (2% of their spread).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from beatrec.seqrec.codes import ItemCodes
from beatrec.seqrec.trie import Trie

CON = "[CON]"


def code_token(level: int, code: int) -> str:
    return f"<{chr(ord('a') + level)}_{code}>"


class CodeVocab(NamedTuple):
    item_ids: torch.Tensor  # (n_items, depth) LM token id of each item's code at each level
    con_id: int  # the [CON] summary token
    first_new_id: int  # ids >= this were added here
    trie: Trie  # valid item-code id sequences -> item

    def text(self, item: int, tok) -> str:  # noqa: ANN001
        """The item's code as a string of added tokens."""
        return "".join(tok.convert_ids_to_tokens(self.item_ids[item].tolist()))


def add_code_tokens(lm, tok, codes: ItemCodes) -> CodeVocab:  # noqa: ANN001
    """Add every (level, code) token of ``codes`` and [CON] to ``tok`` and ``lm`` (embeddings resized)."""
    names = [code_token(lvl, c) for lvl, size in enumerate(codes.vocab_sizes) for c in range(size)] + [CON]
    first = len(tok)
    tok.add_tokens(names, special_tokens=True)
    emb = lm.get_input_embeddings()
    old = emb.weight.shape[0]
    lm.resize_token_embeddings(len(tok), mean_resizing=False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the mean row plus a little seeded noise, so the new tokens are not interchangeable
        for layer in {id(x): x for x in (lm.get_input_embeddings(), lm.get_output_embeddings()) if x is not None}.values():
            w = layer.weight
            noise = torch.randn(w.shape[0] - old, w.shape[1], generator=gen).to(w.device) * 0.02 * w[:old].std()
            w[old:] = w[:old].mean(0) + noise.to(w.dtype)
    lookup = np.array([tok.convert_tokens_to_ids(n) for n in names], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(codes.vocab_sizes)[:-1]])
    item_ids = torch.from_numpy(lookup[codes.codes + offsets[None, :]])  # (n_items, depth)
    trie = Trie(item_ids.numpy(), values=list(range(codes.n_items)), vocab_size=len(tok))
    return CodeVocab(item_ids, int(tok.convert_tokens_to_ids(CON)), first, trie)
