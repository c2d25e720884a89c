"""Exports for deployment: ONNX (optionally with score threshold, class-aware NMS and max_det inside the graph)
and TorchScript.

Both take any batch and any input size the network's strides allow (multiples of 32 for the shipped cfgs).
Without NMS the output is the eval forward, ``(batch, N, 5 + classes)``. With NMS the ONNX graph ends in
ONNX's own ``NonMaxSuppression``, so onnxruntime alone gives final boxes: ``(K, 7)`` rows of
``batch_index, x1, y1, x2, y2, score, class`` in input pixels, each image's rows best first, at most
``max_det`` per image, each box under its best class (score = objectness x class score), as detect.py keeps.
"""
from __future__ import annotations

import importlib.util
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from utils.boxes import xywh_to_xyxy
from utils.darknet.model import Darknet
from utils.errors import UserError
from utils.fileio import atomic_write
from utils.inference.nms import NmsFilter, nms
from utils.output_files import named_write_errors

ONNX_OPSET = 17


@dataclass(frozen=True)
class NmsOptions:
    """The part of detect.py's :class:`NmsFilter` that ONNX's NonMaxSuppression runs, with its defaults."""

    conf_thres: float = NmsFilter.conf_thres
    iou_thres: float = NmsFilter.iou_thres
    max_det: int = NmsFilter.max_det


@torch.library.custom_op("darknet::non_max_suppression", mutates_args=())
def _non_max_suppression(boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_threshold: float,
                         score_threshold: float) -> torch.Tensor:
    """ONNX NonMaxSuppression's contract, by the repo's greedy NMS: boxes (B, N, 4) x1y1x2y2, scores (B, C, N)
    -> selected (K, 3) rows of image, class, box; per image and class, best first. A custom op, so tracing
    records one call, which the export writes as the standard ONNX op."""
    selected = [torch.zeros(0, 3, dtype=torch.long)]
    for image in range(boxes.shape[0]):
        for cls in range(scores.shape[1]):
            candidates = torch.nonzero(scores[image, cls] > score_threshold).squeeze(1)
            keep = candidates[nms(boxes[image, candidates], scores[image, cls, candidates], iou_threshold,
                                  max_det=max_per_class)]
            selected.append(torch.stack([torch.full_like(keep, image), torch.full_like(keep, cls), keep], 1))
    return torch.cat(selected)


@_non_max_suppression.register_fake
def _(boxes, scores, max_per_class, iou_threshold, score_threshold):
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(), 3), dtype=torch.long)


