"""Detect objects in images, videos, cameras and streams; write annotated copies, Darknet label files and one JSON.

    python detect.py                                   # the demo's held-out images and newest trained model
    python detect.py --source photos/ --weights_path runs/train/exp1/best.pth
    python detect.py --source 'photos/**/*.png' --model_def cfg/yolov3.cfg --weights_path yolov3.weights \\
                     --class_path data/coco.names --classes 0 2 --save_crop
    python detect.py --source clip.mp4 --weights_path runs/train/exp1/best.pth      # -> clip.mp4 with boxes
    python detect.py --source 0 --view                 # the first camera, shown live; Ctrl-C or q stops
    python detect.py --source rtsp://host/stream --nosave                           # labels and JSON only
    python detect.py --source sources.txt              # one folder, file, glob, camera or URL a line

--source (alias --image_folder) is a folder (add --recursive for subfolders), an image or video, a glob, a camera
index, a stream URL (rtsp, rtmp, http(s), udp, tcp) or a list file (.txt, .list, .streams). Cameras and streams
are read on a background thread that keeps only the newest frame, so detection never lags behind; files are read
ahead without dropping any. Outputs go to --output (default runs/detect/expN): never inside, onto or around an
input, and never into a folder that already holds results unless --exist_ok.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.cli import (ArgumentParser, add_half_flag, add_run_size_flag, device_flag, integer, number, output_folder,
                       run_main, select_device)
from utils.data.synthetic import DEMO_DIR
from utils.errors import UserError
from utils.inference.load import LoadedModel, load_model
from utils.inference.pipeline import DetectionRun, DetectSettings, detect_inputs
from utils.inference.tta import AUGMENT_HELP
from utils.inference.sources import SourceError, SourceSet, newest_checkpoint, resolve_sources
from utils.inference.viewer import FrameViewer
from utils.inference.visualize import DrawStyle
from utils.inference.writer import (CROPS_DIR, LABELS_DIR, RECORD_FILE, DetectionWriter, OutputOptions,
                                    check_default_output, check_output_folder)
from utils.output_files import made_folder
from utils.training.run_files import BEST_CHECKPOINT

DEMO_IMAGES = str(DEMO_DIR / "images" / "valid")
DETECT_RUNS = Path("runs/detect")
DETECT_RESULTS = (LABELS_DIR,)  # a failed run is kept once it holds a frame's labels
SHOWN_SKIPPED = 5  # unreadable inputs named in the summary; the record file lists them all


def add_model_flags(p: argparse.ArgumentParser) -> None:
    d = DetectSettings()
    p.add_argument("--model_def", help="Darknet .cfg (needed for .weights; a .pth carries its own)")
    p.add_argument("--weights_path", help=f".weights or .pth (default: the newest runs/*/*/{BEST_CHECKPOINT})")
    p.add_argument("--class_path", help="class names, one per line (default: from the .pth, else numbers)")
    add_run_size_flag(p)
    p.add_argument("--batch_size", type=integer(1), default=d.batch_size, help="frames per forward pass")
    p.add_argument("--augment", action="store_true", help=AUGMENT_HELP)
    p.add_argument("--letterbox", action=argparse.BooleanOptionalAction, default=d.letterbox,
                   help="keep the aspect ratio and pad, or stretch like Darknet's default detector")
    p.add_argument("--device", type=device_flag, default="",
                   help="cpu, cuda, cuda:N or a GPU index (default: cuda if available)")
    add_half_flag(p)


def add_selection_flags(p: argparse.ArgumentParser) -> None:
    d = DetectSettings()
    p.add_argument("--conf_thres", type=number(0, 1), default=d.conf_thres, help="objectness x class score threshold")
    p.add_argument("--nms_thres", "--iou_thres", type=number(0, 1), default=d.iou_thres, help="IoU threshold of NMS")
    p.add_argument("--max_det", type=integer(1), default=d.max_det, help="at most this many detections per image")
    p.add_argument("--classes", type=integer(0), nargs="+", metavar="CLASS",
                   help="keep only these class indices (default: all)")
    p.add_argument("--agnostic_nms", action="store_true", help="NMS across classes (boxes of any class suppress)")


def add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", help="output folder (default: the next runs/detect/expN)")
    p.add_argument("--exist_ok", action="store_true", help="write into an --output that already holds results")
    p.add_argument("--nosave", action="store_true", help="no annotated images or videos: labels and JSON only")
    p.add_argument("--save_crop", action="store_true", help="also save each detection's pixels, in crops/<class>/")
    p.add_argument("--line_thickness", type=integer(1, 100), help="box line width in pixels (default: by image size)")
    p.add_argument("--hide_labels", action="store_true", help="draw boxes without class names or scores")
    p.add_argument("--hide_conf", action="store_true", help="draw class names without scores")
    p.add_argument("--view", action="store_true", help="show the annotated frames in a window (q or Esc stops)")


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--source", "--image_folder", default=DEMO_IMAGES,
                   help="folder, image, video, glob, camera index, stream URL or list file")
    p.add_argument("--recursive", action="store_true", help="also look in subfolders of a folder")
    add_model_flags(p)
    add_selection_flags(p)
    add_output_flags(p)
    return p.parse_args(argv)


def weights_to_use(weights_path: str | None) -> Path:
    """--weights_path, else the newest trained model; none at all is an error that says how to get one."""
    if weights_path:
        return Path(weights_path)
    weights = newest_checkpoint()
    if weights is None:
        raise UserError(f"no trained model found (runs/*/*/{BEST_CHECKPOINT} or runs/*/{BEST_CHECKPOINT}): train the "
                        f"demo model first (bash scripts/demo.sh), or pass one: python detect.py --weights_path W "
                        f"[--model_def CFG] [--class_path NAMES]")
    print(f"model: {weights}, the newest runs/*/*/{BEST_CHECKPOINT} (--weights_path names another)")
    return weights


def sources_to_read(spec: str, recursive: bool) -> SourceSet:
    """What ``spec`` names; a missing demo folder says how to generate it."""
    try:
        return resolve_sources(spec, recursive)
    except SourceError as err:
        if spec == DEMO_IMAGES and not Path(spec).exists():
            raise SourceError(f"{err}; generate the demo data with: python -m utils.data.synthetic --out {DEMO_DIR}")
        if not spec.strip():
            raise SourceError(f"--source: {err}") from None
        raise


def settings_from(args: argparse.Namespace, loaded: LoadedModel) -> DetectSettings:
    return DetectSettings(conf_thres=args.conf_thres, iou_thres=args.nms_thres, max_det=args.max_det,
                          classes=tuple(args.classes) if args.classes else None, agnostic=args.agnostic_nms,
                          img_size=loaded.input_size(args.img_size), letterbox=args.letterbox,
                          batch_size=args.batch_size, augment=args.augment)


def print_summary(writer: DetectionWriter, run: DetectionRun, settings: DetectSettings, device) -> None:
    done = len(writer.records)
    saved = "" if not writer.options.save_annotated else "annotated .jpg/.mp4, "
    crops = f"{CROPS_DIR}/<class>/, " if writer.options.save_crops else ""
    print(f"{done} images/frames -> {writer.output} ({saved}{LABELS_DIR}/*.txt as 'class cx cy w h score', {crops}"
          f"{RECORD_FILE})")
    if run.stopped:
        print(f"stopped by {run.stopped}; the outputs hold every frame detected until then")
    if run.dropped:
        print(f"dropped {run.dropped} live frames to stay current (detection is slower than the source)")
    if run.skipped:
        print(f"skipped {len(run.skipped)} unreadable: {', '.join(run.skipped[:SHOWN_SKIPPED])}"
              f"{' ...' if len(run.skipped) > SHOWN_SKIPPED else ''}")
    print("detections per class: "
          + (", ".join(f"{n} {writer.counts[n]}" for n in writer.names if writer.counts[n]) or "none"))
    if done:
        print(f"per image: preprocess {run.preprocess_seconds / done * 1e3:.1f} ms, "
              f"forward + NMS {run.inference_seconds / done * 1e3:.1f} ms ({device}, input {settings.img_size})")


def detect(args: argparse.Namespace) -> int:
    weights = weights_to_use(args.weights_path)
    sources = sources_to_read(args.source, args.recursive)
    if args.output:  # first: an output among the inputs is a graver mistake than one holding results
        model_files = [Path(path) for path in (weights, args.model_def, args.class_path) if path]
        check_output_folder(Path(args.output), [*sources.locations, *model_files])
    else:
        check_default_output(DETECT_RUNS, sources.locations)
    folder = output_folder(args.output, DETECT_RUNS, args.exist_ok)
    with made_folder(folder, "--output", DETECT_RESULTS, claimed=args.output is None):  # before the model loads
        return detect_into(folder, weights, sources, args)


def detect_into(folder: Path, weights: Path, sources: SourceSet, args: argparse.Namespace) -> int:
    device = select_device(args.device)
    loaded = load_model(weights, args.model_def, args.class_path, device, args.half)
    settings = settings_from(args, loaded)
    settings.check_classes(loaded.model.num_classes, "--classes")
    style = DrawStyle(args.line_thickness, args.hide_labels, args.hide_conf)
    writer = DetectionWriter(folder, loaded.names, OutputOptions(not args.nosave, args.save_crop, style))
    run = detect_inputs(loaded.model, sources.inputs, writer, settings, FrameViewer.open() if args.view else None)
    writer.finish({"weights": str(weights), "conf_thres": settings.conf_thres, "nms_thres": settings.iou_thres,
                   "max_det": settings.max_det, "classes": settings.classes, "agnostic_nms": settings.agnostic,
                   "img_size": settings.img_size, "augment": settings.augment, "skipped": run.skipped,
                   "dropped_live_frames": run.dropped, "stopped": run.stopped})
    if not writer.records and run.skipped:  # before the summary, which would name a folder that goes away
        raise UserError(f"nothing could be read: {', '.join(run.skipped[:SHOWN_SKIPPED])}")
    print_summary(writer, run, settings, device)
    if run.stopped == "Ctrl-C":
        raise KeyboardInterrupt  # outputs are complete; the exit code still says the run was cut short
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: detect(args))


if __name__ == "__main__":
    sys.exit(main())
