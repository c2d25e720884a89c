"""Batches: one input size per batch (multi-scale training), a seed per sample so augmentation does not
depend on the workers, and the same sizes and order on every DDP rank."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from utils.darknet.cfg import SIZE_MULTIPLE
from utils.data.dataset import DetectionDataset, collate


@dataclass(eq=False)
class BatchPlan(Sampler):
    """Batches of ``(index, size, seed)``: one input size per batch (a new one every ``size_every``
    batches when several are given), and a seed per sample so augmentation does not depend on workers.
    With ``world_size > 1`` each rank takes every world_size-th sample of the same shuffled order, and
    all ranks use the same sizes."""

    num_samples: int
    batch_size: int
    sizes: list[int]
    shuffle: bool = True
    seed: int = 0
    size_every: int = 10
    rank: int = 0
    world_size: int = 1
    epoch: int = field(default=0, init=False)

    def __post_init__(self):
        self.sizes = list(self.sizes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        per_rank = math.ceil(self.num_samples / self.world_size)
        order = np.resize(order, per_rank * self.world_size)  # repeats the start so every rank gets as many
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.num_samples / self.world_size) / self.batch_size)

    def __iter__(self):
        mine = self._my_indices()
        size_rng = np.random.default_rng([self.seed, self.epoch, 1])
        seed_rng = np.random.default_rng([self.seed, self.epoch, 2, self.rank])
        size = self.sizes[0]
        for b in range(len(self)):
            if len(self.sizes) > 1 and b % self.size_every == 0:
                size = int(size_rng.choice(self.sizes))
            batch = mine[b * self.batch_size:(b + 1) * self.batch_size]
            seeds = seed_rng.integers(0, 2 ** 63, len(batch))
            yield [(int(i), size, int(s)) for i, s in zip(batch, seeds)]


def multiscale_sizes(img_size: int, low: float = 0.67, high: float = 1.5, stride: int = SIZE_MULTIPLE) -> list[int]:
    lo = max(stride, int(math.ceil(img_size * low / stride)) * stride)
    hi = int(img_size * high // stride) * stride
    return list(range(lo, hi + 1, stride))


def create_dataloader(dataset: DetectionDataset, plan: BatchPlan, workers: int = 2) -> DataLoader:
    """``dataset`` in ``plan``'s batches, read by ``workers`` processes (0: by this one)."""
    return DataLoader(dataset, batch_sampler=plan, num_workers=workers, collate_fn=collate,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)


def evaluation_loader(dataset: DetectionDataset, batch_size: int, img_size: int, workers: int = 2) -> DataLoader:
    """``dataset`` in list order at one input size, as evaluation reads it."""
    return create_dataloader(dataset, BatchPlan(len(dataset), batch_size, [img_size], shuffle=False), workers)