def _onnx_non_max_suppression(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
    def constant(value, dtype):
        return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

    max_per_class, iou, score = (torch.onnx.symbolic_helper._maybe_get_const(v, kind) for v, kind in
                                 ((max_per_class, "i"), (iou_threshold, "f"), (score_threshold, "f")))
    return g.op("NonMaxSuppression", boxes, scores, constant(max_per_class, torch.long),
                constant(iou, torch.float32), constant(score, torch.float32), center_point_box_i=0)


torch.onnx.register_custom_op_symbolic("darknet::non_max_suppression", _onnx_non_max_suppression, ONNX_OPSET)


class DetectorWithNms(nn.Module):
    """The model followed by the score threshold, class-aware NMS and max_det, in traceable ops."""

    def __init__(self, model: Darknet, options: NmsOptions):
        super().__init__()
        self.model, self.options = model, options

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        prediction = self.model(images)
        boxes = xywh_to_xyxy(prediction[..., :4])
        scores = prediction[..., 5:] * prediction[..., 4:5]
        best = scores.max(-1, keepdim=True).values
        scores = torch.where(scores == best, scores, torch.zeros_like(scores))  # each box under its best class
        options = self.options
        selected = _non_max_suppression(boxes, scores.transpose(1, 2).contiguous(), options.max_det,
                                        options.iou_thres, options.conf_thres)
        image, cls, box = selected[:, 0], selected[:, 1], selected[:, 2]
        score = scores[image, box, cls]
        order = torch.argsort(image.to(score.dtype) * 2 + (1 - score))  # by image, then best first
        image, cls, box, score = image[order], cls[order], box[order], score[order]
        same_image = image[:, None] == torch.arange(images.shape[0], device=image.device)[None]
        rank = (torch.cumsum(same_image.to(torch.int64), 0) * same_image).sum(1) - 1
        keep = rank < options.max_det
        return torch.cat([image[keep, None].to(score.dtype), boxes[image[keep], box[keep]], score[keep, None],
                          cls[keep, None].to(score.dtype)], 1)


def require_onnx(flag: str = "--onnx") -> None:
    """torch writes ONNX through the onnx package, which only the tests install (requirements-dev.txt)."""
    if importlib.util.find_spec("onnx") is None:
        raise UserError(f"{flag} needs the onnx package, which is not installed: pip install onnx "
                        f"(TorchScript, --torchscript, needs nothing more)")


def _example_size(model: Darknet, img_size: int | None) -> tuple[int, int]:
    return (img_size, img_size) if img_size else model.img_size


def _example(model: Darknet, img_size: int | None) -> torch.Tensor:
    return torch.zeros(1, model.input_channels, *_example_size(model, img_size))


def export_onnx(model: Darknet, out: Path, img_size: int | None = None, fuse: bool = False,
                nms_options: NmsOptions | None = None) -> None:
    """ONNX (opset ONNX_OPSET) with dynamic batch, height and width; the example size defaults to the cfg's."""
    model.eval()
    if fuse:
        model.fuse()
    module = model if nms_options is None else DetectorWithNms(model, nms_options).eval()
    outputs = {"detections": {0: "batch", 1: "boxes"}} if nms_options is None else {"detections": {0: "boxes"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notices about Python values and the exporter's age
        torch.onnx.export(module, (_example(model, img_size),), buffer, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["images"], output_names=["detections"],
                          dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, **outputs})
    with atomic_write(out) as f:
        f.write(buffer.getvalue())


def export_torchscript(model: Darknet, out: Path, img_size: int | None = None) -> None:
    """A traced TorchScript module (``torch.jit.load`` alone runs it): the eval forward, any batch and size."""
    model.prepare_inference()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notices about shapes read as Python numbers
        traced = torch.jit.trace(model, _example(model, img_size), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    with atomic_write(out) as f:
        f.write(buffer.getvalue())


def write_onnx(model: Darknet, out: Path, img_size: int | None = None, fuse: bool = False,
               nms_options: NmsOptions | None = None) -> str:
    """:func:`export_onnx`, a failed write named; says what the file holds."""
    with named_write_errors(out, "ONNX model"):
        export_onnx(model, out, img_size, fuse, nms_options)
    height, width = _example_size(model, img_size)
    if nms_options is None:
        detections = f"(batch, N, {5 + model.num_classes}): cx, cy, w, h, objectness, class scores"
    else:
        detections = (f"(K, 7): batch, x1, y1, x2, y2, score, class in input pixels, after NMS at conf "
                      f"{nms_options.conf_thres}, IoU {nms_options.iou_thres}, at most {nms_options.max_det} "
                      f"per image")
    return (f"wrote {out}: ONNX opset {ONNX_OPSET}, input 'images' (batch, {model.input_channels}, height, width; "
            f"traced at {height}x{width}), output 'detections' {detections}")


def write_torchscript(model: Darknet, out: Path, img_size: int | None = None) -> str:
    """:func:`export_torchscript`, a failed write named; says what the file holds."""
    with named_write_errors(out, "TorchScript module"):
        export_torchscript(model, out, img_size)
    height, width = _example_size(model, img_size)
    return (f"wrote {out}: TorchScript (torch.jit.load), input (batch, {model.input_channels}, height, width; "
            f"traced at {height}x{width}), output as the eval forward, (batch, N, {5 + model.num_classes})")
