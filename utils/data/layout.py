"""Writing a Darknet dataset folder, as the importers (VOC, COCO) lay it out.

``OUT/images/...`` holds the images (linked, or copied), ``OUT/labels/...`` the label file of each, at the
path :func:`utils.data.dataset.label_path` derives from the image's, and ``OUT`` the ``train.txt`` and
``valid.txt`` lists (paths relative to ``OUT``), ``NAME.names`` and ``NAME.data``. Every file is written
atomically.
"""
from __future__ import annotations

import os
import re
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from utils.cli import SEED, number
from utils.data.cache import DECODE_THREADS
from utils.data.config import DataError, DataWarning
from utils.data.labels import label_path
from utils.errors import UserError
from utils.fileio import atomic_write
from utils.output_files import refuse_filled_folder, refuse_inputs_inside

LABEL_DECIMALS = 6  # as write_label_file writes them
SPLIT_FRACTION = number(0, 1, above=True, below=True)  # the importers' --valid_fraction: both lists keep images
VALID_FRACTION = 0.2  # its default


def add_split_flags(parser, valid_help: str = "share of the images for validation") -> None:
    """--valid_fraction and --seed, as every importer takes them."""
    parser.add_argument("--valid_fraction", type=SPLIT_FRACTION, default=VALID_FRACTION, help=valid_help)
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the train/valid split")


def check_destination(out: Path, name: str, read_folders: list[tuple[str, Path]], exist_ok: bool) -> None:
    """What an importer (data/voc2darknet.py, data/coco2darknet.py) checks before writing the dataset
    ``out``/``name``: a plain file name, an --out that is new or empty (unless ``exist_ok``), outside the
    ``read_folders`` (flag, path) of its sources, which are only read, and none of them where the images go,
    OUT/images, which would replace them."""
    check_dataset_name(name)
    refuse_filled_folder(out, "--out", exist_ok)
    for flag, folder in read_folders:
        if Path(os.path.realpath(out)).is_relative_to(os.path.realpath(folder)):
            raise UserError(f"--out {out} is inside {flag} {folder}, which an import only reads; write the dataset "
                            f"elsewhere")
    refuse_inputs_inside(out / "images", read_folders, "--out")


@dataclass
class BoxCounts:
    """What became of an importer's boxes."""

    boxes: int = 0  # written
    clipped: int = 0  # written, cut to their image
    degenerate: int = 0  # dropped: nothing left inside the image


def check_dataset_name(name: str) -> None:
    """--name, the base of NAME.data and NAME.names: a plain file name."""
    if not re.fullmatch(r"[^/\\]+", name):
        raise UserError(f"--name {name!r}: expected a file name without folders (it names NAME.data, NAME.names)")


