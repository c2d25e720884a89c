"""The ImageNet-backbone detectors on CPU beside yolov3 and res2net-yolov3: forward latency, training speed, and
what a deformable conv costs beside the plain one.

    python -m benchmarks.bench_backbones                  # everything (long on 2 cores)
    python -m benchmarks.bench_backbones --only forward   # forward | train | deform
    python -m benchmarks.bench_backbones --repeats 3 --models resnet50-yolov3 yolov3

Forward: batch 1 at 416, ``prepare_inference()`` (BN folded, channels-last), torch.inference_mode, the models
timed in alternating rounds so a slow spell of the shared machine hits all alike. Training: the real loader
and loss (benchmarks/bench_train.py) at 320, batch 4. Medians, 2 threads.
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from benchmarks.bench_train import bench as bench_training
from models import Darknet
from utils.darknet.layers.deform import DeformConv2d
from utils.data.synthetic import write_dataset
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


def bench_train(names: list[str], steps: int) -> None:
    print("training at 320, batch 4, augmenting loader with 2 workers (median step):")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "shapes", train=32, valid=1, size=320)
        for name in names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rate, wait = bench_training(name, 320, 4, steps, data, Path(tmp), 2)
            print(f"  {name:<22} {rate:5.2f} img/s (waiting for data {wait:5.1%})")


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
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model")
    parser.add_argument("--img_size", type=int, default=416)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only in (None, "forward"):
        bench_forward(args.models, args.img_size, args.repeats)
    if args.only in (None, "train"):
        bench_train(args.models, args.steps)
    if args.only in (None, "deform"):
        bench_deform(args.repeats)


if __name__ == "__main__":
    main()
