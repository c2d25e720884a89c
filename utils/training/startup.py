"""What a run checks and reports about its data before the first step: that it writes outside the dataset,
the dataset check of both lists
(utils/data/check.py: a stop when the labels were not found, unless --allow_all_negative), the labels' picture
(labels.png) and how well the cfg's anchors fit the training boxes (utils/data/anchors.py)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from utils.darknet.cfg import Cfg
from utils.data.anchors import AnchorError, check_anchor_fit
from utils.data.check import (TRAINING, VALIDATION, CheckOptions, check_dataset, format_dataset_summary,
                              warn_shared_images)
from utils.data.config import DataConfig
from utils.data.labels import label_path
from utils.errors import UserError
from utils.output_files import named_write_errors
from utils.training.options import TrainOptions
from utils.training.run_files import LABELS_PLOT
from utils.training.setup import Loaders

Log = Callable[[str], None]


def refuse_dataset_inside(run_dir: Path, data: DataConfig, loaders: Loaders) -> None:
    """Stop when the run folder holds the dataset's list files, images or labels, or lies in a folder the
    images are read from at any depth (--exist_ok or not): its checkpoints, plots and train_batch*.jpg would mix
    with the data, and a folder dataset would read the pictures as training images."""
    target = run_dir.resolve()
    folders = {image.parent for dataset in (loaders.train.dataset, loaders.valid_set) for image in dataset.images}
    folders |= {label_path(folder / "image.jpg").parent for folder in folders}  # where their labels are
    for path in (*data.listed_files(), *sorted(folders)):
        if path.resolve().is_relative_to(target):
            raise UserError(f"{path}, part of the dataset of {data.path}, is at or inside the run folder {run_dir}: "
                            f"the run's checkpoints and plots would mix with the data; choose another --output")
    for source in data.sources():
        if source.is_dir() and target.is_relative_to(source.resolve()):
            raise UserError(f"the run folder {run_dir} is inside {source}, which the dataset of {data.path} reads "
                            f"its images from (at any depth): its plots would be read as training images; choose "
                            f"another --output")


def check_data(loaders: Loaders, data: DataConfig, opt: TrainOptions, log: Log) -> None:
    """Check the training and the validation list (every process: each stops alike), and log both summaries."""
    options = CheckOptions(img_size=opt.img_size, allow_negatives=opt.allow_all_negative)
    for dataset, use in ((loaders.train.dataset, TRAINING), (loaders.valid_set, VALIDATION)):
        log(format_dataset_summary(check_dataset(dataset, data.names, replace(options, use=use))))
    warn_shared_images(loaders.train.dataset, loaders.valid_set)


def plot_training_labels(loaders: Loaders, names: list[str], run_dir: Path) -> None:
    from utils.plots import plot_labels  # matplotlib only where a run writes plots
    path = run_dir / LABELS_PLOT
    with named_write_errors(path, "labels plot"):
        plot_labels(loaders.train.dataset.labels, names, path)


def report_anchor_fit(cfg: Cfg, loaders: Loaders, opt: TrainOptions, log: Log) -> None:
    """The fit of the run's anchors (the cfg as trained) to the training boxes; a poor fit is a warning with
    the calc_anchors.py command that computes better ones."""
    try:
        fit = check_anchor_fit(cfg, loaders.train.dataset.labels, opt.img_size)
    except AnchorError as err:  # e.g. a set of negatives only (--allow_all_negative): nothing to fit
        log(f"anchor fit: not measured ({err})")
        return
    log(fit.summary())
    if fit.poor:
        log(f"warning: {fit.advice(opt.data_config, opt.model_def)}")
