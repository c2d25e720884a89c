"""Hyperparameter evolution (``train.py --evolve N``): N short trainings with mutated hyperparameters.

- Every trial is a whole train.py run with the command's options (its --epochs, data, cfg, --seed: the same
  seed in every trial, so that they differ by their hyperparameters only), written to ``<folder>/trial<K>``.
- Trial 1 trains the starting values: the cfg's [net] and [yolo] values (utils/training/hyp.py), the --hyp
  file's over them, and train.py's flags (--lr, --momentum, --weight_decay, --mosaic/--no-mosaic) over both.
- Each later trial mutates the best trial so far (the earliest on a tie): for every key, with probability 0.8,
  its distance above the low end of its search range (``SEARCH_RANGES``) is multiplied by ``1 + 0.2 * N(0, 1)``
  clipped to [0.3, 3] (multiplicative, so small values take small steps; measured from the low end so that
  saturation 1.2 moves as 0.2 of jitter, not as 1.2); a key at the low end, where a factor cannot move it (hue
  0, saturation 1, mosaic 0), moves up by ``0.2 * |N(0, 1)|`` of its range instead. The result is clipped to
  the range, and at least one key changes. The draws come from a generator seeded by --seed.
- Fitness is the trial's best mAP@0.5 over its evaluations (what its best.pth holds). A trial that stops on a
  training error (a non-finite loss from too high a learning rate) scores 0 and the evolution goes on.
- After every trial ``evolve.csv`` (one row per trial: fitness and values), ``evolve.png`` (fitness against
  each value) and ``hyp_evolved.txt`` (the best values so far, in the --hyp format) are rewritten.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from utils.cli import output_folder
from utils.darknet.cfg import read_cfg
from utils.errors import UserError
from utils.fileio import atomic_write
from utils.output_files import made_folder, named_write_errors, refuse_inputs_inside
from utils.training.hyp import HYP_KEYS, augment_values, cfg_hyperparameters, format_hyp, with_hyp
from utils.training.options import TrainingError, TrainOptions
from utils.training.run_files import LAST_CHECKPOINT, RESULTS_TABLE

EVOLVE_RUNS = Path("runs/evolve")
EVOLVE_TABLE, EVOLVE_PLOT = "evolve.csv", "evolve.png"  # every trial's fitness and values, and their plot
EVOLVED_HYP = "hyp_evolved.txt"  # the best trial's values, a --hyp file
# a stopped search is kept once it has these
EVOLVE_RESULTS = (EVOLVE_TABLE, f"trial*/{RESULTS_TABLE}", f"trial*/{LAST_CHECKPOINT}")
MUTATION_PROBABILITY = 0.8
MUTATION_SIGMA = 0.2
FACTOR_LIMITS = (0.3, 3.0)
SEARCH_RANGES: dict[str, tuple[float, float]] = {
    "learning_rate": (1e-5, 0.1), "momentum": (0.6, 0.98), "decay": (0.0, 0.001),
    "hue": (0.0, 0.2), "saturation": (1.0, 3.0), "exposure": (1.0, 3.0),
    "scale": (0.0, 0.9), "translate": (0.0, 0.5), "mosaic": (0.0, 1.0),
    "obj_normalizer": (0.1, 10.0), "cls_normalizer": (0.1, 10.0), "iou_normalizer": (0.05, 5.0),
}
FLAG_KEYS = {"lr": "learning_rate", "momentum": "momentum", "weight_decay": "decay"}  # flag -> hyperparameter


@dataclass(frozen=True)
class Trial:
    number: int  # from 1
    values: dict[str, float]
    fitness: float
    note: str = ""  # why a trial scored 0 without training to the end


def mutate(parent: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    """A child of ``parent`` by the module docstring's rule (never equal to it)."""
    while True:
        child = dict(parent)
        for key, (low, high) in SEARCH_RANGES.items():
            if rng.random() >= MUTATION_PROBABILITY:
                continue
            draw, above = rng.standard_normal(), parent[key] - low
            if above <= 0:  # at the range's lower end, where a factor cannot move it (hue 0, saturation 1)
                value = low + MUTATION_SIGMA * abs(draw) * (high - low)
            else:
                value = low + above * float(np.clip(1 + MUTATION_SIGMA * draw, *FACTOR_LIMITS))
            child[key] = float(np.clip(value, low, high))
        if child != parent:
            return child


def starting_values(opt: TrainOptions) -> dict[str, float]:
    """Trial 1's hyperparameters: the cfg's, the --hyp file's over them, then the flags'."""
    values = cfg_hyperparameters(with_hyp(read_cfg(opt.model_def), opt.hyp or {}), opt.mosaic)
    values.update({key: value for key, value in augment_values(opt.hyp).items()
                   if key != "mosaic" or opt.mosaic is None})
    values.update({FLAG_KEYS[flag]: float(getattr(opt, flag)) for flag in FLAG_KEYS if getattr(opt, flag) is not None})
    return values


def starting_flags(opt: TrainOptions) -> list[str]:
    """The flags given that set only trial 1's values: the search mutates them like any other."""
    flags = [f"--{flag} {getattr(opt, flag):g}" for flag in FLAG_KEYS if getattr(opt, flag) is not None]
    if opt.mosaic is not None:
        flags.append("--mosaic" if opt.mosaic else "--no-mosaic")
    return flags


