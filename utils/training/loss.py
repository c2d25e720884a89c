"""The YOLO loss, per [yolo] layer, with Darknet's assignment and terms.

Assignment: each target goes to the anchor (among all of the layer's anchors, not only its mask) whose
shape fits it best; the layer whose mask holds that anchor predicts it from the grid cell containing
the target's centre. With ``iou_thresh < 1`` the target also goes to every masked anchor whose shape
fit (``iou_thresh_kind``: IoU, GIoU, DIoU or CIoU of centre-aligned boxes) exceeds it. A prediction whose
box overlaps any target by more than ``ignore_thresh`` gets no "no object" penalty.

Terms, summed over the batch and divided by its size (Darknet sums deltas and divides the learning rate
by the batch, which is the same gradient):

- box, ``iou_loss=mse``: Darknet hands ``scale * (target - prediction)`` straight to the logits for x, y
  (that is the gradient of BCE on the logit, which we use) and to the raw w, h (the gradient of half the
  squared error), with ``scale = 2 - w*h`` in image-normalised units;
- box, ``iou``/``giou``/``diou``/``ciou``: ``iou_normalizer * (1 - IoU)`` of the decoded boxes;
- objectness: BCE on the logit, target 1 for assigned predictions, 0 for the rest (unless ignored),
  times ``obj_normalizer``;
- classes: independent BCEs on the assigned predictions (with ``label_smooth_eps``), times
  ``cls_normalizer``; with ``focal_loss=1`` Darknet's focal variant instead: every class's delta scaled by
  ``0.5 * g(p_true)``, ``g(p) = -(1 - p)(2 p ln p + p - 1)``, without smoothing or normaliser.

The boxes are decoded by the layer itself (``YOLOLayer.boxes``), the same code the model's output uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.boxes import bbox_iou_aligned, box_iou, xywh_to_xyxy
from utils.darknet.layers import YOLOLayer

TOTAL_TERM = "total"  # the sum of the others, what is minimised
LOSS_TERMS = ("box", "obj", "cls", TOTAL_TERM)  # what a step reports, results.csv's columns, results.png's panels
DISTILL_TERM = "distill"  # a term of runs with a teacher, counted into their total

FOCAL_ALPHA = 0.5  # Darknet's delta_yolo_class


@dataclass
class LossComponents:
    box: torch.Tensor
    obj: torch.Tensor
    cls: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.box + self.obj + self.cls

    def as_dict(self) -> dict[str, float]:
        values = (self.box, self.obj, self.cls, self.total)
        return {name: float(value.detach()) for name, value in zip(LOSS_TERMS, values)}


def shape_iou(wh_a: torch.Tensor, wh_b: torch.Tensor, kind: str = "iou") -> torch.Tensor:
    """How well shapes fit when their boxes share a centre, (N, 2) x (M, 2) -> (N, M). Darknet's kinds: with
    one centre DIoU is IoU, GIoU subtracts the empty part of the max(w) x max(h) hull, CIoU the aspect term."""
    inter = torch.minimum(wh_a[:, None], wh_b[None]).prod(-1)
    union = (wh_a.prod(-1)[:, None] + wh_b.prod(-1)[None] - inter).clamp(min=1e-12)
    iou = inter / union
    if kind == "giou":
        hull = torch.maximum(wh_a[:, None], wh_b[None]).prod(-1).clamp(min=1e-12)
        return iou - (hull - union) / hull
    if kind == "ciou":
        aspect_a, aspect_b = torch.atan(wh_a[:, 0] / wh_a[:, 1]), torch.atan(wh_b[:, 0] / wh_b[:, 1])
        v = 4 / math.pi ** 2 * (aspect_a[:, None] - aspect_b[None]) ** 2
        return iou - v * v / (1 - iou + v).clamp(min=1e-12)
    return iou


@dataclass
class Truth:
    """A batch's targets in input pixels."""

    xywh: torch.Tensor
    xyxy: torch.Tensor
    image: torch.Tensor  # index in the batch
    cls: torch.Tensor

    @classmethod
    def of(cls, targets: torch.Tensor, image_size: tuple[int, int], device: torch.device) -> Truth:
        img_h, img_w = image_size
        targets = targets.to(device)
        xywh = targets[:, 2:6] * targets.new_tensor([img_w, img_h, img_w, img_h])
        return cls(xywh, xywh_to_xyxy(xywh), targets[:, 0].long(), targets[:, 1].long())


@dataclass
class Positives:
    """The predictions that answer for a target: (target, anchor slot, row, column) and the image."""

    target: torch.Tensor
    anchor: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    image: torch.Tensor


