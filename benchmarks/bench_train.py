"""Training throughput on CPU: images per second for forward + loss + backward + step, with the real data
loader (augmentation on, 2 workers), and the share of step time spent waiting for data.

    python -m benchmarks.bench_train                  # the three configurations of issue 3
    python -m benchmarks.bench_train --steps 10

Runs on the synthetic shapes set (generated into a temporary folder). Medians over steps after warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

REPO = Path(__file__).resolve().parents[1]

from models import Darknet
from utils.darknet.cfg import read_cfg
from utils.darknet.cfg_edit import with_classes
from utils.data.augment import Augment
from utils.data.batching import BatchPlan, create_dataloader
from utils.data.dataset import DetectionDataset
from utils.training.loss import YOLOLoss
from utils.training.optim import build_optimizer
from utils.data.synthetic import write_dataset


class Case(NamedTuple):
    name: str  # cfg/<name>.cfg
    size: int
    batch_size: int
    target: float | None  # img/s to reach (../shared/perf-targets.md)
    peer: float | None  # the best peer's img/s


CASES = [Case("yolov3-tiny", 416, 8, 6.7, 5.6), Case("res2net-yolov3-tiny", 416, 8, None, None),
         Case("res2net-yolov3", 320, 4, None, None), Case("yolov3", 320, 4, 1.5, 1.26)]


def bench(case: Case, steps: int, data: Path, workers: int) -> tuple[float, float]:
    """(images per second, share of step time waiting for data) training ``case`` on ``data``."""
    name, size, batch_size = case.name, case.size, case.batch_size
    model = Darknet(with_classes(read_cfg(REPO / "cfg" / f"{name}.cfg"), 4)).train()
    loss_fn = YOLOLoss(model.yolo_layers)
    optimizer = build_optimizer(model, "sgd", 1e-4, 0.9, 5e-4)
    dataset = DetectionDataset(data.parent / "train.txt", 4, Augment())
    loader = create_dataloader(dataset, BatchPlan(len(dataset), batch_size, [size], seed=0), workers)
    step_times, waits = [], []
    iterator = iter(loader)
    for step in range(steps + 2):
        start = time.perf_counter()
        batch = next(iterator)
        waited = time.perf_counter() - start
        images = batch.images.float() / 255
        loss = loss_fn(model(images), batch.targets, tuple(images.shape[-2:]))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        if step >= 2:
            step_times.append(time.perf_counter() - start)
            waits.append(waited)
    median = statistics.median(step_times)
    return batch_size / median, sum(waits) / sum(step_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=[c.name for c in CASES])
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.workers} loader workers")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "shapes", train=64, valid=1, size=416)
        for case in CASES:
            if case.name not in args.models:
                continue
            rate, wait = bench(case, args.steps, data, args.workers)
            goal = f"   (target >= {case.target} img/s, best peer {case.peer})" if case.target else ""
            print(f"train {case.name:<20} @{case.size} b{case.batch_size}: {rate:5.2f} img/s, waiting for data "
                  f"{wait:5.1%} of step time{goal}")


if __name__ == "__main__":
    main()
