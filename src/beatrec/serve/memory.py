"""Give freed heap memory back to the system after a burst of work (glibc's ``malloc_trim``).

A decode allocates buffers sized by the batch it serves; glibc keeps freed memory in its arenas, so the server's
resident memory stays at the high-water mark of its largest batch. Trimming when the explain queue goes idle returns
it. A no-op where glibc is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

_LIBC = None
_LAST = 0.0


def release_memory(min_interval_s: float = 5.0) -> bool:
    """``malloc_trim(0)``, at most once per ``min_interval_s``. -> whether it ran."""
    global _LIBC, _LAST
    now = time.monotonic()
    if now - _LAST < min_interval_s:
        return False
    _LAST = now
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        _LIBC = ctypes.CDLL(name) if name else False
    if not _LIBC or not hasattr(_LIBC, "malloc_trim"):
        return False
    _LIBC.malloc_trim(0)
    return True
