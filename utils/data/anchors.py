"""Anchors for a dataset: Darknet's ``calc_anchors``, how well a set of anchors fits, and anchors into a cfg.

- Box sizes are those of the training list's labels in network-input pixels, ``w * img_size`` and
  ``h * img_size`` (Darknet's calc_anchors: the label sizes times the network's width and height).
- :func:`kmeans_anchors` is Darknet's ``do_kmeans``: distance ``1 - IoU`` of corner-aligned boxes
  (``inter = min(w) * min(h)``), centres initialised with k distinct random box sizes (not k-means++),
  then assign / update up to 1000 times until no box changes cluster; a centre is the mean width and
  height of its members, and an empty cluster keeps its centre. Darknet runs once from ``rand()``; here a
  seeded generator runs several restarts and keeps the one with the best average IoU.
- :func:`anchor_fit`: the average IoU (each box with its best anchor) and the best possible recall at
  IoU thresholds (the fraction of boxes whose best anchor reaches the threshold).
- :func:`with_anchors` writes anchors into a cfg (see its docstring for how masks are spread).

A fit is *poor* (:func:`check_anchor_fit`, what training reports at start-up) when the average IoU is below
``POOR_AVG_IOU`` (0.5) or fewer than ``POOR_RECALL`` (98 %) of the boxes reach IoU 0.25 with some anchor:
k-means anchors reach 0.6-0.75 on typical sets, and a box below IoU 0.25 with every anchor (a 4x size
mismatch) is one the assignment can hardly learn.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from utils.darknet.cfg import Block, Cfg
from utils.darknet.cfg_edit import edited, typed_sections
from utils.darknet.layers import YOLOLayer
from utils.darknet.model import Darknet
from utils.errors import UserError

FIT_THRESHOLD = 0.25
POOR_AVG_IOU = 0.5
POOR_RECALL = 0.98


class AnchorError(UserError, ValueError):
    """Anchors that cannot be computed or written as asked (too few boxes, a flag out of range, a cfg)."""


def label_sizes(labels: Iterable[np.ndarray], img_size: int) -> np.ndarray:
    """``(n, 2)`` box widths and heights in network-input pixels from ``(m, 5)`` class/cx/cy/w/h label arrays."""
    sizes = [np.asarray(rows, np.float64).reshape(-1, 5)[:, 3:5] for rows in labels]
    return np.concatenate(sizes or [np.zeros((0, 2))]) * img_size


def wh_iou(boxes_wh: np.ndarray, anchors_wh: np.ndarray) -> np.ndarray:
    """``(n, k)`` IoU of boxes and anchors placed at one corner: only their sizes count."""
    boxes, anchors = np.asarray(boxes_wh, np.float64), np.asarray(anchors_wh, np.float64)
    inter = (np.minimum(boxes[:, None, 0], anchors[None, :, 0]) * np.minimum(boxes[:, None, 1], anchors[None, :, 1]))
    union = boxes.prod(1)[:, None] + anchors.prod(1)[None, :] - inter
    return inter / union


def anchor_fit(anchors_wh: np.ndarray, boxes_wh: np.ndarray,
               thresholds: Sequence[float] = (FIT_THRESHOLD,)) -> tuple[float, dict[float, float]]:
    """(average over boxes of the best IoU with any anchor, {threshold: fraction of boxes whose best IoU
    reaches it}), both in [0, 1]."""
    if not len(boxes_wh):
        raise AnchorError("no labelled boxes to fit anchors to")
    best = wh_iou(boxes_wh, anchors_wh).max(1)
    return float(best.mean()), {float(t): float((best >= t).mean()) for t in thresholds}


# ----------------------------------------------------------------------------------------------
# k-means


@dataclass(frozen=True)
class KMeansOptions:
    num_anchors: int = 9
    restarts: int = 10
    seed: int = 0
    max_iterations: int = 1000  # Darknet's limit


@dataclass(frozen=True)
class Clusters:
    anchors: np.ndarray  # (k, 2) sorted by area, smallest first (Darknet's order)
    avg_iou: float  # of these (unrounded) anchors
    iterations: int  # assign/update rounds of the restart kept
    restart: int  # which restart it was (0-based)


def _kmeans_once(boxes: np.ndarray, centres: np.ndarray, max_iterations: int) -> tuple[np.ndarray, int]:
    """Darknet's assign/update loop from the given centres; returns (centres, rounds run)."""
    k = len(centres)
    assignment = np.full(len(boxes), -1)
    for rounds in range(max_iterations):
        # argmax takes the first of equal IoUs, as Darknet's strict '<' on the distance keeps the first centre
        nearest = wh_iou(boxes, centres).argmax(1)
        if np.array_equal(nearest, assignment):
            return centres, rounds
        assignment = nearest
        counts = np.bincount(assignment, minlength=k)
        sums = np.stack([np.bincount(assignment, boxes[:, d], minlength=k) for d in (0, 1)], 1)
        centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
    return centres, max_iterations


