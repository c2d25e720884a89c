"""What a run writes into its folder: ``results.csv`` and ``results.png`` (a row per epoch), ``bn_gammas.png``
with --sr, and the checkpoints ``last.pth``/``last.weights`` and ``best.pth``/``best.weights``. Every file
is written under a temporary name and renamed, so a crash never leaves half a file."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from utils.evaluation.metrics import EvalResult
from utils.fileio import atomic_write
from utils.training.epoch import EpochStats
from utils.training.state import TrainState

CSV_FIELDS = ["epoch", "lr", "box", "obj", "cls", "total", "mAP50", "mAP", "img_per_s", "data_wait", "seconds"]
NOT_EVALUATED = ""  # the mAP cells of an epoch without evaluation


def results_row(epoch: int, lr: float, stats: EpochStats, world_size: int) -> dict:
    """An epoch's results.csv row, its mAP cells empty until it is evaluated."""
    seconds = stats.seconds
    return {"epoch": epoch, "lr": lr, **{key: stats.mean(key) for key in stats.sums},
            "mAP50": NOT_EVALUATED, "mAP": NOT_EVALUATED, "img_per_s": stats.images * world_size / seconds,
            "data_wait": stats.wait / seconds, "seconds": seconds}


def add_evaluation(row: dict, result: EvalResult) -> None:
    row["mAP50"], row["mAP"] = result.map50, result.map


class RunOutputs:
    """The files of one run directory, rewritten whole after every epoch."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.rows: list[dict] = []
        self.gamma_history: list[tuple[int, np.ndarray]] = []

    def read_rows(self, epochs: int) -> None:
        """Take back the rows of the first ``epochs`` epochs from results.csv (resuming; later rows belong
        to an epoch that was cut short and is trained again)."""
        path = self.run_dir / "results.csv"
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = [{key: float(value) if value not in ("", None) else NOT_EVALUATED for key, value in row.items()}
                    for row in csv.DictReader(f)]
        self.rows = rows[:epochs]

    def record_gammas(self, epoch: int, gammas: np.ndarray) -> None:
        self.gamma_history.append((epoch, gammas))

    def add_row(self, row: dict) -> None:
        """Append an epoch's row and rewrite results.csv, results.png and (with gammas) bn_gammas.png."""
        self.rows.append(row)
        text = io.StringIO()
        writer = csv.DictWriter(text, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(self.rows)
        with atomic_write(self.run_dir / "results.csv") as f:
            f.write(text.getvalue().encode())
        from utils.plots import plot_bn_gammas, plot_results  # matplotlib only where a run writes plots
        plot_results(self.rows, self.run_dir / "results.png")
        if self.gamma_history:
            plot_bn_gammas(self.gamma_history, self.run_dir / "bn_gammas.png")

    def save_checkpoints(self, state: TrainState, best: bool) -> None:
        """last.pth and last.weights; with ``best`` also best.pth and best.weights. The .weights files hold
        what is evaluated (the EMA weights when there are any)."""
        exported = state.final_model
        state.save(self.run_dir / "last.pth")
        exported.save_darknet_weights(self.run_dir / "last.weights")
        if best:
            state.save(self.run_dir / "best.pth")
            exported.save_darknet_weights(self.run_dir / "best.weights")
