"""Process-wide memory settings for training processes.

glibc serves every allocation over 32 MiB with a fresh ``mmap`` and gives it back on free, so
a training step pays again, in page faults, for each big tensor it makes (the adaptive head's
log-probs, the embedding gradient). On a 2-core AMD EPYC (BENCHMARKS.md) a fresh 43 MB tensor costs
about 14 ms that way and about 1 ms from memory glibc kept, and a 200-step ``cpu-ref`` run took
55–58 s instead of 63–64 s, at a peak RSS of 3.1–3.2 GB instead of 2.8–3.1 (BENCHMARKS.md).

``python -m localist_core train`` and ``sweep`` call ``keep_freed_memory`` once at start.
Set ``LOCALIST_KEEP_FREED_MEMORY=0`` (or ``false``, ``no``, ``off``) to leave glibc as it is,
for example to watch the process give memory back.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "LOCALIST_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4          # glibc's <malloc.h>
_TRIM_THRESHOLD = 2**31 - 1                        # mallopt takes an int: 2 GiB − 1


def keep_freed_memory() -> bool:
    """Ask glibc to serve big allocations from its heap and keep freed memory for reuse
    (``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD`` = 2 GiB). Idempotent; returns False, changing
    nothing, where the C library has no ``mallopt`` (not glibc) or ``LOCALIST_KEEP_FREED_MEMORY``
    is ``0``, ``false``, ``no`` or ``off``."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
