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
