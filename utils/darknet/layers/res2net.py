"""[res2net] and [triangle] (spec §2): the hierarchical split they share, and the two blocks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from utils.darknet.cfg import Block, Key, int_list, integer, with_default, word
from utils.darknet.layers.base import (ACTIVATIONS, BLOCK_INPUT, ActivationFactory, BuildContext, DarknetLayer,
                                       NormLayer, NotPlainDarknet, PlainLayer, activation_from, activation_key,
                                       batch_norm)
from utils.darknet.layers.conv import MAX_FILTERS, Convolutional, ConvShape
from utils.darknet.registry import register


def _bounds(sizes: Sequence[int]) -> list[tuple[int, int]]:
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    return list(zip(starts, starts[1:]))


@dataclass(frozen=True)
class SplitShape:
    """The channel layout of a hierarchical split: per-group widths, per-branch 3x3 filters (equal unless
    pruned), the branches' stride, and whether it is the ``stage`` variant."""

    widths: tuple[int, ...]
    branch_filters: tuple[int, ...]
    stride: int = 1
    stage: bool = False

    @classmethod
    def uniform(cls, width: int, scale: int, stride: int = 1, stage: bool = False) -> SplitShape:
        return cls((width,) * scale, (width,) * (1 if scale == 1 else scale - 1), stride, stage)


