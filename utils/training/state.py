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

from utils.darknet.checkpoint import load_checkpoint, save_checkpoint
from utils.darknet.model import Darknet
from utils.training.optim import ModelEMA


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

    def load_state_dict(self, checkpoint: dict) -> None:
        """Continue from ``checkpoint``, the CPU random state included, so that the next epoch draws what
        it would have drawn in the uninterrupted run. Its cfg, names and options describe the run and are
        taken when the state is built, before this."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None and checkpoint.get("ema") is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        torch.set_rng_state(checkpoint["rng_cpu"])
        self.epoch, self.best_fitness = checkpoint["epoch"], checkpoint["best_fitness"]

    def save(self, path: Path) -> None:
        """Write the checkpoint atomically: a crash leaves the previous file, never half of one."""
        save_checkpoint(path, self.state_dict())

    def load(self, path: Path) -> None:
        self.load_state_dict(load_checkpoint(path))
