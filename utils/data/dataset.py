"""Darknet datasets: ``.data`` files, image lists, label files, loading, augmentation and batching.

Conventions (Darknet's): a ``.data`` file names ``classes``, ``train``, ``valid``, ``names`` and
optionally ``backup``; ``train``/``valid`` are text files with one image path per line; each image's
labels live in the parallel ``labels/`` tree (the last ``images`` or ``JPEGImages`` folder of the path
becomes ``labels``, the extension ``.txt``), one ``class cx cy w h`` line per box, normalised to [0, 1].
An image without a label file is a negative. Relative paths are tried from the working directory first
(Darknet's rule) and then from the folder of the file that names them, so a dataset folder can move.
Beyond Darknet, ``train``/``valid`` may also name a folder (its image files, sorted), and a YOLOv5/v8-style
``.yaml`` dataset config is read by :mod:`utils.data.yaml_config` into the same :class:`DataConfig`.

Bad data policy: a malformed label line stops the run at start-up with ``file:line`` and what is wrong
(every label file is read once, up front, so this happens before any training); an image that cannot be
read is skipped with a warning naming it, and counted.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.boxes import Letterbox
from utils.darknet.cfg import number
from utils.data.names import read_class_names
from utils.fileio import read_text
from utils.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PAD_VALUE = 128  # Darknet pads letterboxed images with 0.5
INTEGER = re.compile(r"[0-9]+", re.ASCII)
COORD_TOLERANCE = 1e-3  # converters often write 1.0000001; values this close to [0, 1] are clipped


class DataError(UserError, ValueError):
    """A dataset description or label file that cannot be used."""


def resolve_path(text: str, base_dir: Path) -> Path:
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return base_dir / path


ImageSource = Path | tuple[Path, ...]  # an image list file, a folder of images, or several of these


@dataclass
class DataConfig:
    path: Path
    classes: int
    train: ImageSource
    valid: ImageSource
    names: list[str]
    backup: Path | None = None
    test: ImageSource | None = None  # only YOLOv5-style YAML configs name one


def parse_data_config(path: str | Path) -> DataConfig:
    """A Darknet ``.data`` file, or a YOLOv5/v8-style ``.yaml``/``.yml`` dataset config."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        from utils.data.yaml_config import parse_yaml_config  # imported here: that module builds on this one
        return parse_yaml_config(path)
    lines = read_text(path, "data config", DataError).splitlines()
    values: dict[str, tuple[str, int]] = {}
    for lineno, raw in enumerate(lines, 1):
        line = raw.split("#")[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DataError(f"{path}:{lineno}: expected 'key=value', got {raw.strip()!r}")
        values[key.strip()] = (value.strip(), lineno)
    for key in ("classes", "train", "valid", "names"):
        if key not in values:
            raise DataError(f"{path}: missing '{key}=' (a .data file needs classes, train, valid and names)")
    text, lineno = values["classes"]
    if not INTEGER.fullmatch(text) or int(text) < 1:
        raise DataError(f"{path}:{lineno}: classes must be a positive integer, got {text!r}")
    base = path.parent
    names_path = resolve_path(values["names"][0], base)
    try:
        names = read_class_names(names_path, DataError)
    except DataError as err:
        raise DataError(f"{path}:{values['names'][1]}: names={values['names'][0]}: {err}") from None
    if len(names) != int(text):
        raise DataError(f"{path}: classes={text} but {names_path} lists {len(names)} names")
    backup = resolve_path(values["backup"][0], base) if "backup" in values else None
    return DataConfig(path, int(text), resolve_path(values["train"][0], base),
                      resolve_path(values["valid"][0], base), names, backup)


def describe_source(source: ImageSource) -> str:
    """An ImageSource as a log or an error names it: the path, or the paths joined by ' + '."""
    return " + ".join(map(str, source)) if isinstance(source, tuple) else str(source)


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (any depth), sorted by path, as YOLOv5 reads a folder source."""
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(f"{folder}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def read_image_list(source: ImageSource) -> list[Path]:
    """The images of a list file (one path a line), of a folder, or of several such sources in order."""
    if isinstance(source, tuple):
        return [image for part in source for image in read_image_list(part)]
    if source.is_dir():
        return image_files(source)
    lines = read_text(source, "image list", DataError).splitlines()
    images = [resolve_path(line.strip(), source.parent) for line in lines if line.strip()]
    if not images:
        raise DataError(f"{source}: the image list is empty")
    return images


def label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in ("images", "JPEGImages"):
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _label_values(fields: list[str], where: str, raw: str) -> list[float]:
    """Darknet's plain number syntax (no ``0.2_5``); NaN and inf named as such."""
    values = []
    for field in fields:
        try:
            values.append(number(field))
        except ValueError:
            non_finite = field.lstrip("+-").lower() in ("nan", "inf", "infinity")
            raise DataError(f"{where}: {'non-finite value' if non_finite else 'not a number'} in {raw.strip()!r}"
                            ) from None
    return values


def read_labels(path: Path, num_classes: int) -> np.ndarray:
    """``(n, 5)`` float32: class, cx, cy, w, h. A missing file is a negative image (no boxes)."""
    if not path.exists():
        return np.zeros((0, 5), np.float32)
    rows = []
    for lineno, raw in enumerate(read_text(path, "label file", DataError).splitlines(), 1):
        fields = raw.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 5:
            raise DataError(f"{where}: expected 5 fields 'class cx cy w h', got {len(fields)}: {raw.strip()!r}")
        cls, *box = _label_values(fields, where, raw)
        if not cls.is_integer() or not 0 <= cls < num_classes:
            raise DataError(f"{where}: class {fields[0]} is not an integer in 0 .. {num_classes - 1}")
        box = np.array(box)
        if (box < -COORD_TOLERANCE).any() or (box > 1 + COORD_TOLERANCE).any() or (box[2:] <= 0).any():
            raise DataError(f"{where}: cx cy w h must be normalised to [0, 1] with w, h > 0; got {raw.strip()!r}")
        rows.append([cls, *np.clip(box, 0.0, 1.0)])
    return np.array(rows, np.float32).reshape(-1, 5)


# ----------------------------------------------------------------------------------------------
# image operations (boxes are (n, 5) arrays: class, x1, y1, x2, y2 in pixels)


def letterbox_image(image: np.ndarray, size: tuple[int, int], keep_ratio: bool = True) -> tuple[np.ndarray, Letterbox]:
    """Resize into ``size`` (height, width): keep the aspect ratio and pad with grey, or stretch."""
    box = Letterbox.fit(image.shape[:2], size, keep_ratio)
    new_h, new_w = box.resized_size(image.shape[:2])
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_h, new_w) != image.shape[:2] \
        else image
    if (new_h, new_w) == tuple(size):
        return resized, box
    top, left = int(round(box.pad_y - 0.1)), int(round(box.pad_x - 0.1))
    canvas = cv2.copyMakeBorder(resized, top, size[0] - new_h - top, left, size[1] - new_w - left,
                                cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return canvas, Letterbox(box.scale_x, box.scale_y, float(left), float(top))


def normalised_to_pixels(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    out = labels.copy()
    out[:, 1] = (labels[:, 1] - labels[:, 3] / 2) * width
    out[:, 2] = (labels[:, 2] - labels[:, 4] / 2) * height
    out[:, 3] = (labels[:, 1] + labels[:, 3] / 2) * width
    out[:, 4] = (labels[:, 2] + labels[:, 4] / 2) * height
    return out


def pixels_to_normalised(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    out = boxes.copy()
    out[:, 1] = (boxes[:, 1] + boxes[:, 3]) / 2 / width
    out[:, 2] = (boxes[:, 2] + boxes[:, 4]) / 2 / height
    out[:, 3] = (boxes[:, 3] - boxes[:, 1]) / width
    out[:, 4] = (boxes[:, 4] - boxes[:, 2]) / height
    return out


def clip_and_filter(boxes: np.ndarray, width: int, height: int, min_size: float = 2.0,
                    min_visible: float = 0.2) -> np.ndarray:
    """Clip boxes to the image; drop those under ``min_size`` pixels or with less than ``min_visible``
    of their area left inside."""
    if not len(boxes):
        return boxes
    area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2])
    clipped = boxes.copy()
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, width)
    clipped[:, [2, 4]] = clipped[:, [2, 4]].clip(0, height)
    w, h = clipped[:, 3] - clipped[:, 1], clipped[:, 4] - clipped[:, 2]
    keep = (w >= min_size) & (h >= min_size) & (w * h >= min_visible * np.maximum(area, 1e-9))
    return clipped[keep]


