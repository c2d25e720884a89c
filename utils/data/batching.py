"""Batches: one input size per batch (multi-scale training), a seed per sample so augmentation does not
depend on the workers, and the same sizes and order on every DDP rank; for evaluation, list order at one size,
or rectangular batches of images of like shape."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from utils.darknet.cfg import SIZE_MULTIPLE
from utils.data.dataset import DetectionDataset, collate


@dataclass(eq=False)
class BatchPlan(Sampler):
    """Batches of ``(index, (height, width), seed)``: one input size per batch (a new one every ``size_every``
    batches when several are given), and a seed per sample so augmentation does not depend on workers.
    With ``world_size > 1`` each rank takes every world_size-th sample of the same shuffled order, and
    all ranks use the same sizes.

    After :meth:`use_shapes` (each image's (height, width), None where unreadable) the batches are rectangular
    (the classic Ultralytics train.py --rect): the images sorted by aspect ratio are cut into fixed batches, each
    at the RectPlan shape of its images, and only the order of the batches is shuffled."""

    num_samples: int
    batch_size: int
    sizes: list[int]
    shuffle: bool = True
    seed: int = 0
    size_every: int = 10
    rank: int = 0
    world_size: int = 1
    epoch: int = field(default=0, init=False)
    shapes: list[tuple[int, int] | None] | None = field(default=None, init=False)  # set by use_shapes()

    def __post_init__(self):
        self.sizes = list(self.sizes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def use_shapes(self, shapes: list[tuple[int, int] | None]) -> None:
        """Rectangular batches from here on, for images of these (height, width)s (None: unreadable)."""
        if len(shapes) != self.num_samples:
            raise ValueError(f"{len(shapes)} shapes for a plan of {self.num_samples} samples")
        self.shapes = list(shapes)

    def rect_shapes(self, size: int) -> list[tuple[int, int]]:
        """The (height, width) of each rectangular batch at ``size``, the same in every epoch."""
        return [rect_size(*bounds, size) for _, bounds in self._rect_groups()]

    @property
    def _per_rank(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    def _square_batches(self) -> Iterator[tuple[np.ndarray, tuple[float, float]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        order = np.resize(order, self._per_rank * self.world_size)  # repeats the start so every rank gets as many
        mine = order[self.rank::self.world_size]
        for start in range(0, len(mine), self.batch_size):
            yield mine[start:start + self.batch_size], (1.0, 1.0)

    def _rect_groups(self) -> list[tuple[np.ndarray, tuple[float, float]]]:
        """One group a step, a batch on every rank at one shape, with the ratios its shape must hold."""
        ratios = aspect_ratios(self.shapes)
        order = np.argsort(ratios, kind="stable")
        extra = self._per_rank * self.world_size - len(order)  # the last ones again, so every rank gets as many
        order = np.concatenate([order, np.take(order, range(-extra, 0), mode="wrap")])
        return like_shaped_groups(ratios, order, self.batch_size * self.world_size)

    def _rect_batches(self) -> Iterator[tuple[np.ndarray, tuple[float, float]]]:
        groups = self._rect_groups()
        rng = np.random.default_rng([self.seed, self.epoch])
        for g in rng.permutation(len(groups)) if self.shuffle else range(len(groups)):
            group, bounds = groups[g]
            yield group[self.rank::self.world_size], bounds

    def __len__(self) -> int:
        return math.ceil(self._per_rank / self.batch_size)

    def __iter__(self):
        size_rng = np.random.default_rng([self.seed, self.epoch, 1])
        seed_rng = np.random.default_rng([self.seed, self.epoch, 2, self.rank])
        size = self.sizes[0]
        batches = self._square_batches() if self.shapes is None else self._rect_batches()
        for b, (batch, bounds) in enumerate(batches):
            if len(self.sizes) > 1 and b % self.size_every == 0:
                size = int(size_rng.choice(self.sizes))
            shape = rect_size(*bounds, size)
            seeds = seed_rng.integers(0, 2 ** 63, len(batch))
            yield [(int(i), shape, int(s)) for i, s in zip(batch, seeds)]


def multiscale_sizes(img_size: int, low: float = 0.67, high: float = 1.5, stride: int = SIZE_MULTIPLE) -> list[int]:
    lo = max(stride, int(math.ceil(img_size * low / stride)) * stride)
    hi = int(img_size * high // stride) * stride
    return list(range(lo, hi + 1, stride))


def create_dataloader(dataset: DetectionDataset, plan: Sampler, workers: int = 2) -> DataLoader:
    """``dataset`` in ``plan``'s batches, read by ``workers`` processes (0: by this one)."""
    return DataLoader(dataset, batch_sampler=plan, num_workers=workers, collate_fn=collate,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)


@dataclass(eq=False)
class RectPlan(Sampler):
    """Evaluation batches of ``(index, (height, width), 0)``, the images sorted by aspect ratio, each batch at
    the smallest multiple of SIZE_MULTIPLE that holds all of its images at the scale a square ``img_size`` gives
    them (the long side at ``img_size``): the network sees the objects at the same size as at ``img_size`` square,
    with less padding (the classic Ultralytics test.py's rectangular inference)."""

    shapes: list[tuple[int, int] | None]  # (height, width) of each image; None for one that cannot be read
    batch_size: int
    img_size: int

    def __len__(self) -> int:
        return math.ceil(len(self.shapes) / self.batch_size)

    def __iter__(self):
        ratios = aspect_ratios(self.shapes)
        for batch, bounds in like_shaped_groups(ratios, np.argsort(ratios, kind="stable"), self.batch_size):
            size = rect_size(*bounds, self.img_size)
            yield [(int(i), size, 0) for i in batch]


def aspect_ratios(shapes: list[tuple[int, int] | None]) -> np.ndarray:
    """Height / width of each (height, width); NaN for an image that cannot be read (sorted last, and left out
    of its batch's shape: the loader skips it)."""
    return np.array([shape[0] / shape[1] if shape else np.nan for shape in shapes], np.float64)


def like_shaped_groups(ratios: np.ndarray, order: np.ndarray, width: int
                       ) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """``order`` (indices sorted by ``ratios``) cut into groups of ``width``, each with the lowest and highest
    ratio its shape must hold ((1, 1), square, for a group of unreadable images only)."""
    groups = [order[start:start + width] for start in range(0, len(order), width)]
    bounds = [ratios[group][~np.isnan(ratios[group])] for group in groups]
    return [(group, (float(b.min()), float(b.max())) if len(b) else (1.0, 1.0)) for group, b in zip(groups, bounds)]


def rect_size(lowest: float, highest: float, img_size: int) -> tuple[int, int]:
    """(height, width) holding images of height/width ratios ``lowest`` .. ``highest`` with the long side at
    ``img_size``: landscape ones fill the width, portrait ones the height, a mix both."""
    if highest < 1:
        height, width = highest, 1.0
    elif lowest > 1:
        height, width = 1.0, 1 / lowest
    else:
        height, width = 1.0, 1.0
    # the ratios are quotients of floats: 1e-9 keeps a side that is a whole multiple from rounding a step up
    return tuple(math.ceil(img_size * side / SIZE_MULTIPLE - 1e-9) * SIZE_MULTIPLE for side in (height, width))


def evaluation_loader(dataset: DetectionDataset, batch_size: int, img_size: int, workers: int = 2,
                      rect: bool = False) -> DataLoader:
    """``dataset`` as evaluation reads it: in list order at ``img_size`` square, or with ``rect`` in rectangular
    batches (RectPlan; every image is decoded once beforehand for its size, then again as the loader reads it)."""
    plan = RectPlan(dataset.shapes(), batch_size, img_size) if rect \
        else BatchPlan(len(dataset), batch_size, [img_size], shuffle=False)
    return create_dataloader(dataset, plan, workers)
