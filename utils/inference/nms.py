"""Class-aware non-maximum suppression in plain torch (no torchvision), exact greedy semantics.

Candidates are processed in score order, in blocks. Within a block the greedy result is the unique
fixed point of ``keep[j] = alive[j] and no kept higher-scored i overlaps j``, reached by iterating
that rule on the block's overlap matrix (each pass settles at least one more box of any suppression
chain, so passes are few in practice). Boxes already kept in earlier blocks suppress whole blocks in
one matrix operation. Work stops once ``max_det`` boxes are kept, so a large candidate set costs
about one block per ``max_det`` survivors, not its square.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from utils.boxes import xywh_to_xyxy
from utils.errors import UserError, is_number

MAX_CANDIDATES = 30000  # per image, highest scores first: more above the threshold only cost time


def _overlaps(a: torch.Tensor, b: torch.Tensor, threshold: float) -> torch.Tensor:
    """IoU(a_i, b_j) > threshold as a bool (N, M) matrix, without forming the IoU itself."""
    ax1, ay1, ax2, ay2 = a.unbind(1)
    bx1, by1, bx2, by2 = b.unbind(1)
    w = (torch.minimum(ax2[:, None], bx2[None]) - torch.maximum(ax1[:, None], bx1[None])).clamp_(min=0)
    h = (torch.minimum(ay2[:, None], by2[None]) - torch.maximum(ay1[:, None], by1[None])).clamp_(min=0)
    inter = w.mul_(h)
    area_a = (ax2 - ax1).clamp(min=0) * (ay2 - ay1).clamp(min=0)
    area_b = (bx2 - bx1).clamp(min=0) * (by2 - by1).clamp(min=0)
    union = (area_a[:, None] + area_b[None]).sub_(inter)
    return inter > union.mul_(threshold)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, classes: torch.Tensor | None = None,
        max_det: int | None = None, block: int | None = None) -> torch.Tensor:
    """Indices of the boxes greedy NMS keeps, highest score first. ``classes``: suppress only within a class.
    ``block``: candidates per step (default: twice max_det, at least 256 and at most 1024)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if block is None:
        block = min(max(2 * (max_det or 512), 256), 1024)
    order = scores.argsort(descending=True, stable=True)
    boxes = boxes[order]
    classes = classes[order] if classes is not None else None
    kept_chunks: list[torch.Tensor] = []
    kept_boxes = boxes[:0]
    kept_classes = classes[:0] if classes is not None else None
    total = 0
    for start in range(0, len(boxes), block):
        blk = boxes[start:start + block]
        alive = torch.ones(len(blk), dtype=torch.bool, device=boxes.device)
        if total:
            hits = _overlaps(blk, kept_boxes, iou_threshold)
            if classes is not None:
                hits &= classes[start:start + block, None] == kept_classes[None, :]
            alive &= ~hits.any(1)
        overlap = torch.triu(_overlaps(blk, blk, iou_threshold), diagonal=1)
        if classes is not None:
            blk_classes = classes[start:start + block]
            overlap &= blk_classes[:, None] == blk_classes[None, :]
        overlap &= alive[:, None]
        # one pass: j survives unless a kept, higher-scored i overlaps it (a matrix-vector product)
        overlap = overlap.to(boxes.dtype)
        keep = alive
        while True:
            updated = alive & ((keep.to(boxes.dtype) @ overlap) == 0)
            if torch.equal(updated, keep):
                break
            keep = updated
        index = torch.nonzero(keep).squeeze(1)
        kept_chunks.append(index + start)
        kept_boxes = torch.cat([kept_boxes, blk[index]])
        if classes is not None:
            kept_classes = torch.cat([kept_classes, blk_classes[index]])
        total += len(index)
        if max_det is not None and total >= max_det:
            break
    kept = torch.cat(kept_chunks)
    if max_det is not None:
        kept = kept[:max_det]
    return order[kept]


class SettingsError(UserError, ValueError):
    """Detection settings out of their range (the Python API's; detect.py's flags are checked as parsed)."""


def require_flags(**switches: object) -> None:
    """Refuse a switch given as anything but True or False: 'no' or 0.5 would read as on, or as off, by luck."""
    for name, value in switches.items():
        if not isinstance(value, (bool, np.bool_)):
            raise SettingsError(f"{name}: expected True or False, got {value!r}")


