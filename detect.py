"""Detect objects in images and write annotated copies, Darknet label files and one JSON per run.

    python detect.py                                   # the demo's held-out images and newest trained model
    python detect.py --image_folder photos/ --weights_path runs/train/exp1/best.pth
    python detect.py --image_folder 'photos/**/*.png' --model_def cfg/yolov3.cfg --weights_path yolov3.weights \\
                     --class_path data/coco.names

PATH may be a folder (add --recursive for subfolders), one image, or a glob. Input images are never
written to; outputs go to --output (default runs/detect/expN).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from utils.boxes import xyxy_to_xywh
from utils.cfg import CfgError
from utils.darknet_weights import WeightsFileError
from utils.data import IMAGE_SUFFIXES
from utils.inference import detect, load_model, preprocess
from utils.io import atomic_write
from utils.trainer import next_run_dir
from utils.visualize import draw_detections

DEMO_IMAGES = "data/demo/images/valid"


def newest_checkpoint() -> Path | None:
    candidates = [*Path("runs").glob("*/*/best.pth"), *Path("runs").glob("*/best.pth")]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def collect_images(spec: str, recursive: bool) -> tuple[Path, list[Path]]:
    """(root the outputs mirror, image files). Files with other extensions in a folder are skipped, named."""
    path = Path(spec)
    if path.is_file():
        return path.parent, [path]
    if path.is_dir():
        files = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if p.is_file())
        root = path
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        root = Path(os.path.commonpath([p.parent for p in files])) if files else Path(".")
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    for other in (p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES):
        warnings.warn(f"skipping {other}: not an image ({', '.join(IMAGE_SUFFIXES)})", stacklevel=2)
    return root, images


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image_folder", default=DEMO_IMAGES, help="folder, image or glob (default: the demo's "
                                                                "validation images)")
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
        hint = "\ngenerate the demo data with: python -m utils.synthetic --out data/demo" \
            if args.image_folder == DEMO_IMAGES else ""
        print(f"error: {args.image_folder}: no such file or folder{hint}", file=sys.stderr)
        return 1
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        loaded = load_model(weights, args.model_def, args.class_path, device)
    except (CfgError, WeightsFileError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    root, images = collect_images(args.image_folder, args.recursive)
    if not images:
        print(f"error: {args.image_folder}: no images found", file=sys.stderr)
        return 1
    output = Path(args.output) if args.output else next_run_dir(Path("runs/detect"))
    inputs = {p.resolve().parent for p in images}
    if output.resolve() in inputs:
        print(f"error: --output {output} holds input images; choose another folder so none is overwritten",
              file=sys.stderr)
        return 1
    (output / "labels").mkdir(parents=True, exist_ok=True)

    counts, records = Counter(), []
    timing = {"preprocess": 0.0, "inference": 0.0}
    skipped = []
    for start in tqdm(range(0, len(images), args.batch_size), desc="detect", unit="batch"):
        paths, frames = [], []
        for path in images[start:start + args.batch_size]:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)  # applies EXIF rotation; grey, RGBA, 16-bit -> BGR8
            if frame is None:
                warnings.warn(f"skipping unreadable image {path}", stacklevel=1)
                skipped.append(str(path))
                continue
            paths.append(path)
            frames.append(frame)
        if not frames:
            continue
        t0 = time.perf_counter()
        batch, boxes = preprocess(frames, args.img_size, args.letterbox)
        t1 = time.perf_counter()
        detections = detect(loaded.model, batch, boxes, [f.shape[:2] for f in frames], args.conf_thres,
                            args.nms_thres)
        t2 = time.perf_counter()
        timing["preprocess"] += t1 - t0
        timing["inference"] += t2 - t1
        for path, frame, dets in zip(paths, frames, detections):
            relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
            target = (output / relative).with_suffix(".jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            ok, encoded = cv2.imencode(".jpg", draw_detections(frame, dets.numpy(), loaded.names))
            if ok:
                with atomic_write(target) as f:
                    f.write(encoded.tobytes())
            height, width = frame.shape[:2]
            xywh = xyxy_to_xywh(dets[:, :4]) / torch.tensor([width, height, width, height])
            lines = "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f} {s:.4f}\n"
                            for (x, y, w, h), s, c in zip(xywh.tolist(), dets[:, 4].tolist(), dets[:, 5].tolist()))
            label_file = (output / "labels" / relative).with_suffix(".txt")
            label_file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(label_file) as f:
                f.write(lines.encode())
            counts.update(loaded.names[int(c)] for c in dets[:, 5].tolist())
            records.append({"image": str(path), "width": width, "height": height, "detections": [
                {"class": int(c), "name": loaded.names[int(c)], "score": round(s, 5),
                 "box_xyxy": [round(v, 2) for v in box]}
                for box, s, c in zip(dets[:, :4].tolist(), dets[:, 4].tolist(), dets[:, 5].tolist())]})
    with atomic_write(output / "detections.json") as f:
        f.write(json.dumps({"weights": str(weights), "conf_thres": args.conf_thres, "nms_thres": args.nms_thres,
                            "img_size": args.img_size, "images": records, "skipped": skipped}, indent=1).encode())
    done = len(records)
    print(f"{done} images -> {output} (annotated .jpg, labels/*.txt as 'class cx cy w h score', detections.json)")
    if skipped:
        print(f"skipped {len(skipped)} unreadable: {', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}")
    print("detections per class: " + (", ".join(f"{n} {counts[n]}" for n in loaded.names if counts[n]) or "none"))
    if done:
        print(f"per image: preprocess {timing['preprocess'] / done * 1e3:.1f} ms, "
              f"forward + NMS {timing['inference'] / done * 1e3:.1f} ms ({device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
