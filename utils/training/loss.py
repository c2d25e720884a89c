"""The YOLO loss, per [yolo] layer, with Darknet's assignment and terms.

Assignment: each target goes to the anchor (among all of the layer's anchors, not only its mask) whose
shape fits it best; the layer whose mask holds that anchor predicts it from the grid cell containing
the target's centre. With ``iou_thresh < 1`` the target also goes to every masked anchor whose shape
IoU exceeds it. A prediction whose box overlaps any target by more than ``ignore_thresh`` gets no
"no object" penalty.

Terms, summed over the batch and divided by its size (Darknet sums deltas and divides the learning rate
by the batch, which is the same gradient):

- box, ``iou_loss=mse``: Darknet hands ``scale * (target - prediction)`` straight to the logits for x, y
  (that is the gradient of BCE on the logit, which we use) and to the raw w, h (the gradient of half the
  squared error), with ``scale = 2 - w*h`` in image-normalised units;
- box, ``iou``/``giou``/``diou``/``ciou``: ``iou_normalizer * (1 - IoU)`` of the decoded boxes;
- objectness: BCE on the logit, target 1 for assigned predictions, 0 for the rest (unless ignored),
  times ``obj_normalizer``;
- classes: independent BCEs on the assigned predictions (with ``label_smooth_eps``), times
  ``cls_normalizer``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.boxes import bbox_iou_aligned, box_iou, xywh_to_xyxy
from utils.darknet.layers import YOLOLayer


@dataclass
class LossComponents:
    box: torch.Tensor
    obj: torch.Tensor
    cls: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.box + self.obj + self.cls

    def as_dict(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in
                (("box", self.box), ("obj", self.obj), ("cls", self.cls), ("total", self.total))}


def shape_iou(wh_a: torch.Tensor, wh_b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes sharing a centre, (N, 2) x (M, 2) -> (N, M): how well an anchor's shape fits a target."""
    inter = torch.minimum(wh_a[:, None], wh_b[None]).prod(-1)
    return inter / (wh_a.prod(-1)[:, None] + wh_b.prod(-1)[None] - inter).clamp(min=1e-12)


def _decode(yolo: YOLOLayer, p: torch.Tensor, stride: tuple[float, float]) -> torch.Tensor:
    """Predicted boxes (cx, cy, w, h) in input pixels from ``p`` = (B, A, H, W, 5+C) raw."""
    _, _, height, width, _ = p.shape
    s = yolo.scale_x_y
    anchors = yolo.anchors.to(p.dtype).view(1, -1, 1, 1, 2)
    if yolo.new_coords:
        xy, wh = p[..., :2] * s - 0.5 * (s - 1), (2 * p[..., 2:4]) ** 2 * anchors
    else:
        xy = torch.sigmoid(p[..., :2]) * s - 0.5 * (s - 1)
        wh = torch.exp(p[..., 2:4].clamp(max=10)) * anchors
    gy, gx = torch.meshgrid(torch.arange(height, device=p.device, dtype=p.dtype),
                            torch.arange(width, device=p.device, dtype=p.dtype), indexing="ij")
    cx = (gx + xy[..., 0]) * stride[1]
    cy = (gy + xy[..., 1]) * stride[0]
    return torch.stack([cx, cy, wh[..., 0], wh[..., 1]], -1)


@dataclass
class _Truth:
    """A batch's targets in input pixels."""

    xywh: torch.Tensor  # (n, 4) centre x, centre y, width, height
    xyxy: torch.Tensor
    image: torch.Tensor  # (n,) index in the batch
    classes: torch.Tensor  # (n,)
    image_size: tuple[int, int]  # (height, width)

    @classmethod
    def of(cls, targets: torch.Tensor, image_size: tuple[int, int]) -> _Truth:
        img_h, img_w = image_size
        xywh = targets[:, 2:6] * targets.new_tensor([img_w, img_h, img_w, img_h])
        return cls(xywh, xywh_to_xyxy(xywh), targets[:, 0].long(), targets[:, 1].long(), image_size)


@dataclass
class _Positives:
    """The predictions one layer assigns targets to: target, image, anchor slot, grid row and column."""

    target: torch.Tensor
    image: torch.Tensor
    anchor: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor

    def __len__(self) -> int:
        return len(self.target)

    def pick(self, tensor: torch.Tensor) -> torch.Tensor:
        """Their entries of a ``(B, A, H, W, ...)`` tensor."""
        return tensor[self.image, self.anchor, self.row, self.col]


