"""A seeded synthetic detection dataset in Darknet format: coloured shapes on varied backgrounds.

Four classes (circle, rectangle, triangle, cross) of varied size, aspect, colour and position, partly
overlapping, on solid, gradient, striped or noisy backgrounds; a few images have no object at all.
A tiny model learns it within minutes on a CPU, which makes it the demo's and the tests' data.

Layout written under ``root``::

    images/{train,valid}/NNNNN.jpg   labels/{train,valid}/NNNNN.txt   (class cx cy w h, normalised)
    train.txt  valid.txt  shapes.names  shapes.data
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from utils.cli import SEED, ArgumentParser, integer, run_main
from utils.darknet.cfg import MAX_IMG_SIZE
from utils.data.layout import write_dataset_files, write_label_file
from utils.fileio import atomic_write
from utils.output_files import refuse_filled_folder

CLASS_NAMES = ("circle", "rectangle", "triangle", "cross")
DEMO_DIR = Path("data/demo")  # where train.py generates it on first use, and the demo reads it
DEMO_NAME = "shapes"  # of its .data and .names files


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = rng.integers(4)
    if kind == 0:
        return np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    if kind == 1:
        a, b = rng.integers(0, 256, 3).astype(np.float32), rng.integers(0, 256, 3).astype(np.float32)
        t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        image = np.broadcast_to(a + (b - a) * t, (size, size, 3))
        return np.ascontiguousarray(image if rng.random() < 0.5 else image.transpose(1, 0, 2)).astype(np.uint8)
    if kind == 2:
        period = int(rng.integers(8, 32))
        stripes = ((np.arange(size) // period) % 2).astype(bool)
        image = np.empty((size, size, 3), np.uint8)
        image[:] = rng.integers(0, 256, 3)
        image[stripes] = rng.integers(0, 256, 3)
        return image if rng.random() < 0.5 else np.ascontiguousarray(image.transpose(1, 0, 2))
    coarse = rng.integers(0, 256, (int(rng.integers(3, 9)),) * 2 + (3,)).astype(np.uint8)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(20):
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - mean).sum() > 180:
            break
    return tuple(int(c) for c in colour)


def _draw(image: np.ndarray, cls: int, box: tuple[int, int, int, int], colour) -> None:
    x1, y1, x2, y2 = box
    if cls == 0:
        cv2.ellipse(image, (((x1 + x2) / 2, (y1 + y2) / 2), (x2 - x1, y2 - y1), 0.0), colour, -1, cv2.LINE_AA)
    elif cls == 1:
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, -1)
    elif cls == 2:
        points = np.array([[(x1 + x2) // 2, y1], [x2 - 1, y2 - 1], [x1, y2 - 1]], np.int32)
        cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
    else:
        w, h = x2 - x1, y2 - y1
        cv2.rectangle(image, (x1 + w // 3, y1), (x2 - w // 3 - 1, y2 - 1), colour, -1)
        cv2.rectangle(image, (x1, y1 + h // 3), (x2 - 1, y2 - h // 3 - 1), colour, -1)


def _overlap(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller


def make_image(rng: np.random.Generator, size: int, max_objects: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """One image (BGR, uint8) and its labels ``(n, 5)``: class, cx, cy, w, h normalised to [0, 1]."""
    image = _background(rng, size)
    count = 0 if rng.random() < 0.05 else int(rng.integers(1, max_objects + 1))
    boxes, labels = [], []
    for _ in range(count):
        for _attempt in range(10):
            side = rng.uniform(0.12, 0.45) * size
            aspect = rng.uniform(0.6, 1.6)
            w, h = max(8, int(side * np.sqrt(aspect))), max(8, int(side / np.sqrt(aspect)))
            w, h = min(w, size), min(h, size)
            x1, y1 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = (x1, y1, x1 + w, y1 + h)
            # Partial overlap is welcome; a shape hidden behind another would be an unfair label.
            if all(_overlap(box, other) < 0.35 for other in boxes):
                break
        else:
            continue
        cls = int(rng.integers(len(CLASS_NAMES)))
        _draw(image, cls, box, _contrasting_colour(rng, image[box[1]:box[3], box[0]:box[2]]))
        boxes.append(box)
        labels.append([cls, (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size, w / size, h / size])
    return image, np.array(labels, dtype=np.float64).reshape(-1, 5)


def write_dataset(root: str | Path, train: int = 400, valid: int = 100, size: int = 256, seed: int = 0) -> Path:
    """Write the dataset under ``root`` and return the path of its ``.data`` file."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", train), ("valid", valid)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        splits[split] = []
        for i in range(count):
            image, labels = make_image(rng, size)
            name = f"{i:05d}"
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok, "JPEG encoding failed"
            with atomic_write(root / "images" / split / f"{name}.jpg") as f:
                f.write(encoded.tobytes())
            write_label_file(root / "labels" / split / f"{name}.txt", ((int(c), *box) for c, *box in labels))
            splits[split].append(f"images/{split}/{name}.jpg")
    return write_dataset_files(root, DEMO_NAME, CLASS_NAMES, splits)


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.data.synthetic [--out DIR]``: the set into a new or empty folder (or --exist_ok)."""
    parser = ArgumentParser(description="Write the synthetic shapes dataset in Darknet format.")
    parser.add_argument("--out", default=str(DEMO_DIR), help="output folder, new or empty")
    parser.add_argument("--exist_ok", action="store_true", help="write into an --out that holds files, replacing "
                                                                 "those of the same names")
    parser.add_argument("--train", type=integer(1), default=400, help="training images")
    parser.add_argument("--valid", type=integer(1), default=100, help="validation images")
    parser.add_argument("--size", type=integer(32, MAX_IMG_SIZE), default=256, help="image side in pixels")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of every image's content")
    args = parser.parse_args(argv)

    def write() -> int:
        refuse_filled_folder(Path(args.out), "--out", args.exist_ok)
        data = write_dataset(args.out, args.train, args.valid, args.size, args.seed)
        print(f"wrote {args.train} + {args.valid} images; data config: {data}")
        return 0
    return run_main(write)


if __name__ == "__main__":
    sys.exit(main())
