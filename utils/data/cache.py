"""--cache_images: every image of a list decoded once and held in memory, read-only, so later epochs skip the
disk and the JPEG decoder. The loader's worker processes inherit the cache where they are forked (Linux); where
they are spawned, each gets a copy. The images are kept as decoded, not resized, so a cached run computes exactly
what an uncached one does."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from utils.errors import UserError

DECODE_THREADS = 4  # OpenCV's decoders release the GIL
DECODE_WINDOW = 64  # images decoded ahead of the one being counted: the queue stays small for any list
MEMORY_SHARE = 0.7  # of the memory available at start: the rest is the training's own
MEMINFO = Path("/proc/meminfo")
CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # a container's limit, v2
                ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _container_room() -> int | None:
    """Bytes a container's memory limit leaves, where one is set (cgroup v2 or v1)."""
    for limit_file, usage_file in CGROUP_FILES:
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and usage.isdigit():
            return int(limit) - int(usage)
    return None


def memory_available() -> int | None:
    """Bytes of memory available now: the machine's, or less where a container limits it (None where neither
    can be read, as off Linux)."""
    available = None
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    room = _container_room()
    return room if available is None else available if room is None else min(available, room)


def decode_all(read: Callable[[int], np.ndarray | None], count: int, name: str, budget: int | None,
               show_progress: bool = True) -> list[np.ndarray | None]:
    """``read(i)`` for every index, in threads; stops, naming the sizes, once the images pass ``budget`` bytes."""
    images, held = [], 0
    with ThreadPoolExecutor(DECODE_THREADS) as pool, tqdm(total=count, desc=f"caching {name} images", leave=False,
                                                          disable=not show_progress) as progress:
        for start in range(0, count, DECODE_WINDOW):
            for image in pool.map(read, range(start, min(start + DECODE_WINDOW, count))):
                if image is not None:
                    image.flags.writeable = False  # shared by every sample made from it
                    held += image.nbytes
                if budget is not None and held > budget:
                    raise UserError(f"--cache_images: the first {len(images) + 1} of {count} {name} images already "
                                    f"take {held / 1e9:.2f} GB decoded, more than the {budget / 1e9:.2f} GB left to "
                                    f"the cache ({MEMORY_SHARE:.0%} of the memory available at start, shared among "
                                    f"this machine's training processes and the lists cached before); train without "
                                    f"--cache_images")
                images.append(image)
            progress.update(min(DECODE_WINDOW, count - start))
    return images