def _objectness_loss(yolo: YOLOLayer, p: torch.Tensor, pred: torch.Tensor, truth: _Truth,
                     positives: _Positives) -> torch.Tensor:
    """Positives 1, negatives 0 unless they already overlap a target well (``ignore_thresh``)."""
    options = yolo.loss_options
    batch, device = p.shape[0], p.device
    obj_target = torch.zeros(p.shape[:4], device=device)
    obj_weight = torch.ones_like(obj_target)
    if len(truth.xywh):
        with torch.no_grad():
            ious = box_iou(xywh_to_xyxy(pred.detach().reshape(-1, 4)), truth.xyxy)
            same_image = (torch.arange(batch, device=device).repeat_interleave(pred[0, ..., 0].numel())
                          [:, None] == truth.image[None])
            best_iou = (ious * same_image).max(1).values.view(obj_target.shape)
        obj_weight[best_iou > options["ignore_thresh"]] = 0.0
        if options["truth_thresh"] < 1.0:
            obj_target[best_iou > options["truth_thresh"]] = 1.0
    where = (positives.image, positives.anchor, positives.row, positives.col)
    obj_target[where] = 1.0
    obj_weight[where] = 1.0
    return options["obj_normalizer"] * F.binary_cross_entropy_with_logits(p[..., 4], obj_target, obj_weight,
                                                                          reduction="sum")


def _class_loss(yolo: YOLOLayer, ps: torch.Tensor, truth: _Truth, positives: _Positives) -> torch.Tensor:
    """Independent BCEs of the positives' class scores ``ps[:, 5:]``, with label smoothing."""
    options = yolo.loss_options
    eps = options["label_smooth_eps"]
    cls_target = torch.full_like(ps[:, 5:], eps / yolo.num_classes)
    cls_target[torch.arange(len(positives)), truth.classes[positives.target]] = 1.0 - eps
    cls_logits = ps[:, 5:]
    if yolo.new_coords:  # the head's outputs are probabilities already
        return options["cls_normalizer"] * F.binary_cross_entropy(
            cls_logits.clamp(1e-7, 1 - 1e-7), cls_target, reduction="sum")
    return options["cls_normalizer"] * F.binary_cross_entropy_with_logits(cls_logits, cls_target, reduction="sum")


def _box_loss(yolo: YOLOLayer, ps: torch.Tensor, pred: torch.Tensor, truth: _Truth, positives: _Positives,
              stride: tuple[float, float]) -> torch.Tensor:
    """``iou_loss=mse``: Darknet's deltas on x, y (BCE on the logit) and raw w, h, scaled by 2 - w*h;
    otherwise ``iou_normalizer * (1 - IoU)`` of the decoded boxes."""
    options = yolo.loss_options
    boxes = truth.xywh[positives.target]
    if options["iou_loss"] != "mse":
        iou = bbox_iou_aligned(xywh_to_xyxy(positives.pick(pred)), xywh_to_xyxy(boxes), options["iou_loss"])
        return options["iou_normalizer"] * (1.0 - iou).sum()
    img_h, img_w = truth.image_size
    weight = 2.0 - boxes[:, 2] * boxes[:, 3] / (img_w * img_h)
    frac = torch.stack([boxes[:, 0] / stride[1] - positives.col, boxes[:, 1] / stride[0] - positives.row], 1)
    s = yolo.scale_x_y
    xy_target = ((frac + 0.5 * (s - 1)) / s).clamp(0, 1)
    wh_target = torch.log(boxes[:, 2:] / yolo.anchors.to(ps.device)[positives.anchor])
    xy_term = F.binary_cross_entropy_with_logits(ps[:, :2], xy_target, reduction="none").sum(1) * s
    wh_term = 0.5 * ((wh_target - ps[:, 2:4]) ** 2).sum(1)
    return (weight * (xy_term + wh_term)).sum()


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
        fits = shape_iou(gt_xywh[:, 2:], yolo.all_anchors.to(device))
        best = fits.argmax(1)
        mask = torch.tensor(yolo.mask, device=device)
        assigned = best[:, None] == mask[None]
        if yolo.loss_options["iou_thresh"] < 1.0:
            assigned |= fits[:, mask] > yolo.loss_options["iou_thresh"]
        t_index, a_index = torch.nonzero(assigned, as_tuple=True)
        gi = (gt_xywh[t_index, 0] / stride[1]).long().clamp(0, grid[1] - 1)
        gj = (gt_xywh[t_index, 1] / stride[0]).long().clamp(0, grid[0] - 1)
        return t_index, a_index, gj, gi

    def __call__(self, heads: list[torch.Tensor], targets: torch.Tensor,
                 image_size: tuple[int, int]) -> LossComponents:
        batch = heads[0].shape[0]
        img_h, img_w = image_size
        truth = _Truth.of(targets.to(heads[0].device), image_size)
        box = obj = cls = heads[0].new_zeros(())
        for yolo, head in zip(self.yolo_layers, heads):
            _, _, height, width = head.shape
            stride = (img_h / height, img_w / width)
            p = head.view(batch, yolo.num_anchors, yolo.num_outputs, height, width).permute(0, 1, 3, 4, 2).float()
            pred = _decode(yolo, p, stride)
            t_index, a_index, gj, gi = self.assign(yolo, truth.xywh, (height, width), stride)
            positives = _Positives(t_index, truth.image[t_index], a_index, gj, gi)
            obj = obj + _objectness_loss(yolo, p, pred, truth, positives)
            if not len(positives):
                continue
            ps = positives.pick(p)
            cls = cls + _class_loss(yolo, ps, truth, positives)
            box = box + _box_loss(yolo, ps, pred, truth, positives, stride)
        return LossComponents(box / batch, obj / batch, cls / batch)
