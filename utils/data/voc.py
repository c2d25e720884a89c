"""Pascal VOC XML annotations -> a Darknet dataset (labels, seeded train/valid lists, .names, .data).

Boxes convert as Darknet's own voc_label.py does: VOC pixel coordinates are 1-based, so the centre is
``(xmin + xmax) / 2 - 1``; objects marked ``difficult`` are left out unless asked for.
"""
from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from utils.data.config import IMAGE_SUFFIXES, DataError, DataWarning
from utils.data.layout import (VALID_FRACTION, AnnotatedImage, BoxCounts, annotated_sizes, check_distinct_labels,
                               darknet_row, place_image, seeded_split, write_dataset_files, write_label_file)


@dataclass
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax (VOC pixels)
    difficult: bool


def _image_side(path: Path, root: ET.Element, key: str) -> int:
    """The annotation's image width or height in pixels; 0 when it lacks one (the image then says)."""
    text = (root.findtext(key) or "").strip()
    try:
        value = float(text or 0)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise DataError(f"{path}: {key} must be a number of pixels, got {text!r}")
    return int(value)


def read_annotation(path: Path) -> tuple[str, int, int, list[VocObject]]:
    """(image file name, width, height, objects); width/height are 0 when the XML lacks them."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(f"{path}: not valid XML ({err})") from err
    filename = root.findtext("filename", default="").strip()
    width, height = (_image_side(path, root, f"size/{key}") for key in ("width", "height"))
    objects = []
    for number, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        values = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
        if not name or None in values:
            raise DataError(f"{path}: object {number} lacks a name or a complete bndbox")
        try:
            box = tuple(float(v) for v in values)
        except ValueError:
            box = (math.nan,)
        if not all(map(math.isfinite, box)):
            raise DataError(f"{path}: object {number} ({name}) has a non-numeric bndbox: {values}")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DataError(f"{path}: object {number} ({name}) has an empty bndbox {box}")
        objects.append(VocObject(name, box, (obj.findtext("difficult") or "0").strip() == "1"))
    return filename, width, height, objects


def darknet_row_of(box: tuple[float, float, float, float], width: int, height: int,
                   counts: BoxCounts) -> tuple[float, float, float, float] | None:
    """A VOC box (1-based pixels, so the centre is ``(xmin + xmax) / 2 - 1``) as a label row, clipped to its
    image; None when nothing of it is inside."""
    xmin, ymin, xmax, ymax = box
    return darknet_row((xmin - 1, ymin - 1, xmax - 1, ymax - 1), width, height, counts)


def _find_image(images_dir: Path, xml_path: Path, filename: str) -> Path:
    candidates = [images_dir / filename] if filename else []
    candidates += [images_dir / (xml_path.stem + suffix) for suffix in IMAGE_SUFFIXES]
    candidates += [images_dir / (xml_path.stem + suffix.upper()) for suffix in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    broken = next((c for c in candidates if c.is_symlink() and not c.exists()), None)
    if broken is not None:
        raise DataError(f"{xml_path}: its image {broken} is a link to {os.readlink(broken)}, which does not exist")
    raise DataError(f"{xml_path}: no image {filename or xml_path.stem + '.*'} in {images_dir}")


@dataclass(frozen=True)
class VocOptions:
    classes: tuple[str, ...] | None = None  # class names in order; default: every name found, sorted
    valid_fraction: float = VALID_FRACTION
    seed: int = 0  # of the train/valid split
    include_difficult: bool = False
    copy: bool = False  # copy the images into the dataset instead of linking them


@dataclass
class VocCounts(BoxCounts):
    images: int = 0
    negatives: int = 0  # images left without a box
    difficult: int = 0  # objects marked difficult, left out
    unlisted: int = 0  # objects of classes not in --classes, left out
    scaled: int = 0  # images resized since they were annotated, in proportion


@dataclass
class VocRecord:
    xml: Path
    image: Path
    width: int
    height: int
    objects: list[VocObject]


def _read_annotations(annotations_dir: Path, images_dir: Path) -> list[VocRecord]:
    """One record per .xml file; two describing the same image are refused."""
    if not annotations_dir.is_dir():
        raise DataError(f"{annotations_dir}: no such folder of annotations")
    xml_files = sorted(path for path in annotations_dir.iterdir() if path.suffix.lower() == ".xml" and path.is_file())
    if not xml_files:
        raise DataError(f"{annotations_dir}: no .xml annotations found")
    records, described = [], {}
    for xml_path in xml_files:
        filename, width, height, objects = read_annotation(xml_path)
        image = _find_image(images_dir, xml_path, filename)
        if image in described:
            raise DataError(f"{xml_path}: describes {image}, as {described[image]} does; keep one annotation "
                            f"per image")
        described[image] = xml_path
        records.append(VocRecord(xml_path, image, width, height, objects))
    return records


def _check_sizes(records: list[VocRecord], counts: VocCounts) -> None:
    """Each record's width and height set to those its boxes are normalised by (:func:`annotated_sizes`)."""
    entries = [AnnotatedImage(str(record.xml), record.image,
                              (record.width, record.height) if record.width and record.height else None, "<size>")
               for record in records]
    sizes, counts.scaled = annotated_sizes(entries)
    for record, (width, height) in zip(records, sizes):
        record.width, record.height = width, height


