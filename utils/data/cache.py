"""--cache_images: every image of a list decoded once and held in memory, read-only, so later epochs (and the
loader's worker processes, which inherit it) skip the disk and the JPEG decoder. The images are kept as
decoded, not resized, so a cached run computes exactly what an uncached one does."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from utils.errors import UserError

DECODE_THREADS = 4  # OpenCV's decoders release the GIL
MEMORY_SHARE = 0.7  # of the memory available at start: the rest is the training's own
MEMINFO = Path("/proc/meminfo")


def memory_budget() -> int | None:
    """Bytes the cache may take: a share of the memory available now (None where that cannot be told)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(MEMORY_SHARE * int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return None


def decode_all(read: Callable[[int], np.ndarray | None], count: int, name: str,
               budget: int | None) -> list[np.ndarray | None]:
    """``read(i)`` for every index, in threads; stops, naming the sizes, once the images pass ``budget`` bytes."""
    images, held = [], 0
    pool = ThreadPoolExecutor(DECODE_THREADS)
    try:
        for image in tqdm(pool.map(read, range(count)), total=count, desc=f"caching {name} images", leave=False):
            if image is not None:
                image.flags.writeable = False  # shared by every sample made from it
                held += image.nbytes
            if budget is not None and held > budget:
                raise UserError(f"--cache_images: the first {len(images) + 1} of {count} {name} images already take "
                                f"{held / 1e9:.2f} GB decoded, more than the {budget / 1e9:.2f} GB it may use "
                                f"({MEMORY_SHARE:.0%} of the memory available); train without --cache_images")
            images.append(image)
    finally:
        pool.shutdown(cancel_futures=True)
    return images
