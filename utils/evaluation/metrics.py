"""Detection metrics: per-class AP at IoU thresholds, by COCO 101-point, VOC 11-point or all-point area.

Matching follows pycocotools: per image and class, detections in descending score order each take the
unmatched ground-truth box of highest IoU at or above the threshold; per class, detections of all
images are then ranked by score (a stable sort, images in order). IoU has no "+1 pixel" term.

- ``coco``: precision (made monotone) sampled at recalls 0, 0.01, ..., 1; at most ``max_dets`` (100)
  detections per image and class, as pycocotools counts them.
- ``voc11``: the mean of the best precision at recall >= 0, 0.1, ..., 1 (VOC2007).
- ``area``: the area under the monotone precision-recall curve (VOC2010+, Darknet's ``detector map``).

A class without ground truth has no AP and is left out of the mean, as pycocotools does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

METHODS = ("coco", "voc11", "area")
DEFAULT_METHOD = "coco"
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (N, 4) x (M, 4)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(dets: np.ndarray, gts: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """True positives ``(D, T)`` for detections already sorted by score, against one image's boxes."""
    tp = np.zeros((len(dets), len(thresholds)), bool)
    if not len(dets) or not len(gts):
        return tp
    ious = iou_matrix(dets, gts)
    taken = np.zeros((len(thresholds), len(gts)), bool)
    rows = np.arange(len(thresholds))
    for d in range(len(dets)):
        candidates = np.where((ious[d][None, :] >= thresholds[:, None]) & ~taken, ious[d][None, :], -1.0)
        # among equal IoUs pycocotools keeps the last box it saw
        best = len(gts) - 1 - np.argmax(candidates[:, ::-1], axis=1)
        hit = candidates[rows, best] >= 0
        tp[d, hit] = True
        taken[rows[hit], best[hit]] = True
    return tp


def average_precision(tp: np.ndarray, num_gt: int, method: str = DEFAULT_METHOD) -> float:
    """AP of one class from its ranked true-positive flags."""
    if method not in METHODS:
        raise ValueError(f"unknown AP method {method!r}; expected one of {', '.join(METHODS)}")
    if num_gt == 0:
        return float("nan")
    tps = np.cumsum(tp)
    fps = np.cumsum(~tp)
    recall = tps / num_gt
    precision = tps / np.maximum(tps + fps, np.spacing(1))
    if method == "coco":
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        indices = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
        sampled = np.where(indices < len(envelope), envelope[np.minimum(indices, len(envelope) - 1)], 0.0) \
            if len(envelope) else np.zeros(101)
        return float(sampled.mean())
    if method == "voc11":
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    recall_points = np.concatenate([[0.0], recall, [1.0]])
    precision_points = np.concatenate([[0.0], precision, [0.0]])
    precision_points = np.maximum.accumulate(precision_points[::-1])[::-1]
    changes = np.nonzero(recall_points[1:] != recall_points[:-1])[0]
    return float(((recall_points[changes + 1] - recall_points[changes]) * precision_points[changes + 1]).sum())


@dataclass
class ClassResult:
    name: str
    images: int  # images with at least one box of this class
    targets: int
    precision: float
    recall: float
    ap50: float
    ap: float  # mean over IoU 0.50:0.95
    f1: float
    recall_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # at IoU 0.5, by descending score
    precision_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))
    score_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the scores the curves step through


@dataclass
class EvalResult:
    classes: list[ClassResult]
    method: str
    report_conf: float
    iou_thresholds: np.ndarray = field(default_factory=lambda: COCO_IOU_THRESHOLDS)

    @property
    def map50(self) -> float:
        values = [c.ap50 for c in self.classes if c.targets]
        return float(np.mean(values)) if values else 0.0

    @property
    def map(self) -> float:
        values = [c.ap for c in self.classes if c.targets]
        return float(np.mean(values)) if values else 0.0


def evaluate_detections(images: list[tuple[np.ndarray, np.ndarray]], class_names: list[str],
                        method: str = DEFAULT_METHOD, max_dets: int = 100, report_conf: float = 0.25,
                        iou_thresholds: np.ndarray = COCO_IOU_THRESHOLDS) -> EvalResult:
    """``images``: per image ``(detections (n, 6): x1 y1 x2 y2 score class, ground truth (m, 5): class x1 y1 x2 y2)``,
    both in the same pixel coordinates. P, R and F1 are at IoU 0.5 for detections scoring >= report_conf."""
    thresholds = np.asarray(iou_thresholds, np.float64)
    per_class: dict[int, list] = {c: [[], [], 0, 0] for c in range(len(class_names))}  # scores, tp, targets, images
    for dets, gts in images:
        dets = np.asarray(dets, np.float64).reshape(-1, 6)
        gts = np.asarray(gts, np.float64).reshape(-1, 5)
        for c in np.union1d(dets[:, 5], gts[:, 0]).astype(int):
            if c not in per_class:
                continue
            mine = dets[dets[:, 5] == c]
            order = np.argsort(-mine[:, 4], kind="mergesort")
            if method == "coco":
                order = order[:max_dets]
            mine = mine[order]
            truth = gts[gts[:, 0] == c][:, 1:]
            entry = per_class[c]
            entry[0].append(mine[:, 4])
            entry[1].append(match_image(mine[:, :4], truth, thresholds))
            entry[2] += len(truth)
            entry[3] += int(len(truth) > 0)
    results = []
    iou50 = int(np.argmin(np.abs(thresholds - 0.5)))
    for c, name in enumerate(class_names):
        score_chunks, tp_chunks, targets, image_count = per_class[c]
        scores = np.concatenate(score_chunks) if score_chunks else np.zeros(0)
        tp = np.concatenate(tp_chunks) if tp_chunks else np.zeros((0, len(thresholds)), bool)
        order = np.argsort(-scores, kind="mergesort")
        scores, tp = scores[order], tp[order]
        aps = [average_precision(tp[:, t], targets, method) for t in range(len(thresholds))]
        confident = scores >= report_conf
        hits = int(tp[confident, iou50].sum())
        precision = hits / max(int(confident.sum()), 1)
        recall = hits / targets if targets else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        hits50 = np.cumsum(tp[:, iou50])
        results.append(ClassResult(name, image_count, targets, precision, recall, aps[iou50], float(np.mean(aps)), f1,
                                   hits50 / max(targets, 1), hits50 / np.arange(1, len(hits50) + 1), scores))
    return EvalResult(results, method, report_conf, thresholds)
