"""Keep freed memory in the process instead of handing every large tensor back to the OS.

glibc serves blocks above its mmap threshold with a fresh ``mmap`` and returns them with ``munmap``
on free, so a loop that allocates the same multi-megabyte activations every step page-faults
through all of them again each time. The small, many-step workloads here (the grid predictor's
rollouts over 200 samples: tensors of 4-9 MB) spent about half their time doing that. Raising the
thresholds to glibc's maximum (32 MiB for mmap) lets those blocks be reused; it is what
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do from the environment, set from Python so
every entry point gets it. Other allocators (musl, jemalloc, macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit; larger values are refused
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; False where the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