class YOLOLoss:
    """``loss(heads, targets, image_size)``: heads from ``model(images)`` in train mode, targets
    ``(n, 6)`` = image index, class, cx, cy, w, h normalised to the input, image_size = (height, width)."""

    def __init__(self, yolo_layers: list[YOLOLayer]):
        self.yolo_layers = yolo_layers

    @staticmethod
    def assign(yolo: YOLOLayer, gt_xywh: torch.Tensor, grid: tuple[int, int], stride: tuple[float, float]):
        """Positives of one layer: (target index, anchor slot, row, column) for each target whose best-fitting
        anchor among all anchors is in this layer's mask, plus masked anchors fitting above ``iou_thresh``."""
        device = gt_xywh.device
        anchors = yolo.all_anchors.to(device)
        mask = torch.tensor(yolo.mask, device=device)
        assigned = shape_iou(gt_xywh[:, 2:], anchors).argmax(1)[:, None] == mask[None]
        if yolo.loss.iou_thresh < 1.0:
            assigned |= shape_iou(gt_xywh[:, 2:], anchors[mask], yolo.loss.iou_thresh_kind) > yolo.loss.iou_thresh
        t_index, a_index = torch.nonzero(assigned, as_tuple=True)
        gi = (gt_xywh[t_index, 0] / stride[1]).long().clamp(0, grid[1] - 1)
        gj = (gt_xywh[t_index, 1] / stride[0]).long().clamp(0, grid[0] - 1)
        return t_index, a_index, gj, gi

    def __call__(self, heads: list[torch.Tensor], targets: torch.Tensor,
                 image_size: tuple[int, int]) -> LossComponents:
        truth = Truth.of(targets, image_size, heads[0].device)
        box = obj = cls = heads[0].new_zeros(())
        for yolo, head in zip(self.yolo_layers, heads):
            terms = self._layer_terms(yolo, head.float(), truth, image_size)
            box, obj, cls = box + terms[0], obj + terms[1], cls + terms[2]
        batch = heads[0].shape[0]
        return LossComponents(box / batch, obj / batch, cls / batch)

    def _layer_terms(self, yolo: YOLOLayer, head: torch.Tensor, truth: Truth, image_size: tuple[int, int]):
        height, width = head.shape[-2:]
        stride = (image_size[0] / height, image_size[1] / width)
        p = yolo.split(head)
        pred = yolo.boxes(p, stride)
        t_index, a_index, gj, gi = self.assign(yolo, truth.xywh, (height, width), stride)
        positives = Positives(t_index, a_index, gj, gi, truth.image[t_index])
        obj = _objectness(yolo, p, pred, truth, positives)
        if not len(t_index):
            return head.new_zeros(()), obj, head.new_zeros(())
        ps = p[positives.image, a_index, gj, gi]
        return (_box_term(yolo, ps, pred, truth, positives, (stride, image_size)), obj,
                _class_term(yolo, ps[:, 5:], truth.cls[t_index]))


def _objectness(yolo: YOLOLayer, p: torch.Tensor, pred: torch.Tensor, truth: Truth, pos: Positives) -> torch.Tensor:
    """Positives 1, negatives 0 unless they already overlap a target well."""
    options = yolo.loss
    batch = p.shape[0]
    obj_target = torch.zeros(p.shape[:4], device=p.device)
    obj_weight = torch.ones_like(obj_target)
    if len(truth.cls):
        with torch.no_grad():
            ious = box_iou(xywh_to_xyxy(pred.detach().reshape(-1, 4)), truth.xyxy)
            same_image = (torch.arange(batch, device=p.device).repeat_interleave(pred[0, ..., 0].numel())
                          [:, None] == truth.image[None])
            best_iou = (ious * same_image).max(1).values.view(obj_target.shape)
        obj_weight[best_iou > options.ignore_thresh] = 0.0
        if options.truth_thresh < 1.0:
            obj_target[best_iou > options.truth_thresh] = 1.0
    obj_target[pos.image, pos.anchor, pos.row, pos.col] = 1.0
    obj_weight[pos.image, pos.anchor, pos.row, pos.col] = 1.0
    return options.obj_normalizer * F.binary_cross_entropy_with_logits(p[..., 4], obj_target, obj_weight,
                                                                       reduction="sum")


def _class_bce(yolo: YOLOLayer, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-element BCE of class outputs: logits, or probabilities when the conv applied the logistic."""
    if yolo.new_coords:
        return F.binary_cross_entropy(outputs.clamp(1e-7, 1 - 1e-7), target, reduction="none")
    return F.binary_cross_entropy_with_logits(outputs, target, reduction="none")


def _class_term(yolo: YOLOLayer, outputs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(len(classes))
    if yolo.loss.focal_loss:
        onehot = torch.zeros_like(outputs)
        onehot[rows, classes] = 1.0
        with torch.no_grad():
            probabilities = outputs if yolo.new_coords else torch.sigmoid(outputs)
            pt = probabilities[rows, classes] + 1e-15
            scale = FOCAL_ALPHA * -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
        return (_class_bce(yolo, outputs, onehot) * scale[:, None]).sum()
    eps = yolo.loss.label_smooth_eps
    target = torch.full_like(outputs, eps / yolo.num_classes)
    target[rows, classes] = 1.0 - eps
    return yolo.loss.cls_normalizer * _class_bce(yolo, outputs, target).sum()


def _box_term(yolo: YOLOLayer, ps: torch.Tensor, pred: torch.Tensor, truth: Truth, pos: Positives,
              geometry: tuple[tuple[float, float], tuple[int, int]]) -> torch.Tensor:
    (stride, (img_h, img_w)), options = geometry, yolo.loss
    target = truth.xywh[pos.target]
    if options.iou_loss != "mse":
        pred_boxes = xywh_to_xyxy(pred[pos.image, pos.anchor, pos.row, pos.col])
        iou = bbox_iou_aligned(pred_boxes, xywh_to_xyxy(target), options.iou_loss)
        return options.iou_normalizer * (1.0 - iou).sum()
    weight = 2.0 - target[:, 2] * target[:, 3] / (img_w * img_h)
    frac = torch.stack([target[:, 0] / stride[1] - pos.col, target[:, 1] / stride[0] - pos.row], 1)
    s = yolo.scale_x_y
    xy_target = ((frac + 0.5 * (s - 1)) / s).clamp(0, 1)
    wh_target = torch.log(target[:, 2:] / yolo.anchors.to(ps.device)[pos.anchor])
    xy_term = F.binary_cross_entropy_with_logits(ps[:, :2], xy_target, reduction="none").sum(1) * s
    wh_term = 0.5 * ((wh_target - ps[:, 2:4]) ** 2).sum(1)
    return (weight * (xy_term + wh_term)).sum()
