"""Anchors for your own data: Darknet's calc_anchors (k-means on the training boxes, distance 1 - IoU).

    python calc_anchors.py --data_config data/raccoon/raccoon.data --num_anchors 6 --img_size 320
    python calc_anchors.py --data_config D --num_anchors 9 --img_size 416 --model_def cfg/yolov3.cfg --out my.cfg

Prints the anchors sorted by area (whole pixels at --img_size, as a cfg's anchors line), their average IoU
with the boxes and the best possible recall at IoU 0.25 (and at the cfg's iou_thresh); with --model_def
also the fit of the cfg's own anchors, and with --out writes a copy of the cfg with the new anchors, num
and masks in every [yolo] (the largest anchors to the coarsest stride) and the head filters to match,
every other line kept. An existing --out is only replaced with --force. The data config may be a Darknet
.data or a YOLOv5-style .yaml; only its train list is read.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from utils.cli import IMAGE_SIZE, ArgumentParser, integer, run_main
from utils.darknet.cfg import DEFAULT_IMG_SIZE, read_cfg
from utils.data.anchors import (FIT_THRESHOLD, AnchorError, KMeansOptions, anchor_fit, anchors_in_use,
                                assignment_threshold, format_anchors, kmeans_anchors, label_sizes, rounded,
                                with_anchors)
from utils.data.check import ANCHORS, labels_problem, summarize_dataset
from utils.data.config import DataError, describe_source, parse_data_config
from utils.data.dataset import DetectionDataset
from utils.fileio import atomic_write
from utils.output_files import named_write_errors, refuse_existing, refuse_replacing_inputs


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--data_config", required=True, help=".data or .yaml; its train list's labels are clustered")
    p.add_argument("--num_anchors", type=integer(1), default=9, help="anchors to compute")
    p.add_argument("--img_size", type=IMAGE_SIZE, default=DEFAULT_IMG_SIZE,
                   help="network input size the anchors are for (pixels, a multiple of 32)")
    p.add_argument("--seed", type=integer(0, 2 ** 32 - 1), default=0, help="seed of the random initial centres")
    p.add_argument("--restarts", type=integer(1), default=10, help="k-means runs; the best average IoU is kept")
    p.add_argument("--model_def", help="a cfg: report its anchors' fit too (and its iou_thresh)")
    p.add_argument("--out", help="write the --model_def cfg with the new anchors here")
    p.add_argument("--force", "--exist_ok", dest="force", action="store_true", help="replace an existing --out")
    return p.parse_args(argv)


def _check_flags(args: argparse.Namespace) -> None:
    if args.out and not args.model_def:
        raise AnchorError("--out writes a copy of a cfg: name it with --model_def")
    if args.out:
        refuse_replacing_inputs([args.out], [args.model_def, args.data_config], "--out")
        refuse_existing([args.out], "--out", args.force, "--force")


def training_boxes(data_config: str) -> tuple[list[np.ndarray], str, list[str]]:
    """(the train images' (n, 5) label arrays, where they came from, warnings); stops when no box is found."""
    data = parse_data_config(data_config)
    dataset = DetectionDataset(data.train, data.classes)
    source = describe_source(dataset.list_path)
    summary = summarize_dataset(dataset.images, dataset.labels, data.names, source)
    problem = labels_problem(summary, use=ANCHORS)
    if not summary.boxes_per_class.sum():
        raise DataError(problem or f"{source}: its label files hold no boxes to compute anchors from")
    return dataset.labels, f"{len(dataset)} train images ({source})", [problem] if problem else []


def _fit_line(what: str, anchors: np.ndarray, boxes: np.ndarray, thresholds: list[float]) -> str:
    avg_iou, recall = anchor_fit(anchors, boxes, thresholds)
    recalls = ", ".join(f"{100 * r:.2f} % at IoU {t:g}" for t, r in recall.items())
    return f"{what}: average IoU {100 * avg_iou:.2f} %, best possible recall {recalls}"


def run(args: argparse.Namespace) -> list[str]:
    """Everything the command prints, line by line (warnings first)."""
    _check_flags(args)
    labels, source, notes = training_boxes(args.data_config)
    boxes = label_sizes(labels, args.img_size)
    cfg = read_cfg(args.model_def) if args.model_def else None
    iou_thresh = assignment_threshold(cfg) if cfg is not None else None
    thresholds = [FIT_THRESHOLD] + ([iou_thresh] if iou_thresh is not None and iou_thresh != FIT_THRESHOLD else [])
    try:
        clusters = kmeans_anchors(boxes, KMeansOptions(args.num_anchors, args.restarts, args.seed))
    except AnchorError as err:  # too few distinct sizes: say whose labels they are
        raise AnchorError(f"{source}: {err}") from None
    anchors = rounded(clusters.anchors)
    lines = [f"warning: {note}" for note in notes] + [
        f"{source}: {len(boxes)} boxes, sizes at {args.img_size}x{args.img_size}",
        f"k-means (distance 1 - IoU), {args.restarts} restarts from seed {args.seed}: restart {clusters.restart} "
        f"kept, converged after {clusters.iterations} rounds",
        f"anchors = {format_anchors(anchors)}",
        _fit_line("new anchors", anchors, boxes, thresholds)]
    if cfg is not None:
        lines.append(_fit_line(f"{args.model_def}'s anchors", anchors_in_use(cfg), boxes, thresholds))
    if args.out:
        edit = with_anchors(cfg, anchors)
        with named_write_errors(args.out, "cfg"), atomic_write(args.out) as f:
            f.write(edit.cfg.text.encode())
        where = [f"mask={','.join(map(str, m))}" + (f" (stride {s:g})" if edit.strides else "")
                 for m, s in zip(edit.masks, edit.strides or [0] * len(edit.masks))]
        lines.append(f"wrote {args.out}: {args.model_def} with these {len(anchors)} anchors in its {len(edit.masks)} "
                     f"[yolo] layers, in cfg order {'; '.join(where)}"
                     + ("" if edit.strides else " (strides unknown: the cfg's layer order decided)"))
    return lines


def report(args: argparse.Namespace) -> int:
    print("\n".join(run(args)))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: report(args))


if __name__ == "__main__":
    sys.exit(main())
