"""A dataset checked before training: what its labels hold, and a stop when its labels were never found.

The commonest reason a custom dataset trains to mAP 0 is that no label file is ever found: Darknet looks for
an image's labels at its path with the last ``images/`` (or ``JPEGImages/``) folder replaced by ``labels/``
and the extension by ``.txt``, and an image without a label file is silently a negative. So when *no*
listed image has a label file, or more than half of them (``MAX_UNLABELLED``) have none, the check stops
with the label paths it looked for, unless negatives are allowed (training's ``--allow_all_negative``).
An *empty* label file is an explicit negative, but a list without a single box stops the check too.
``python -m utils.data.check --data_config D`` prints the check of both lists.

Box sizes in pixels are the labels' ``w`` and ``h`` times the training size (Darknet's convention, as for
anchors); boxes under ``TINY_PIXELS`` (4) in width or height are counted, as a stride-8 head can hardly
place them.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from terminaltables import AsciiTable

from utils.cli import IMAGE_SIZE, ArgumentParser, png_file, run_main
from utils.darknet.cfg import DEFAULT_IMG_SIZE
from utils.data.config import DataError, DataWarning, describe_source, parse_data_config
from utils.data.dataset import DetectionDataset
from utils.data.labels import label_path
from utils.output_files import named_write_errors, refuse_existing, refuse_replacing_inputs
from utils.plots import plot_labels

ALLOW_NEGATIVES_FLAG = "--allow_all_negative"
MAX_UNLABELLED = 0.5
TINY_PIXELS = 4.0
SHOWN = 3  # paths quoted in a message


@dataclass(frozen=True)
class LabelUse:
    """What missing label files do to one use of a dataset, and what the user can do about it."""

    consequence: str
    way_past: str = ""  # the other remedy than writing the labels, where this use has one


TRAINING = LabelUse("so they would train as negatives (nothing to detect: mAP stays near 0)",
                    f", or pass {ALLOW_NEGATIVES_FLAG} if these images really hold no objects")
EVALUATION = LabelUse("so every detection on them would count as a false positive (mAP near 0)")
VALIDATION = LabelUse(EVALUATION.consequence, TRAINING.way_past)  # training's own evaluation list
ANCHORS = LabelUse("so their boxes cannot be counted")


@dataclass(frozen=True)
class CheckOptions:
    img_size: int = DEFAULT_IMG_SIZE
    allow_negatives: bool = False
    tiny_pixels: float = TINY_PIXELS
    max_unlabelled: float = MAX_UNLABELLED  # fraction of images without a label file that stops the check
    use: LabelUse = TRAINING  # what the list is for, which the stop's message says


@dataclass
class DatasetSummary:
    source: str  # the list file, folder or sources the images came from
    names: list[str]
    images: list[Path]
    missing_images: list[Path]  # listed but not a file on disk (absent, or a folder)
    without_label_file: list[Path]  # on disk, but no label file where Darknet's rule looks
    empty_label_files: int  # label file present and empty: explicit negatives
    boxes_per_class: np.ndarray  # (classes,)
    images_per_class: np.ndarray  # (classes,) images holding at least one box of the class
    tiny_per_class: np.ndarray  # (classes,) boxes under tiny_pixels wide or high at img_size
    img_size: int
    tiny_pixels: float

    @property
    def present(self) -> int:
        return len(self.images) - len(self.missing_images)

    @property
    def negatives(self) -> int:
        return len(self.without_label_file) + self.empty_label_files


def summarize_dataset(images: Sequence[Path], labels: Sequence[np.ndarray], names: Sequence[str], source: str,
                      options: CheckOptions = CheckOptions()) -> DatasetSummary:
    """Counts over ``images`` and their ``(n, 5)`` label arrays (as ``DetectionDataset`` reads them)."""
    classes = len(names)
    boxes, images_with, tiny = np.zeros(classes, int), np.zeros(classes, int), np.zeros(classes, int)
    missing, unlabelled, empty = [], [], 0
    for image, rows in zip(images, labels):
        if not image.is_file():
            missing.append(image)
            continue
        if not label_path(image).is_file():
            unlabelled.append(image)
            continue
        if not len(rows):
            empty += 1
            continue
        cls = rows[:, 0].astype(int)
        boxes += np.bincount(cls, minlength=classes)
        images_with += np.bincount(np.unique(cls), minlength=classes)
        small = rows[:, 3:5].min(1) * options.img_size < options.tiny_pixels
        tiny += np.bincount(cls[small], minlength=classes)
    return DatasetSummary(source, list(names), list(images), missing, unlabelled, empty, boxes, images_with, tiny,
                          options.img_size, options.tiny_pixels)


def _looked_for(images: Sequence[Path]) -> str:
    shown = "; ".join(f"{label_path(image)} (for {image})" for image in images[:SHOWN])
    more = f"; and {len(images) - SHOWN} more" if len(images) > SHOWN else ""
    return f"label files looked for: {shown}{more}"


def labels_problem(summary: DatasetSummary, max_unlabelled: float = MAX_UNLABELLED,
                   use: LabelUse = TRAINING) -> str | None:
    """Why ``use`` of this data would go wrong (no label files found, or too few), or None."""
    if not summary.present:
        shown = ", ".join(map(str, summary.missing_images[:SHOWN]))
        return f"{summary.source}: none of its {len(summary.images)} listed images exists (first: {shown})"
    unlabelled = len(summary.without_label_file)
    if unlabelled <= max_unlabelled * summary.present:
        return _no_box_problem(summary, use)
    what = (f"no label file was found for any of its {summary.present} images" if unlabelled == summary.present
            else f"{unlabelled} of its {summary.present} images ({100 * unlabelled / summary.present:.0f} %) have "
                 f"no label file")
    return (f"{summary.source}: {what}, {use.consequence}; {_looked_for(summary.without_label_file)}. Darknet "
            f"finds an image's labels by replacing the last 'images' (or 'JPEGImages') folder of its path with "
            f"'labels' and the extension with '.txt' (data/set/images/a.jpg -> data/set/labels/a.txt); an image path "
            f"without such a folder has its label file beside the image. Put the label files there{use.way_past}.")


def _no_box_problem(summary: DatasetSummary, use: LabelUse) -> str | None:
    """Label files found, but not one box in any of them (as a converter whose class list matched nothing
    writes them), or None."""
    if summary.boxes_per_class.sum():
        return None
    without = f", {len(summary.without_label_file)} without one" if summary.without_label_file else ""
    return (f"{summary.source}: not one box in its {summary.present} images ({summary.empty_label_files} empty "
            f"label files{without}), {use.consequence}. Write the boxes into the label files{use.way_past}.")


def require_labels(summary: DatasetSummary, options: CheckOptions = CheckOptions()) -> None:
    """Raise the :func:`labels_problem` as a DataError, unless negatives are allowed (missing images never are)."""
    problem = labels_problem(summary, options.max_unlabelled, options.use)
    if problem and (not summary.present or not options.allow_negatives):
        raise DataError(problem)


def check_dataset(dataset: DetectionDataset, names: Sequence[str], options: CheckOptions = CheckOptions()
                  ) -> DatasetSummary:
    """Summarize a dataset's images and labels, and stop (DataError) when its labels were not found."""
    summary = summarize_dataset(dataset.images, dataset.labels, names, describe_source(dataset.list_path), options)
    require_labels(summary, options)
    return summary


