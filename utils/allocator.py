"""glibc's malloc, set up for tensor work.

PyTorch's CPU tensors come straight from malloc. By default glibc serves blocks above its mmap threshold with
fresh mappings and hands freed memory at the top of the heap back to the kernel above its trim threshold, both
adjusted on the fly; a forward pass that frees feature maps and allocates the next ones then page-faults them
in again, every pass. On the pruned raccoon model at 320 that was 2,213 page faults a forward and a fifth of
its time (see the README's speed section). Raising the thresholds keeps the memory in the process, as
PyTorch's GPU allocator and jemalloc do: a few MB more resident, no faults in the steady state.
"""
from __future__ import annotations

import ctypes
import os
import platform

# mallopt's parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4
SETTINGS = {
    M_MMAP_THRESHOLD: 32 << 20,  # glibc's ceiling for it on 64-bit: larger blocks are still mapped
    M_TRIM_THRESHOLD: 128 << 20,  # free memory kept at the heap's top before any goes back
    M_TOP_PAD: 16 << 20,  # grow the heap in steps this large, not page by page
}
# Inference processes also take the blocks over that ceiling from the heap, and keep up to 1 GB of it free:
# batch 8 at 416 has such feature maps, mapped afresh on every pass (yolov3-tiny: 32,450 faults a forward, 0
# with these in 10 processes of 10; both settings are needed, mmap off alone still faulted in 1 of 4).
# Training keeps the settings above: there these cut a step by 6-12 % but raised its peak memory 11-28 %.
INFERENCE_SETTINGS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 1 << 30}
# glibc reads these at start-up; whoever set one has chosen, and is not overridden
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_applied: dict[str, bool] = {}


def tune_allocator(inference: bool = False) -> bool:
    """Apply :data:`SETTINGS` once per process (every command line does, and ``Darknet.prepare_inference()``),
    and with ``inference`` :data:`INFERENCE_SETTINGS` too (detect.py, test.py and the Detector API, through
    ``load_model``); True if what was asked for is in force. Nothing is done off glibc, or when the environment
    sets malloc's own knobs."""
    if "base" not in _applied:
        _applied["base"] = _apply(SETTINGS)
    if inference and "inference" not in _applied:
        _applied["inference"] = _applied["base"] and _apply(INFERENCE_SETTINGS)
    return _applied["base"] and (not inference or _applied["inference"])


def _apply(settings: dict[int, int]) -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return all(mallopt(param, value) == 1 for param, value in settings.items())
