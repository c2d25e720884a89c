"""[scale_channels] (a product of two layers, SE and spatial attention) and [activation] (an activation alone)."""
from __future__ import annotations

import torch

from utils.darknet.cfg import Key, int_list, integer
from utils.darknet.layers.base import (ActivationFactory, DarknetLayer, activation_from, activation_key, keeps_zero,
                                       passthrough_flow)
from utils.darknet.registry import register


@register("scale_channels")
class ScaleChannels(DarknetLayer):
    """AlexeyAB Darknet's scale_channels_layer.c: the ``from`` layer's output times the previous layer's, which
    is the scale: one value per channel (1 x 1 x C, as SE's excitation gives) or, with ``scale_wh=1``, one per
    position (W x H x 1). The output has the ``from`` layer's shape; the activation comes after the product."""

    cfg_keys = {
        "from": Key(int_list),
        "scale_wh": Key(integer, 0, (0, 1)),
        "activation": activation_key("linear"),
    }
    reference_key = "from"

    def __init__(self, sources: tuple[int, int], channels: int, scale_wh: bool = False,
                 activation: ActivationFactory = torch.nn.Identity):
        super().__init__()
        self.sources, self.out_channels, self.scale_wh = sources, channels, scale_wh
        self.act = activation()

    @classmethod
    def from_cfg(cls, block, ctx):
        if len(block["from"]) != 1:
            raise block.error(f"from= names the one layer to scale, got {len(block['from'])}", "from")
        scaled = ctx.resolve(block, "from", block["from"])[0]
        scale_channels, channels = ctx.previous_channels, ctx.channels[scaled]
        wanted = 1 if block["scale_wh"] else channels
        if scale_channels != wanted:
            what = "1 channel (a W x H x 1 map)" if block["scale_wh"] else f"{channels} channels, one per channel"
            raise block.error(f"the layer before (the scale) has {scale_channels} channels; scaling layer "
                              f"{scaled} needs {what}", "scale_wh" if block["scale_wh"] else "from")
        return cls((block.index - 1, scaled), channels, bool(block["scale_wh"]), activation_from(block))

    def describe(self) -> str:
        return f"from {self.sources[1]}" + (" wh" if self.scale_wh else "")

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        scale, x = xs
        if not self.scale_wh and scale.shape[-2:] != (1, 1):
            raise RuntimeError(f"the scale is {tuple(scale.shape[-2:])} per channel; scale_channels needs 1 x 1 "
                               f"(a global [avgpool] before it), or scale_wh=1 for a W x H x 1 scale")
        return self.act(x * scale)

    def channel_flow(self, graph, inputs):
        scale, scaled = inputs
        if self.scale_wh:  # every channel times a varying map: none of them stays a constant when removed
            graph.fix(scale)
            graph.fix(scaled)
        else:  # channel c times scale c: they go together, like the two sides of an addition
            graph.tie(scaled, scale)
        return list(scaled)


@register("activation")
class Activation(DarknetLayer):
    """Darknet's [activation] layer: the previous output through ``activation`` (default linear)."""

    cfg_keys = {"activation": activation_key("linear")}

    def __init__(self, channels: int, activation: ActivationFactory = torch.nn.Identity):
        super().__init__()
        self.out_channels = channels
        self.act = activation()
        if hasattr(self.act, "inplace"):
            self.act.inplace = False  # its input may also be routed elsewhere (RetinaNet's P6 is)

    @classmethod
    def from_cfg(cls, block, ctx):
        return cls(ctx.previous_channels, activation_from(block))

    def describe(self) -> str:
        return type(self.act).__name__.lower()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)

    def channel_flow(self, graph, inputs):
        if keeps_zero(self.act):
            return passthrough_flow(graph, inputs)
        return super().channel_flow(graph, inputs)
