"""The CPU allocator setting training uses: glibc keeps the memory a step frees for the next step.

Every training step allocates the same activations and gradients again (tens of MiB at batch 256).
glibc serves blocks above its mmap threshold (adjusted at run time between 128 KiB and 32 MiB)
with fresh `mmap`s and unmaps them on `free`, and it trims the top of its heap once more than
128 KiB is free there; so each step faults its activations in again and the kernel zeroes every
page first. `keep_freed_memory` sets the threshold to glibc's largest, 32 MiB (larger blocks, the
data set itself, stay mmapped), and the trim threshold to 2 GiB, through `mallopt`, once per
process: the process then keeps up to its peak heap instead of returning it after each step.

Measured on the 2-core CPU, VGG11-bn width 16, batch 256 in channels_last, a plain SGD loop of 55
steps per process (two processes each way): minor page faults 465,000-800,000 -> 116,000-122,000,
1,899-1,965 -> 2,123-2,243 images/s (1.08-1.16x), the same peak memory (536-563 MiB). The
comparison against a process without the setting is `benchmarks/bench_train.py` (each configuration
in its own process).

Only where the C library is glibc; elsewhere nothing is done (`keep_freed_memory` returns None).
"""

from __future__ import annotations

import ctypes
import functools
import platform

#: `mallopt` parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB

SETTING = f"glibc mallopt: mmap threshold {MMAP_THRESHOLD // 2**20} MiB, trim threshold 2 GiB"


@functools.cache
def keep_freed_memory() -> str | None:
    """Make glibc keep freed blocks (module docstring); the setting in words, or None where it
    cannot be made (not glibc, or `mallopt` refused). Once per process; later calls say the same."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        return None
    return SETTING if done else None


__all__ = ["MMAP_THRESHOLD", "SETTING", "TRIM_THRESHOLD", "keep_freed_memory"]
