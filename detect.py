"""Detect objects in images or videos and write annotated copies, Darknet label files and one JSON per run.

    python detect.py                                   # the demo's held-out images and newest trained model
    python detect.py --image_folder photos/ --weights_path runs/train/exp1/best.pth
    python detect.py --image_folder 'photos/**/*.png' --model_def cfg/yolov3.cfg --weights_path yolov3.weights \\
                     --class_path data/coco.names
    python detect.py --source clip.mp4 --weights_path runs/train/exp1/best.pth      # -> clip.mp4 with boxes

The input (--image_folder, alias --source) may be a folder (add --recursive for subfolders), one image
or video, or a glob. Videos come out as annotated .mp4 with a label file per frame. Inputs are never
written to; outputs go to --output (default runs/detect/expN).
"""
from __future__ import annotations

import argparse
import glob
import itertools
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from utils.darknet.cfg import CfgError
from utils.darknet.weights import WeightsFileError
from utils.data.dataset import IMAGE_SUFFIXES
from utils.inference.writer import VIDEO_SUFFIXES, DetectionWriter, Frame, count_frames, read_frames
from utils.inference.load import detect, load_model, preprocess
from utils.cli import next_run_dir

DEMO_IMAGES = "data/demo/images/valid"


def newest_checkpoint() -> Path | None:
    candidates = [*Path("runs").glob("*/*/best.pth"), *Path("runs").glob("*/best.pth")]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def collect_inputs(spec: str, recursive: bool) -> tuple[Path, list[Path]]:
    """(root the outputs mirror, image and video files). Other files in a folder are skipped, named."""
    path = Path(spec)
    if path.is_file():
        return path.parent, [path]
    if path.is_dir():
        files = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if p.is_file())
        root = path
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        root = Path(os.path.commonpath([p.parent for p in files])) if files else Path(".")
    known = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    for other in (p for p in files if p.suffix.lower() not in known):
        warnings.warn(f"skipping {other}: not an image or video ({', '.join(known)})", stacklevel=2)
    return root, [p for p in files if p.suffix.lower() in known]


def batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    while chunk := list(itertools.islice(frames, size)):
        yield chunk


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image_folder", "--source", default=DEMO_IMAGES,
                   help="folder, image, video or glob (default: the demo's validation images)")
    p.add_argument("--recursive", action="store_true", help="also look in subfolders")
    p.add_argument("--model_def", help="Darknet .cfg (needed for .weights; a .pth carries its own)")
    p.add_argument("--weights_path", help=".weights or .pth (default: the newest runs/*/*/best.pth)")
    p.add_argument("--class_path", help="class names, one per line (default: from the .pth, else numbers)")
    p.add_argument("--conf_thres", type=float, default=0.25, help="objectness x class score threshold")
    p.add_argument("--nms_thres", type=float, default=0.45, help="IoU threshold of class-aware NMS")
    p.add_argument("--img_size", type=int, default=416, help="network input size (multiple of 32)")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--letterbox", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the aspect ratio and pad (default), or stretch like Darknet's default detector")
    p.add_argument("--output", help="output folder (default: runs/detect/expN)")
    p.add_argument("--device", default="", help="cpu, cuda or cuda:N (default: cuda if available)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    weights = Path(args.weights_path) if args.weights_path else newest_checkpoint()
    if weights is None:
        print("error: no trained model found (runs/*/*/best.pth). Train the demo model first:\n"
              "    bash scripts/demo.sh\n"
              "or pass one: python detect.py --weights_path W [--model_def CFG] [--class_path NAMES]",
              file=sys.stderr)
        return 1
    if not Path(args.image_folder.split("*")[0] or ".").exists():
        hint = "\ngenerate the demo data with: python -m utils.data.synthetic --out data/demo" \
            if args.image_folder == DEMO_IMAGES else ""
        print(f"error: {args.image_folder}: no such file or folder{hint}", file=sys.stderr)
        return 1
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        loaded = load_model(weights, args.model_def, args.class_path, device)
    except (CfgError, WeightsFileError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    root, inputs = collect_inputs(args.image_folder, args.recursive)
    if not inputs:
        print(f"error: {args.image_folder}: no images or videos found", file=sys.stderr)
        return 1
    output = Path(args.output) if args.output else next_run_dir(Path("runs/detect"))
    if output.resolve() in {p.resolve().parent for p in inputs}:
        print(f"error: --output {output} holds input files; choose another folder so none is overwritten",
              file=sys.stderr)
        return 1

    writer = DetectionWriter(output, root, loaded.names)
    skipped: list[str] = []
    timing = {"preprocess": 0.0, "inference": 0.0}
    try:
        with tqdm(total=count_frames(inputs), desc="detect", unit="frame") as progress:
            for chunk in batches(read_frames(inputs, skipped), args.batch_size):
                t0 = time.perf_counter()
                batch, boxes = preprocess([f.pixels for f in chunk], args.img_size, args.letterbox)
                t1 = time.perf_counter()
                detections = detect(loaded.model, batch, boxes, [f.pixels.shape[:2] for f in chunk],
                                    args.conf_thres, args.nms_thres)
                timing["preprocess"] += t1 - t0
                timing["inference"] += time.perf_counter() - t1
                for frame, dets in zip(chunk, detections):
                    writer.add(frame, dets)
                progress.update(len(chunk))
    except BaseException:
        writer.abort()
        raise
    writer.finish({"weights": str(weights), "conf_thres": args.conf_thres, "nms_thres": args.nms_thres,
                   "img_size": args.img_size, "skipped": skipped})
    done = len(writer.records)
    print(f"{done} images/frames -> {output} (annotated .jpg/.mp4, labels/*.txt as 'class cx cy w h score', "
          f"detections.json)")
    if skipped:
        print(f"skipped {len(skipped)} unreadable: {', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}")
    print("detections per class: "
          + (", ".join(f"{n} {writer.counts[n]}" for n in loaded.names if writer.counts[n]) or "none"))
    if done:
        print(f"per image: preprocess {timing['preprocess'] / done * 1e3:.1f} ms, "
              f"forward + NMS {timing['inference'] / done * 1e3:.1f} ms ({device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