def trial_options(opt: TrainOptions, folder: Path, number: int, values: dict[str, float]) -> TrainOptions:
    """A trial's run: the command's options with ``values`` as its --hyp and no flag overriding them."""
    return replace(opt, output=str(folder / f"trial{number}"), hyp=dict(values), lr=None, momentum=None,
                   weight_decay=None, mosaic=None, resume=None)


def run_trial(opt: TrainOptions, folder: Path, number: int, values: dict[str, float]) -> Trial:
    from utils.training.trainer import Trainer  # the trainer composes this module's callers
    try:
        summary = Trainer(trial_options(opt, folder, number, values)).run()
    except TrainingError as err:
        if number == 1:  # the starting values themselves do not train: nothing to evolve from
            raise
        return Trial(number, values, 0.0, f"stopped: {err}")
    return Trial(number, values, max(summary["best_map50"], 0.0))


def best_trial(trials: list[Trial]) -> Trial:
    return max(trials, key=lambda trial: (trial.fitness, -trial.number))


def earlier_trials(folder: Path, count: int) -> list[str]:
    """The ``trialN`` folders past ``count`` in ``folder``, in trial order: an earlier, longer search's."""
    numbers = [int(found.group(1)) for path in folder.glob("trial*")
               if path.is_dir() and (found := re.fullmatch(r"trial(\d+)", path.name))]
    return [f"trial{number}" for number in sorted(numbers) if number > count]


@dataclass(frozen=True)
class EvolveRequest:
    """What --evolve asks for: how many trials, and the --hyp file trial 1 starts from."""

    trials: int
    hyp_file: Path | None = None  # --hyp: trial 1's values, a file the search must not write over


def evolve(opt: TrainOptions, request: EvolveRequest, log=print) -> Trial:
    """Run the trials into --output (or the next runs/evolve/expN); the best trial."""
    if opt.resume is not None:
        raise UserError("--evolve runs new trainings; it does not combine with --resume")
    count = request.trials
    if opt.output:  # before trial 1, which would refuse them only once it started
        hyp = [("--hyp", request.hyp_file)] if request.hyp_file else []
        refuse_inputs_inside(Path(opt.output), opt.input_files() + hyp, "--output")
    folder = output_folder(opt.output, EVOLVE_RUNS, opt.exist_ok)
    flags = starting_flags(opt)
    if flags:
        log(f"evolve: {', '.join(flags)} set trial 1's values; later trials mutate them")
    earlier = earlier_trials(folder, count)
    if earlier:
        log(f"evolve: {folder} keeps {', '.join(earlier)} of an earlier search, which this one of {count} trials "
            f"does not replace; {EVOLVE_TABLE} will list this search's trials only")
    rng = np.random.default_rng(opt.seed)
    trials: list[Trial] = []
    with made_folder(folder, "--output", EVOLVE_RESULTS, claimed=opt.output is None):
        for number in range(1, count + 1):
            values = starting_values(opt) if number == 1 else mutate(best_trial(trials).values, rng)
            log(f"evolve: trial {number} of {count} in {folder / f'trial{number}'}: {format_values(values)}")
            trials.append(run_trial(opt, folder, number, values))
            write_evolution(trials, folder)
            best, note = best_trial(trials), f" ({trials[-1].note})" if trials[-1].note else ""
            log(f"evolve: trial {number} fitness {trials[-1].fitness:.4f}{note}; the best so far is trial "
                f"{best.number} ({best.fitness:.4f})")
    log(f"evolve: the best of {count} trials is trial {best.number} (best mAP@0.5 {best.fitness:.4f}); its "
        f"hyperparameters are in {folder / EVOLVED_HYP}: train with --hyp {folder / EVOLVED_HYP}")
    return best


def format_values(values: dict[str, float]) -> str:
    return ", ".join(f"{key} {values[key]:.4g}" for key in HYP_KEYS)


def write_evolution(trials: list[Trial], folder: Path) -> None:
    """The table, its plot and the best values' --hyp file for the trials so far."""
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["trial", "fitness", *HYP_KEYS, "note"])
    for trial in trials:
        writer.writerow([trial.number, f"{trial.fitness:.6f}", *(f"{trial.values[k]:.6g}" for k in HYP_KEYS),
                         trial.note])
    best = best_trial(trials)
    header = (f"the best of {len(trials)} evolve trials in {folder}: trial {best.number}, fitness (best mAP@0.5) "
              f"{best.fitness:.4f}\ntrain with: python train.py --hyp {folder / EVOLVED_HYP} ...")
    for name, text in ((EVOLVE_TABLE, table.getvalue()), (EVOLVED_HYP, format_hyp(best.values, header))):
        with named_write_errors(folder / name, "evolution results"), atomic_write(folder / name) as f:
            f.write(text.encode())
    from utils.plots import plot_evolution  # loads matplotlib
    with named_write_errors(folder / EVOLVE_PLOT, "evolution plot"):
        plot_evolution(trials, best, HYP_KEYS, folder / EVOLVE_PLOT)
