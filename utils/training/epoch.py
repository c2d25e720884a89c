"""One training epoch: forward, loss, backward and, every ``accumulation`` batches, an optimiser step."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from utils.data.dataset import Batch
from utils.training.distill import Distiller
from utils.training.loss import DISTILL_TERM, LOSS_TERMS, TOTAL_TERM, YOLOLoss
from utils.training.optim import Sparsity
from utils.training.options import TrainingError
from utils.training.run_files import LAST_CHECKPOINT
from utils.training.runlog import StepRecord
from utils.training.state import TrainState


@dataclass
class StepContext:
    """How every step of a run is taken; the same for all its epochs."""

    network: nn.Module  # what the batches go through: the model, or its DDP wrapper under torchrun
    loss_fn: YOLOLoss
    device: torch.device
    run_dir: Path  # named when a non-finite loss stops the run: its last good checkpoint is there
    amp: bool = False
    accumulation: int = 1  # batches per optimiser step
    sparsity: Sparsity | None = None
    world_size: int = 1  # processes, each with its own batch, that one step stands for
    distiller: Distiller | None = None  # adds the teacher's term to the loss (--teacher_weights)
    observer: Callable[[StepRecord], None] | None = None  # sees every batch (the main process's RunLog)


@dataclass
class EpochStats:
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOSS_TERMS, 0.0))
    batches: int = 0
    images: int = 0
    wait: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    skipped: list[str] = field(default_factory=list)

    def add(self, components: dict[str, float], images: int, wait: float) -> None:
        for key, value in components.items():  # DISTILL_TERM joins the sums when a run has a teacher
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.batches += 1
        self.images += images
        self.wait += wait

    def mean(self, key: str) -> float:
        return self.sums[key] / max(self.batches, 1)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def _backward(state: TrainState, ctx: StepContext, batch: Batch, where: tuple[int, int]) -> dict[str, float]:
    """Forward and backward one batch (gradients accumulate); its loss terms. ``where``: (epoch, batch)
    counted from 1, for the message when the loss is not finite."""
    images = batch.images.to(ctx.device, non_blocking=True).float() / 255
    with torch.autocast(ctx.device.type, enabled=ctx.amp):
        heads = ctx.network(images)
    loss = ctx.loss_fn([h.float() for h in heads], batch.targets, tuple(images.shape[-2:]))
    values, total = loss.as_dict(), loss.total
    if ctx.distiller is not None:
        distill = ctx.distiller(heads, images)
        total = total + distill
        values[DISTILL_TERM] = float(distill.detach())
        values[TOTAL_TERM] += values[DISTILL_TERM]
    if not math.isfinite(values[TOTAL_TERM]):
        last = ctx.run_dir / LAST_CHECKPOINT
        kept = f"the last good checkpoint, {last}, is kept" if last.exists() else "no epoch had been saved yet"
        terms = ", ".join(f"{key} {value}" for key, value in values.items() if key != TOTAL_TERM)
        raise TrainingError(
            f"non-finite loss at epoch {where[0]}, batch {where[1]} ({terms}); {kept}. Lower the learning rate "
            f"(--lr) or lengthen the burn-in (--burn_in).")
    state.scaler.scale(total / ctx.accumulation).backward()
    state.model.seen.add_(len(batch) * ctx.world_size)
    return values


def _optimizer_step(state: TrainState, ctx: StepContext) -> None:
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if ctx.sparsity is not None:
        ctx.sparsity.shrink(state.optimizer.param_groups[0]["lr"])
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update(state.model)


def train_epoch(state: TrainState, loader: DataLoader, ctx: StepContext, bar: tqdm) -> EpochStats:
    """Train the epoch after ``state.epoch`` (which the caller advances once it is done), showing the
    running loss means and speed on ``bar``."""
    epoch = state.epoch + 1
    stats = EpochStats()
    state.optimizer.zero_grad(set_to_none=True)
    fetch_start = time.perf_counter()
    for i, batch in enumerate(loader):
        wait = time.perf_counter() - fetch_start
        stats.skipped += batch.skipped
        losses = _backward(state, ctx, batch, (epoch + 1, i + 1)) if len(batch) else {}
        if losses:
            stats.add(losses, len(batch), wait)
        if (i + 1) % ctx.accumulation == 0 or i + 1 == len(loader):
            _optimizer_step(state, ctx)
        if ctx.observer is not None:
            ctx.observer(StepRecord(epoch, i, batch, losses, state.scheduler.last_epoch,
                                    state.optimizer.param_groups[0]["lr"]))
        terms = {key: f"{stats.mean(key):.3f}" for key in stats.sums if key != TOTAL_TERM}  # distill too, if any
        height, width = batch.images.shape[-2:]
        bar.set_postfix(**terms, size=height if height == width else f"{height}x{width}",
                        img_s=f"{stats.images * ctx.world_size / stats.seconds:.1f}")
        bar.update()
        fetch_start = time.perf_counter()
    return stats
