"""The processes of one run: one, or one per device under torchrun (DDP: NCCL on GPUs, gloo on CPU)."""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from utils.training.options import TrainingError

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """Which process this is. Rank 0 (the main process) evaluates, logs and writes the run's files."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1  # the processes on this machine

    @classmethod
    def from_environment(cls) -> Distributed:
        """The variables torchrun sets; a plain ``python train.py`` is the only process."""
        return cls(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                   int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log(self, message: str) -> None:
        """Print once per run, not once per process (through tqdm, so progress bars stay intact)."""
        if self.is_main:
            tqdm.write(message)

    @contextmanager
    def warnings_once(self) -> Iterator[None]:
        """Warnings raised inside shown by the main process only: one copy of a cfg's or a .data file's
        warnings, not one per process."""
        with warnings.catch_warnings():
            warnings.simplefilter("default" if self.is_main else "ignore")
            yield

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    @contextmanager
    def process_group(self, device: torch.device) -> Iterator[None]:
        """Join the other processes for the body (nothing to join for a single process)."""
        if self.world_size == 1:
            yield
            return
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        try:
            yield
            # no process tears its connections down while another may still use them (once in ~40 test runs a
            # rank aborted in gloo's teardown, "terminate called without an active exception", as the other
            # was still finishing its run)
            dist.barrier()
        finally:
            dist.destroy_process_group()

    def wrap(self, model: nn.Module, sync_bn: bool, device: torch.device) -> nn.Module:
        """The module the training steps run: ``model`` itself, or under DDP its DistributedDataParallel
        (with SyncBatchNorm when asked), which shares ``model``'s parameters."""
        if self.world_size == 1:
            return model
        if sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def main_decides(self, decision: bool, device: torch.device) -> bool:
        """The main process's ``decision`` on every process (only it evaluates, so only it knows whether the
        run stops early)."""
        if self.world_size == 1:
            return decision
        flag = torch.tensor([float(decision)], device=device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def shared_work(self, count: int, compute: Callable[[Sequence[int]], list[T]]) -> list[T]:
        """``compute`` of items 0..count-1 on every process, each process computing every world_size-th item: a
        long job is split, and no process waits in a collective (whose timeout is minutes) for another doing all
        of it. ``compute`` must not raise: a process that fails here would leave the others waiting."""
        if self.world_size == 1:
            return compute(range(count))
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, compute(range(self.rank, count, self.world_size)))
        joined: list = [None] * count
        for rank, part in enumerate(parts):
            joined[rank::self.world_size] = part
        return joined

    def from_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` run by the main process alone, its result (or the error it raised) on every process:
        for what only one process may do, such as claiming the run folder."""
        if self.world_size == 1:
            return compute()
        outcome: list = [None]
        if self.is_main:
            try:
                outcome[0] = compute()
            except Exception as err:  # the other ranks raise it too, rather than wait for a result forever
                outcome[0] = err
        dist.broadcast_object_list(outcome, src=0)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def check_in_sync(self, model: nn.Module, device: torch.device) -> None:
        """Stop the run if the ranks' parameters have drifted apart (they must stay identical under DDP)."""
        if self.world_size == 1:
            return
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().to(device)
        low, high = checksum.clone(), checksum.clone()
        dist.all_reduce(low, dist.ReduceOp.MIN)
        dist.all_reduce(high, dist.ReduceOp.MAX)
        if not torch.isclose(low, high, rtol=1e-9, atol=1e-6):
            raise TrainingError(f"ranks out of sync: parameter checksums range from {low.item()} to {high.item()}")
        self.log(f"ranks in sync: parameter checksum {checksum.item():.6f} on all {self.world_size} ranks")
