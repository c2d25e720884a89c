"""A convolution on oneDNN's blocked copy of its weight, for CPU inference (``Darknet.prepare_inference``).

PyTorch's CPU convolution hands oneDNN the weight in PyTorch's layout, and oneDNN reorders it into its own
blocked one on every call: for the deep convs of a YOLO, whose weights are large and whose maps are small,
that copy is a fifth of the conv's time (yolov3-tiny's 512 -> 1024 3x3 at 13x13: 8.5 -> 6.3 ms). Reordering
once and calling oneDNN's convolution on the blocked copy gives the same numbers bit for bit wherever PyTorch
itself would call oneDNN, and fuses a ReLU or leaky ReLU into it. At batch 1 PyTorch sends a kernel of at most
3x3 on an input of at most 20,480 values to its im2col path instead, which can sum in another order (seen:
up to ~2e-6 apart). The inner ``nn.Conv2d`` is not called on this path, so forward hooks on it do not
fire (hooks on the Darknet layer do).
"""
from __future__ import annotations

import torch
from torch import nn


class PackedWeight:
    """The blocked copy of one conv's weight, made on first use and remade when the weight changes (another
    tensor, or written in place). oneDNN's tensors can be neither copied nor saved, so copies and pickles of
    a model start without it."""

    def __init__(self):
        self.key: tuple[int, int] | None = None
        self.tensor: torch.Tensor | None = None

    def __deepcopy__(self, memo) -> PackedWeight:
        return PackedWeight()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def of(self, conv: nn.Conv2d, input_shape: torch.Size) -> torch.Tensor:
        key = (conv.weight.data_ptr(), conv.weight._version)
        if key != self.key:
            self.tensor = torch._C._nn.mkldnn_reorder_conv2d_weight(
                conv.weight.detach().to_mkldnn(), list(conv.padding), list(conv.stride), list(conv.dilation),
                conv.groups, list(input_shape))
            self.key = key
        return self.tensor


def can_run_packed(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """oneDNN's op has no backward and no other device or dtype, and tracing (ONNX, TorchScript) and
    torch.compile must see the ordinary conv: float32 on CPU, no autograd, none of those."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled("cpu"))


def _fused_activation(act: nn.Module) -> tuple[str, list[float]] | None:
    if type(act) is nn.LeakyReLU:
        return "leaky_relu", [act.negative_slope]
    if type(act) is nn.ReLU:
        return "relu", []
    return None


def packed_conv(x: torch.Tensor, conv: nn.Conv2d, act: nn.Module, packed: PackedWeight) -> torch.Tensor:
    """``act(conv(x))`` on the blocked weight, the activation fused where oneDNN has it."""
    fused = _fused_activation(act)
    attr, scalars = fused if fused is not None else ("none", [])
    out = torch.ops.mkldnn._convolution_pointwise(x, packed.of(conv, x.shape), conv.bias, list(conv.padding),
                                                  list(conv.stride), list(conv.dilation), conv.groups, attr,
                                                  scalars, "")
    return out if fused is not None else act(out)
