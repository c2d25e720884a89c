"""[route] (concatenation, or a channel slice) and [shortcut] (elementwise sum): the layers that read others."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.darknet.cfg import Key, int_list, integer, word
from utils.darknet.layers.base import ActivationFactory, DarknetLayer, activation_from, activation_key
from utils.darknet.registry import register


@register("shortcut")
class Shortcut(DarknetLayer):
    """Sum of the previous layer and the ``from`` layers, optionally weighted (Darknet's weighted residuals).

    Inputs with fewer channels than the previous layer are added to its leading channels, as Darknet does.
    """

    cfg_keys = {
        "from": Key(int_list),
        "activation": activation_key("linear"),
        "weights_type": Key(word, "none", ("none", "per_feature", "per_channel")),
        "weights_normalization": Key(word, "none", ("none", "relu", "softmax")),
    }
    reference_key = "from"
    NORMALIZATION_EPS = 0.0001  # Darknet adds this to the sum of the input weights

    def __init__(self, sources: tuple[int, ...], channels: Sequence[int], activation: ActivationFactory = nn.Identity,
                 weights_type: str = "none", weights_normalization: str = "none"):
        super().__init__()
        self.sources = sources
        self.out_channels = channels[0]
        self.add_channels = tuple(min(c, channels[0]) for c in channels[1:])
        self.act = activation()
        self.weights_normalization = weights_normalization
        self.input_weights = None
        if weights_type != "none":
            per = channels[0] if weights_type == "per_channel" else 1
            self.input_weights = nn.Parameter(torch.ones(len(channels), per))

    @classmethod
    def from_cfg(cls, block, ctx):
        sources = (block.index - 1,) + ctx.resolve(block, "from", block["from"])
        channels = [ctx.channels[i] for i in sources]
        return cls(sources, channels, activation_from(block), block["weights_type"], block["weights_normalization"])

    def _normalized_weights(self) -> torch.Tensor:
        w = self.input_weights
        if self.weights_normalization == "relu":
            w = F.relu(w)
            return w / (w.sum(0, keepdim=True) + self.NORMALIZATION_EPS)
        if self.weights_normalization == "softmax":
            w = torch.exp(w - w.max(0, keepdim=True).values)
            return w / (w.sum(0, keepdim=True) + self.NORMALIZATION_EPS)
        return w

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        weights = None if self.input_weights is None else self._normalized_weights().view(len(xs), 1, -1, 1, 1)
        out = xs[0] if weights is None else xs[0] * weights[0]
        for k, (x, channels) in enumerate(zip(xs[1:], self.add_channels), start=1):
            term = x if weights is None else x * weights[k]
            if channels == self.out_channels and term.shape[1] == channels:
                out = out + term
            else:
                out = torch.cat([out[:, :channels] + term[:, :channels], out[:, channels:]], 1)
        return self.act(out)

    def darknet_tensors(self) -> list[torch.Tensor]:
        return [] if self.input_weights is None else [self.input_weights]

    def flops(self, inputs, output):
        # parser.c: out_w * out_h * out_c * n, n the layers in from= (the previous one is not counted);
        # weighted sums count twice.
        c, h, w = output
        return c * h * w * (len(self.sources) - 1) * (2 if self.input_weights is not None else 1)

    def channel_flow(self, graph, inputs):
        if self.input_weights is not None and self.input_weights.shape[1] > 1:  # a weight per channel
            for atoms in inputs:
                graph.fix(atoms)
        for other in inputs[1:]:
            graph.tie(inputs[0], other)
        return list(inputs[0])

    @property
    def is_plain_residual(self) -> bool:
        """previous + one earlier layer of the same width, unweighted, linear or ReLU: x + f(x), or ResNet's
        relu(x + f(x)), which is x + f(x) for the non-negative x a ResNet unit receives."""
        return (len(self.sources) == 2 and self.input_weights is None
                and isinstance(self.act, (nn.Identity, nn.ReLU)) and self.add_channels[0] == self.out_channels)

    def removable_span(self, index, layers):
        if not self.is_plain_residual:
            return None
        start = self.sources[1] + 1
        inside = range(start, index)

        def reads_only_the_unit(k: int) -> bool:  # its input and the layers of the unit before k
            return all(start - 1 <= j < k for j in (layers[k].sources or ()))

        chain = len(inside) > 0 and all(reads_only_the_unit(k) for k in inside)
        if chain and layers[self.sources[1]].out_channels == self.out_channels:
            return range(start, index + 1)
        return None


@register("route")
class Route(DarknetLayer):
    """Concatenation of layers; with ``groups=G group_id=i`` each input contributes its i-th of G channel slices."""

    cfg_keys = {
        "layers": Key(int_list),
        "groups": Key(integer, 1, low=1, high=1024),
        "group_id": Key(integer, 0, low=0),
    }
    reference_key = "layers"

    def __init__(self, sources: tuple[int, ...], channels: Sequence[int], groups: int = 1, group_id: int = 0):
        super().__init__()
        self.sources = sources
        self.groups, self.group_id = groups, group_id
        self.slices = tuple((c // groups * group_id, c // groups * (group_id + 1)) for c in channels)
        self.out_channels = sum(c // groups for c in channels)

    @classmethod
    def from_cfg(cls, block, ctx):
        sources = ctx.resolve(block, "layers", block["layers"])
        channels = [ctx.channels[i] for i in sources]
        groups, group_id = block["groups"], block["group_id"]
        if not group_id < groups:
            raise block.error(f"group_id={group_id} must lie in 0 .. groups-1 (groups={groups})", "group_id")
        for source, c in zip(sources, channels):
            if c % groups:
                raise block.error(f"layer {source} has {c} channels, not divisible by groups={groups}", "groups")
        return cls(sources, channels, groups, group_id)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if self.groups != 1:
            xs = [x[:, start:stop] for x, (start, stop) in zip(xs, self.slices)]
        return xs[0] if len(xs) == 1 else torch.cat(xs, 1)

    def channel_flow(self, graph, inputs):
        if self.groups == 1:
            return [a for atoms in inputs for a in atoms]
        for atoms in inputs:
            graph.fix(atoms)  # Darknet slices equal groups: their channels cannot be removed
        return [a for atoms, (start, stop) in zip(inputs, self.slices) for a in atoms[start:stop]]