def check_evaluation_labels(dataset: DetectionDataset, names: Sequence[str]) -> None:
    """Stop an evaluation of a list whose label files were never found (it would score 0 however good the
    model); warn when more than MAX_UNLABELLED of its images have none, as they may be negatives."""
    summary = summarize_dataset(dataset.images, dataset.labels, names, describe_source(dataset.list_path))
    problem = labels_problem(summary, use=EVALUATION)
    if problem and (not summary.present or len(summary.without_label_file) == summary.present):
        raise DataError(problem)
    if problem:
        warnings.warn(problem, DataWarning)


def warn_shared_images(train: DetectionDataset, valid: DetectionDataset) -> None:
    """Validation images that are training images too (by any name or link) make the mAP measure memory."""
    training = {os.path.realpath(path) for path in train.images}
    shared = [path for path in valid.images if os.path.realpath(path) in training]
    if shared:
        warnings.warn(f"{len(shared)} of the {len(valid.images)} validation images are training images too (e.g. "
                      f"{shared[0]}), so the mAP overstates how well the model detects in images it has not seen; "
                      f"keep the lists apart (the importers' --valid_fraction splits one set)", DataWarning,
                      stacklevel=2)


def format_dataset_summary(summary: DatasetSummary) -> str:
    """A per-class table and the totals, for the log."""
    tiny = f"< {summary.tiny_pixels:g} px"
    rows = [["class", "images", "boxes", tiny]]
    for name, images, boxes, small in zip(summary.names, summary.images_per_class, summary.boxes_per_class,
                                          summary.tiny_per_class):
        rows.append([name, int(images), int(boxes), int(small)])
    rows.append(["all", summary.present - summary.negatives, int(summary.boxes_per_class.sum()),
                 int(summary.tiny_per_class.sum())])
    return "\n".join([f"{summary.source}:", AsciiTable(rows).table, *dataset_notes(summary)])


