"""Pascal VOC XML annotations -> a Darknet dataset (labels, seeded train/valid lists, .names, .data).

Boxes convert as Darknet's own voc_label.py does: VOC pixel coordinates are 1-based, so the centre is
``(xmin + xmax) / 2 - 1``; objects marked ``difficult`` are left out unless asked for.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.data.config import IMAGE_SUFFIXES, DataError
from utils.data.layout import place_image, seeded_split, write_dataset_files, write_label_file


@dataclass
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax (VOC pixels)
    difficult: bool


def read_annotation(path: Path) -> tuple[str, int, int, list[VocObject]]:
    """(image file name, width, height, objects); width/height are 0 when the XML lacks them."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(f"{path}: not valid XML ({err})") from err
    filename = root.findtext("filename", default="").strip()
    width = int(float(root.findtext("size/width", default="0") or 0))
    height = int(float(root.findtext("size/height", default="0") or 0))
    objects = []
    for number, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        values = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
        if not name or None in values:
            raise DataError(f"{path}: object {number} lacks a name or a complete bndbox")
        try:
            box = tuple(float(v) for v in values)
        except ValueError:
            raise DataError(f"{path}: object {number} ({name}) has a non-numeric bndbox: {values}") from None
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DataError(f"{path}: object {number} ({name}) has an empty bndbox {box}")
        objects.append(VocObject(name, box, (obj.findtext("difficult") or "0").strip() == "1"))
    return filename, width, height, objects


def darknet_box(box, width: int, height: int) -> tuple[float, float, float, float]:
    xmin, ymin, xmax, ymax = box
    cx, cy = ((xmin + xmax) / 2 - 1) / width, ((ymin + ymax) / 2 - 1) / height
    w, h = (xmax - xmin) / width, (ymax - ymin) / height
    return tuple(float(np.clip(v, 0.0, 1.0)) for v in (cx, cy, w, h))


def _find_image(images_dir: Path, xml_path: Path, filename: str) -> Path:
    candidates = [images_dir / filename] if filename else []
    candidates += [images_dir / (xml_path.stem + suffix) for suffix in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(f"{xml_path}: no image {filename or xml_path.stem + '.*'} in {images_dir}")


@dataclass(frozen=True)
class VocOptions:
    classes: tuple[str, ...] | None = None  # class names in order; default: every name found, sorted
    valid_fraction: float = 0.2
    seed: int = 0  # of the train/valid split
    include_difficult: bool = False
    copy: bool = False  # copy the images into the dataset instead of linking them


def _read_annotations(annotations_dir: Path, images_dir: Path, include_difficult: bool) -> list[tuple]:
    """(image, width, height, objects) per .xml file, difficult objects left out unless asked for."""
    xml_files = sorted(annotations_dir.glob("*.xml"))
    if not xml_files:
        raise DataError(f"{annotations_dir}: no .xml annotations found")
    records = []
    for xml_path in xml_files:
        filename, width, height, objects = read_annotation(xml_path)
        image = _find_image(images_dir, xml_path, filename)
        if not width or not height:
            pixels = cv2.imread(str(image))
            if pixels is None:
                raise DataError(f"{xml_path}: size missing and {image} is unreadable")
            height, width = pixels.shape[:2]
        records.append((image, width, height, [o for o in objects if include_difficult or not o.difficult]))
    return records


def convert_voc(annotations_dir: str | Path, images_dir: str | Path, out: str | Path, name: str = "voc",
                options: VocOptions = VocOptions()) -> Path:
    """Write the Darknet dataset under ``out`` and return its ``.data`` path."""
    annotations_dir, out = Path(annotations_dir), Path(out)
    records = _read_annotations(annotations_dir, Path(images_dir), options.include_difficult)
    names = list(options.classes or sorted({o.name for *_, objects in records for o in objects}))
    if not names:
        raise DataError(f"{annotations_dir}: no objects found")
    index = {n: i for i, n in enumerate(names)}
    listed = []
    for image, width, height, objects in records:
        place_image(image, out / "images" / image.name, options.copy)
        write_label_file(out / "labels" / (image.stem + ".txt"),
                         [(index[o.name], *darknet_box(o.box, width, height)) for o in objects if o.name in index])
        listed.append(f"images/{image.name}")
    return write_dataset_files(out, name, names, seeded_split(listed, options.valid_fraction, options.seed))
