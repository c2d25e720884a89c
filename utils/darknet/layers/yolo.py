"""[yolo]: a detection head, with the one box decoding the model and the loss share."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from utils.darknet.cfg import Cfg, Key, float_list, int_list, integer, number, type_section, word
from utils.darknet.layers.base import DarknetLayer, passthrough_flow
from utils.darknet.layers.conv import Convolutional
from utils.darknet.registry import layer_type, register

IOU_KINDS = ("iou", "giou", "diou", "ciou")
# exp(tw) is capped here: past it float32 overflows soon (exp(89)) and float16 at once (exp(11.1)), and NMS on
# an infinite box gives NaN. e^10 anchors is already far wider than any input.
MAX_LOG_WH = 10.0


@dataclass(frozen=True)
class YoloLossOptions:
    """The [yolo] keys the loss uses (utils/training/loss.py), typed once when the layer is built; their
    defaults are YOLOLayer.cfg_keys'."""

    ignore_thresh: float
    truth_thresh: float
    iou_thresh: float
    iou_thresh_kind: str
    iou_loss: str
    iou_normalizer: float
    obj_normalizer: float
    cls_normalizer: float
    label_smooth_eps: float
    focal_loss: bool

    @classmethod
    def from_block(cls, block) -> YoloLossOptions:
        values = {key: block[key] for key in cls.__dataclass_fields__}
        return cls(**values | {"focal_loss": bool(values["focal_loss"])})


def _unused(convert, default, choices=None) -> Key:
    return Key(convert, default, choices, implemented=False)


