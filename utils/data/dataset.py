"""The detection dataset: images of a list, their labels read once, each item loaded, augmented and
letterboxed by the seed its BatchPlan gives it; ``collate`` makes batches of them.

An image that cannot be read is skipped with a warning naming it, and counted.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from utils.boxes import Letterbox
from utils.darknet.cfg import DEFAULT_IMG_SIZE
from utils.data.augment import (PAD_VALUE, Augment, clip_and_filter, flip_horizontal, hsv_jitter, letterbox_image,
                                warp)
from utils.data.cache import decode_all
from utils.data.config import DataConfig, ImageSource, read_image_list
from utils.data.labels import label_path, normalised_to_pixels, pixels_to_normalised, read_labels
from utils.data.layout import image_sizes
from utils.errors import InputWarning, UserError

IMAGE_CHANNELS = 3  # every image is read as 8-bit BGR (cv2.IMREAD_COLOR): grey and RGBA ones too


def check_colour_input(channels: int, cfg: str | Path, reader: str) -> None:
    """Refuse a network of ``channels`` inputs for what ``reader`` (training, detection) feeds it: colour images."""
    if channels != IMAGE_CHANNELS:
        raise UserError(f"{cfg}: [net] channels={channels}, but {reader} reads colour images ({IMAGE_CHANNELS} "
                        f"channels); set channels={IMAGE_CHANNELS}")


@dataclass
class Sample:
    image: np.ndarray | None  # (3, H, W) uint8 RGB, or None when the file could not be read
    targets: np.ndarray  # (n, 5): class, cx, cy, w, h normalised to the network input
    path: str
    index: int  # in the dataset's list
    original_hw: tuple[int, int] = (0, 0)
    letterbox: Letterbox | None = None


class DetectionDataset(Dataset):
    """Images of one list file, folder or tuple of them (an ImageSource). Items are ``(index, (height, width)
    of the input, augmentation seed)`` from a BatchPlan or RectPlan. ``merged_from``: the label files hold that
    many classes, read as one (``num_classes`` 1; a DataConfig's ``merged_from``, --single_cls)."""

    def __init__(self, list_path: str | ImageSource, num_classes: int, augment: Augment | None = None,
                 keep_ratio: bool = True, merged_from: int | None = None):
        self.list_path = list_path if isinstance(list_path, tuple) else Path(list_path)
        self.images = read_image_list(self.list_path)
        self.labels = [read_labels(label_path(image), merged_from or num_classes) for image in self.images]
        if merged_from:
            for labels in self.labels:
                labels[:, 0] = 0
        self.augment = augment
        self.keep_ratio = keep_ratio
        self.cached: list[np.ndarray | None] | None = None

    @classmethod
    def from_config(cls, data: DataConfig, split: str, augment: Augment | None = None,
                    keep_ratio: bool = True) -> DetectionDataset:
        """``data``'s ``split`` (train, valid, test), its classes merged where ``data`` says so (--single_cls)."""
        return cls(getattr(data, split), data.classes, augment, keep_ratio, data.merged_from)

    def __len__(self) -> int:
        return len(self.images)

    def files(self) -> list[Path]:
        """Every image and label file it reads: what no output may replace."""
        return [*self.images, *map(label_path, self.images)]

    def cache_images(self, name: str, budget: int | None, show_progress: bool = True) -> int:
        """Decode every image now and read them from memory from here on (utils/data/cache.py); the bytes held.
        ``name`` (train, valid) is for the progress bar and errors; ``budget``: the most bytes it may take."""
        self.cached = decode_all(self._decode, len(self), name, budget, show_progress)
        return sum(image.nbytes for image in self.cached if image is not None)

    def shapes(self, indices: Sequence[int] | None = None) -> list[tuple[int, int] | None]:
        """Each image's (height, width) as it is read (of the images at ``indices``, else of all); None for one
        that cannot be read."""
        indices = range(len(self)) if indices is None else indices
        if self.cached is not None:
            return [None if self.cached[i] is None else self.cached[i].shape[:2] for i in indices]
        return [None if size is None else size[::-1] for size in image_sizes([self.images[i] for i in indices])]

    def read(self, index: int) -> np.ndarray | None:
        return self.cached[index] if self.cached is not None else self._decode(index)

    def _decode(self, index: int) -> np.ndarray | None:
        path = self.images[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            warnings.warn(f"skipping unreadable image {path}", InputWarning, stacklevel=3)  # read()'s caller
        return image

    def _fit(self, index: int, image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Letterbox]:
        h, w = image.shape[:2]
        canvas, box = letterbox_image(image, size, self.keep_ratio)
        boxes = normalised_to_pixels(self.labels[index], w, h)
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * box.scale_x + box.pad_x
        boxes[:, [2, 4]] = boxes[:, [2, 4]] * box.scale_y + box.pad_y
        return canvas, boxes, box

    def _random_affine(self, rng, index, image, size):
        aug = self.augment
        h, w = image.shape[:2]
        fit = min(size[0] / h, size[1] / w) if self.keep_ratio else None
        zoom = rng.uniform(1 - aug.scale, 1 + aug.scale)
        sx, sy = (fit * zoom, fit * zoom) if fit else (size[1] / w * zoom, size[0] / h * zoom)
        tx = (size[1] - w * sx) / 2 + rng.uniform(-aug.translate, aug.translate) * size[1]
        ty = (size[0] - h * sy) / 2 + rng.uniform(-aug.translate, aug.translate) * size[0]
        matrix = np.array([[sx, 0, tx], [0, sy, ty]], np.float64)
        return warp(image, normalised_to_pixels(self.labels[index], w, h), matrix, size)

    def _mosaic(self, rng, index, size):
        """Four images around a random centre of a double-size canvas, then zoomed back to ``size``; None when
        the image at ``index`` cannot be read."""
        height, width = size
        canvas = np.full((2 * height, 2 * width, 3), PAD_VALUE, np.uint8)
        cx, cy = int(rng.uniform(0.5, 1.5) * width), int(rng.uniform(0.5, 1.5) * height)
        indices = [index] + list(rng.integers(0, len(self), 3))
        all_boxes = []
        for k, i in enumerate(indices):
            image = self.read(int(i))
            if image is None and k == 0:
                return None  # the sample's own image: skipped and counted as any unreadable one is
            if image is None:
                continue  # a partner's quadrant stays grey (the warning names it)
            h, w = image.shape[:2]
            r = min(height / h, width / w)
            image = cv2.resize(image, (max(1, round(w * r)), max(1, round(h * r))))
            h, w = image.shape[:2]
            x0 = cx - w if k in (0, 2) else cx
            y0 = cy - h if k in (0, 1) else cy
            xa, ya = max(x0, 0), max(y0, 0)
            xb, yb = min(x0 + w, 2 * width), min(y0 + h, 2 * height)
            canvas[ya:yb, xa:xb] = image[ya - y0:yb - y0, xa - x0:xb - x0]
            boxes = normalised_to_pixels(self.labels[int(i)], w, h)
            boxes[:, [1, 3]] += x0
            boxes[:, [2, 4]] += y0
            all_boxes.append(clip_and_filter(boxes, 2 * width, 2 * height))
        boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 5), np.float32)
        zoom = 0.5 * rng.uniform(1 - self.augment.scale, 1 + self.augment.scale)
        tx = width / 2 - width * zoom + rng.uniform(-self.augment.translate, self.augment.translate) * width
        ty = height / 2 - height * zoom + rng.uniform(-self.augment.translate, self.augment.translate) * height
        return warp(canvas, boxes, np.array([[zoom, 0, tx], [0, zoom, ty]]), size)

    def __getitem__(self, item) -> Sample:
        index, size, seed = item if isinstance(item, tuple) else (item, (DEFAULT_IMG_SIZE, DEFAULT_IMG_SIZE), 0)
        path = str(self.images[index])
        rng = np.random.default_rng(seed)
        aug = self.augment
        unreadable = Sample(None, np.zeros((0, 5), np.float32), path, index)
        if aug is not None and aug.mosaic and rng.random() < aug.mosaic:
            mosaic = self._mosaic(rng, index, size)
            if mosaic is None:
                return unreadable
            (image, boxes), original_hw, box = mosaic, size, None
        else:
            image = self.read(index)
            if image is None:
                return unreadable
            original_hw = image.shape[:2]
            if aug is not None:
                image, boxes = self._random_affine(rng, index, image, size)
                box = None
            else:
                image, boxes, box = self._fit(index, image, size)
        if aug is not None:
            image = hsv_jitter(image, rng, aug.hue, aug.saturation, aug.exposure)
            if aug.flip and rng.random() < 0.5:
                image, boxes = flip_horizontal(image, boxes)
        targets = pixels_to_normalised(boxes, size[1], size[0]).astype(np.float32)
        chw = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))
        return Sample(chw, targets, path, index, tuple(original_hw), box)


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) uint8 RGB: convert with .float() / 255 on the device
    targets: torch.Tensor  # (n, 6): image index in the batch, class, cx, cy, w, h normalised
    paths: list[str]
    indices: list[int]  # in the dataset's list
    original_hw: list[tuple[int, int]]
    letterboxes: list[Letterbox | None]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def collate(samples: list[Sample]) -> Batch:
    skipped = [s.path for s in samples if s.image is None]
    samples = [s for s in samples if s.image is not None]
    if not samples:
        return Batch(torch.zeros(0, 3, 1, 1, dtype=torch.uint8), torch.zeros(0, 6), [], [], [], [], skipped)
    images = torch.from_numpy(np.stack([s.image for s in samples]))
    targets = [np.concatenate([np.full((len(s.targets), 1), i, np.float32), s.targets], 1)
               for i, s in enumerate(samples)]
    return Batch(images, torch.from_numpy(np.concatenate(targets)), [s.path for s in samples],
                 [s.index for s in samples], [s.original_hw for s in samples], [s.letterbox for s in samples], skipped)
