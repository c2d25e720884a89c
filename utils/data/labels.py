"""Darknet label files: where an image's labels live, and reading them with every bad line named.

Each image's labels live in the parallel ``labels/`` tree (the last ``images`` or ``JPEGImages`` folder of
the path becomes ``labels``, the extension ``.txt``), one ``class cx cy w h`` line per box, normalised to
[0, 1]. An image without a label file is a negative. A malformed line stops the run at start-up with
``file:line`` and what is wrong (every label file is read once, up front, before any training).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.darknet.cfg import number
from utils.data.config import DataError
from utils.fileio import read_text


COORD_TOLERANCE = 1e-3  # converters often write 1.0000001; values this close to [0, 1] are clipped


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
