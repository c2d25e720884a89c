"""[convolutional]: conv, then BN (the conv has no bias then) or a conv bias, then an activation."""
from __future__ import annotations

import torch
from torch import nn

from utils.darknet.cfg import Key, integer
from utils.darknet.layers.base import (ActivationFactory, DarknetLayer, NormLayer, Shape, activation_from,
                                       activation_key, batch_norm)
from utils.darknet.registry import register

MAX_KERNEL = 32
MAX_STRIDE = 32
MAX_FILTERS = 16384


@register("convolutional", "conv")
class Convolutional(DarknetLayer):
    """Darknet's convolutional layer; also the building block of [res2net] and [triangle]."""

    cfg_keys = {
        "filters": Key(integer, 1, low=1, high=MAX_FILTERS),
        "size": Key(integer, 1, low=1, high=MAX_KERNEL),
        "stride": Key(integer, 1, low=1, high=MAX_STRIDE),
        "stride_x": Key(integer, 0, low=0, high=MAX_STRIDE),  # 0: as stride
        "stride_y": Key(integer, 0, low=0, high=MAX_STRIDE),
        "pad": Key(integer, 0, (0, 1)),
        "padding": Key(integer, 0, low=0, high=MAX_KERNEL),
        "groups": Key(integer, 1, low=1, high=MAX_FILTERS),
        "dilation": Key(integer, 1, low=1, high=MAX_KERNEL),
        "batch_normalize": Key(integer, 0, (0, 1)),
        "activation": activation_key("logistic"),
    }

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int | tuple[int, int] = 1,
                 padding: int = 0, groups: int = 1, dilation: int = 1, norm_layer: NormLayer | None = batch_norm,
                 activation: ActivationFactory = nn.Identity):
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                              bias=norm_layer is None)
        self.bn = norm_layer(out_channels) if norm_layer is not None else None
        self.act = activation()
        self.fused = False

    @classmethod
    def from_cfg(cls, block, ctx):
        in_channels, filters, groups, size = ctx.previous_channels, block["filters"], block["groups"], block["size"]
        if in_channels % groups or filters % groups:
            raise block.error(f"groups={groups} must divide the {in_channels} input channels "
                              f"and the {filters} filters", "groups")
        ctx.check_weights(block, filters * in_channels // groups * size * size)
        stride_y = block["stride_y"] or block["stride"]
        stride_x = block["stride_x"] or block["stride"]
        # Darknet's im2col pads by pad * dilation, and pad=1 means size/2: "same" output for odd sizes.
        padding = (size // 2 if block["pad"] else block["padding"]) * block["dilation"]
        return cls(in_channels, filters, size, (stride_y, stride_x), padding, groups, block["dilation"],
                   batch_norm if block["batch_normalize"] else None, activation_from(block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def darknet_tensors(self) -> list[torch.Tensor]:
        if self.fused:
            raise RuntimeError("a fused model has no BN tensors to write; save the model before fuse()")
        if self.bn is not None:
            return [self.bn.bias, self.bn.weight, self.bn.running_mean, self.bn.running_var, self.conv.weight]
        return [self.conv.bias, self.conv.weight]

    def describe(self) -> str:
        (kh, kw), (sy, sx) = self.conv.kernel_size, self.conv.stride
        stride = f"{sy}" if sy == sx else f"{sy}x{sx}"
        groups = f" g{self.conv.groups}" if self.conv.groups > 1 else ""
        return f"{kh}x{kw}/{stride}{groups}"

    def flops_at(self, out_height: int, out_width: int) -> int:
        """Darknet's count: 2 * weights * output positions (a multiply and an add per weight and position)."""
        return 2 * self.conv.weight.numel() * out_height * out_width

    def flops(self, inputs: list[Shape], output: Shape) -> int:
        return self.flops_at(output[1], output[2])

    @property
    def prunable(self) -> bool:
        """Whether its output channels may be removed: BN (a gamma to rank by), ungrouped, and an activation
        that is 0 at 0, so a removed channel's constant output is act(beta) and can be folded downstream."""
        return self.bn is not None and self.conv.groups == 1 and float(self.act(torch.zeros(1))) == 0.0

    def channel_flow(self, graph, inputs):
        return graph.conv(self, inputs[0])

    def pruned_options(self, kept):
        return {"filters": int(kept.mask(self).sum())}

    @torch.no_grad()
    def copy_kept(self, source: Convolutional, out_keep: torch.Tensor, in_keep: torch.Tensor) -> None:
        """Take ``source``'s tensors for the kept output and input channels (this conv has their sizes)."""
        self.conv.weight.copy_(source.conv.weight[out_keep][:, in_keep])
        if source.conv.bias is not None:
            self.conv.bias.copy_(source.conv.bias[out_keep])
        if source.bn is not None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(self.bn, name).copy_(getattr(source.bn, name)[out_keep])

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BN into the conv for inference: w' = w * g / sqrt(v + eps), b' = beta - mean * g / sqrt(v + eps)."""
        if self.bn is None or self.fused:
            return
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = self.conv
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True).to(conv.weight.device, conv.weight.dtype)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn, self.fused = fused, None, True


def convolutions(module: nn.Module) -> list[Convolutional]:
    """Every Convolutional in ``module``, blocks' inner ones included, in network order."""
    return [m for m in module.modules() if isinstance(m, Convolutional)]
