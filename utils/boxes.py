"""Box formats, IoU, and the letterbox transform with its exact inverse."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2), any leading shape."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes, (N, 4) x (M, 4) -> (N, M). No "+1 pixel" convention."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=1e-12)


def bbox_iou_aligned(a: torch.Tensor, b: torch.Tensor, kind: str = "iou", eps: float = 1e-9) -> torch.Tensor:
    """IoU, GIoU, DIoU or CIoU of matching rows of two (..., 4) xyxy tensors (Darknet's iou_loss kinds)."""
    inter_wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    wh_a, wh_b = a[..., 2:] - a[..., :2], b[..., 2:] - b[..., :2]
    union = wh_a[..., 0] * wh_a[..., 1] + wh_b[..., 0] * wh_b[..., 1] - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou
    hull_wh = torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])
    if kind == "giou":
        hull = hull_wh[..., 0] * hull_wh[..., 1] + eps
        return iou - (hull - union) / hull
    diagonal = (hull_wh ** 2).sum(-1) + eps
    centre_distance = (((a[..., :2] + a[..., 2:]) - (b[..., :2] + b[..., 2:])) ** 2).sum(-1) / 4
    if kind == "diou":
        return iou - centre_distance / diagonal
    if kind == "ciou":
        v = (4 / math.pi ** 2) * (torch.atan(wh_b[..., 0] / (wh_b[..., 1] + eps))
                                  - torch.atan(wh_a[..., 0] / (wh_a[..., 1] + eps))) ** 2
        with torch.no_grad():
            alpha = v / (1 - iou + v + eps)
        return iou - centre_distance / diagonal - alpha * v
    raise ValueError(f"unknown IoU kind {kind!r}; expected iou, giou, diou or ciou")


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``(height, width)`` was fitted into a network input: scale, then pad."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    @classmethod
    def fit(cls, image_hw: tuple[int, int], target_hw: tuple[int, int], keep_ratio: bool = True) -> Letterbox:
        """``keep_ratio``: scale by the smaller ratio and centre (pjreddie / letter_box=1); else stretch."""
        (h, w), (th, tw) = image_hw, target_hw
        if not keep_ratio:
            return cls(tw / w, th / h, 0.0, 0.0)
        ratio = min(tw / w, th / h)
        new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))  # a 20000x20 strip keeps a row
        return cls(new_w / w, new_h / h, (tw - new_w) / 2, (th - new_h) / 2)

    def resized_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        return round(image_hw[0] * self.scale_y), round(image_hw[1] * self.scale_x)

    def to_network(self, xyxy: torch.Tensor) -> torch.Tensor:
        """Original-image pixels -> network-input pixels."""
        scale = xyxy.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        pad = xyxy.new_tensor([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        return xyxy * scale + pad

    def to_original(self, xyxy: torch.Tensor, image_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Network-input pixels -> original-image pixels (clipped to the image when its size is given)."""
        scale = xyxy.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        pad = xyxy.new_tensor([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        out = (xyxy - pad) / scale
        if image_hw is not None:
            h, w = image_hw
            out = torch.stack([out[..., 0].clamp(0, w), out[..., 1].clamp(0, h),
                               out[..., 2].clamp(0, w), out[..., 3].clamp(0, h)], -1)
        return out
