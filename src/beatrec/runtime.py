"""Process-level runtime settings shared by every training loop."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads (0 = leave the current setting), then restore it.

    With one thread, CPU training is bit-for-bit reproducible under a seed; with several, BLAS may order
    floating-point reductions differently from run to run.
    """
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(spec: str) -> torch.device:
    """The torch device a config's ``device`` string names: ``"auto"`` is CUDA when available, else the CPU.

    Raises:
        ConfigError: ``spec`` asks for CUDA on a machine without it, or is not a device name.
    """
    from beatrec.errors import ConfigError

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as e:
        raise ConfigError(f"device {spec!r} is not a torch device name (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r}: this machine has no CUDA GPU visible to torch; use auto or cpu")
    return dev


def describe_device(device: torch.device | str) -> str:
    """A short, human-readable name of ``device`` for run records and benchmark reports.

    ``"cuda: NVIDIA H100 80GB HBM3"`` on a GPU, ``"cpu: 2 threads"`` on the CPU (the intra-op thread count).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    n = torch.get_num_threads()
    return f"{device.type}: {n} thread{'s' * (n != 1)}"


def machine_info(device: torch.device | str = "cpu") -> dict[str, object]:
    """The ``machine`` record of a run's ``metrics.json``: platform, Python, torch, threads and ``device``."""
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": describe_device(device)}
