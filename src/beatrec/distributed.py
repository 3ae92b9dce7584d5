"""Collectives for code that runs the same in one process and under ``torchrun`` (DDP through Accelerate).

Every helper is a no-op in a single process, so callers need no branches.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the default group (1 without ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def broadcast_from_main_(t: torch.Tensor) -> torch.Tensor:
    """Overwrite ``t`` in every process with rank 0's values (in place); returns ``t``."""
    if world_size() > 1:
        dist.broadcast(t, src=0)
    return t


def any_process_(mask: torch.Tensor) -> torch.Tensor:
    """Element-wise OR of a bool tensor over all processes (in place where possible); returns the result."""
    if world_size() == 1:
        return mask
    m = mask.to(torch.int32)
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    mask.copy_(m.bool())
    return mask


def rank() -> int:
    """This process's rank in the default group (0 without ``torch.distributed``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_from_env() -> bool:
    """Join the process group ``torchrun`` describes in the environment (gloo, CPU), once. -> whether this call
    started it (then the caller ends it with ``dist.destroy_process_group()``); False in a single process."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("gloo")
    return True


def gather_strided(mine: list, n: int) -> list:
    """Every process holds ``items[rank::world]`` of an n-item list; return the whole list, in order, in every
    process (``all_gather_object``; the input unchanged in a single process)."""
    world = world_size()
    if world == 1:
        return list(mine)
    parts: list[list] = [[] for _ in range(world)]
    dist.all_gather_object(parts, list(mine))
    out: list = [None] * n
    for r, part in enumerate(parts):
        out[r::world] = part
    return out
