"""The exports against the model they came from.

    python -m utils.data.synthetic --out /tmp/demo
    python -m benchmarks.bench_export --weights runs/demo/exp1/best.pth --images /tmp/demo/images/valid --img_size 256

1. Agreement: detect.py on the images, and the ONNX export with NMS inside (detect.py's thresholds) run by
   onnxruntime on the same letterboxed inputs, its boxes mapped back to image pixels: same detections per image,
   and the largest box and score difference.
2. Latency of yolov3-tiny at 416, batch 1, forward only: PyTorch on the inference path (prepare_inference),
   onnxruntime on the fused ONNX export, and the traced TorchScript, timed in interleaved rounds (the machine is
   shared: only ratios within one run mean much), at each --threads count (the same for both; default 1 and 2:
   on a loaded machine two threads can be slower than one).
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

import detect
from models import Darknet, DetectSettings, Detector
from utils.cli import IMAGE_SIZE, ArgumentParser, integer
from utils.conversion.export import ONNX_OPSET, NmsOptions, export_onnx, export_torchscript
from utils.darknet.checkpoint import model_from_file
from utils.inference.load import preprocess
from utils.timing import alternating_median_seconds



def detect_py_boxes(weights: Path, images: Path, img_size: int, out: Path) -> dict[str, np.ndarray]:
    """detect.py's detections per image file name, from its label files: (n, 6) x1 y1 x2 y2 score class."""
    code = detect.main(["--source", str(images), "--weights_path", str(weights), "--img_size", str(img_size),
                        "--output", str(out), "--nosave", "--device", "cpu"])
    assert code == 0, "detect.py failed"
    found = {}
    for label in sorted((out / "labels").glob("*.txt")):
        image = next(images.glob(f"{label.stem}.*"))
        height, width = cv2.imread(str(image)).shape[:2]
        rows = np.loadtxt(label, ndmin=2) if label.stat().st_size else np.zeros((0, 6))  # empty: no detections
        cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
        found[image.name] = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, rows[:, 5], rows[:, 0]], 1)
    return found


def onnx_boxes(session, image: np.ndarray, img_size: int) -> np.ndarray:
    """The ONNX-with-NMS rows of one image, boxes mapped from network input to image pixels (as detect.py)."""
    batch, letterboxes = preprocess([image], img_size)
    rows = torch.from_numpy(session.run(None, {"images": batch.contiguous().numpy()})[0])
    boxes = letterboxes[0].to_original(rows[:, 1:5], image.shape[:2])
    return torch.cat([boxes, rows[:, 5:7]], 1).numpy()


def largest_differences(found: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> tuple[float, float, list]:
    """(largest box difference in pixels, largest score difference, images whose detections or classes differ)."""
    box_diff = score_diff = 0.0
    differing = []
    for name, expected in reference.items():
        got = found[name]
        if got.shape != expected.shape or not np.array_equal(got[:, 5], expected[:, 5]):
            differing.append(name)
            continue
        box_diff = max(box_diff, float(np.abs(got[:, :4] - expected[:, :4]).max(initial=0)))
        score_diff = max(score_diff, float(np.abs(got[:, 4] - expected[:, 4]).max(initial=0)))
    return box_diff, score_diff, differing


def compare_with_onnx(args: argparse.Namespace, work: Path) -> None:
    import onnxruntime as ort
    labels = detect_py_boxes(args.weights, args.images, args.img_size, work / "detect")
    detector = Detector(args.weights, device="cpu", settings=DetectSettings(img_size=args.img_size))
    unrounded = {name: _rows(detector(args.images / name)) for name in labels}
    model, _ = model_from_file(args.weights)
    export_onnx(model, work / "nms.onnx", args.img_size, fuse=True, nms_options=NmsOptions())
    session = ort.InferenceSession(str(work / "nms.onnx"), _ort_options(ort), providers=["CPUExecutionProvider"])
    onnx = {name: onnx_boxes(session, cv2.imread(str(args.images / name)), args.img_size) for name in labels}
    total = sum(len(v) for v in labels.values())
    print(f"ONNX (opset {ONNX_OPSET}, NMS inside, fused) vs detect.py on {len(labels)} images at {args.img_size}, "
          f"{total} detections:")
    for what, reference in (("detect.py's label files", labels), ("the same path unrounded (models.Detector)",
                                                                  unrounded)):
        box, score, differing = largest_differences(onnx, reference)
        print(f"  against {what}: {len(labels) - len(differing)} images with the same detections and classes, "
              f"max box difference {box:.2g} px, max score difference {score:.2g}"
              + (f"; differing: {', '.join(differing)}" if differing else ""))


def _rows(result) -> np.ndarray:
    return np.column_stack([result.boxes, result.scores, result.classes]).reshape(-1, 6)


def _ort_options(ort):
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1  # as PyTorch's
    return options


def compare_latency(work: Path, rounds: int) -> None:
    import onnxruntime as ort
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cfg's Darknet-only training keys
        model = Darknet(REPO / "cfg" / "yolov3-tiny.cfg").eval()
    export_onnx(model, work / "tiny.onnx", 416, fuse=True)  # fuses the model in place
    export_torchscript(model, work / "tiny.pt", 416)  # prepare_inference: also the PyTorch path timed below
    session = ort.InferenceSession(str(work / "tiny.onnx"), _ort_options(ort), providers=["CPUExecutionProvider"])
    traced = torch.jit.load(str(work / "tiny.pt"))
    x = torch.rand(1, 3, 416, 416)
    with torch.inference_mode():
        times = alternating_median_seconds([lambda: model(x), lambda: session.run(None, {"images": x.numpy()}),
                                            lambda: traced(x)], rounds=rounds)
    pytorch, onnx, script = (t * 1e3 for t in times)
    print(f"yolov3-tiny 416, batch 1, forward, medians of {rounds} interleaved rounds x 3 ({torch.get_num_threads()} "
          f"threads): "
          f"PyTorch (prepare_inference) {pytorch:.1f} ms, onnxruntime {ort.__version__} {onnx:.1f} ms "
          f"({onnx / pytorch:.2f}x), TorchScript {script:.1f} ms ({script / pytorch:.2f}x)")


def main(argv=None) -> None:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--weights", type=Path, required=True, help="a .pth for the agreement check (e.g. the demo's)")
    p.add_argument("--images", type=Path, default=Path("/tmp/demo/images/valid"), help="images to compare on")
    p.add_argument("--img_size", type=IMAGE_SIZE, default=256, help="input size of the agreement run")
    p.add_argument("--rounds", type=integer(1), default=15, help="interleaved latency rounds")
    p.add_argument("--threads", type=integer(1), nargs="+", default=[1, 2],
                   help="thread counts to time at, the same for PyTorch and onnxruntime")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as work:
        torch.set_num_threads(args.threads[-1])
        compare_with_onnx(args, Path(work))
        for threads in args.threads:
            torch.set_num_threads(threads)
            compare_latency(Path(work), args.rounds)


if __name__ == "__main__":
    main()
