"""[convolutional]: conv, then a norm (the conv has no bias then) or a conv bias, then an activation.

Beyond Darknet's keys: ``normalize=batch|frozen|ibn`` picks the norm of a ``batch_normalize=1`` conv (see
``norm``), and ``deform=1|2`` (v1, modulated v2) with ``deform_groups=G`` makes it a deformable conv (see
``deform``). Darknet has neither InstanceNorm nor deformable convs, so ``ibn`` and ``deform`` are refused by
the plain-Darknet conversion; ``frozen`` keeps Darknet's BN stream and inference (Darknet ignores the key).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from utils.darknet.cfg import Block, Key, integer, word
from utils.darknet.layers.base import (ActivationFactory, DarknetLayer, NormLayer, NotPlainDarknet, Shape,
                                       activation_from, activation_key, batch_norm, keeps_zero)
from utils.darknet.layers.deform import Deform, DeformConv2d
from utils.darknet.layers.norm import (BN_TENSORS, NORMALIZERS, absorb_input_shift, has_constant_statistics,
                                       is_trainable_batch_norm, norm_tag, norm_tensors)
from utils.darknet.layers.packed import PackedWeight, can_run_packed, packed_conv
from utils.darknet.registry import register

MAX_KERNEL = 32
MAX_STRIDE = 32
MAX_FILTERS = 16384


@dataclass(frozen=True)
class ConvShape:
    """A conv's geometry: nn.Conv2d's arguments besides the channels (``padding`` on each side)."""

    kernel_size: int = 1
    stride: int | tuple[int, int] = 1
    padding: int = 0
    groups: int = 1
    dilation: int = 1
    deform: Deform | None = None  # a deformable conv (its taps move), else a plain one


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
        "normalize": Key(word, "batch", tuple(NORMALIZERS)),
        "deform": Key(integer, 0, (0, 1, 2)),
        "deform_groups": Key(integer, 1, low=1, high=MAX_FILTERS),
    }

    def __init__(self, in_channels: int, out_channels: int, shape: ConvShape = ConvShape(),
                 norm_layer: NormLayer | None = batch_norm, activation: ActivationFactory = nn.Identity):
        super().__init__()
        self.out_channels = out_channels
        conv = nn.Conv2d(in_channels, out_channels, shape.kernel_size, shape.stride, shape.padding, shape.dilation,
                         shape.groups, bias=norm_layer is None)
        self.conv = DeformConv2d(conv, shape.deform.modulated, shape.deform.groups) if shape.deform else conv
        self.bn = norm_layer(out_channels) if norm_layer is not None else None
        self.act = activation()
        self.fused = False
        self.packed: PackedWeight | None = None  # set by prepack()

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
        deform = cls._deform_of(block, in_channels)
        shape = ConvShape(size, (stride_y, stride_x), padding, groups, block["dilation"], deform)
        return cls(in_channels, filters, shape, cls._norm_of(block), activation_from(block))

    @staticmethod
    def _norm_of(block: Block) -> NormLayer | None:
        if block["batch_normalize"] and block["normalize"] == "ibn" and block["filters"] < 2:
            raise block.error(f"normalize=ibn splits the filters between InstanceNorm and BN, so it needs at least "
                              f"2; got filters={block['filters']}", "normalize")
        if block["batch_normalize"]:
            return NORMALIZERS[block["normalize"]]
        if block.given("normalize"):
            raise block.error("normalize= chooses the norm of a batch_normalize=1 conv; this one has none",
                              "normalize")
        return None

    @staticmethod
    def _deform_of(block: Block, in_channels: int) -> Deform | None:
        groups = block["deform_groups"]
        if not block["deform"]:
            if groups != 1:
                raise block.error("deform_groups= needs deform=1 or 2", "deform_groups")
            return None
        if in_channels % groups:
            raise block.error(f"deform_groups={groups} must divide the {in_channels} input channels", "deform_groups")
        return Deform(modulated=block["deform"] == 2, groups=groups)

    @property
    def deformable(self) -> bool:
        return isinstance(self.conv, DeformConv2d)

    def prepack(self) -> None:
        """Run inference on oneDNN's blocked copy of the weight (see ``packed``): a plain conv whose norm is
        folded in or absent, on CPU, float32, without autograd; anything else takes the usual path."""
        if self.bn is None and not self.deformable and torch.backends.mkldnn.is_available():
            self.packed = PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None and can_run_packed(x, self.conv):
            return packed_conv(x, self.conv, self.act, self.packed)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def darknet_tensors(self) -> list[torch.Tensor]:
        """[offset conv bias, offset conv weight (deformable only)], then the norm's tensors (BN: bias, weight,
        mean, var) or the conv bias, then the conv weight."""
        if self.fused:
            raise RuntimeError("a fused model has no BN tensors to write; save the model before fuse()")
        offsets = [self.conv.offset.bias, self.conv.offset.weight] if self.deformable else []
        if self.bn is not None:
            return [*offsets, *norm_tensors(self.bn), self.conv.weight]
        return [*offsets, self.conv.bias, self.conv.weight]

    def describe(self) -> str:
        (kh, kw), (sy, sx) = self.conv.kernel_size, self.conv.stride
        stride = f"{sy}" if sy == sx else f"{sy}x{sx}"
        groups = f" g{self.conv.groups}" if self.conv.groups > 1 else ""
        deform = f" dcn{'2' if self.conv.modulated else ''}" if self.deformable else ""
        return f"{kh}x{kw}/{stride}{groups}{deform}{norm_tag(self.bn)}"

    def flops_at(self, out_height: int, out_width: int) -> int:
        """Darknet's count: 2 * weights * output positions (a multiply and an add per weight and position); a
        deformable conv adds its offset conv (the bilinear sampling is not counted)."""
        weights = self.conv.weight.numel() + (self.conv.offset.weight.numel() if self.deformable else 0)
        return 2 * weights * out_height * out_width

    def flops(self, inputs: list[Shape], output: Shape) -> int:
        return self.flops_at(output[1], output[2])

    @property
    def prunable(self) -> bool:
        """Whether its output channels may be removed: a trained BN (a gamma to rank by; frozen and IBN norms
        are left alone), ungrouped, not deformable, and an activation that is 0 at 0, so a removed channel's
        constant output is act(beta) and can be folded downstream."""
        return (is_trainable_batch_norm(self.bn) and self.conv.groups == 1 and not self.deformable
                and keeps_zero(self.act))

    @property
    def reads_whole_input(self) -> bool:
        """Its input channels cannot be removed: conv groups, and a deformable conv's groups and offset conv,
        need the widths they were built with."""
        return self.conv.groups != 1 or self.deformable

    @torch.no_grad()
    def absorb_output_shift(self, delta: torch.Tensor) -> None:
        """Fold a constant ``delta`` per output channel, which this conv's output loses when removed input
        channels stop emitting their constants, into what follows the conv, so its result stays the same."""
        if self.bn is None:
            self.conv.bias += delta
        else:
            absorb_input_shift(self.bn, delta)

    def channel_flow(self, graph, inputs):
        return graph.conv(self, inputs[0])

    def pruned_options(self, kept):
        return {"filters": int(kept.mask(self).sum())}

    def plain_layers(self, block: Block) -> None:
        if block["batch_normalize"] and block["normalize"] == "ibn":
            raise NotPlainDarknet("normalize=ibn (IBN-a) needs InstanceNorm, which Darknet does not have")
        if block["deform"]:
            raise NotPlainDarknet(f"deform={block['deform']}: Darknet has no deformable convolution")
        return None

    @torch.no_grad()
    def copy_kept(self, source: Convolutional, out_keep: torch.Tensor, in_keep: torch.Tensor) -> None:
        """Take ``source``'s tensors for the kept output and input channels (this conv has their sizes)."""
        self.conv.weight.copy_(source.conv.weight[out_keep][:, in_keep])
        if source.conv.bias is not None:
            self.conv.bias.copy_(source.conv.bias[out_keep])
        if self.deformable:  # its input and output channels are never pruned (reads_whole_input, prunable)
            self.conv.offset.load_state_dict(source.conv.offset.state_dict())
        if source.bn is None:
            return
        if bool(out_keep.all()):  # every unprunable norm (frozen, IBN) takes this path
            self.bn.load_state_dict(source.bn.state_dict())
            return
        for name in BN_TENSORS:
            getattr(self.bn, name).copy_(getattr(source.bn, name)[out_keep])

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BN into the conv for inference: w' = w * g / sqrt(v + eps), b' = beta - mean * g / sqrt(v + eps).
        IBN stays as it is: InstanceNorm's statistics are the input's own, not constants."""
        if self.bn is None or self.fused or not has_constant_statistics(self.bn):
            return
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self.conv.weight.mul_(scale.view(-1, 1, 1, 1))
        self.conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
        self.bn, self.fused = None, True


def convolutions(module: nn.Module) -> list[Convolutional]:
    """Every Convolutional in ``module``, blocks' inner ones included, in network order."""
    return [m for m in module.modules() if isinstance(m, Convolutional)]
