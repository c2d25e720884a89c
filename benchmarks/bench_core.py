"""Speed of the Darknet core on CPU: .weights loading vs the np.fromfile floor, and forward latency.

    python -m benchmarks.bench_core              # everything (a few minutes on 2 cores)
    python -m benchmarks.bench_core --only load  # one part: load | forward

Medians of several runs after a warm-up, at torch.set_num_threads(2) like ../shared/perf-targets.md.
These machines are noisy: compare ratios measured in the same run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from models import Darknet
from utils.timing import median_seconds

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = {"yolov3-tiny": 37.0, "yolov3": 255.0}
PEER_MS = {"yolov3-tiny": 46.5, "yolov3": 321.0}


def bench_load(repeats: int) -> None:
    model = Darknet(REPO / "cfg" / "yolov3.cfg")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "yolov3.weights"
        model.save_darknet_weights(path)
        size_mb = path.stat().st_size / 1e6
        floor = median_seconds(lambda: np.fromfile(path, dtype=np.uint8), repeats, warmup=1)
        ours = median_seconds(lambda: model.load_darknet_weights(path), repeats, warmup=1)
    print(f"load yolov3 .weights ({size_mb:.0f} MB, page cache): np.fromfile {floor * 1e3:.1f} ms, "
          f"load_darknet_weights {ours * 1e3:.1f} ms = {ours / floor:.2f}x floor "
          f"(target <= 1.2x, best peer 1.4x)")


def bench_forward(names: list[str], size: int, repeats: int) -> None:
    x = torch.rand(1, 3, size, size)
    print(f"forward at {size}x{size}, batch 1, eval, torch.inference_mode (median of {repeats}):")
    for name in names:
        model = Darknet(REPO / "cfg" / f"{name}.cfg").eval()
        row = [f"  {name:<16}"]
        for label, prepare in (("unfused", lambda m: m), ("fused", lambda m: m.fuse()),
                               ("prepare_inference", lambda m: m.prepare_inference())):
            model = prepare(model)
            with torch.inference_mode():
                ms = median_seconds(lambda: model(x), repeats) * 1e3
            row.append(f"{label} {ms:7.1f} ms")
        target = f"   (target <= {TARGET_MS[name]:.0f} ms, best peer {PEER_MS[name]} ms)" if name in TARGET_MS else ""
        print(" | ".join(row) + target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("load", "forward"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=["yolov3-tiny", "res2net-yolov3-tiny", "yolov3",
                                                         "res2net-yolov3"])
    parser.add_argument("--img_size", type=int, default=416)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only in (None, "load"):
        bench_load(args.repeats)
    if args.only in (None, "forward"):
        bench_forward(args.models, args.img_size, args.repeats)


if __name__ == "__main__":
    main()