def _class_indices(classes) -> tuple[int, ...]:
    """``classes`` as a tuple of ints, from any sequence of integers from 0 (a list, a range, a numpy array)."""
    values = tuple(classes) if isinstance(classes, Iterable) and not isinstance(classes, (str, bytes)) else None
    if values is None or not all(is_number(c, numbers.Integral) and c >= 0 for c in values):
        raise SettingsError(f"classes: expected a sequence of class indices (integers from 0), got {classes!r}")
    return tuple(int(c) for c in values)


@dataclass(frozen=True)
class NmsFilter:
    """Which boxes survive: score (objectness x class score) above ``conf_thres``, greedy NMS at ``iou_thres``
    within a class (across classes with ``agnostic``), at most ``max_det`` per image, and with ``classes`` only
    boxes of those classes (chosen before NMS, so a box of another class never suppresses one of them)."""

    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 300
    classes: tuple[int, ...] | None = None
    agnostic: bool = False
    multi_label: bool = False  # every class above conf_thres for a box, else its best

    def __post_init__(self):
        for name in ("conf_thres", "iou_thres"):
            value = getattr(self, name)
            if not (is_number(value) and 0.0 <= value <= 1.0):
                raise SettingsError(f"{name}: expected a number in [0, 1], got {value!r}")
        if not (is_number(self.max_det, numbers.Integral) and self.max_det >= 1):
            raise SettingsError(f"max_det: expected an integer of at least 1, got {self.max_det!r}")
        if self.classes is not None:
            object.__setattr__(self, "classes", _class_indices(self.classes))  # frozen: set once, here
        require_flags(agnostic=self.agnostic, multi_label=self.multi_label)

    def check_classes(self, num_classes: int, name: str = "classes") -> None:
        """Refuse ``classes`` a model of ``num_classes`` classes does not have (``name``: the setting or flag)."""
        outside = [c for c in self.classes or () if c >= num_classes]
        if outside:
            raise SettingsError(f"{name}: {outside[0]} is not a class of this model, which has {num_classes} "
                                f"(0..{num_classes - 1})")


def filter_detections(prediction: torch.Tensor, rule: NmsFilter) -> list[torch.Tensor]:
    """Model output ``(B, N, 5+classes)`` (cx, cy, w, h, objectness, class scores) -> per image
    ``(n, 6)``: x1, y1, x2, y2, score, class, best first, as ``rule`` selects them."""
    wanted = None if rule.classes is None else torch.tensor(rule.classes, device=prediction.device)
    results = []
    for image_pred in prediction:
        # a class score is a sigmoid, at most 1, so objectness x class score > t needs objectness > t: the
        # boxes below go before the (boxes x classes) products (exact; 1-2.5 ms of 4 at 10,647 boxes)
        image_pred = image_pred[image_pred[:, 4] > rule.conf_thres]
        scores = image_pred[:, 5:] * image_pred[:, 4:5]
        boxes = xywh_to_xyxy(image_pred[:, :4])
        if rule.multi_label:
            box_index, cls = torch.nonzero(scores > rule.conf_thres, as_tuple=True)
            score = scores[box_index, cls]
        else:
            score, cls = scores.max(1)
            box_index = torch.nonzero(score > rule.conf_thres).squeeze(1)
            score, cls = score[box_index], cls[box_index]
        if wanted is not None:
            # a box keeps its best class and is dropped when that class is not wanted: the detections of the
            # unfiltered run, restricted to these classes
            among = torch.isin(cls, wanted)
            box_index, score, cls = box_index[among], score[among], cls[among]
        if len(score) > MAX_CANDIDATES:
            top = score.topk(MAX_CANDIDATES).indices
            box_index, score, cls = box_index[top], score[top], cls[top]
        candidates = boxes[box_index]
        keep = nms(candidates, score, rule.iou_thres, None if rule.agnostic else cls, rule.max_det)
        results.append(torch.cat([candidates[keep], score[keep, None], cls[keep, None].to(boxes.dtype)], 1))
    return results


def non_max_suppression(prediction: torch.Tensor, conf_thres: float = NmsFilter.conf_thres,
                        iou_thres: float = NmsFilter.iou_thres, multi_label: bool = False, agnostic: bool = False,
                        max_det: int = NmsFilter.max_det) -> list[torch.Tensor]:
    """:func:`filter_detections` for every class, with the filter's fields as parameters (evaluation's form)."""
    return filter_detections(prediction, NmsFilter(conf_thres, iou_thres, max_det, None, agnostic, multi_label))
