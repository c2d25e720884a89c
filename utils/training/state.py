"""Everything a training run carries from one epoch to the next, and its checkpoint (``last.pth``).

A checkpoint is a plain dict of tensors, numbers and strings (``torch.load(weights_only=True)`` reads it)
with the keys ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``ema``, ``epoch``, ``best_fitness``,
``rng_cpu``, ``cfg_text``, ``names`` and ``options``; checkpoints written before this module keep loading.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR

from utils.darknet.checkpoint import CheckpointError, load_model_state, save_checkpoint
from utils.darknet.model import Darknet
from utils.training.optim import ModelEMA

TRAINING_ENTRIES = ("model", "optimizer", "scheduler", "scaler", "epoch", "best_fitness", "rng_cpu", "cfg_text",
                    "options")  # what --resume needs; "ema" and "names" may be absent


@dataclass
class TrainState:
    """The model and what steps it (optimiser, schedule, AMP scaler, EMA), the last finished epoch and the
    best mAP@0.5 so far; ``names`` and ``options`` (the run's, as a checkpoint stores them) travel along."""

    model: Darknet
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None = None
    epoch: int = -1  # the last finished epoch; -1 before the first
    best_fitness: float = -1.0
    names: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)

    @property
    def final_model(self) -> Darknet:
        """What is evaluated and exported: the EMA weights when there are any."""
        return self.ema.ema if self.ema is not None else self.model

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch, "best_fitness": self.best_fitness, "rng_cpu": torch.get_rng_state(),
            "cfg_text": self.model.cfg_text, "names": list(self.names), "options": dict(self.options),
        }

    def load_state_dict(self, checkpoint: dict, source: str | Path = "the checkpoint") -> None:
        """Continue from ``checkpoint`` (read from ``source``), the CPU random state included, so that the
        next epoch draws what it would have drawn in the uninterrupted run. Its cfg, names and options
        describe the run and are taken when the state is built, before this. A part that does not fit
        this run is a :class:`CheckpointError` naming it."""
        check_training_checkpoint(checkpoint, source)
        load_model_state(self.model, checkpoint["model"], source)
        parts = {"optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler}
        if self.ema is not None and checkpoint.get("ema") is not None:
            parts["ema"] = self.ema
        loading = ""  # the entry being loaded, for the message
        try:
            for loading, part in parts.items():
                part.load_state_dict(checkpoint[loading])
            loading = "random state"
            torch.set_rng_state(checkpoint["rng_cpu"])
            loading = "epoch and best mAP"
            self.epoch, self.best_fitness = int(checkpoint["epoch"]), float(checkpoint["best_fitness"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{source}: its {loading} does not fit this run ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from None

    def save(self, path: Path) -> None:
        """Write the checkpoint atomically: a crash leaves the previous file, never half of one."""
        save_checkpoint(path, self.state_dict())


def check_training_checkpoint(checkpoint: dict, source: str | Path) -> None:
    """Stop unless ``checkpoint`` holds a training run's whole state, which --resume continues."""
    missing = [key for key in TRAINING_ENTRIES if key not in checkpoint]
    if not missing:
        return
    if "optimizer" not in checkpoint and "scheduler" not in checkpoint:  # no training state at all
        raise CheckpointError(f"{source}: holds a model's weights only (as convert.py and prune.py write them), not "
                              f"a training run's state; --resume needs the last.pth of a train.py run. To train "
                              f"from these weights, start a new run with --pretrained_weights {source}")
    raise CheckpointError(f"{source}: not a whole training checkpoint: it lacks {', '.join(missing)}; --resume needs "
                          f"the last.pth of a train.py run (--pretrained_weights {source} starts a new run from its "
                          f"weights)")
