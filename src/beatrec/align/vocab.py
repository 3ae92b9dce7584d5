"""The stage-1 behavior vocabulary as stage 2 reads it: token ids per entity and the codebook vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from beatrec.errors import RunError

STAGE1_FILES = ("user_tokens.parquet", "item_tokens.parquet", "codebooks.safetensors")


def read_token_table(path: Path) -> np.ndarray:
    """(n, 1+N) int64 codes indexed by entity id (ids are 0..n-1 in order)."""
    frame = pd.read_parquet(path)
    cols = ["macro"] + sorted((c for c in frame.columns if c.startswith("micro_")), key=lambda c: int(c[6:]))
    if "id" not in frame.columns or "macro" not in frame.columns or len(cols) < 2:
        raise RunError(f"{path}: not a behavior-token table (needs columns id, macro, micro_1..N)")
    ids = frame["id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(frame))):
        raise RunError(f"{path}: ids must be 0..{len(frame) - 1} in order")
    return frame[cols].to_numpy(np.int64)


class BehaviorVocab(nn.Module):
    """Codes of every user and item plus the four codebooks (user/item × macro/micro).

    ``vectors(side, ids)`` returns the codeword vectors of the entities' tokens, (B, 1+N, C). The codebooks are
    parameters: frozen unless stage 2 is configured to fine-tune them.
    """

    def __init__(self, user_codes: np.ndarray, item_codes: np.ndarray, books: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.register_buffer("user_codes", torch.from_numpy(user_codes.copy()), persistent=False)
        self.register_buffer("item_codes", torch.from_numpy(item_codes.copy()), persistent=False)
        self.books = nn.ParameterDict({k: nn.Parameter(v.clone().float(), requires_grad=False) for k, v in books.items()})
        self.n_micro = user_codes.shape[1] - 1
        self.code_dim = books["user_macro"].shape[1]

    @classmethod
    def from_run(cls, run: str | Path) -> BehaviorVocab:
        """Load from a ``beatrec tokenize`` run directory (clear error when stage-1 artifacts are missing)."""
        from safetensors.torch import load_file

        run = Path(run)
        missing = [f for f in STAGE1_FILES if not (run / f).is_file()]
        if missing:
            raise RunError(f"{run}: no stage-1 artifacts ({', '.join(missing)} missing); run `beatrec tokenize` first")
        try:
            books = load_file(str(run / "codebooks.safetensors"))
        except Exception as e:  # safetensors raises its own error types on a corrupt file
            raise RunError(f"{run / 'codebooks.safetensors'}: cannot be read ({e})") from e
        need = {"user_macro", "user_micro", "item_macro", "item_micro"}
        if not need <= set(books):
            raise RunError(f"{run / 'codebooks.safetensors'}: missing codebooks {sorted(need - set(books))}")
        return cls(read_token_table(run / "user_tokens.parquet"), read_token_table(run / "item_tokens.parquet"), books)

    @property
    def n_users(self) -> int:
        return int(self.user_codes.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_codes.shape[0])

    def codes(self, side: str, ids: torch.Tensor) -> torch.Tensor:
        """(B,) ids -> (B, 1+N) token ids."""
        return (self.user_codes if side == "user" else self.item_codes)[ids]

    def add_entity(self, side: str, codes: list[int] | torch.Tensor) -> int:
        """Append a new (cold-start) entity with the given 1+N tokens; returns its id in this vocabulary.

        Raises:
            RunError: wrong number of tokens, or a token outside its codebook.
        """
        name = f"{side}_codes"
        table = getattr(self, name)
        c = torch.as_tensor(codes, dtype=torch.long).flatten()
        if c.numel() != table.shape[1]:
            raise RunError(f"a {side} needs {table.shape[1]} tokens (1 macro + {table.shape[1] - 1} micro), got {c.numel()}")
        for part, sl in (("macro", c[:1]), ("micro", c[1:])):
            k = self.books[f"{side}_{part}"].shape[0]
            if ((sl < 0) | (sl >= k)).any():
                raise RunError(f"{side} {part} token(s) {sl.tolist()} outside the codebook 0..{k - 1}")
        setattr(self, name, torch.cat([table, c[None]]))
        return table.shape[0]

    def lookup(self, side: str, codes: torch.Tensor) -> torch.Tensor:
        """(B, 1+N) token ids -> (B, 1+N, C) codeword vectors."""
        macro = self.books[f"{side}_macro"][codes[:, :1]]
        micro = self.books[f"{side}_micro"][codes[:, 1:]]
        return torch.cat([macro, micro], dim=1)

    def vectors(self, side: str, ids: torch.Tensor) -> torch.Tensor:
        """(B,) ids -> (B, 1+N, C)."""
        return self.lookup(side, self.codes(side, ids))

    def scale_sample(self) -> torch.Tensor:
        """(4K, C) all codeword vectors: their projection sets the projector's initial output scale."""
        return torch.cat(list(self.books.values()))

    def set_trainable(self, flag: bool) -> None:
        for p in self.books.values():
            p.requires_grad_(flag)
