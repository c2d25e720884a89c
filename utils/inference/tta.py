"""Test-time augmentation (``--augment``): the network sees each image three times, as the classic Ultralytics
YOLOv3 does (full size; 0.83x flipped left-right; 0.67x), and the three sets of boxes, mapped back to the full
size, go to NMS together. Slower (about 2x the forward), usually a little more recall."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from utils.darknet.cfg import SIZE_MULTIPLE

# (scale, flipped left-right) per pass
TTA_PASSES = ((1.0, False), (0.83, True), (0.67, False))
PAD_VALUE = 0.447  # grey, as the reference implementation pads the shrunk image


def shrunk(batch: torch.Tensor, scale: float) -> torch.Tensor:
    """``batch`` resized by ``scale`` (bilinear) at its top left, padded with grey to a multiple of SIZE_MULTIPLE."""
    if scale == 1.0:
        return batch
    height, width = batch.shape[-2:]
    size = (int(height * scale), int(width * scale))
    resized = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
    padded = [math.ceil(side * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE for side in (height, width)]
    return F.pad(resized, [0, padded[1] - size[1], 0, padded[0] - size[0]], value=PAD_VALUE)


AUGMENT_HELP = ("test-time augmentation: also run each image at " + " and at ".join(
    f"{scale:g}x{' flipped' if flipped else ''}" for scale, flipped in TTA_PASSES if scale != 1.0)
    + " (about 2x slower)")


def network(model: nn.Module, augment: bool) -> nn.Module:
    """What runs a batch: ``model``, or with ``augment`` its test-time augmented passes."""
    return AugmentedInference(model) if augment else model


class AugmentedInference(nn.Module):
    """``model`` run on TTA_PASSES of its input: ``(B, N1 + N2 + N3, 5 + classes)`` rows of the model's own
    output, boxes (cx, cy, w, h) in the pixels of the input as given."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        width = batch.shape[-1]
        outputs = []
        for scale, flipped in TTA_PASSES:
            rows = self.model(shrunk(batch.flip(-1) if flipped else batch, scale))
            rows[..., :4] /= scale
            if flipped:
                rows[..., 0] = width - rows[..., 0]
            outputs.append(rows)
        return torch.cat(outputs, 1)
