"""What a run writes into its folder (names in utils/training/run_files.py): ``results.csv`` and ``results.png``
(a row per epoch), ``bn_gammas.png`` and ``bn_gammas.npz`` (the |gamma| values it plots, for --resume) with --sr,
and the checkpoints ``last.pth``/``last.weights`` and ``best.pth``/``best.weights``. Every file is written under
a temporary name and renamed, so a crash never leaves half a file; a file that cannot be written (a full disk)
stops the run with one line naming it."""
from __future__ import annotations

import csv
import io
import shutil
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from utils.darknet.checkpoint import exported_state, load_checkpoint, model_from_file, save_weights
from utils.darknet.weights import WeightsFileError, WeightsHeader
from utils.errors import InputWarning, UserError
from utils.evaluation.metrics import EvalResult
from utils.fileio import atomic_write
from utils.output_files import named_write_errors
from utils.training.epoch import EpochStats
from utils.training.loss import DISTILL_TERM, LOSS_TERMS
from utils.training.run_files import (BEST_CHECKPOINT, BEST_WEIGHTS, CHECKPOINT_PAIRS, GAMMAS_FILE, GAMMAS_PLOT,
                                      LAST_CHECKPOINT, LAST_WEIGHTS, NOT_EVALUATED, RESULTS_PLOT, RESULTS_TABLE)
from utils.training.state import TrainState


CSV_FIELDS = ["epoch", "lr", *LOSS_TERMS, "mAP50", "mAP", "img_per_s", "data_wait", "seconds"]
OPTIONAL_FIELDS = [DISTILL_TERM]  # columns of runs that have them (a teacher), after the others


def results_row(epoch: int, lr: float, stats: EpochStats, world_size: int) -> dict:
    """An epoch's results.csv row, its mAP cells empty until it is evaluated."""
    seconds = stats.seconds
    return {"epoch": epoch, "lr": lr, **{key: stats.mean(key) for key in stats.sums},
            "mAP50": NOT_EVALUATED, "mAP": NOT_EVALUATED, "img_per_s": stats.images * world_size / seconds,
            "data_wait": stats.wait / seconds, "seconds": seconds}


def add_evaluation(row: dict, result: EvalResult) -> None:
    row["mAP50"], row["mAP"] = result.map50, result.map


def evaluations_since_best(rows: list[dict]) -> tuple[int, dict | None]:
    """(how many evaluations came after the best mAP@0.5, the best one's row): the first row to reach the best
    value is the best, as only a strictly higher mAP@0.5 replaces best.pth. (0, None) before any evaluation."""
    evaluated = [row for row in rows if row["mAP50"] != NOT_EVALUATED]
    if not evaluated:
        return 0, None
    best = max(range(len(evaluated)), key=lambda i: (evaluated[i]["mAP50"], -i))
    return len(evaluated) - 1 - best, evaluated[best]


