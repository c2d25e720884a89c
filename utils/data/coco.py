"""COCO instances JSON -> a Darknet dataset (labels, train/valid lists, .names, .data), laid out as
:mod:`utils.data.layout` describes.

- Classes are the JSON's categories in ascending id order, numbered 0 .. N-1 (COCO's ids 1..90 with gaps
  become 0..79); a category without annotations is still a class.
- ``bbox`` is ``[x, y, width, height]`` in pixels from the image's top-left corner. Each box is clipped to
  its image (counted); one left with no width or height at label precision (six decimals) is dropped
  (counted). Crowd annotations (``iscrowd: 1``, regions of many objects) are left out (counted), as COCO's
  own evaluation ignores them.
- Every image of the JSON is kept; one without annotations is a negative (an empty label file).
- A second JSON (``valid``) gives the validation list; without one, the train JSON is split, seeded.
  With two, images go under ``images/train/`` and ``images/valid/`` so that equal file names cannot meet.
- Each image's ``width``/``height`` is checked against the image as the loader decodes it (EXIF orientation
  applied), as the VOC importer checks ``<size>``: boxes are in the JSON's pixels, so an image resized since, in
  proportion, keeps them (a warning), one of other proportions is refused, and a missing size is the image's.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from utils.data.config import DataError
from utils.data.labels import label_path
from utils.data.layout import (VALID_FRACTION, AnnotatedImage, BoxCounts, annotated_sizes, check_distinct_labels,
                               darknet_row, place_image, seeded_split, write_dataset_files, write_label_file)
from utils.data.names import SAME_NAME
from utils.errors import is_number
from utils.fileio import read_text


@dataclass(frozen=True)
class CocoSource:
    annotations: Path  # the instances JSON
    images: Path  # the folder its file_name entries are relative to


@dataclass(frozen=True)
class CocoOptions:
    name: str = "coco"
    valid_fraction: float = VALID_FRACTION  # used only without a valid JSON
    seed: int = 0
    copy: bool = False  # copy images instead of linking them


@dataclass
class CocoCounts(BoxCounts):
    images: int = 0
    negatives: int = 0
    crowd: int = 0
    scaled: int = 0  # images resized since they were annotated, in proportion


@dataclass
class CocoImage:
    annotated: AnnotatedImage  # the file and the size the JSON gives it
    file_name: str
    boxes: list = field(default_factory=list)  # (class, x, y, width, height) in the JSON's pixels, crowds left out
    rows: list = field(default_factory=list)  # (class, cx, cy, w, h) normalised, once the image's size is settled


def read_json(path: Path) -> dict:
    text = read_text(path, "COCO annotations file", DataError)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON: {err.msg} (column {err.colno})") from None
    if not isinstance(document, dict) or not isinstance(document.get("images"), list) \
            or not isinstance(document.get("categories"), list):
        raise DataError(f"{path}: not a COCO instances file (it needs 'images' and 'categories' lists)")
    return document


def _field(path: Path, where: str, entry, key: str, kind: type):
    """``entry[key]`` if it is of ``kind`` (JSON's true/false are not integers here)."""
    if not isinstance(entry, dict) or not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
        raise DataError(f"{path}: {where}: '{key}' is missing or not {'an integer' if kind is int else 'a string'}")
    return entry[key]


def categories(path: Path, document: dict) -> list[tuple[int, str]]:
    """(id, name) in ascending id order: class i is the i-th."""
    found = {}
    for i, entry in enumerate(document["categories"]):
        cat_id = _field(path, f"categories[{i}]", entry, "id", int)
        if cat_id in found:
            raise DataError(f"{path}: categories[{i}]: id {cat_id} repeats")
        name = _field(path, f"categories[{i}]", entry, "name", str).strip()
        if not name or "\n" in name:
            raise DataError(f"{path}: categories[{i}]: the name {name!r} cannot be a line of a .names file")
        if name in found.values():
            twin = next(other for other, known in found.items() if known == name)
            raise DataError(f"{path}: categories[{i}]: the name {name!r} is also category id {twin}'s; {SAME_NAME}")
        found[cat_id] = name
    if not found:
        raise DataError(f"{path}: the 'categories' list is empty")
    return sorted(found.items())


def _stated_size(entry: dict) -> tuple[int, int] | None:
    width, height = entry.get("width"), entry.get("height")
    stated = all(is_number(side, numbers.Integral) and side > 0 for side in (width, height))
    return (width, height) if stated else None


def read_images(path: Path, document: dict, images_dir: Path) -> dict[int, CocoImage]:
    """Every image entry by id, with its file found under ``images_dir`` (all missing files named at once)."""
    found, missing, ids, names = [], [], set(), set()
    for i, entry in enumerate(document["images"]):
        where = f"images[{i}]"
        image_id = _field(path, where, entry, "id", int)
        file_name = _field(path, where, entry, "file_name", str)
        relative = PurePosixPath(file_name.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise DataError(f"{path}: {where}: file_name {file_name!r} must be a path inside the images folder")
        if image_id in ids or file_name in names:
            raise DataError(f"{path}: {where}: image id {image_id} or file_name {file_name!r} appears twice")
        ids.add(image_id)
        names.add(file_name)
        source = images_dir / relative
        if not source.is_file():
            missing.append(str(source))
            continue
        found.append((image_id, CocoImage(AnnotatedImage(f"{path}: {where}", source, _stated_size(entry),
                                                         "width/height"), str(relative))))
    if missing:
        raise DataError(f"{path}: {len(missing)} of its images are not in {images_dir}: {', '.join(missing[:3])}"
                        + (" ..." if len(missing) > 3 else ""))
    return dict(found)


def _bbox(path: Path, where: str, entry: dict) -> list[float]:
    box = entry.get("bbox")
    if not isinstance(box, list) or len(box) != 4 or not all(
            is_number(v) and math.isfinite(v) for v in box):
        raise DataError(f"{path}: {where}: bbox must be [x, y, width, height], four finite numbers; got {box!r}")
    return [float(v) for v in box]


def add_annotations(path: Path, document: dict, images: dict[int, CocoImage], classes: dict[int, int],
                    counts: CocoCounts) -> None:
    """Each annotation's box into its image's boxes, checked (crowds counted and left out)."""
    annotations = document.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(f"{path}: 'annotations' must be a list")
    for i, entry in enumerate(annotations):
        where = f"annotations[{i}]" + (f" (id {entry['id']})" if isinstance(entry, dict) and "id" in entry else "")
        image_id = _field(path, where, entry, "image_id", int)
        category = _field(path, where, entry, "category_id", int)
        if image_id not in images:
            raise DataError(f"{path}: {where}: image_id {image_id} is not in 'images'")
        if category not in classes:
            raise DataError(f"{path}: {where}: category_id {category} is not in 'categories'")
        box = _bbox(path, where, entry)
        if entry.get("iscrowd", 0):
            counts.crowd += 1
            continue
        images[image_id].boxes.append((classes[category], *box))


def read_source(source: CocoSource, counts: CocoCounts) -> tuple[list[tuple[int, str]], list[CocoImage]]:
    """(categories, images with their boxes) of one COCO JSON, checked; no image is decoded yet."""
    document = read_json(source.annotations)
    found = categories(source.annotations, document)
    images = read_images(source.annotations, document, source.images)
    add_annotations(source.annotations, document, images, {cat_id: i for i, (cat_id, _) in enumerate(found)},
                    counts)
    counts.images += len(images)
    return found, sorted(images.values(), key=lambda image: image.file_name)


def _label_rows(images: list[CocoImage], counts: CocoCounts) -> None:
    """Each image's boxes as label rows, normalised by the size :func:`annotated_sizes` settles (every image
    decoded once: last, after everything cheaper to check)."""
    sizes, counts.scaled = annotated_sizes([image.annotated for image in images])
    for image, (width, height) in zip(images, sizes):
        for cls, x, y, w, h in image.boxes:
            row = darknet_row((x, y, x + w, y + h), width, height, counts)
            if row is not None:
                image.rows.append((cls, *row))
        counts.negatives += not image.rows


def _write_images(images: list[CocoImage], out: Path, folder: str, copy: bool) -> list[str]:
    """Place each image under ``out/images/<folder>`` with its label file; the list entries, relative to out."""
    check_distinct_labels((out / "images" / folder / image.file_name, image.file_name) for image in images)
    entries = []
    for image in images:
        target = out / "images" / folder / image.file_name
        place_image(image.annotated.image, target, copy)
        write_label_file(label_path(target), image.rows)
        entries.append(target.relative_to(out).as_posix())
    return entries


def convert_coco(train: CocoSource, out: str | Path, valid: CocoSource | None = None,
                 options: CocoOptions = CocoOptions()) -> tuple[Path, CocoCounts]:
    """Write the Darknet dataset under ``out``; returns its ``.data`` path and what was converted."""
    out, counts = Path(out), CocoCounts()
    names, train_images = read_source(train, counts)
    valid_names, valid_images = read_source(valid, counts) if valid is not None else (names, [])
    if valid_names != names:
        raise DataError(f"{valid.annotations}: its categories differ from those of {train.annotations}; both "
                        f"files need the same ids and names")
    _label_rows(train_images + valid_images, counts)
    if valid is None:
        entries = _write_images(train_images, out, "", options.copy)
        splits = seeded_split(entries, options.valid_fraction, options.seed)
    else:
        splits = {"train": _write_images(train_images, out, "train", options.copy),
                  "valid": _write_images(valid_images, out, "valid", options.copy)}
    return write_dataset_files(out, options.name, [name for _, name in names], splits), counts


def describe(data: Path, counts: CocoCounts) -> str:
    return (f"wrote {data}: {counts.images} images ({counts.negatives} without boxes), {counts.boxes} boxes; "
            f"left out {counts.crowd} crowd and {counts.degenerate} degenerate boxes; {counts.clipped} boxes "
            f"clipped to their image" + (f"; {counts.scaled} images resized since their annotation"
                                         if counts.scaled else ""))
