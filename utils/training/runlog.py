"""What the main process records of a run beyond results.csv: the first training batches as pictures
(``train_batch0..2.jpg``), and TensorBoard event files when the ``tensorboard`` package is installed (it is
optional: without it the rest of the run is the same and no event file is written).

TensorBoard tags: per optimiser step ``step/box``, ``step/obj``, ``step/cls``, ``step/total`` (and
``step/distill`` when distilling) and ``step/lr``, at the step count; per epoch ``train/<term>``, ``lr``,
``metrics/mAP50`` and ``metrics/mAP`` at the epoch index (0-based, as results.csv's); images ``train_batch<i>``
and, after each evaluation, ``valid/<image name>`` (a few validation images with their detections at conf >=
``SHOWN_CONF``). A resumed run writes a new event file in the same folder and hides what the killed one had
logged past the resumed step (TensorBoard's ``purge_step``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.data.dataset import Batch
from utils.evaluation.evaluate import ImageRecord
from utils.inference.visualize import draw_detections
from utils.output_files import named_write_errors
from utils.training.loss import DISTILL_TERM, LOSS_TERMS

PLOTTED_BATCHES = 3  # train_batch0.jpg .. train_batch2.jpg
SHOWN_VALID_IMAGES = 4
SHOWN_CONF = 0.25
STEP_TERMS = (*LOSS_TERMS, DISTILL_TERM)


def open_tensorboard(run_dir: Path, purge_step: int | None = None):
    """A SummaryWriter into ``run_dir``, or None when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's module needs the tensorboard package, which is optional
        return None
    return SummaryWriter(str(run_dir), purge_step=purge_step)


@dataclass
class StepRecord:
    """One training batch as the loop saw it: ``epoch`` and ``index`` from 0, ``step`` the optimiser steps
    taken so far in the run."""

    epoch: int
    index: int
    batch: Batch
    losses: dict[str, float]
    step: int
    lr: float


class RunLog:
    """The main process's recorder; ``writer`` is a SummaryWriter or None."""

    def __init__(self, run_dir: Path, names: list[str], writer=None):
        self.run_dir, self.names, self.writer = run_dir, list(names), writer

    def step(self, record: StepRecord) -> None:
        """After a batch: its picture if it is one of the run's first batches, its losses to TensorBoard."""
        if record.epoch == 0 and record.index < PLOTTED_BATCHES and len(record.batch):
            self._plot_batch(record.batch, record.index)
        if self.writer is not None:
            for term in STEP_TERMS:
                if term in record.losses:
                    self.writer.add_scalar(f"step/{term}", record.losses[term], record.step)
            self.writer.add_scalar("step/lr", record.lr, record.step)

    def _plot_batch(self, batch: Batch, index: int) -> None:
        from utils.plots import plot_batch  # matplotlib only where a run writes plots
        path = self.run_dir / f"train_batch{index}.jpg"
        with named_write_errors(path, "training batch picture"):
            plot_batch(batch, self.names, path)
        if self.writer is not None:
            picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
            self.writer.add_image(f"train_batch{index}", picture[:, :, ::-1], 0, dataformats="HWC")

    def epoch(self, row: dict) -> None:
        """An epoch's results.csv row as TensorBoard scalars."""
        if self.writer is None:
            return
        epoch = int(row["epoch"])
        for term in STEP_TERMS:
            if term in row:
                self.writer.add_scalar(f"train/{term}", row[term], epoch)
        self.writer.add_scalar("lr", row["lr"], epoch)
        for key in ("mAP50", "mAP"):
            if row[key] != "":
                self.writer.add_scalar(f"metrics/{key}", row[key], epoch)
        self.writer.flush()

    def evaluation(self, records: list[ImageRecord], epoch: int) -> None:
        """A few validation images with their detections, as TensorBoard images."""
        if self.writer is None:
            return
        for record in records[:SHOWN_VALID_IMAGES]:
            image = cv2.imread(record.path, cv2.IMREAD_COLOR)
            if image is None:
                continue
            detections = np.asarray(record.detections).reshape(-1, 6)
            drawn = draw_detections(image, detections[detections[:, 4] >= SHOWN_CONF], self.names)
            self.writer.add_image(f"valid/{Path(record.path).name}", drawn[:, :, ::-1], epoch, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
