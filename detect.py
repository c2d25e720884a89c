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
import sys
from pathlib import Path

from utils.cli import next_run_dir, run_main, select_device
from utils.errors import UserError
from utils.inference.load import load_model
from utils.inference.pipeline import DetectionRun, DetectSettings, detect_files
from utils.inference.sources import collect_inputs, newest_checkpoint
from utils.inference.writer import DetectionWriter

DEMO_IMAGES = "data/demo/images/valid"


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
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or a GPU index (default: cuda if available)")
    return p.parse_args(argv)


def weights_to_use(weights_path: str | None) -> Path:
    """--weights_path, else the newest trained model; none at all is an error that says how to get one."""
    weights = Path(weights_path) if weights_path else newest_checkpoint()
    if weights is None:
        raise UserError("no trained model found (runs/*/*/best.pth). Train the demo model first:\n"
                        "    bash scripts/demo.sh\n"
                        "or pass one: python detect.py --weights_path W [--model_def CFG] [--class_path NAMES]")
    return weights


def require_source(spec: str) -> None:
    """Refuse an input that does not exist (for a glob: the folder before its first ``*``)."""
    if not Path(spec.split("*")[0] or ".").exists():
        hint = "\ngenerate the demo data with: python -m utils.data.synthetic --out data/demo" \
            if spec == DEMO_IMAGES else ""
        raise UserError(f"{spec}: no such file or folder{hint}")


def inputs_to_read(spec: str, recursive: bool) -> tuple[Path, list[Path]]:
    """(root the outputs mirror, the image and video files ``spec`` names); none is an error."""
    root, inputs = collect_inputs(spec, recursive)
    if not inputs:
        raise UserError(f"{spec}: no images or videos found")
    return root, inputs


def output_folder(output: str | None, inputs: list[Path]) -> Path:
    folder = Path(output) if output else next_run_dir(Path("runs/detect"))
    if folder.resolve() in {p.resolve().parent for p in inputs}:
        raise UserError(f"--output {folder} holds input files; choose another folder so none is overwritten")
    return folder


def print_summary(writer: DetectionWriter, run: DetectionRun, device) -> None:
    done = len(writer.records)
    print(f"{done} images/frames -> {writer.output} (annotated .jpg/.mp4, labels/*.txt as 'class cx cy w h score', "
          f"detections.json)")
    if run.skipped:
        print(f"skipped {len(run.skipped)} unreadable: {', '.join(run.skipped[:5])}"
              f"{' ...' if len(run.skipped) > 5 else ''}")
    print("detections per class: "
          + (", ".join(f"{n} {writer.counts[n]}" for n in writer.names if writer.counts[n]) or "none"))
    if done:
        print(f"per image: preprocess {run.preprocess_seconds / done * 1e3:.1f} ms, "
              f"forward + NMS {run.inference_seconds / done * 1e3:.1f} ms ({device})")


def detect(args: argparse.Namespace) -> int:
    weights = weights_to_use(args.weights_path)
    require_source(args.image_folder)
    device = select_device(args.device)
    loaded = load_model(weights, args.model_def, args.class_path, device)
    root, inputs = inputs_to_read(args.image_folder, args.recursive)
    writer = DetectionWriter(output_folder(args.output, inputs), root, loaded.names)
    settings = DetectSettings(args.img_size, args.conf_thres, args.nms_thres, args.batch_size, args.letterbox)
    run = detect_files(loaded.model, inputs, writer, settings)
    writer.finish({"weights": str(weights), "conf_thres": args.conf_thres, "nms_thres": args.nms_thres,
                   "img_size": args.img_size, "skipped": run.skipped})
    print_summary(writer, run, device)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: detect(args))


if __name__ == "__main__":
    sys.exit(main())
