"""Anchors for your own data: Darknet's calc_anchors (k-means on the training boxes, distance 1 - IoU).

    python calc_anchors.py --data_config data/raccoon/raccoon.data --num_anchors 6 --img_size 320
    python calc_anchors.py --data_config D --num_anchors 9 --img_size 416 --model_def cfg/yolov3.cfg --out my.cfg

Prints the anchors sorted by area (whole pixels at --img_size, as a cfg's anchors line), their average IoU
with the boxes and the best possible recall at IoU 0.25 (and at the cfg's iou_thresh); with --model_def
(a .cfg or a .pth) also the fit of the cfg's own anchors, whose count is the default (as a .pth's training
size is); with --out writes a copy of the cfg with the new anchors, num and masks in every [yolo] (the
largest anchors to the coarsest stride) and the head filters to match, every other line kept. An existing
--out is only replaced with --force, and never when it is one of the command's inputs (the cfg, the data
config, its lists and names, an image or a label file). The data config may be a Darknet .data or a
YOLOv5-style .yaml; only its train list is read.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from utils.cli import IMAGE_SIZE, SEED, ArgumentParser, integer, run_main
from utils.darknet.cfg import DEFAULT_IMG_SIZE, SIZE_MULTIPLE, Cfg, read_cfg
from utils.darknet.checkpoint import CHECKPOINT_SUFFIXES, checkpoint_cfg, load_checkpoint, run_size, trained_size
from utils.darknet.weights import cutoff_from_name
from utils.data.anchors import (FIT_THRESHOLD, AnchorCheck, AnchorError, KMeansOptions, anchor_fit, anchors_in_use,
                                assignment_threshold, format_anchors, kmeans_anchors, label_sizes, rounded,
                                with_anchors)
from utils.data.check import ANCHORS, labels_problem, summarize_dataset
from utils.data.config import DataConfig, DataError, describe_source, parse_data_config
from utils.data.dataset import DetectionDataset
from utils.fileio import atomic_write
from utils.output_files import named_write_errors, refuse_existing, refuse_replacing_inputs

DEFAULT_ANCHORS = 9  # yolov3's


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--data_config", required=True, help=".data or .yaml; its train list's labels are clustered")
    p.add_argument("--num_anchors", type=integer(1),
                   help=f"anchors to compute (default: as many as --model_def uses, else {DEFAULT_ANCHORS})")
    p.add_argument("--img_size", type=IMAGE_SIZE,
                   help=f"network input size the anchors are for, a multiple of {SIZE_MULTIPLE} (default: the size "
                        f"a --model_def .pth was trained at, else train.py's default, {DEFAULT_IMG_SIZE})")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the random initial centres")
    p.add_argument("--restarts", type=integer(1), default=10, help="k-means runs; the best average IoU is kept")
    p.add_argument("--model_def", help="a .cfg, or a .pth (its cfg): report its anchors' fit too (and its "
                                       "iou_thresh)")
    p.add_argument("--out", help="write the --model_def cfg with the new anchors here (a .cfg)")
    p.add_argument("--force", "--exist_ok", dest="force", action="store_true", help="replace an existing --out")
    return p.parse_args(argv)


def _check_flags(args: argparse.Namespace) -> None:
    """--out: a .cfg name, of a copy of --model_def, new unless --force (checked before the data is read)."""
    if not args.out:
        return
    if not args.model_def:
        raise AnchorError("--out writes a copy of a cfg: name it with --model_def")
    if Path(args.out).suffix != ".cfg":
        raise AnchorError(f"--out {args.out}: expected a .cfg name, as the output is a cfg's text")
    refuse_replacing_inputs([args.out], [args.model_def, args.data_config], "--out")
    refuse_existing([args.out], "--out", args.force, "--force")


def model_cfg(path: str | None) -> tuple[Cfg | None, int | None]:
    """--model_def: a .cfg, or the cfg a .pth carries, with the input size it was trained at (None, None
    without the flag)."""
    if not path:
        return None, None
    if path.endswith(CHECKPOINT_SUFFIXES):
        state = load_checkpoint(path)
        return checkpoint_cfg(state, Path(path)), trained_size(state)
    if path.endswith(".weights") or cutoff_from_name(path) is not None:
        raise AnchorError(f"--model_def {path}: expected a .cfg, or a .pth that carries one; a .weights file holds "
                          f"no anchors")
    return read_cfg(path), None


def _defaults(args: argparse.Namespace, cfg: Cfg | None, trained: int | None) -> tuple[int, int, str]:
    """(anchors to compute, input size, the note saying where they came from): the flags, else the cfg's anchor
    count and a .pth's training size, else 9 anchors at train.py's default size."""
    notes = []
    count = args.num_anchors
    if cfg is not None and count is None:
        count = len(anchors_in_use(cfg))
        notes.append(f"{count} anchors, as the cfg uses")
    size = run_size(args.img_size, trained)
    if args.img_size is None:
        notes.append(f"at the size {'it was trained at' if trained else 'train.py trains at by default'}")
    return count or DEFAULT_ANCHORS, size, f" ({', '.join(notes)})" if notes else ""


def training_boxes(data: DataConfig, dataset: DetectionDataset) -> tuple[list[np.ndarray], str, list[str]]:
    """(the train images' (n, 5) label arrays, where they came from, warnings); stops when no box is found."""
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


def anchor_notes(anchors: np.ndarray, fit: AnchorCheck) -> list[str]:
    """What the user should know of the anchors found: sizes that round to one, and a fit still poor."""
    sizes = [tuple(anchor) for anchor in anchors.tolist()]
    repeated = sorted({size for size in sizes if sizes.count(size) > 1})
    notes = []
    if repeated:
        notes.append(f"{len(sizes) - len(set(sizes))} of the {len(sizes)} anchors repeat another once rounded to "
                     f"whole pixels ({format_anchors(np.array(repeated))}): the boxes' sizes lie within a pixel of "
                     f"each other at {fit.img_size} px, so fewer --num_anchors would do the same")
    if fit.poor:
        notes.append(f"even the anchors k-means found fit these boxes poorly ({fit.shortfalls()}): their sizes are "
                     f"too spread for {fit.num_anchors} anchors, or too small at {fit.img_size} px; more "
                     f"--num_anchors or a larger --img_size may fit them")
    return notes


def _write_out(args: argparse.Namespace, cfg: Cfg, anchors: np.ndarray) -> str:
    edit = with_anchors(cfg, anchors)
    with named_write_errors(args.out, "cfg"), atomic_write(args.out) as f:
        f.write(edit.cfg.text.encode())
    where = [f"mask={','.join(map(str, m))}" + (f" (stride {s:g})" if edit.strides else "")
             for m, s in zip(edit.masks, edit.strides or [0] * len(edit.masks))]
    return (f"wrote {args.out}: {args.model_def} with these {len(anchors)} anchors in its {len(edit.masks)} "
            f"[yolo] layers, in cfg order {'; '.join(where)}"
            + ("" if edit.strides else " (strides unknown: the cfg's layer order decided)"))


def run(args: argparse.Namespace) -> list[str]:
    """Everything the command prints, line by line (warnings first)."""
    _check_flags(args)
    cfg, trained = model_cfg(args.model_def)
    data = parse_data_config(args.data_config)
    dataset = DetectionDataset.from_config(data, "train")
    if args.out:  # nor any file of the dataset, which only now is known
        refuse_replacing_inputs([args.out], [*data.files(), *dataset.files()], "--out")
    labels, source, notes = training_boxes(data, dataset)
    count, size, chosen = _defaults(args, cfg, trained)
    boxes = label_sizes(labels, size)
    iou_thresh = assignment_threshold(cfg) if cfg is not None else None
    thresholds = [FIT_THRESHOLD] + ([iou_thresh] if iou_thresh is not None and iou_thresh != FIT_THRESHOLD else [])
    try:
        clusters = kmeans_anchors(boxes, KMeansOptions(count, args.restarts, args.seed))
    except AnchorError as err:  # too few distinct sizes: say whose labels they are
        raise AnchorError(f"{source}: {err}") from None
    anchors = rounded(clusters.anchors)
    notes += anchor_notes(anchors, AnchorCheck(*anchor_fit(anchors, boxes), len(boxes), count, size))
    lines = [f"warning: {note}" for note in notes] + [
        f"{source}: {len(boxes)} boxes, sizes at {size}x{size}{chosen}",
        f"k-means (distance 1 - IoU), {args.restarts} restarts from seed {args.seed}: restart {clusters.restart} "
        f"kept, converged after {clusters.iterations} rounds",
        f"anchors = {format_anchors(anchors)}",
        _fit_line("new anchors", anchors, boxes, thresholds)]
    if cfg is not None:
        lines.append(_fit_line(f"{args.model_def}'s anchors", anchors_in_use(cfg), boxes, thresholds))
    if args.out:
        lines.append(_write_out(args, cfg, anchors))
    return lines


def report(args: argparse.Namespace) -> int:
    print("\n".join(run(args)))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: report(args))


if __name__ == "__main__":
    sys.exit(main())