def warp(image: np.ndarray, boxes: np.ndarray, matrix: np.ndarray,
         size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Scale-and-translate ``matrix`` (2x3, no rotation) applied to the image and, exactly, to its boxes."""
    out = cv2.warpAffine(image, matrix, (size[1], size[0]), flags=cv2.INTER_LINEAR,
                         borderValue=(PAD_VALUE,) * 3)
    moved = boxes.copy()
    moved[:, [1, 3]] = boxes[:, [1, 3]] * matrix[0, 0] + matrix[0, 2]
    moved[:, [2, 4]] = boxes[:, [2, 4]] * matrix[1, 1] + matrix[1, 2]
    return out, clip_and_filter(moved, size[1], size[0])


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, hue: float, saturation: float,
               exposure: float) -> np.ndarray:
    """Darknet's colour jitter: hue shifted by up to ±hue (fraction of the circle), saturation and value
    scaled by a factor in [1/s, s]."""
    if hue == 0 and saturation == 1 and exposure == 1:
        return image
    shift = rng.uniform(-hue, hue) * 180
    sat = math.exp(rng.uniform(-math.log(saturation), math.log(saturation))) if saturation > 0 else 1.0
    val = math.exp(rng.uniform(-math.log(exposure), math.log(exposure))) if exposure > 0 else 1.0
    h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    lut = np.arange(256, dtype=np.float32)
    h = cv2.LUT(h, ((lut + shift) % 180).astype(np.uint8))
    s = cv2.LUT(s, np.clip(lut * sat, 0, 255).astype(np.uint8))
    v = cv2.LUT(v, np.clip(lut * val, 0, 255).astype(np.uint8))
    return cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2BGR)


def flip_horizontal(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 1], flipped[:, 3] = width - boxes[:, 3], width - boxes[:, 1]
    return np.ascontiguousarray(image[:, ::-1]), flipped


@dataclass
class Augment:
    """Training augmentation settings; ``from_net`` takes hue/saturation/exposure/flip/mosaic from [net]."""

    hue: float = 0.1
    saturation: float = 1.5
    exposure: float = 1.5
    flip: bool = True
    scale: float = 0.25  # random zoom in [1 - scale, 1 + scale] around the letterbox fit
    translate: float = 0.1  # random shift up to this fraction of the input size
    mosaic: float = 0.0  # probability of a 4-image mosaic

    @classmethod
    def from_net(cls, net: dict, mosaic: bool | None = None) -> Augment:
        use_mosaic = bool(net.get("mosaic", 0)) if mosaic is None else mosaic
        return cls(net.get("hue", 0.1), net.get("saturation", 1.5), net.get("exposure", 1.5),
                   bool(net.get("flip", 1)), mosaic=0.5 if use_mosaic else 0.0)


# ----------------------------------------------------------------------------------------------
# dataset and batching


@dataclass
class Sample:
    image: np.ndarray | None  # (3, H, W) uint8 RGB, or None when the file could not be read
    targets: np.ndarray  # (n, 5): class, cx, cy, w, h normalised to the network input
    path: str
    original_hw: tuple[int, int] = (0, 0)
    letterbox: Letterbox | None = None


class DetectionDataset(Dataset):
    """Images of one list file, folder or tuple of them (an ImageSource). Items are ``(index, input size,
    augmentation seed)`` from a BatchPlan."""

    def __init__(self, list_path: str | ImageSource, num_classes: int, augment: Augment | None = None,
                 keep_ratio: bool = True):
        self.list_path = list_path if isinstance(list_path, tuple) else Path(list_path)
        self.images = read_image_list(self.list_path)
        self.labels = [read_labels(label_path(image), num_classes) for image in self.images]
        self.augment = augment
        self.keep_ratio = keep_ratio

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int) -> np.ndarray | None:
        path = self.images[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            warnings.warn(f"skipping unreadable image {path}", stacklevel=2)
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
        """Four images around a random centre of a double-size canvas, then zoomed back to ``size``."""
        height, width = size
        canvas = np.full((2 * height, 2 * width, 3), PAD_VALUE, np.uint8)
        cx, cy = int(rng.uniform(0.5, 1.5) * width), int(rng.uniform(0.5, 1.5) * height)
        indices = [index] + list(rng.integers(0, len(self), 3))
        all_boxes = []
        for k, i in enumerate(indices):
            image = self.read(int(i))
            if image is None:
                continue
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
        index, side, seed = item if isinstance(item, tuple) else (item, 416, 0)
        size = (side, side)
        path = str(self.images[index])
        rng = np.random.default_rng(seed)
        aug = self.augment
        if aug is not None and aug.mosaic and rng.random() < aug.mosaic:
            image, boxes = self._mosaic(rng, index, size)
            original_hw, box = size, None
        else:
            image = self.read(index)
            if image is None:
                return Sample(None, np.zeros((0, 5), np.float32), path)
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
        return Sample(chw, targets, path, tuple(original_hw), box)


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) uint8 RGB: convert with .float() / 255 on the device
    targets: torch.Tensor  # (n, 6): image index in the batch, class, cx, cy, w, h normalised
    paths: list[str]
    original_hw: list[tuple[int, int]]
    letterboxes: list[Letterbox | None]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def collate(samples: list[Sample]) -> Batch:
    skipped = [s.path for s in samples if s.image is None]
    samples = [s for s in samples if s.image is not None]
    if not samples:
        return Batch(torch.zeros(0, 3, 1, 1, dtype=torch.uint8), torch.zeros(0, 6), [], [], [], skipped)
    images = torch.from_numpy(np.stack([s.image for s in samples]))
    targets = [np.concatenate([np.full((len(s.targets), 1), i, np.float32), s.targets], 1)
               for i, s in enumerate(samples)]
    return Batch(images, torch.from_numpy(np.concatenate(targets)), [s.path for s in samples],
                 [s.original_hw for s in samples], [s.letterbox for s in samples], skipped)


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


def multiscale_sizes(img_size: int, low: float = 0.67, high: float = 1.5, stride: int = 32) -> list[int]:
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
