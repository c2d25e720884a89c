"""Deformable convolution (Dai et al. 2017, v1; Zhu et al. 2019, modulated v2) in plain PyTorch.

The semantics are those of the CUDA kernels detectron2 and mmcv use: every kernel tap k = (i, j) of output
position p samples the input at ``p * stride - padding + k * dilation + offset`` by bilinear interpolation,
with zeros outside the image; v2 multiplies each sample by a mask in (0, 1). Offsets come from a plain conv
with the same kernel, stride, padding and dilation (detectron2's ``conv2_offset``), zero-initialised, so a
new deformable conv starts as the plain conv it replaces. Its output channels, per deformable group g,
hold (dy, dx) for each tap in row-major order (2 * G * kh * kw of them), then for v2 the G * kh * kw mask
logits, as detectron2 splits ``conv2_offset``'s output. Input channel c belongs to deformable group
c // (C / G).

Sampling uses ``F.grid_sample`` (zeros padding, ``align_corners=False``, where pixel p sits at (2p + 1) / size - 1),
and the sampled columns go through one matmul per conv group: gradients reach the weights, the input
and the offsets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _tap_positions(conv: nn.Conv2d, out_hw: tuple[int, int], device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Undeformed sampling rows ``(taps, ho, 1)`` and columns ``(taps, 1, wo)`` of every tap and output position."""
    (kh, kw), (sy, sx), (py, px), (dy, dx) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    tap_y = (torch.arange(kh, device=device, dtype=dtype) * dy).repeat_interleave(kw)
    tap_x = (torch.arange(kw, device=device, dtype=dtype) * dx).repeat(kh)
    rows = torch.arange(out_hw[0], device=device, dtype=dtype) * sy - py
    cols = torch.arange(out_hw[1], device=device, dtype=dtype) * sx - px
    return tap_y.view(-1, 1, 1) + rows.view(1, -1, 1), tap_x.view(-1, 1, 1) + cols.view(1, 1, -1)


def deformable_columns(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None, conv: nn.Conv2d,
                       deform_groups: int) -> torch.Tensor:
    """The im2col matrix of a deformable conv: ``(N, C * taps, ho * wo)``, channel-major like the conv weight."""
    n, c, h, w = x.shape
    ho, wo = offset.shape[-2:]
    taps = conv.kernel_size[0] * conv.kernel_size[1]
    base_y, base_x = _tap_positions(conv, (ho, wo), x.device, x.dtype)
    shifts = offset.reshape(n, deform_groups, taps, 2, ho, wo)
    y = base_y + shifts[:, :, :, 0]
    x_pos = base_x + shifts[:, :, :, 1]
    grid = torch.stack([(2 * x_pos + 1) / w - 1, (2 * y + 1) / h - 1], -1).reshape(n * deform_groups, taps * ho, wo, 2)
    sampled = F.grid_sample(x.reshape(n * deform_groups, c // deform_groups, h, w), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(n, deform_groups, c // deform_groups, taps, ho, wo)
    if mask is not None:
        sampled = sampled * mask.reshape(n, deform_groups, 1, taps, ho, wo)
    return sampled.reshape(n, c * taps, ho * wo)


@dataclass(frozen=True)
class Deform:
    """A deformable conv's kind: v1 (offsets) or ``modulated`` v2 (offsets and masks), in ``groups`` offset
    groups over the input channels."""

    modulated: bool = False
    groups: int = 1


class DeformConv2d(nn.Conv2d):
    """A conv whose taps move: ``weight``, ``bias``, stride and the rest are the nn.Conv2d's it was made from,
    plus ``offset``, the conv predicting the taps' shifts (and, ``modulated``, their masks)."""

    def __init__(self, conv: nn.Conv2d, modulated: bool, deform_groups: int):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, device=conv.weight.device,
                         dtype=conv.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(conv.weight)
            if conv.bias is not None:
                self.bias.copy_(conv.bias)
        self.modulated, self.deform_groups = modulated, deform_groups
        self.taps = self.kernel_size[0] * self.kernel_size[1]
        per_tap = 3 if modulated else 2
        self.offset = nn.Conv2d(conv.in_channels, per_tap * deform_groups * self.taps, conv.kernel_size, conv.stride,
                                conv.padding, conv.dilation, bias=True, device=conv.weight.device,
                                dtype=conv.weight.dtype)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        predicted = self.offset(x)
        shifts = 2 * self.deform_groups * self.taps
        mask = torch.sigmoid(predicted[:, shifts:]) if self.modulated else None
        columns = deformable_columns(x, predicted[:, :shifts], mask, self, self.deform_groups)
        n, (ho, wo) = x.shape[0], predicted.shape[-2:]
        weight = self.weight.reshape(self.groups, self.out_channels // self.groups, -1)
        out = weight @ columns.reshape(n, self.groups, -1, ho * wo)
        out = out.reshape(n, self.out_channels, ho, wo)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {'modulated, ' if self.modulated else ''}deform_groups={self.deform_groups}"