class RunOutputs:
    """The files of one run directory, rewritten whole after every epoch."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.rows: list[dict] = []
        self.gamma_history: list[tuple[int, np.ndarray]] = []

    def take_back(self, source: Path, epochs: int) -> None:
        """Resuming the run in ``source`` (this folder, or the one a run continued elsewhere came from): take
        back its results.csv rows and recorded gammas of the first ``epochs`` epochs (later ones belong to an
        epoch that was cut short and is trained again)."""
        with _unreadable_history(source / RESULTS_TABLE, "results table"):
            self.rows = _read_rows(source / RESULTS_TABLE)[:epochs]
        if len(self.rows) < epochs:
            held = "is missing" if not (source / RESULTS_TABLE).exists() else f"holds {len(self.rows)} of them"
            warnings.warn(f"{source / RESULTS_TABLE}: {epochs} epochs were trained, but the file {held}; the table "
                          f"and {RESULTS_PLOT} go on without the rest, and --patience counts only the epochs it "
                          f"holds", InputWarning, stacklevel=2)
        with _unreadable_history(source / GAMMAS_FILE, "BN gamma history"):
            self.gamma_history = [(epoch, gammas) for epoch, gammas in _read_gammas(source / GAMMAS_FILE)
                                  if epoch < epochs]

    def carry_best(self, source: Path) -> list[Path]:
        """A run continued from ``source`` in this other folder starts here with the best model so far (best.pth
        and best.weights), so this folder holds it even when no later epoch beats it. Returns the files copied."""
        if source.resolve() == self.run_dir.resolve():
            return []
        copied = []
        for name in (BEST_CHECKPOINT, BEST_WEIGHTS):
            if (source / name).is_file():
                with named_write_errors(self.run_dir / name, "best model"), atomic_write(self.run_dir / name) as f, \
                        open(source / name, "rb") as original:
                    shutil.copyfileobj(original, f)
                copied.append(self.run_dir / name)
        return copied

    def record_gammas(self, epoch: int, gammas: np.ndarray) -> None:
        """Keep an evaluation's |gamma| values for bn_gammas.png, and in bn_gammas.npz for a resumed run."""
        self.gamma_history.append((epoch, gammas))
        path = self.run_dir / GAMMAS_FILE
        arrays = {f"epoch{e}": g for e, g in self.gamma_history}
        with named_write_errors(path, "BN gamma history"), atomic_write(path) as f:
            np.savez(f, epochs=np.array([e for e, _ in self.gamma_history]), **arrays)

    def add_row(self, row: dict) -> None:
        """Append an epoch's row and rewrite results.csv, results.png and (with gammas) bn_gammas.png."""
        self.rows.append(row)
        text = io.StringIO()
        fields = CSV_FIELDS + [key for key in OPTIONAL_FIELDS if any(key in row for row in self.rows)]
        writer = csv.DictWriter(text, fields)
        writer.writeheader()
        writer.writerows(self.rows)
        csv_path = self.run_dir / RESULTS_TABLE
        with named_write_errors(csv_path, "results table"), atomic_write(csv_path) as f:
            f.write(text.getvalue().encode())
        from utils.plots import plot_bn_gammas, plot_results  # matplotlib only where a run writes plots
        with named_write_errors(self.run_dir / RESULTS_PLOT, "results plot"):
            plot_results(self.rows, LOSS_TERMS, self.run_dir / RESULTS_PLOT)
        if self.gamma_history:
            with named_write_errors(self.run_dir / GAMMAS_PLOT, "BN gamma plot"):
                plot_bn_gammas(self.gamma_history, self.run_dir / GAMMAS_PLOT)

    def save_checkpoints(self, state: TrainState, best: bool) -> None:
        """With ``best`` best.pth and best.weights, then last.weights and last.pth. last.pth, which --resume
        reads, goes last: a run killed while saving resumes from the epoch before and trains this one again,
        rewriting every file, so no file is left describing an epoch that last.pth does not. The .weights
        files hold what is evaluated (the EMA weights when there are any)."""
        exported = state.final_model
        if best:
            state.save(self.run_dir / BEST_CHECKPOINT)
            save_weights(exported, self.run_dir / BEST_WEIGHTS)
        save_weights(exported, self.run_dir / LAST_WEIGHTS)
        state.save(self.run_dir / LAST_CHECKPOINT)

    def reexport_stale_weights(self) -> list[Path]:
        """Export last.weights and best.weights again from their .pth where the two describe different epochs:
        the .pth is what a run resumes from. A kill between the two renames leaves that when the resumed run
        does not train the lost epoch the same way again (GPUs are not bit-exact, so best.pth may not be
        rewritten), and runs of older versions, which wrote last.pth first, were left so. Epochs are told
        apart by ``seen``, the images trained on, which both files record. Returns the files rewritten."""
        rewritten = []
        for checkpoint, weights in ((self.run_dir / pth, self.run_dir / export) for pth, export in CHECKPOINT_PAIRS):
            if not checkpoint.is_file():
                continue
            seen = exported_state(load_checkpoint(checkpoint, mmap=True)).get("seen")
            if weights.is_file() and seen is not None and weights_seen(weights) == int(seen):
                continue
            save_weights(model_from_file(checkpoint)[0], weights)
            rewritten.append(weights)
        return rewritten


@contextmanager
def _unreadable_history(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: cannot read the run's {what} ({type(err).__name__}: {err}); move the file "
                        f"aside to resume without it") from None


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{key: _cell(key, value) for key, value in row.items()} for row in csv.DictReader(f)]


def _read_gammas(path: Path) -> list[tuple[int, np.ndarray]]:
    if not path.exists():
        return []
    try:
        saved = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile):  # numpy's own message suggests unpickling the file
        raise ValueError("not an .npz archive of arrays") from None
    if not isinstance(saved, np.lib.npyio.NpzFile):
        raise ValueError("one array, not an .npz archive")
    with saved:
        return [(int(epoch), saved[f"epoch{epoch}"]) for epoch in saved["epochs"]]


def _cell(key: str, text: str | None) -> float | int | str:
    """A results.csv cell as the row held it: the epoch an int (so that rewriting the file keeps it "3", not
    "3.0"), an empty mAP cell empty, the rest floats."""
    if text in ("", None):
        return NOT_EVALUATED
    return int(float(text)) if key == "epoch" else float(text)


def weights_seen(path: Path) -> int | None:
    """The image count in a .weights file's header (None when the file is too short to hold one)."""
    try:
        with open(path, "rb") as f:
            return WeightsHeader.read(f, path).seen
    except WeightsFileError:
        return None
