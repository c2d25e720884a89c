"""Detection and evaluation speed on CPU.

    python -m benchmarks.bench_detect

- per-image latency at 416 (decoded image -> final boxes) split into preprocess, forward and NMS, for
  yolov3-tiny and res2net-yolov3, unfused and with prepare_inference() (fused + channels-last);
- NMS on 30,000 candidate boxes (80 classes, max_det 300, and without a cap);
- evaluation time of our metrics vs pycocotools on the same detections (the demo-sized validation set).
Medians after a warm-up at torch.set_num_threads(2); compare ratios within one run.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from models import Darknet
from utils.inference.load import preprocess
from utils.evaluation.metrics import evaluate_detections
from utils.inference.nms import nms, non_max_suppression
from utils.timing import median_seconds


def median_ms(fn, repeats=7, warmup=2) -> float:
    return median_seconds(fn, repeats, warmup) * 1e3


def bench_latency() -> None:
    image = (np.random.default_rng(0).random((576, 768, 3)) * 255).astype(np.uint8)  # dog.jpg's size
    print("detect at 416, one 768x576 image -> final boxes (median ms):")
    for name in ("yolov3-tiny", "res2net-yolov3"):
        model = Darknet(REPO / "cfg" / f"{name}.cfg").eval()
        for label in ("unfused", "prepare_inference"):
            if label == "prepare_inference":
                model.prepare_inference()
            batch, _ = preprocess([image], 416)
            with torch.inference_mode():
                out = model(batch)
                pre = median_ms(lambda: preprocess([image], 416))
                fwd = median_ms(lambda: model(batch))
                post = median_ms(lambda: non_max_suppression(out, 0.25, 0.45))
            target = "   (target <= 37 ms, best peer 45.9)" if name == "yolov3-tiny" else ""
            print(f"  {name:<15} {label:<18} preprocess {pre:5.1f} + forward {fwd:6.1f} + NMS {post:5.1f} "
                  f"= {pre + fwd + post:6.1f} ms{target}")


def bench_nms() -> None:
    g = torch.Generator().manual_seed(0)
    n = 30000
    xy = torch.rand(n, 2, generator=g) * 600
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 120 + 4], 1)
    scores, classes = torch.rand(n, generator=g), torch.randint(0, 80, (n,), generator=g)
    capped = median_ms(lambda: nms(boxes, scores, 0.45, classes, max_det=300), repeats=5)
    uncapped = median_ms(lambda: nms(boxes, scores, 0.45, classes), repeats=1, warmup=0)
    print(f"NMS, 30,000 boxes, 80 classes: {capped:.1f} ms with max_det=300; {uncapped:.0f} ms keeping every survivor")


def bench_evaluation() -> None:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(100):  # the demo's validation set: 100 images, ~3.5 boxes each, up to 300 detections
        count = int(rng.integers(1, 7))
        xy = rng.uniform(0, 200, (count, 2))
        truth = np.column_stack([rng.integers(0, 4, count), xy, xy + rng.uniform(20, 100, (count, 2))])
        det_xy = rng.uniform(0, 200, (300, 2))
        dets = np.column_stack([det_xy, det_xy + rng.uniform(20, 100, (300, 2)), rng.random(300),
                                rng.integers(0, 4, 300)])
        dets[:count, :4] = truth[:, 1:] + rng.normal(0, 3, (count, 4))
        images.append((dets, truth))
    names = ["a", "b", "c", "d"]
    ours = median_ms(lambda: evaluate_detections(images, names), repeats=3, warmup=1)
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        print(f"evaluation of 100 images x 300 detections: ours {ours:.0f} ms (pycocotools not installed)")
        return

    def coco():
        gt = {"images": [{"id": i + 1} for i in range(len(images))], "categories": [{"id": c + 1} for c in range(4)],
              "annotations": [{"id": k, "image_id": i + 1, "category_id": int(c) + 1, "iscrowd": 0,
                               "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
                              for i, (_, t) in enumerate(images)
                              for k, (c, x1, y1, x2, y2) in enumerate(t, 1 + 10 * i)]}
        dt = [{"image_id": i + 1, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
              for i, (d, _) in enumerate(images) for x1, y1, x2, y2, s, c in d]
        with contextlib.redirect_stdout(io.StringIO()):
            truth = COCO()
            truth.dataset = gt
            truth.createIndex()
            evaluator = COCOeval(truth, truth.loadRes(dt), "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
    theirs = median_ms(coco, repeats=3, warmup=1)
    print(f"evaluation of 100 images x 300 detections (mAP@0.5 and @0.5:0.95): ours {ours:.0f} ms, "
          f"pycocotools {theirs:.0f} ms")


def main() -> None:
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_latency()
    bench_nms()
    bench_evaluation()


if __name__ == "__main__":
    main()
