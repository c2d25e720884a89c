"""Writing a Darknet dataset folder, as the importers (VOC, COCO) lay it out.

``OUT/images/...`` holds the images (linked, or copied), ``OUT/labels/...`` the label file of each, at the
path :func:`utils.data.dataset.label_path` derives from the image's, and ``OUT`` the ``train.txt`` and
``valid.txt`` lists (paths relative to ``OUT``), ``NAME.names`` and ``NAME.data``. Every file is written
atomically.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from utils.fileio import atomic_write


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


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text.encode())


def write_label_file(path: Path, rows: Iterable[tuple[int, float, float, float, float]]) -> None:
    """One ``class cx cy w h`` line per box, six decimals; an empty file for an image without boxes."""
    lines = [f"{cls} " + " ".join(f"{v:.6f}" for v in box) for cls, *box in rows]
    write_text(path, "\n".join(lines) + "\n" if lines else "")


def seeded_split(entries: Sequence[str], valid_fraction: float, seed: int) -> dict[str, list[str]]:
    """A reproducible train/valid split (at least one validation image), each part sorted."""
    order = np.random.default_rng(seed).permutation(len(entries))
    n_valid = max(1, round(len(entries) * valid_fraction))
    return {"valid": sorted(entries[i] for i in order[:n_valid]),
            "train": sorted(entries[i] for i in order[n_valid:])}


def write_dataset_files(out: Path, name: str, names: Sequence[str], splits: dict[str, list[str]]) -> Path:
    """The ``train.txt``/``valid.txt`` lists, ``NAME.names`` and ``NAME.data`` under ``out``; returns the .data."""
    for split, entries in splits.items():
        write_text(out / f"{split}.txt", "\n".join(entries) + "\n")
    write_text(out / f"{name}.names", "\n".join(names) + "\n")
    data = out / f"{name}.data"
    write_text(data, f"classes={len(names)}\ntrain=train.txt\nvalid=valid.txt\nnames={name}.names\nbackup=backup/\n")
    return data
