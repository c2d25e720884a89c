"""A pruned model against its original on CPU: parameters, FLOPs and forward latency, next to the bar of
issue 5 (>= 70 % of parameters and >= 50 % of FLOPs removed, >= 1.8x faster).

    python -m benchmarks.bench_prune --before runs/sr/exp1/best.pth --after runs/finetune/exp1/best.pth
    python -m benchmarks.bench_prune --before yolov3.weights --before_cfg cfg/yolov3.cfg \\
                                     --after runs/prune/exp1/pruned.weights --after_cfg runs/prune/exp1/pruned.cfg

Batch 1, 2 threads, after prepare_inference() (BN folded, channels-last) and after fuse() alone (NCHW),
since odd pruned channel counts can favour either layout. The two models are timed in alternating rounds
so that a slow spell of a shared machine hits both alike; each figure is the median over all rounds.
"""
from __future__ import annotations

import argparse
import copy

import torch

from utils.darknet.checkpoint import model_from_file
from utils.darknet.summary import summarize
from utils.timing import alternating_median_seconds

BAR = {"params": 0.70, "flops": 0.50, "speedup": 1.8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="original model (.pth, or .weights with --before_cfg)")
    parser.add_argument("--before_cfg")
    parser.add_argument("--after", required=True, help="pruned model (.pth, or .weights with --after_cfg)")
    parser.add_argument("--after_cfg")
    parser.add_argument("--img_size", type=int, nargs="+", default=[320, 416])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    before = model_from_file(args.before, args.before_cfg)[0].eval()
    after = model_from_file(args.after, args.after_cfg)[0].eval()

    params = [sum(p.numel() for p in m.parameters()) for m in (before, after)]
    removed = 1 - params[1] / params[0]
    print(f"parameters: {params[0]:,} -> {params[1]:,} ({removed:.1%} removed; bar >= {BAR['params']:.0%})")
    for size in args.img_size:
        flops = [sum(r.flops for r in summarize(m, (size, size))) / 1e9 for m in (before, after)]
        print(f"BFLOPs at {size}: {flops[0]:.3f} -> {flops[1]:.3f} ({1 - flops[1] / flops[0]:.1%} removed; "
              f"bar >= {BAR['flops']:.0%})")
    variants = {"prepare_inference": lambda m: copy.deepcopy(m).prepare_inference(),
                "fuse only (NCHW)": lambda m: copy.deepcopy(m).fuse()}
    for size in args.img_size:
        x = torch.rand(1, 3, size, size)
        for label, prepare in variants.items():
            models = [prepare(before), prepare(after)]
            with torch.inference_mode():
                slow, fast = (1e3 * t for t in alternating_median_seconds([lambda m=m: m(x) for m in models],
                                                                          args.rounds))
            print(f"latency at {size}, {label:<18}: {slow:6.1f} ms -> {fast:6.1f} ms = {slow / fast:.2f}x faster "
                  f"(bar >= {BAR['speedup']}x)")


if __name__ == "__main__":
    main()
