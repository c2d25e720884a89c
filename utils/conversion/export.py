"""Exports for deployment: ONNX."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from utils.darknet.model import Darknet
from utils.fileio import atomic_write


def export_onnx(model: Darknet, out: Path, img_size: int, fuse: bool = False, opset: int = 17) -> None:
    """ONNX with a dynamic batch; outputs as the eval forward: (batch, N, 5 + classes)."""
    model.eval()
    if fuse:
        model.fuse()
    dummy = torch.zeros(1, model.input_channels, img_size, img_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that the TorchScript-based exporter is the older one
        torch.onnx.export(model, (dummy,), buffer, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["detections"],
                          dynamic_axes={"images": {0: "batch"}, "detections": {0: "batch"}})
    with atomic_write(out) as f:
        f.write(buffer.getvalue())
