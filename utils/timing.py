"""Timing for benchmarks and reports: medians of several runs after a warm-up."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(_seconds(fn) for _ in range(repeats))


def alternating_median_seconds(fns: Sequence[Callable[[], object]], rounds: int = 10, per_round: int = 3,
                               warmup: int = 2) -> list[float]:
    """The median time of each function, timed in alternating rounds, so that a slow spell of a shared
    machine hits all of them alike and their ratios hold even when absolute times drift."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, bucket in zip(fns, times):
            bucket.extend(_seconds(fn) for _ in range(per_round))
    return [statistics.median(bucket) for bucket in times]