@register("yolo")
class YOLOLayer(DarknetLayer):
    """A detection head. Its input is the raw conv output ``(B, A*(5+classes), H, W)``, Darknet's layout.

    ``activate`` gives what Darknet's yolo layer stores as its output (logistic on x, y, objectness and
    classes; w, h raw); ``decode`` gives boxes in input pixels, ``(B, A*H*W, 5+classes)`` ordered by
    anchor, then row, then column; ``boxes`` is the decoding both use.
    """

    cfg_keys = {
        "mask": Key(int_list, None, low=0),
        "anchors": Key(float_list, low=0, high=1e5),
        "classes": Key(integer, 20, low=1, high=100000),
        "num": Key(integer, 1, low=1, high=1000),
        "scale_x_y": Key(number, 1.0, low=0.01, high=10),
        "new_coords": Key(integer, 0, (0, 1)),
        "ignore_thresh": Key(number, 0.5, low=0, high=1),
        "truth_thresh": Key(number, 1.0, low=0, high=1),
        "iou_thresh": Key(number, 1.0, low=0, high=1),
        "iou_thresh_kind": Key(word, "iou", IOU_KINDS),
        "iou_loss": Key(word, "mse", ("mse", *IOU_KINDS)),
        "iou_normalizer": Key(number, 0.75, low=0, high=1000),
        "obj_normalizer": Key(number, 1.0, low=0, high=1000),
        "cls_normalizer": Key(number, 1.0, low=0, high=1000),
        "label_smooth_eps": Key(number, 0.0, low=0, high=1),
        "focal_loss": Key(integer, 0, (0, 1)),
        # Darknet's, not applied here: augmentation and multi-scale come from train.py's flags, detection uses
        # greedy IoU NMS (Darknet's default nms_kind), and these loss refinements are not implemented.
        "jitter": _unused(number, 0.2),
        "random": _unused(number, 0.0),
        "resize": _unused(number, 1.0),
        "max": _unused(integer, 200),
        "delta_normalizer": _unused(number, 1.0),
        "max_delta": _unused(number, float("inf")),
        "objectness_smooth": _unused(integer, 0),
        "counters_per_class": _unused(word, ""),
        "nms_kind": _unused(word, "default", ("default", "greedynms", "diounms", "cornersnms")),
        "beta_nms": _unused(number, 0.6),
        "map": _unused(word, ""),
        "track_history_size": _unused(integer, 5),
        "sim_thresh": _unused(number, 0.8),
        "dets_for_track": _unused(integer, 1),
        "dets_for_show": _unused(integer, 1),
        "track_ciou_norm": _unused(number, 0.01),
        "embedding_layer": _unused(integer, 0),
    }
    is_head = True

    def __init__(self, anchors: torch.Tensor, mask: Sequence[int], num_classes: int, loss: YoloLossOptions,
                 scale_x_y: float = 1.0, new_coords: bool = False):
        super().__init__()
        self.mask = tuple(mask)
        self.num_classes = num_classes
        self.num_outputs = 5 + num_classes
        self.out_channels = len(self.mask) * self.num_outputs
        self.scale_x_y, self.new_coords = scale_x_y, bool(new_coords)
        self.loss = loss
        self.register_buffer("all_anchors", anchors.reshape(-1, 2).float(), persistent=False)
        self.register_buffer("anchors", self.all_anchors[list(self.mask)].clone(), persistent=False)

    @staticmethod
    def anchor_pairs(block) -> list[float]:
        """The ``num`` (w,h) pairs the block's anchors start with, flat."""
        anchors, num = block["anchors"], block["num"]
        if len(anchors) % 2 or len(anchors) // 2 < num:
            raise block.error(f"anchors must hold num={num} (w,h) pairs: got {len(anchors)} values", "anchors")
        return anchors[:2 * num]

    @staticmethod
    def mask_as_read(block) -> list[int]:
        """The written mask, or Darknet's default when there is none: every anchor."""
        return block["mask"] if block["mask"] is not None else list(range(block["num"]))

    @classmethod
    def _mask(cls, block) -> list[int]:
        num, mask = block["num"], cls.mask_as_read(block)
        if not mask or any(m >= num for m in mask):
            raise block.error(f"mask {mask} must index anchors 0 .. {num - 1}", "mask")
        if len(set(mask)) != len(mask):
            raise block.error(f"mask {mask} lists an anchor twice", "mask")
        return mask

    @classmethod
    def from_cfg(cls, block, ctx):
        anchors, classes = cls.anchor_pairs(block), block["classes"]
        if min(anchors) <= 0:
            raise block.error(f"anchor sizes must be positive, got {block['anchors']}", "anchors")
        mask = cls._mask(block)
        expected = len(mask) * (classes + 5)
        if ctx.previous_channels != expected:
            raise block.error(f"the layer before has {ctx.previous_channels} filters; a [yolo] with {len(mask)} "
                              f"anchors and {classes} classes needs {len(mask)}*({classes}+5) = {expected}")
        loss = YoloLossOptions.from_block(block)
        return cls(torch.tensor(anchors), mask, classes, loss, block["scale_x_y"], block["new_coords"])

    @classmethod
    def class_edits(cls, cfg: Cfg, index: int, num_classes: int) -> dict[tuple[int, str], object]:
        block = type_section(cfg.layers[index], cls.cfg_keys, cfg.source, index)
        return {(index + 1, "classes"): num_classes, **cls.head_filters_edit(cfg, index, block, num_classes)}

    @classmethod
    def head_filters_edit(cls, cfg: Cfg, index: int, block, num_classes: int,
                          mask: Sequence[int] | None = None) -> dict[tuple[int, str], object]:
        """The edit sizing the conv before the [yolo] at layer ``index`` for ``num_classes`` and ``mask`` (by
        default the block's own)."""
        before = cfg.layers[index - 1] if index > 0 else None
        if before is None or layer_type(before.name) is not Convolutional:
            raise block.error(f"the layer before this [yolo] is {f'[{before.name}]' if before else 'the input'}, "
                              f"not a [convolutional] whose filters could be resized")
        anchors = len(cls._mask(block) if mask is None else mask)
        return {(index, "filters"): anchors * (num_classes + 5)}

    @property
    def num_anchors(self) -> int:
        return len(self.mask)

    def describe(self) -> str:
        return f"mask {','.join(map(str, self.mask))}"

    @torch.no_grad()
    def prime_head_bias(self, bias: torch.Tensor, objectness: float = 0.01) -> None:
        """Set the bias of the conv feeding this head so training starts at ``objectness`` per anchor and cell
        and near-uniform class scores, not at the 0.5 a zero bias gives to thousands of empty cells."""
        rows = bias.view(self.num_anchors, self.num_outputs)
        rows[:, 4] = math.log(objectness / (1 - objectness))
        rows[:, 5:] = math.log(1.0 / max(self.num_classes - 0.99, 1.0))

    def split(self, raw: torch.Tensor) -> torch.Tensor:
        """``(B, A*(5+C), H, W)`` -> ``(B, A, H, W, 5+C)``: one row of outputs per anchor and cell."""
        batch, _, height, width = raw.shape
        return raw.view(batch, self.num_anchors, self.num_outputs, height, width).permute(0, 1, 3, 4, 2)

    def _scale_xy(self, xy: torch.Tensor) -> torch.Tensor:
        if self.scale_x_y == 1.0:
            return xy
        return xy * self.scale_x_y - 0.5 * (self.scale_x_y - 1.0)

    def boxes(self, p: torch.Tensor, stride: tuple[float, float]) -> torch.Tensor:
        """Darknet's box decoding: ``p`` = split() output, ``stride`` = (y, x) input pixels per cell ->
        (cx, cy, w, h) in input pixels, ``(B, A, H, W, 4)``. ``x = (col + s*sigmoid(tx) - (s-1)/2) * stride``,
        ``w = exp(tw) * anchor_w`` (``new_coords``: the conv already applied the logistic,
        ``w = (2 tw)^2 * anchor``)."""
        height, width = p.shape[2:4]
        anchors = self.anchors.to(p.dtype).view(1, -1, 1, 1, 2)
        if self.new_coords:
            xy, wh = self._scale_xy(p[..., :2]), (2 * p[..., 2:4]) ** 2 * anchors
        else:
            xy, wh = self._scale_xy(torch.sigmoid(p[..., :2])), torch.exp(p[..., 2:4].clamp(max=MAX_LOG_WH)) * anchors
        grid_x = torch.arange(width, device=p.device, dtype=p.dtype).view(1, 1, 1, width)
        grid_y = torch.arange(height, device=p.device, dtype=p.dtype).view(1, 1, height, 1)
        cx = (grid_x + xy[..., 0]) * stride[1]
        cy = (grid_y + xy[..., 1]) * stride[0]
        return torch.cat([cx.unsqueeze(-1), cy.unsqueeze(-1), wh], -1)

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Darknet's [yolo] output tensor, same shape as ``raw``."""
        batch, _, height, width = raw.shape
        v = raw.view(batch, self.num_anchors, self.num_outputs, height, width)
        if self.new_coords:  # the conv before already applied the logistic
            return torch.cat([self._scale_xy(v[:, :, :2]), v[:, :, 2:]], 2).view_as(raw)
        act = torch.sigmoid(v)
        return torch.cat([self._scale_xy(act[:, :, :2]), v[:, :, 2:4], act[:, :, 4:]], 2).view_as(raw)

    def decode(self, raw: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Boxes (cx, cy, w, h in input pixels), objectness and class scores: ``(B, A*H*W, 5+classes)``."""
        height, width = raw.shape[-2:]
        p = self.split(raw)
        scores = p[..., 4:] if self.new_coords else torch.sigmoid(p[..., 4:])
        boxes = self.boxes(p, (image_size[0] / height, image_size[1] / width))
        return torch.cat([boxes, scores], -1).flatten(1, 3)  # (B, A, H, W, 5+C) -> (B, A*H*W, 5+C), B = 0 too

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.activate(raw)

    channel_flow = staticmethod(passthrough_flow)