def dataset_notes(summary: DatasetSummary) -> list[str]:
    """The totals as sentences, and what may need the user's attention."""
    labelled = summary.present - summary.negatives
    notes = [f"{len(summary.images)} images listed: {labelled} with boxes, {summary.negatives} negatives "
             f"({len(summary.without_label_file)} without a label file, {summary.empty_label_files} with an empty "
             f"one); box sizes counted at {summary.img_size} px"]
    if summary.missing_images:
        notes.append(f"{len(summary.missing_images)} listed images are not files on disk (missing, or folders) and "
                     f"will be skipped: "
                     + ", ".join(map(str, summary.missing_images[:SHOWN])))
    if summary.without_label_file:
        notes.append(f"{len(summary.without_label_file)} images have no label file and train as negatives; "
                     + _looked_for(summary.without_label_file))
    if summary.tiny_per_class.sum():
        notes.append(f"{int(summary.tiny_per_class.sum())} boxes are under {summary.tiny_pixels:g} px wide or high "
                     f"at {summary.img_size} px; a larger --img_size may find them")
    unused = [name for name, count in zip(summary.names, summary.boxes_per_class) if not count]
    if unused:
        notes.append(f"classes without any box: {', '.join(unused)}")
    return notes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description="Check a dataset's images and labels before training.")
    parser.add_argument("--data_config", required=True, help=".data or .yaml")
    parser.add_argument("--img_size", type=IMAGE_SIZE, default=DEFAULT_IMG_SIZE,
                        help="training size the box sizes are counted at")
    parser.add_argument(ALLOW_NEGATIVES_FLAG, dest="allow_negatives", action="store_true",
                        help="do not stop when most images have no label file, or none has a box")
    parser.add_argument("--labels_png", type=png_file,
                        help="also draw the train labels (boxes per class, centres, sizes) here")
    parser.add_argument("--exist_ok", action="store_true", help="replace an existing --labels_png")
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> int:
    if args.labels_png:
        refuse_existing([args.labels_png], "--labels_png", args.exist_ok)
    options = CheckOptions(args.img_size, args.allow_negatives)
    config = parse_data_config(args.data_config)
    datasets = [DetectionDataset(source, config.classes) for source in (config.train, config.valid)]
    if args.labels_png:  # even with --exist_ok: never over the config, a list, an image or a label file
        refuse_replacing_inputs([args.labels_png], [*config.files(), *(f for d in datasets for f in d.files())],
                                "--labels_png")
    for dataset, use in zip(datasets, (TRAINING, VALIDATION)):
        print(format_dataset_summary(check_dataset(dataset, config.names, replace(options, use=use))))
    warn_shared_images(*datasets)
    if args.labels_png:
        with named_write_errors(args.labels_png, "labels plot"):
            plot_labels(datasets[0].labels, config.names, Path(args.labels_png))
        print(f"wrote {args.labels_png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.data.check --data_config D [--img_size 416] [--labels_png PATH]``: both lists' tables."""
    args = parse_args(argv)
    return run_main(lambda: check(args))


if __name__ == "__main__":
    sys.exit(main())
