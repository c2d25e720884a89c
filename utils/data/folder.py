"""A folder of images whose Darknet (YOLO) label files are written already made into a dataset: seeded train
and valid lists and a ``.data`` naming the class names file, with no image or label copied or moved.

Such folders come from labelling tools' YOLO exports (labelImg and CVAT write each ``.txt`` beside its image,
with ``classes.txt`` or ``obj.names``) or from an ``images/`` folder beside a ``labels/`` one. The labels are
found by Darknet's rule (:func:`utils.data.labels.label_path`) and checked as training checks them before
anything is written, so a folder whose labels are not where Darknet looks is refused with the paths it tried.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from utils.data.check import CheckOptions, DatasetSummary, check_dataset
from utils.data.config import DataError
from utils.data.dataset import DetectionDataset
from utils.data.layout import VALID_FRACTION, list_entry, seeded_split, write_dataset_files
from utils.data.names import read_class_names

LIST_FILES = ("train.txt", "valid.txt")  # what a split writes besides NAME.data


@dataclass(frozen=True)
class FolderSplit:
    valid_fraction: float = VALID_FRACTION
    seed: int = 0


@dataclass(frozen=True)
class LabelledFolder:
    """The images under a folder (any depth), their labels as read, and the class names they are checked against."""

    dataset: DetectionDataset
    names: list[str]
    names_file: Path

    @classmethod
    def read(cls, images: Path, names_file: Path) -> LabelledFolder:
        names = read_class_names(names_file, DataError)
        if not names:
            raise DataError(f"{names_file}: the file names no class")
        return cls(DetectionDataset(images, len(names)), names, names_file)

    def files(self) -> list[Path]:
        """What the dataset's files are made of, which none of them may replace."""
        return [self.names_file, *self.dataset.files()]


@dataclass(frozen=True)
class SplitDataset:
    data: Path  # the .data written
    summary: DatasetSummary  # the dataset check of every image of the folder
    sizes: dict[str, int]  # images per list


def split_folder(folder: LabelledFolder, out: Path, name: str, split: FolderSplit = FolderSplit()) -> SplitDataset:
    """Write ``out``/train.txt, valid.txt and NAME.data for ``folder``; the dataset check runs first, and stops
    (DataError) before anything is written when the labels were not found."""
    summary = check_dataset(folder.dataset, folder.names, CheckOptions())
    entries = [list_entry(image, out) for image in folder.dataset.images]
    splits = seeded_split(entries, split.valid_fraction, split.seed)
    data = write_dataset_files(out, name, folder.names, splits, names_file=list_entry(folder.names_file, out))
    return SplitDataset(data, summary, {part: len(listed) for part, listed in splits.items()})
