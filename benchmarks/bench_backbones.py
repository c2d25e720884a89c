"""The ImageNet-backbone detectors on CPU beside yolov3 and res2net-yolov3: forward latency, training speed, and
what a deformable conv costs beside the plain one.

    python -m benchmarks.bench_backbones                  # everything (long on 2 cores)
    python -m benchmarks.bench_backbones --only forward   # forward | train | deform
    python -m benchmarks.bench_backbones --repeats 3 --models resnet50-yolov3 yolov3

Forward: batch 1 at 416, ``prepare_inference()`` (BN folded, channels-last), torch.inference_mode. Training:
forward + YOLO loss + backward + SGD step at 320 on one augmented batch of 4. The models are timed in
alternating rounds so a slow spell of the shared machine hits all alike: compare ratios. Medians, 2 threads.
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from models import Darknet
from utils.darknet.cfg import read_cfg
from utils.darknet.cfg_edit import with_classes
from utils.darknet.layers.deform import DeformConv2d
from utils.data.augment import Augment
from utils.data.batching import BatchPlan, create_dataloader
from utils.data.dataset import DetectionDataset
from utils.data.synthetic import write_dataset
from utils.training.loss import YOLOLoss
from utils.training.optim import build_optimizer
from utils.timing import alternating_median_seconds

REPO = Path(__file__).resolve().parents[1]
MODELS = ["resnet18-yolov3", "resnet50-yolov3", "se-resnet50-yolov3", "res2net50-yolov3", "resnet50-fpn-yolov3",
          "resnet50-dcn-yolov3", "yolov3", "res2net-yolov3"]
DEFORM_SHAPES = [(128, 52), (256, 26), (512, 13)]  # ResNet-50's 3x3 convs of stages 2-4 at 416


def build(name: str) -> Darknet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cfgs' Darknet-only training keys
        return Darknet(REPO / "cfg" / f"{name}.cfg")


def bench_forward(names: list[str], size: int, rounds: int) -> None:
    x = torch.rand(1, 3, size, size)
    models = [build(name).prepare_inference() for name in names]

    def runner(model):
        def run():
            with torch.inference_mode():
                model(x)
        return run

    times = alternating_median_seconds([runner(m) for m in models], rounds=rounds, per_round=2, warmup=1)
    print(f"forward at {size}, batch 1, prepare_inference (median, alternating rounds):")
    for name, model, seconds in zip(names, models, times):
        params = sum(p.numel() for p in model.parameters())
        print(f"  {name:<22} {seconds * 1e3:7.1f} ms   {params / 1e6:6.2f} M parameters")


def training_step(name: str, batch, size: int):
    """A closure running one SGD step of ``name`` (4 classes) on ``batch``: forward, YOLO loss, backward, step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Darknet(with_classes(read_cfg(REPO / "cfg" / f"{name}.cfg"), 4)).train()
    loss_fn = YOLOLoss(model.yolo_layers)
    optimizer = build_optimizer(model, "sgd", 1e-4, 0.9, 5e-4)
    images = batch.images.float() / 255

    def step():
        loss = loss_fn(model(images), batch.targets, (size, size))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    return step


def bench_train(names: list[str], size: int, rounds: int) -> None:
    """Training steps on one augmented batch of 4, the models in alternating rounds (a slow spell of the shared
    machine hits all of them alike; benchmarks/bench_train.py measures the data loader too)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "shapes", train=8, valid=1, size=size)
        dataset = DetectionDataset(data.parent / "train.txt", 4, Augment())
        batch = next(iter(create_dataloader(dataset, BatchPlan(len(dataset), 4, [size], seed=0), workers=0)))
    steps = [training_step(name, batch, size) for name in names]
    times = alternating_median_seconds(steps, rounds=rounds, per_round=1, warmup=1)
    print(f"training step at {size}, batch 4, SGD (median, alternating rounds):")
    for name, seconds in zip(names, times):
        print(f"  {name:<22} {4 / seconds:5.2f} img/s")


def bench_deform(rounds: int) -> None:
    """One 3x3 conv, plain and deformable (v1 and v2, 1 deformable group), inference and training step."""
    print("3x3 conv, batch 1, plain vs deformable (offset conv + bilinear sampling + matmul):")
    for channels, side in DEFORM_SHAPES:
        plain = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        v1, v2 = DeformConv2d(plain, False, 1), DeformConv2d(plain, True, 1)
        x = torch.rand(1, channels, side, side)

        def inference(conv):
            def run():
                with torch.inference_mode():
                    conv(x)
            return run

        def training(conv):
            def run():
                conv(x.requires_grad_()).sum().backward()
            return run

        forward = alternating_median_seconds([inference(c) for c in (plain, v1, v2)], rounds=rounds)
        step = alternating_median_seconds([training(c) for c in (plain, v1, v2)], rounds=rounds)
        print(f"  {channels:4d} ch {side:3d}x{side:<3d}  forward: plain {forward[0] * 1e3:6.2f} ms, v1 "
              f"{forward[1] * 1e3:6.2f} ms ({forward[1] / forward[0]:4.1f}x), v2 {forward[2] * 1e3:6.2f} ms "
              f"({forward[2] / forward[0]:4.1f}x) | forward+backward: plain {step[0] * 1e3:6.1f} ms, "
              f"v1 {step[1] / step[0]:4.1f}x, v2 {step[2] / step[0]:4.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("forward", "train", "deform"))
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--repeats", type=int, default=4, help="alternating rounds (forward, deform)")
    parser.add_argument("--steps", type=int, default=3, help="alternating rounds of training steps")
    parser.add_argument("--img_size", type=int, default=416)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only in (None, "forward"):
        bench_forward(args.models, args.img_size, args.repeats)
    if args.only in (None, "train"):
        bench_train(args.models, 320, args.steps)
    if args.only in (None, "deform"):
        bench_deform(args.repeats)


if __name__ == "__main__":
    main()
