"""Resampling, pooling and dropout: [upsample], [maxpool], [avgpool], [dropout]."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.darknet.cfg import Key, integer, number
from utils.darknet.layers.base import DarknetLayer, passthrough_flow
from utils.darknet.registry import register

MAX_POOL = 64


@register("upsample")
class Upsample(DarknetLayer):
    """Nearest-neighbour upsampling by an integer stride; ``scale`` multiplies the result."""

    cfg_keys = {"stride": Key(integer, 2, low=1, high=32), "scale": Key(number, 1.0)}

    def __init__(self, channels: int, stride: int = 2, scale: float = 1.0):
        super().__init__()
        self.out_channels, self.stride, self.scale = channels, stride, scale

    def describe(self) -> str:
        return f"x{self.stride}"

    @classmethod
    def from_cfg(cls, block, ctx):
        return cls(ctx.previous_channels, block["stride"], block["scale"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return x * self.scale if self.scale != 1.0 else x

    channel_flow = staticmethod(passthrough_flow)


def _span(start: int, count: int, stride: int) -> slice:
    return slice(start, start + stride * (count - 1) + 1, stride)


def _maximum_of(views: list[torch.Tensor]) -> torch.Tensor:
    out = torch.maximum(views[0], views[1])
    for view in views[2:]:
        torch.maximum(out, view, out=out)
    return out


def window_max(x: torch.Tensor, size: int, stride: tuple[int, int]) -> torch.Tensor:
    """``F.max_pool2d(x, size, stride)``, exactly, as elementwise maxima of strided views of a channels-last
    ``x``: on CPU max_pool2d also writes int64 indices nobody reads at inference, and this runs 1.3-1.8x
    faster at 2x2/2 and 2-4x at the SPP's 5, 9 and 13 (stride 1). Windows that do not overlap take one
    maximum per window offset; overlapping ones take rows then columns (max is separable)."""
    (stride_y, stride_x), (height, width) = stride, x.shape[-2:]
    out_h, out_w = (height - size) // stride_y + 1, (width - size) // stride_x + 1
    if stride_y >= size and stride_x >= size:
        return _maximum_of([x[..., _span(i, out_h, stride_y), _span(j, out_w, stride_x)]
                            for i in range(size) for j in range(size)])
    rows = _maximum_of([x[..., _span(i, out_h, stride_y), :] for i in range(size)])
    return _maximum_of([rows[..., _span(j, out_w, stride_x)] for j in range(size)])


class ChannelsLastMaxPool(torch.autograd.Function):
    """``F.max_pool2d`` of a contiguous NCHW map in training, exactly (values, indices, gradients; ties
    included): on CPU PyTorch's NCHW forward kernel is 1.4-3x slower than its channels-last one, and the
    channels-last backward 3-7x slower than the NCHW one, so the forward runs on a channels-last copy and the
    backward on NCHW with the indices it found (which count positions in the H x W plane in either format).
    yolov3-tiny at 416 batch 8: its six pools 141 -> 99 ms a step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, stride: tuple[int, int]) -> torch.Tensor:
        out, indices = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last),
                                                              [size, size], list(stride))
        ctx.save_for_backward(x, indices.contiguous())
        ctx.size, ctx.stride = size, stride
        return out.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, indices = ctx.saved_tensors
        grad_input = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [ctx.size, ctx.size], list(ctx.stride), [0, 0], [1, 1], False, indices)
        return grad_input, None, None


@register("maxpool", "max")
class MaxPool(DarknetLayer):
    """Darknet's maxpool: ``padding`` is the total padding (default size-1), the window starts at -padding/2,
    and padded cells never win (they count as -inf). Output: (in + padding - size) // stride + 1."""

    cfg_keys = {
        "size": Key(integer, 0, low=0, high=MAX_POOL),  # 0: as stride
        "stride": Key(integer, 1, low=1, high=MAX_POOL),
        "stride_x": Key(integer, 0, low=0, high=MAX_POOL),  # 0: as stride
        "stride_y": Key(integer, 0, low=0, high=MAX_POOL),
        "padding": Key(integer, -1, low=-1, high=MAX_POOL),  # -1: size - 1
        "maxpool_depth": Key(integer, 0, (0,)),
        "antialiasing": Key(integer, 0, (0,)),
    }

    def __init__(self, channels: int, size: int, stride: tuple[int, int], padding: int):
        super().__init__()
        self.out_channels, self.size, self.stride = channels, size, stride
        before = padding // 2
        self.pad = (before, padding - before, before, padding - before)

    def describe(self) -> str:
        return f"{self.size}x{self.size}/{self.stride[0]}"

    @classmethod
    def from_cfg(cls, block, ctx):
        stride = block["stride"]
        size = block["size"] or stride
        padding = block["padding"] if block["padding"] >= 0 else size - 1
        return cls(ctx.previous_channels, size, (block["stride_y"] or stride, block["stride_x"] or stride), padding)

    def _needs_padding(self, height: int, width: int) -> bool:
        """Whether any window reaches the padding. Darknet's default (size-1 in total, all of it after the
        image when size is 2) is never read when windows tile the map exactly, e.g. size 2 stride 2 on an even
        map: padding a large map then only costs a copy, in both passes."""
        if self.pad[0] or self.pad[2]:
            return True
        for length, stride, (before, after) in ((height, self.stride[0], self.pad[2:]), (width, self.stride[1],
                                                                                          self.pad[:2])):
            out = (length + before + after - self.size) // stride + 1
            if (out - 1) * stride + self.size > length:
                return True
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad) and self._needs_padding(x.shape[-2], x.shape[-1]):
            x = F.pad(x, self.pad, value=float("-inf"))
        # the CPU fast paths; a trace (TorchScript, ONNX) records aten's own max_pool2d
        if self.size > 1 and x.device.type == "cpu" and not torch.jit.is_tracing():
            if not (x.requires_grad and torch.is_grad_enabled()):
                if x.is_contiguous(memory_format=torch.channels_last):
                    return window_max(x, self.size, self.stride)
            elif x.is_contiguous():
                return ChannelsLastMaxPool.apply(x, self.size, self.stride)
        return F.max_pool2d(x, self.size, self.stride)

    def flops(self, inputs, output):
        c, h, w = output
        return self.size * self.size * c * h * w  # parser.c: size^2 * c * out_h * out_w, no factor 2

    channel_flow = staticmethod(passthrough_flow)


@register("avgpool", "avg")
class GlobalAvgPool(DarknetLayer):
    """Darknet's [avgpool]: the mean over all spatial positions, giving C x 1 x 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = channels

    @classmethod
    def from_cfg(cls, block, ctx):
        return cls(ctx.previous_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)

    channel_flow = staticmethod(passthrough_flow)


@register("dropout")
class Dropout(DarknetLayer):
    """Darknet's [dropout]: identity at inference, inverted dropout (scale 1/(1-p)) in training."""

    cfg_keys = {
        "probability": Key(number, 0.5, low=0, high=0.999),
        "dropblock": Key(integer, 0, implemented=False),
        "dropblock_size_rel": Key(number, 0.0, implemented=False),
        "dropblock_size_abs": Key(integer, 0, implemented=False),
    }

    def __init__(self, channels: int, probability: float):
        super().__init__()
        self.out_channels = channels
        self.dropout = nn.Dropout(probability)

    @classmethod
    def from_cfg(cls, block, ctx):
        return cls(ctx.previous_channels, block["probability"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x)

    channel_flow = staticmethod(passthrough_flow)
