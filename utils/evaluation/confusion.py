"""Evaluation pictures: a confusion matrix with a background class, and precision, recall and F1 against the
confidence threshold (with the threshold that maximises the mean F1).

Confusion matrix, ``(classes + 1) x (classes + 1)``: rows are the ground-truth class, columns the predicted
class, and the last row and column are *background*. Per image, detections scoring at least ``conf`` (0.25)
are matched to ground-truth boxes of any class at IoU >= ``iou`` (0.5), greedily: candidate pairs are taken
in descending IoU (ties in ground-truth, then detection order), each box at most once. This is the classic
YOLOv5 matrix's rule, made strictly greedy (YOLOv5 drops a detection whose best box another one took, even
when it overlaps a second box enough). A matched pair counts at ``[true, predicted]`` (off the diagonal: a
confusion between classes); an unmatched ground-truth box at ``[true, background]`` (missed); an unmatched
detection at ``[background, predicted]`` (a false positive). ``[background, background]`` stays 0.

Confidence curves come from the evaluation's own matching (``utils.evaluation.metrics``: per class, at IoU
0.5): at threshold t, precision and recall are those of the detections scoring >= t. Where no detection
passes, precision is 1 and recall 0 (the convention of YOLOv5's curves). The mean is over the classes that
have ground truth, as mAP's is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.evaluation.metrics import ClassResult, EvalResult, iou_matrix
from utils.plots import CONFUSION_PICTURE, CURVE_PICTURES, plot_confidence_curves, plot_confusion_matrix

EVALUATION_PICTURES = (CONFUSION_PICTURE, *CURVE_PICTURES.values())  # what write_evaluation_pictures writes

CURVE_POINTS = 1001  # confidences 0, 0.001, ..., 1 for the plotted curves


@dataclass(frozen=True)
class ConfusionOptions:
    conf: float = 0.25
    iou: float = 0.5


def greedy_pairs(ious: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(truth, detection) pairs from an ``(m, n)`` IoU matrix: highest IoU first, each index used once."""
    truth, dets = np.nonzero(ious >= threshold)
    order = np.argsort(-ious[truth, dets], kind="stable")  # np.nonzero is row-major: ties keep truth order
    used_truth, used_dets, pairs = set(), set(), []
    for k in order:
        t, d = int(truth[k]), int(dets[k])
        if t not in used_truth and d not in used_dets:
            pairs.append((t, d))
            used_truth.add(t)
            used_dets.add(d)
    return pairs


def confusion_matrix(records: Sequence, num_classes: int, options: ConfusionOptions = ConfusionOptions()
                     ) -> np.ndarray:
    """Counts ``(num_classes + 1, num_classes + 1)``, rows true, columns predicted, index ``num_classes`` the
    background. ``records``: ImageRecords (``detections`` (n, 6) x1 y1 x2 y2 score class, ``truth`` (m, 5)
    class x1 y1 x2 y2)."""
    background = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for record in records:
        dets = np.asarray(record.detections, np.float64).reshape(-1, 6)
        dets = dets[dets[:, 4] >= options.conf]
        truth = np.asarray(record.truth, np.float64).reshape(-1, 5)
        pairs = greedy_pairs(iou_matrix(truth[:, 1:], dets[:, :4]), options.iou)
        true_class, det_class = truth[:, 0].astype(int), dets[:, 5].astype(int)
        for t, d in pairs:
            matrix[true_class[t], det_class[d]] += 1
        matched_truth, matched_dets = {t for t, _ in pairs}, {d for _, d in pairs}
        for t in set(range(len(truth))) - matched_truth:
            matrix[true_class[t], background] += 1
        for d in set(range(len(dets))) - matched_dets:
            matrix[background, det_class[d]] += 1
    return matrix


# ----------------------------------------------------------------------------------------------
# precision, recall and F1 against the confidence threshold


def _at_thresholds(c: ClassResult, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) of class ``c``'s detections scoring >= each threshold."""
    if not len(c.score_curve):
        return np.ones(len(thresholds)), np.zeros(len(thresholds))
    kept = np.searchsorted(-c.score_curve, -thresholds, side="right")  # how many score >= t (scores descend)
    last = np.maximum(kept - 1, 0)
    return np.where(kept > 0, c.precision_curve[last], 1.0), np.where(kept > 0, c.recall_curve[last], 0.0)


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    total = precision + recall
    return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)


@dataclass(frozen=True)
class ConfidenceCurves:
    confidence: np.ndarray  # (points,)
    names: list[str]  # the classes with ground truth, one row each below
    precision: np.ndarray  # (classes, points)
    recall: np.ndarray
    f1: np.ndarray


def confidence_curves(result: EvalResult, points: int = CURVE_POINTS) -> ConfidenceCurves:
    """Per-class precision, recall and F1 at confidence thresholds ``linspace(0, 1, points)``."""
    grid = np.linspace(0.0, 1.0, points)
    scored = [c for c in result.classes if c.targets]
    rows = [_at_thresholds(c, grid) for c in scored]
    precision = np.array([p for p, _ in rows]).reshape(len(scored), points)
    recall = np.array([r for _, r in rows]).reshape(len(scored), points)
    return ConfidenceCurves(grid, [c.name for c in scored], precision, recall, _f1(precision, recall))


def best_f1_confidence(result: EvalResult) -> tuple[float, float] | None:
    """(threshold, mean F1): the confidence threshold that maximises F1 averaged over the classes with ground
    truth, exactly (F1 only changes at a detection's score, so those are the candidates; on a tie the
    higher threshold). None when no detection of such a class matched a target: every threshold scores 0, and
    the highest would be advice to detect nothing."""
    scored = [c for c in result.classes if c.targets]
    candidates = np.unique(np.concatenate([c.score_curve for c in scored] or [np.zeros(0)]))
    if not len(candidates):
        return None
    mean_f1 = np.mean([_f1(*_at_thresholds(c, candidates)) for c in scored], axis=0)
    best = len(mean_f1) - 1 - int(np.argmax(mean_f1[::-1]))  # candidates ascend: the last maximum is the highest
    return (float(candidates[best]), float(mean_f1[best])) if mean_f1[best] > 0 else None


@dataclass(frozen=True)
class EvaluationPictures:
    files: list[Path]
    matrix: np.ndarray
    best: tuple[float, float] | None  # best_f1_confidence


def write_evaluation_pictures(records: Sequence, result: EvalResult, out_dir: str | Path,
                              options: ConfusionOptions = ConfusionOptions()) -> EvaluationPictures:
    """``confusion_matrix.png`` (counts, and each row divided by its sum) and ``F1_curve.png``, ``P_curve.png``,
    ``R_curve.png`` under ``out_dir``, from test.py's records and its :func:`score` result."""
    out_dir = Path(out_dir)
    names = [c.name for c in result.classes]
    matrix = confusion_matrix(records, len(names), options)
    best = best_f1_confidence(result)
    files = [out_dir / CONFUSION_PICTURE]
    plot_confusion_matrix(matrix, names, files[0], f"detections with conf >= {options.conf:g}, matched at IoU >= "
                                                   f"{options.iou:g}")
    files += plot_confidence_curves(confidence_curves(result), best, out_dir)
    return EvaluationPictures(files, matrix, best)
