"""glibc's malloc, set up for tensor work.

PyTorch's CPU tensors come straight from malloc. By default glibc serves blocks above its mmap threshold with
fresh mappings and hands freed memory at the top of the heap back to the kernel above its trim threshold, both
adjusted on the fly; a forward pass that frees feature maps and allocates the next ones then page-faults them
in again, every pass. On the pruned raccoon model at 320 that was 2,213 page faults a forward and a fifth of
its time (see the README's speed section). Serving every block from the heap and keeping what is freed
keeps the memory in the process, as PyTorch's GPU allocator and jemalloc do: a little more resident, next to no
faults in the steady state.
"""
from __future__ import annotations

import ctypes
import os
import platform

# mallopt's parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
# Every block from the heap, none mapped: glibc maps blocks over its mmap threshold (at most 32 MB on 64-bit)
# afresh on each allocation, and batch 8's feature maps at 416 are that large (yolov3-tiny: 32,450 faults a
# forward, 0 with these in 10 processes of 10). Up to 1 GB of free heap is kept. A yolov3-tiny training step at
# 416 batch 8 went from ~100,000 faults to 2,000-5,000 and 1,070 to 825 ms (res2net-yolov3-tiny 1,490 to
# 1,110 ms, yolov3 at 320 batch 4 2,420 to 2,150 ms), for a peak memory 0-16 % higher.
SETTINGS = {
    M_MMAP_MAX: 0,
    M_TRIM_THRESHOLD: 1 << 30,
    M_TOP_PAD: 16 << 20,  # grow the heap in steps this large, not page by page
}
# glibc reads these at start-up; whoever set one has chosen, and is not overridden
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Apply :data:`SETTINGS` once per process (every command line does, and ``Darknet.prepare_inference()``);
    True if they are in force. Nothing is done off glibc, or when the environment sets malloc's own knobs."""
    global _tuned
    if _tuned is None:
        _tuned = _apply()
    return _tuned


def _apply() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