def darknet_row(corners: tuple[float, float, float, float], width: int, height: int,
                counts: BoxCounts) -> tuple[float, float, float, float] | None:
    """``(cx, cy, w, h)`` normalised from pixel corners ``x1, y1, x2, y2`` (0-based, from the image's top-left)
    clipped to the image; None when no width or height is left at label precision. Counted in ``counts``."""
    x1, y1, x2, y2 = corners
    clipped = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width),
               min(max(y2, 0.0), height))
    x1, y1, x2, y2 = clipped
    w, h = (x2 - x1) / width, (y2 - y1) / height
    if round(w, LABEL_DECIMALS) <= 0 or round(h, LABEL_DECIMALS) <= 0:
        counts.degenerate += 1
        return None
    counts.clipped += clipped != tuple(corners)
    counts.boxes += 1
    return (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, w, h


def check_distinct_labels(images: Iterable[tuple[Path, str]]) -> None:
    """Refuse images (dataset path, where it came from) that would share a label file: a loader finds an
    image's labels by its path without the extension, so ``a.jpg`` and ``a.png`` would read the same boxes."""
    seen: dict[Path, str] = {}
    for image, origin in images:
        label = label_path(image)
        if label in seen:
            raise DataError(f"{origin} and {seen[label]} would share the label file {label.name} (labels are found "
                            f"by the image's name without its extension); rename one of the images")
        seen[label] = origin


def place_image(source: Path, target: Path, copy: bool) -> None:
    """Put ``source`` at ``target``: a symbolic link to it, or a copy when asked or when links fail."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    if not copy:
        try:
            os.symlink(source.resolve(), target)
            return
        except OSError:
            pass  # file systems without symlinks get a copy
    shutil.copyfile(source, target)


def image_sizes(images: Sequence[Path]) -> list[tuple[int, int] | None]:
    """Each image's (width, height) as the loader will read it (EXIF orientation applied); None where it cannot
    be read. Decoded in threads (OpenCV's decoders release the GIL), each holding one decoded image at a time;
    a terminal shows the progress, as a large dataset takes minutes."""
    def size(path: Path) -> tuple[int, int] | None:
        pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return None if pixels is None else (pixels.shape[1], pixels.shape[0])
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        return list(tqdm(pool.map(size, images), total=len(images), desc="reading image sizes", leave=False,
                         disable=None, dynamic_ncols=True))


@dataclass(frozen=True)
class AnnotatedImage:
    """An image as an annotation file describes it."""

    where: str  # the annotation, for messages: "a.xml", "instances.json: images[3]"
    image: Path
    stated: tuple[int, int] | None  # (width, height) the annotation gives; None where it gives none
    size_field: str  # the annotation's entry holding that size: "<size>", "width/height"


def _same_proportions(stated: tuple[int, int], actual: tuple[int, int]) -> bool:
    """Whether ``actual`` is ``stated`` scaled alike in both directions, to within a pixel of rounding."""
    (stated_w, stated_h), (actual_w, actual_h) = stated, actual
    return abs(stated_w * actual_h / stated_h - actual_w) <= 1 and abs(stated_h * actual_w / stated_w - actual_h) <= 1


def annotated_sizes(entries: Sequence[AnnotatedImage]) -> tuple[list[tuple[int, int]], int]:
    """The size each entry's pixel boxes are normalised by, and how many images were resized since they were
    annotated. Boxes are in the annotation's pixels, so its size is the one: an image resized since, in the same
    proportions, keeps them right (a warning); one of other proportions (an EXIF-rotated photo) would not, and is
    refused. An annotation without a size takes its image's; an unreadable image is left to the dataset check."""
    sizes, scaled = [], []
    for entry, actual in zip(entries, image_sizes([entry.image for entry in entries])):
        stated = entry.stated
        if actual is None and stated is None:
            raise DataError(f"{entry.where}: no {entry.size_field}, and {entry.image} cannot be read to find it")
        if actual is not None and stated is not None and stated != actual:
            if not _same_proportions(stated, actual):
                turned = " (turned by a quarter: an EXIF orientation?)" if stated == actual[::-1] else ""
                raise DataError(f"{entry.where}: says the image is {stated[0]}x{stated[1]}, but {entry.image} is "
                                f"{actual[0]}x{actual[1]} as read{turned}; its boxes cannot be placed: fix "
                                f"{entry.size_field} and the boxes, or the image")
            scaled.append(f"{entry.where} says {stated[0]}x{stated[1]}, {entry.image.name} is "
                          f"{actual[0]}x{actual[1]}")
        sizes.append(stated or actual)
    if scaled:
        warnings.warn(f"{len(scaled)} image(s) were resized after annotation, in proportion: their boxes are scaled "
                      f"with them (first: {scaled[0]})", DataWarning, stacklevel=3)
    return sizes, len(scaled)


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text.encode())


def write_label_file(path: Path, rows: Iterable[tuple[int, float, float, float, float]]) -> None:
    """One ``class cx cy w h`` line per box, six decimals; an empty file for an image without boxes."""
    lines = [f"{cls} " + " ".join(f"{v:.6f}" for v in box) for cls, *box in rows]
    write_text(path, "\n".join(lines) + "\n" if lines else "")


def seeded_split(entries: Sequence[str], valid_fraction: float, seed: int) -> dict[str, list[str]]:
    """A reproducible train/valid split (at least one image in each), each part sorted."""
    if len(entries) < 2:
        raise DataError(f"{len(entries)} image(s): a train and a valid list need at least 2")
    order = np.random.default_rng(seed).permutation(len(entries))
    n_valid = min(max(1, round(len(entries) * valid_fraction)), len(entries) - 1)
    return {"valid": sorted(entries[i] for i in order[:n_valid]),
            "train": sorted(entries[i] for i in order[n_valid:])}


def write_dataset_files(out: Path, name: str, names: Sequence[str], splits: dict[str, list[str]],
                        names_file: str | None = None) -> Path:
    """The ``train.txt``/``valid.txt`` lists, ``NAME.names`` (unless the .data is to name an existing
    ``names_file``, as a list entry) and ``NAME.data`` under ``out``; returns the .data."""
    for split, entries in splits.items():
        write_text(out / f"{split}.txt", "\n".join(entries) + "\n")
    if names_file is None:
        names_file = f"{name}.names"
        write_text(out / names_file, "\n".join(names) + "\n")
    data = out / f"{name}.data"
    write_text(data, f"classes={len(names)}\ntrain=train.txt\nvalid=valid.txt\nnames={names_file}\nbackup=backup/\n")
    return data


def list_entry(path: Path, out: Path) -> str:
    """How a file in ``out`` names ``path``: relative to ``out`` when under it (as the importers' lists do), else
    absolute."""
    target, base = Path(os.path.abspath(path)), Path(os.path.abspath(out))
    return target.relative_to(base).as_posix() if target.is_relative_to(base) else str(target)