def _random_boxes(boxes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k boxes drawn at random (so frequent sizes are likelier, as Darknet's draw of k box indices), skipping
    sizes already drawn so that no two centres start equal."""
    shuffled = boxes[rng.permutation(len(boxes))]
    _, first_seen = np.unique(shuffled, axis=0, return_index=True)
    return shuffled[np.sort(first_seen)[:k]].copy()


def kmeans_anchors(boxes_wh: np.ndarray, options: KMeansOptions = KMeansOptions()) -> Clusters:
    """The best of ``options.restarts`` k-means runs (by average IoU; the first on ties)."""
    boxes = np.asarray(boxes_wh, np.float64).reshape(-1, 2)
    k = options.num_anchors
    if k < 1 or options.restarts < 1 or options.max_iterations < 1:
        raise AnchorError(f"--num_anchors ({k}) and --restarts ({options.restarts}) must be at least 1")
    distinct = len(np.unique(boxes, axis=0))
    if distinct < k:
        raise AnchorError(f"the labels hold {len(boxes)} boxes of {distinct} distinct sizes, too few for "
                          f"--num_anchors {k}")
    rng = np.random.default_rng(options.seed)
    best = None
    for restart in range(options.restarts):
        start = _random_boxes(boxes, k, rng)
        centres, rounds = _kmeans_once(boxes, start, options.max_iterations)
        avg_iou = float(wh_iou(boxes, centres).max(1).mean())
        if best is None or avg_iou > best.avg_iou:
            order = np.argsort(centres.prod(1), kind="stable")
            best = Clusters(centres[order], avg_iou, rounds, restart)
    return best


def rounded(anchors_wh: np.ndarray) -> np.ndarray:
    """Whole pixels, as Darknet's anchors line prints them (``%.0f``: halves to even), at least 1."""
    return np.maximum(np.rint(np.asarray(anchors_wh, np.float64)), 1.0)


def format_anchors(anchors_wh: np.ndarray) -> str:
    """``10,14, 23,27, ...`` (rounded)."""
    return ", ".join(f"{w:.0f},{h:.0f}" for w, h in rounded(anchors_wh))


# ----------------------------------------------------------------------------------------------
# anchors in a cfg


@dataclass(frozen=True)
class YoloHead:
    """A [yolo] section's anchors as read; ``layer`` indexes ``cfg.layers``."""

    layer: int
    block: Block
    anchors: np.ndarray  # (num, 2)
    mask: tuple[int, ...]


def yolo_heads(cfg: Cfg) -> list[YoloHead]:
    heads = [YoloHead(index, block, np.array(YOLOLayer.anchor_pairs(block), np.float64).reshape(-1, 2),
                      tuple(YOLOLayer.mask_as_read(block))) for index, block in typed_sections(cfg, YOLOLayer)]
    if not heads:
        raise AnchorError(f"{cfg.source}: the cfg has no [yolo] layer to take anchors")
    return heads


def anchors_in_use(cfg: Cfg) -> np.ndarray:
    """``(n, 2)``: the anchors some [yolo] layer's mask selects (an anchor no mask names predicts nothing)."""
    return np.concatenate([head.anchors[[m for m in head.mask if m < len(head.anchors)]] for head in yolo_heads(cfg)])


def assignment_threshold(cfg: Cfg) -> float | None:
    """The smallest [yolo] ``iou_thresh`` below 1: Darknet then also trains every anchor whose IoU with a box
    exceeds it, so the recall at that IoU matters. None when no layer sets one."""
    values = [head.block["iou_thresh"] for head in yolo_heads(cfg) if head.block["iou_thresh"] < 1]
    return min(values) if values else None


def head_strides(cfg: Cfg) -> list[float] | None:
    """Input pixels per output cell of each [yolo] layer, from a shape-only forward pass at the cfg's size;
    None when the network cannot be built or run here (the masks then follow cfg order)."""
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # the cfg's unused keys are reported when it is trained, not here
            model = Darknet(cfg)
            height, width = model.img_size
            heads = model.forward_heads(torch.zeros(1, model.input_channels, height, width))
    except (UserError, RuntimeError, NotImplementedError):
        return None
    return [height / head.shape[-2] for head in heads]


def spread_masks(num_anchors: int, strides: Sequence[float] | None, num_heads: int) -> list[list[int]]:
    """Masks for anchors sorted by area: contiguous groups, the largest anchors to the coarsest stride.

    Without strides the layers count as coarsest first in cfg order (Darknet's yolov3 cfgs: the first [yolo]
    has stride 32 and ``mask=6,7,8``). Groups are as even as possible; when the anchors do not divide evenly
    the finer strides get one more. Layers of equal stride are taken in cfg order, the later one finer."""
    if num_anchors < num_heads:
        raise AnchorError(f"--num_anchors {num_anchors} is fewer than the cfg's {num_heads} [yolo] layers; each "
                          f"needs at least one anchor")
    fineness = [0.0] * num_heads if strides is None else list(strides)
    finest_first = sorted(range(num_heads), key=lambda i: (fineness[i], -i))
    masks: list[list[int]] = [[] for _ in range(num_heads)]
    for head, group in zip(finest_first, np.array_split(np.arange(num_anchors), num_heads)):
        masks[head] = group.tolist()
    return masks


@dataclass(frozen=True)
class AnchorEdit:
    cfg: Cfg
    masks: list[list[int]]
    strides: list[float] | None


def with_anchors(cfg: Cfg, anchors_wh: np.ndarray) -> AnchorEdit:
    """``cfg`` with ``anchors_wh`` (sorted by area, rounded as written) in every [yolo]: ``anchors``, ``num``,
    ``mask`` from :func:`spread_masks` by stride, and the ``filters`` of the conv before a [yolo] whose anchor
    count changes. Every other byte of the cfg is kept."""
    anchors = rounded(anchors_wh)
    anchors = anchors[np.argsort(anchors.prod(1), kind="stable")]
    heads = yolo_heads(cfg)
    strides = head_strides(cfg)
    masks = spread_masks(len(anchors), strides, len(heads))
    edits: dict[tuple[int, str], object] = {}
    for head, mask in zip(heads, masks):
        section = head.layer + 1  # [net] is section 0
        # a list, not format_anchors' spaced text: edited() keeps a value as given, and the cfg's own values are
        # whitespace-free (Darknet strips blanks), which every later reader of the returned Cfg expects
        edits[(section, "anchors")] = anchors.astype(int).ravel().tolist()
        if len(head.anchors) != len(anchors):
            edits[(section, "num")] = len(anchors)
        if list(head.mask) != mask or not head.block.given("mask"):
            edits[(section, "mask")] = mask
        if len(head.mask) != len(mask):
            edits.update(YOLOLayer.head_filters_edit(cfg, head.layer, head.block, head.block["classes"], mask))
    return AnchorEdit(edited(cfg, edits), masks, strides)


# ----------------------------------------------------------------------------------------------
# the start-up check training runs


@dataclass(frozen=True)
class AnchorCheck:
    avg_iou: float
    recall: dict[float, float]  # threshold -> best possible recall; 0.25 and the cfg's iou_thresh if any
    boxes: int
    num_anchors: int
    img_size: int

    @property
    def poor(self) -> bool:
        return self.avg_iou < POOR_AVG_IOU or self.recall[FIT_THRESHOLD] < POOR_RECALL

    def summary(self) -> str:
        recalls = "; ".join(f"{100 * r:.1f} % at IoU {t:g}" for t, r in self.recall.items())
        return (f"anchor fit at {self.img_size} px: average IoU {100 * self.avg_iou:.1f} % over {self.boxes} "
                f"training boxes; best possible recall {recalls}")

    def shortfalls(self) -> str:
        """The measures that make the fit poor, with their bounds ('' for a fit that is not)."""
        short = []
        if self.avg_iou < POOR_AVG_IOU:
            short.append(f"average IoU {100 * self.avg_iou:.1f} % < {100 * POOR_AVG_IOU:.0f} %")
        if self.recall[FIT_THRESHOLD] < POOR_RECALL:
            short.append(f"best possible recall at IoU {FIT_THRESHOLD:g} {100 * self.recall[FIT_THRESHOLD]:.1f} % "
                         f"< {100 * POOR_RECALL:.0f} %")
        return " and ".join(short)

    def advice(self, data_config: str | Path, model_def: str | Path) -> str:
        """The warning for a poor fit (naming the measures that fall short), with the command that computes
        anchors for this data."""
        return (f"the cfg's anchors fit these labels poorly ({self.shortfalls()}); compute anchors for them "
                f"with: python calc_anchors.py --data_config {data_config} --num_anchors {self.num_anchors} "
                f"--img_size {self.img_size} --model_def {model_def} --out NEW.cfg")


def check_anchor_fit(cfg: Cfg, labels: Iterable[np.ndarray], img_size: int) -> AnchorCheck:
    """How well the cfg's anchors fit the training labels at ``img_size`` (see the module docstring for
    "poor"). ``labels``: the ``(n, 5)`` label arrays of the training images (``DetectionDataset.labels``)."""
    boxes = label_sizes(labels, img_size)
    thresholds = [FIT_THRESHOLD] + [t for t in [assignment_threshold(cfg)] if t is not None and t != FIT_THRESHOLD]
    anchors = anchors_in_use(cfg)
    avg_iou, recall = anchor_fit(anchors, boxes, thresholds)
    return AnchorCheck(avg_iou, recall, len(boxes), len(yolo_heads(cfg)[0].anchors), img_size)