def _label_rows(record: VocRecord, index: dict[str, int], include_difficult: bool, counts: VocCounts) -> list:
    rows = []
    for obj in record.objects:
        if obj.difficult and not include_difficult:
            counts.difficult += 1
        elif obj.name not in index:
            counts.unlisted += 1
        else:
            row = darknet_row_of(obj.box, record.width, record.height, counts)
            if row is not None:
                rows.append((index[obj.name], *row))
    return rows


def _check_listed(classes: tuple[str, ...], found: Counter, annotations_dir: Path) -> None:
    """--classes: each once; none of them in the annotations is an error (a typo would give a dataset of
    negatives), some of them a warning; both name the classes the annotations hold."""
    repeated = sorted({n for n in classes if classes.count(n) > 1})
    if repeated:
        raise DataError(f"--classes names {', '.join(repeated)} more than once; each class once, in order")
    absent = [name for name in classes if name not in found]
    if not absent:
        return
    held = ", ".join(f"{name} ({count})" for name, count in sorted(found.items())) or "none"
    if len(absent) == len(classes):
        raise DataError(f"--classes {' '.join(classes)}: no object of these classes in {annotations_dir} (names "
                        f"are case-sensitive); the objects there are of: {held}")
    warnings.warn(f"--classes: no object of {', '.join(absent)} in {annotations_dir}, so no box of "
                  f"{'it' if len(absent) == 1 else 'them'} to learn from; the objects there are of: {held}",
                  DataWarning, stacklevel=3)


def _class_names(records: list[VocRecord], options: VocOptions, annotations_dir: Path) -> list[str]:
    found = Counter(o.name for record in records for o in record.objects
                    if options.include_difficult or not o.difficult)
    if options.classes:
        _check_listed(options.classes, found, annotations_dir)
        return list(options.classes)
    if not found:
        raise DataError(f"{annotations_dir}: no objects found")
    return sorted(found)


def convert_voc(annotations_dir: str | Path, images_dir: str | Path, out: str | Path, name: str = "voc",
                options: VocOptions = VocOptions()) -> tuple[Path, VocCounts]:
    """Write the Darknet dataset under ``out``; its ``.data`` path and what became of the objects."""
    annotations_dir, out = Path(annotations_dir), Path(out)
    records = _read_annotations(annotations_dir, Path(images_dir))
    names = _class_names(records, options, annotations_dir)
    check_distinct_labels((out / "images" / record.image.name, str(record.xml)) for record in records)
    index, counts, listed = {n: i for i, n in enumerate(names)}, VocCounts(images=len(records)), []
    _check_sizes(records, counts)
    for record in records:
        rows = _label_rows(record, index, options.include_difficult, counts)
        counts.negatives += not rows
        place_image(record.image, out / "images" / record.image.name, options.copy)
        write_label_file(out / "labels" / (record.image.stem + ".txt"), rows)
        listed.append(f"images/{record.image.name}")
    splits = seeded_split(listed, options.valid_fraction, options.seed)
    return write_dataset_files(out, name, names, splits), counts


def describe(data: Path, counts: VocCounts) -> str:
    return (f"wrote {data}: {counts.images} images ({counts.negatives} without boxes), {counts.boxes} boxes; "
            f"left out {counts.difficult} difficult, {counts.unlisted} of classes not in --classes and "
            f"{counts.degenerate} outside their image; {counts.clipped} boxes clipped to their image"
            + (f"; {counts.scaled} images resized since their annotation" if counts.scaled else ""))