class HierarchicalSplit(nn.Module):
    """The part [res2net] and [triangle] share (spec §2, steps 1-5).

    conv1 (1x1) widens to ``sum(widths)`` channels, split into ``scale`` groups of ``widths``; each of the
    first ``nums`` groups goes through its own 3x3 conv (``branch_filters`` outputs) after adding the
    previous branch's output (unless ``stage``), and the outputs are concatenated with the last group,
    untouched (or avg-pooled for ``stage``). Unpruned blocks have every width and filter count equal.
    """

    def __init__(self, inplanes: int, shape: SplitShape, norm_layer: NormLayer = batch_norm,
                 activation: ActivationFactory = ACTIVATIONS["leaky"]):
        super().__init__()
        self.widths, self.branch_filters = list(shape.widths), list(shape.branch_filters)
        self.scale, self.stage = len(self.widths), shape.stage
        self.out_channels = sum(self.branch_filters) + (self.widths[-1] if self.scale != 1 else 0)
        self.conv1 = Convolutional(inplanes, sum(self.widths), ConvShape(1), norm_layer, activation)
        self.convs = nn.ModuleList(
            Convolutional(self.widths[i], filters, ConvShape(3, shape.stride, 1), norm_layer, activation)
            for i, filters in enumerate(self.branch_filters))
        self.pool = nn.AvgPool2d(3, shape.stride, 1) if shape.stage and self.scale != 1 else None

    @property
    def uniform_width(self) -> int | None:
        """The common width of an unpruned block, None once pruning made the groups unequal."""
        sizes = set(self.widths) | set(self.branch_filters)
        return sizes.pop() if len(sizes) == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(self.conv1(x), self.widths, 1)
        outputs = []
        branch = groups[0]
        for i, conv in enumerate(self.convs):
            if i > 0:
                branch = groups[i] if self.stage else branch + groups[i]
            branch = conv(branch)
            outputs.append(branch)
        if self.scale != 1:
            outputs.append(self.pool(groups[-1]) if self.pool is not None else groups[-1])
        return torch.cat(outputs, 1) if len(outputs) > 1 else outputs[0]

    def darknet_tensors(self) -> list[torch.Tensor]:
        return [t for conv in (self.conv1, *self.convs) for t in conv.darknet_tensors()]

    def flops(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
        """As Darknet counts the plain expansion: the convs, and a [shortcut] per hierarchical add (the stage
        variant's 3x3 average pool counted as Darknet counts a local_avgpool)."""
        flops = self.conv1.flops_at(*in_hw) + sum(conv.flops_at(*out_hw) for conv in self.convs)
        if not self.stage:
            flops += sum(self.widths[1:len(self.convs)]) * out_hw[0] * out_hw[1]
        elif self.pool is not None:
            flops += 9 * self.widths[-1] * out_hw[0] * out_hw[1]
        return flops

    def channel_flow(self, graph, inputs: list[int]) -> list[int]:
        widened = graph.conv(self.conv1, inputs, segment=False)
        groups = [widened[a:b] for a, b in _bounds(self.widths)]
        graph.segments += groups  # each split group must keep a channel: widths cannot be 0
        if self.pool is not None:
            graph.fix(groups[-1])  # averaging near the border mixes in padding: not a constant
        outs: list[list[int]] = []
        for i, conv in enumerate(self.convs):
            if i > 0 and not self.stage:
                graph.tie(outs[-1], groups[i])
            outs.append(graph.conv(conv, groups[i]))
        if self.scale != 1:
            outs.append(groups[-1])
        return [a for out in outs for a in out]

    def pruned_options(self, kept) -> dict[str, object]:
        widened = kept.mask(self.conv1)
        return {"widths": [int(widened[a:b].sum()) for a, b in _bounds(self.widths)],
                "branch_filters": [int(kept.mask(conv).sum()) for conv in self.convs],
                "inplanes": None}  # the input may be narrower now

    def plain_layers(self, activation: str) -> list[PlainLayer]:
        """The same computation in plain Darknet layers, tensors in the same order: conv1; per branch a
        ``[route] groups=scale group_id=i`` slice, a ``[shortcut]`` adding the previous branch, the 3x3 conv;
        the last slice; one ``[route]`` concatenating them."""
        if self.stage:
            raise NotPlainDarknet("stype=stage has a 3x3 average pool that plain Darknet layers cannot express")
        width = self.uniform_width
        if width is None:
            raise NotPlainDarknet(f"split widths {self.widths} and branch filters {self.branch_filters} (a pruned "
                                  f"block) are not all one width, which Darknet's equal [route] groups need")

        def conv(filters: int, size: int) -> PlainLayer:
            return PlainLayer("convolutional", {"batch_normalize": 1, "filters": filters, "size": size,
                                                "stride": 1, "pad": 1, "activation": activation})

        layers = [conv(width * self.scale, 1)]
        outputs = []
        for i in range(len(self.convs)):
            layers.append(PlainLayer("route", {"groups": self.scale, "group_id": i}, (0,)))
            if i > 0:
                layers.append(PlainLayer("shortcut", {"activation": "linear"}, (outputs[-1],)))
            layers.append(conv(width, 3))
            outputs.append(len(layers) - 1)
        if self.scale != 1:
            layers.append(PlainLayer("route", {"groups": self.scale, "group_id": self.scale - 1}, (0,)))
            outputs.append(len(layers) - 1)
        if len(outputs) > 1:
            layers.append(PlainLayer("route", {}, tuple(outputs)))
        return layers


HIERARCHICAL_KEYS = {
    "planes": Key(integer, low=1, high=MAX_FILTERS),
    "inplanes": Key(integer, -1, low=-1, high=MAX_FILTERS),  # -1: the incoming channels
    "scale": Key(integer, 4, low=1, high=64),
    "base_width": Key(integer, 26, low=1, high=1024),
    "stride": Key(integer, 1, low=1, high=32),
    "stype": Key(word, "normal", ("normal", "stage")),
    "activation": activation_key("leaky"),
    # written by prune.py: the per-group split widths and per-branch conv filters of a pruned block
    "widths": Key(int_list, None, low=1, high=MAX_FILTERS),
    "branch_filters": Key(int_list, None, low=1, high=MAX_FILTERS),
}


def _split_widths(block: Block) -> tuple[list[int], list[int]]:
    scale = block["scale"]
    nums = 1 if scale == 1 else scale - 1
    width = block["planes"] * block["base_width"] // 64
    if width < 1 and not block.given("widths"):
        raise block.error(f"width = floor(planes*base_width/64) = floor({block['planes']}*{block['base_width']}/64)"
                          f" is 0; raise planes or base_width")
    widths = block["widths"] if block["widths"] is not None else [width] * scale
    filters = block["branch_filters"] if block["branch_filters"] is not None else widths[:nums]
    if len(widths) != scale:
        raise block.error(f"widths needs {scale} positive values (one per group, scale={scale}), got {widths}",
                          "widths")
    if len(filters) != nums:
        raise block.error(f"branch_filters needs {nums} positive values (one per 3x3 branch), got {filters}",
                          "branch_filters")
    return widths, filters


def split_options(block: Block, ctx: BuildContext) -> dict:
    """Constructor arguments of the hierarchical split, checked against the block's keys."""
    inplanes = ctx.previous_channels
    if block.given("inplanes") and block["inplanes"] != inplanes:
        raise block.error(f"inplanes={block['inplanes']} but the layer before outputs {inplanes} channels",
                          "inplanes")
    stage = block["stype"] == "stage"
    if block["stride"] != 1 and not stage and block["scale"] != 1:
        raise block.error("stride != 1 needs stype=stage: the untouched last group would keep the input size",
                          "stride")
    widths, filters = _split_widths(block)
    if not stage:
        for i in range(1, len(filters)):
            if filters[i - 1] != widths[i]:
                raise block.error(f"branch {i - 1} outputs {filters[i - 1]} channels but is added to group {i} "
                                  f"of {widths[i]}: they must match", "branch_filters")
    ctx.check_weights(block, inplanes * sum(widths) + 9 * sum(w * f for w, f in zip(widths, filters)))
    return dict(inplanes=inplanes, shape=SplitShape(tuple(widths), tuple(filters), block["stride"], stage),
                activation=activation_from(block))


@dataclass(frozen=True)
class Residual:
    """How a [res2net] block's input joins its output: through a 1x1 conv or not (``downsample``; None: where
    the shapes differ), then ``activation`` on the sum (linear in the spec)."""

    downsample: bool | None = None
    activation: ActivationFactory = nn.Identity


class HierarchicalBlock(DarknetLayer):
    """What [res2net] and [triangle] share around their split."""

    split: HierarchicalSplit

    def describe(self) -> str:
        stride = self.split.convs[0].conv.stride[0]
        width = self.split.uniform_width
        return f"{self.split.scale}x{width if width else 'pruned'}/{stride}"


@register("res2net")
class Res2Net(HierarchicalBlock):
    """The seed's Bottle2neck (expansion 2): hierarchical split, conv3 1x1 to ``planes*2``, plus the residual."""

    cfg_keys = {**HIERARCHICAL_KEYS,
                # written by prune.py: conv3's filters, and whether the residual has its 1x1 conv
                "filters": Key(integer, -1, low=-1, high=MAX_FILTERS),
                "downsample": Key(integer, -1, (-1, 0, 1)),
                # after the residual add: linear in the spec; relu gives the Res2Net paper's ImageNet block
                "residual_activation": activation_key("linear")}
    expansion = 2

    def __init__(self, inplanes: int, out_channels: int, shape: SplitShape, residual: Residual = Residual(),
                 norm_layer: NormLayer = batch_norm, activation: ActivationFactory = ACTIVATIONS["leaky"]):
        super().__init__()
        self.out_channels = out_channels
        self.split = HierarchicalSplit(inplanes, shape, norm_layer, activation)
        self.conv3 = Convolutional(self.split.out_channels, out_channels, ConvShape(1), norm_layer)
        downsample = residual.downsample
        if downsample is None:
            downsample = shape.stride != 1 or inplanes != out_channels
        self.downsample = Convolutional(inplanes, out_channels, ConvShape(1, shape.stride), norm_layer) \
            if downsample else None
        self.residual_act = residual.activation()

    @classmethod
    def from_cfg(cls, block, ctx):
        options = split_options(block, ctx)
        out_channels = block["filters"] if block["filters"] > 0 else block["planes"] * cls.expansion
        downsample = None if block["downsample"] < 0 else bool(block["downsample"])
        if downsample is False and (block["stride"] != 1 or options["inplanes"] != out_channels):
            raise block.error(f"downsample=0 needs stride 1 and inplanes ({options['inplanes']}) == filters "
                              f"({out_channels}) for the residual add", "downsample")
        residual = Residual(downsample, ACTIVATIONS[block["residual_activation"]])
        return cls(out_channels=out_channels, residual=residual, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        # conv3's output is this block's own and no backward reads it (a norm's or a conv's output), so the
        # sum can go into it: no new feature map, half the memory traffic of the add
        return self.residual_act(self.conv3(self.split(x)).add_(identity))

    def darknet_tensors(self) -> list[torch.Tensor]:
        tensors = self.split.darknet_tensors() + self.conv3.darknet_tensors()
        if self.downsample is not None:
            tensors += self.downsample.darknet_tensors()
        return tensors

    def flops(self, inputs, output):
        out_hw = output[1:]
        flops = self.split.flops(inputs[0][1:], out_hw) + self.conv3.flops_at(*out_hw)
        if self.downsample is not None:
            flops += self.downsample.flops_at(*out_hw)
        return flops + self.out_channels * out_hw[0] * out_hw[1]  # the residual [shortcut]

    def channel_flow(self, graph, inputs):
        out = graph.conv(self.conv3, self.split.channel_flow(graph, inputs[0]))
        identity = graph.conv(self.downsample, inputs[0]) if self.downsample is not None else inputs[0]
        graph.tie(out, identity)
        return out

    def pruned_options(self, kept):
        return {**self.split.pruned_options(kept), "filters": int(kept.mask(self.conv3).sum()),
                "downsample": int(self.downsample is not None)}

    def removable_span(self, index, layers):
        return range(index, index + 1) if self.downsample is None and index > 0 else None

    def plain_layers(self, block: Block) -> list[PlainLayer]:
        """The split, conv3, the downsample (routed from the block input) if any, and the residual [shortcut]."""
        layers = self.split.plain_layers(block["activation"])

        def linear_conv(size_stride: int) -> PlainLayer:
            return PlainLayer("convolutional", {"batch_normalize": 1, "filters": self.out_channels, "size": 1,
                                                "stride": size_stride, "pad": 1, "activation": "linear"})

        layers.append(linear_conv(1))
        conv3 = len(layers) - 1
        residual = {"activation": block["residual_activation"]}
        if self.downsample is None:
            layers.append(PlainLayer("shortcut", residual, (BLOCK_INPUT,)))
        else:
            layers.append(PlainLayer("route", {}, (BLOCK_INPUT,)))
            layers.append(linear_conv(self.downsample.conv.stride[0]))
            layers.append(PlainLayer("shortcut", residual, (conv3,)))
        return layers


@register("triangle")
class Triangle(HierarchicalBlock):
    """The hierarchical split alone: no conv3, no residual. Outputs ``width*scale`` channels."""

    cfg_keys = with_default(HIERARCHICAL_KEYS, "base_width", 16)

    def __init__(self, inplanes: int, shape: SplitShape, norm_layer: NormLayer = batch_norm,
                 activation: ActivationFactory = ACTIVATIONS["leaky"]):
        super().__init__()
        self.split = HierarchicalSplit(inplanes, shape, norm_layer, activation)
        self.out_channels = self.split.out_channels

    @classmethod
    def from_cfg(cls, block, ctx):
        return cls(**split_options(block, ctx))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.split(x)

    def darknet_tensors(self) -> list[torch.Tensor]:
        return self.split.darknet_tensors()

    def flops(self, inputs, output):
        return self.split.flops(inputs[0][1:], output[1:])

    def channel_flow(self, graph, inputs):
        return self.split.channel_flow(graph, inputs[0])

    def pruned_options(self, kept):
        return self.split.pruned_options(kept)

    def plain_layers(self, block: Block) -> list[PlainLayer]:
        return self.split.plain_layers(block["activation"])
