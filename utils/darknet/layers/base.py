"""The contract every Darknet layer type fulfils, and what builders share (activations, norms, context).

A layer class registered with ``utils.darknet.registry.register`` declares everything the rest of the repo
needs to know about its type; nothing outside the class dispatches on layer types:

- ``cfg_keys``: the typed schema of its cfg section (with ``LAYER_KEYS``, which every type has);
  ``reference_key``: the key listing layers it reads;
- ``from_cfg(block, ctx)``: how it is built from a typed block, given the channels before it;
  ``class_edits``: what adapting the class count changes in the cfg;
- ``out_channels`` and ``sources`` (absolute indices of the layers it reads; None: just the previous one);
- ``darknet_tensors()``: the tensors it owns in a ``.weights`` file, in file order;
- ``flops(inputs, output)``: its FLOPs as Darknet counts them;
- ``channel_flow(graph, inputs)``: how channels flow through it, for pruning; ``pruned_options(kept)``: how
  it is written back to cfg after pruning; ``removable_span(index, layers)``: the layers that go with it
  when layer pruning removes it;
- ``plain_layers(block)``: the same computation in plain Darknet layers (None when it is one already), or
  a :class:`NotPlainDarknet` refusal saying why it cannot be.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol, Sequence

import torch
from torch import nn

from utils.darknet.cfg import Block, Cfg, Key, integer, word
from utils.errors import UserError

NormLayer = Callable[[int], nn.Module]
ActivationFactory = Callable[[], nn.Module]
Shape = tuple[int, ...]  # (channels, height, width)

MAX_LAYER_WEIGHTS = 2 ** 27  # 512 MB of float32 in one layer; yolov3's largest conv holds 4.7 M


class NotPlainDarknet(UserError, ValueError):
    """A layer that plain Darknet layers cannot express."""


def batch_norm(channels: int) -> nn.BatchNorm2d:
    # eps 1e-5 equals AlexeyAB Darknet's sqrt(var + .00001) to float precision. Darknet's own rolling
    # momentum is 0.01; 0.03 lets short fine-tuning runs settle their running statistics.
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.03)


class HardMish(nn.Module):
    """Darknet's hard_mish: x for x > 0, x*x/2 + x on (-2, 0], 0 below."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


ACTIVATIONS: dict[str, ActivationFactory] = {
    "linear": nn.Identity,
    "leaky": lambda: nn.LeakyReLU(0.1, inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "logistic": nn.Sigmoid,
    "tanh": nn.Tanh,
    "mish": nn.Mish,
    "hard_mish": HardMish,
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": lambda: nn.GELU(approximate="tanh"),
}
ACTIVATION_NAMES = tuple(ACTIVATIONS)


def keeps_zero(activation: nn.Module) -> bool:
    """Whether ``activation(0) == 0``: a pruned channel's zeros then stay zeros through it."""
    return float(activation(torch.zeros(1))) == 0.0


def activation_key(default: str) -> Key:
    return Key(word, default, ACTIVATION_NAMES)


def activation_from(block: Block) -> ActivationFactory:
    return ACTIVATIONS[block["activation"]]


BLOCK_INPUT = "input"  # in a plain expansion: the layer that feeds the expanded block


@dataclass
class PlainLayer:
    """One plain Darknet section of a block's expansion. In ``refs`` (route ``layers`` / shortcut ``from``),
    an int k is the k-th plain layer of the same expansion and BLOCK_INPUT is the block's input."""

    name: str
    options: dict[str, int | str]
    refs: tuple[int | str, ...] = ()


@dataclass
class BuildContext:
    """What a builder may know about the layers already built: their output channels."""

    channels: list[int]  # output channels of layers 0 .. index-1
    input_channels: int

    @property
    def previous_channels(self) -> int:
        return self.channels[-1] if self.channels else self.input_channels

    def resolve(self, block: Block, key: str, indices: Sequence[int]) -> tuple[int, ...]:
        """Darknet's layer references: negative is relative to this layer, otherwise absolute."""
        resolved = []
        for ref in indices:
            absolute = block.index + ref if ref < 0 else ref
            if not 0 <= absolute < block.index:
                raise block.error(f"{key}={ref} points to layer {absolute}; valid layers are "
                                  f"0 .. {block.index - 1}", key)
            resolved.append(absolute)
        if not resolved:
            raise block.error(f"{key} lists no layer", key)
        return tuple(resolved)

    @staticmethod
    def check_weights(block: Block, count: int) -> None:
        """Refuse a layer too large to allocate before trying (the allocator's own errors name nothing)."""
        if count > MAX_LAYER_WEIGHTS:
            raise block.error(f"this layer would hold {count:,} weights; the limit is {MAX_LAYER_WEIGHTS:,} "
                              f"per layer (check filters, size and the channels before it)")


class KeptChannels(Protocol):
    """What pruning tells a layer about the channels that stay."""

    def mask(self, conv: nn.Module) -> torch.Tensor:
        """Bool mask of the output channels of a Convolutional that are kept."""


# Keys Darknet's parser reads for every layer type (parse_network_cfg), whatever the section.
# stopbackward=1: no gradient reaches this layer or any before it (Darknet ends its backward pass there, and
# builds the layers before it for inference); the model's forward plan applies it (utils/darknet/model.py).
LAYER_KEYS: dict[str, Key] = {"stopbackward": Key(integer, 0, (0, 1))}


class DarknetLayer(nn.Module):
    """Base of every registered layer. Single-input layers take a tensor, others a list. The defaults
    describe a layer without weights that pruning treats as opaque and that plain Darknet already has."""

    section_name: ClassVar[str]  # set by register()
    cfg_keys: ClassVar[dict[str, Key]] = LAYER_KEYS
    reference_key: ClassVar[str | None] = None
    is_head: ClassVar[bool] = False
    out_channels: int
    sources: tuple[int, ...] | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.cfg_keys = {**LAYER_KEYS, **cls.cfg_keys}  # every type's schema has the keys Darknet gives all

    @classmethod
    def from_cfg(cls, block: Block, ctx: BuildContext) -> DarknetLayer:
        raise NotImplementedError

    @classmethod
    def class_edits(cls, cfg: Cfg, index: int, num_classes: int) -> dict[tuple[int, str], object]:
        """Cfg edits (section index, key) -> value that adapting to ``num_classes`` needs at layer ``index``."""
        return {}

    def darknet_tensors(self) -> list[torch.Tensor]:
        return []

    def describe(self) -> str:
        """A few words for the model summary: kernel and stride, sources, widths."""
        return f"from {','.join(map(str, self.sources))}" if self.sources else ""

    def flops(self, inputs: list[Shape], output: Shape) -> int:
        """Darknet's FLOPs count for this layer (parser.c's l.bflops, times 1e9); 0 where Darknet counts none."""
        return 0

    def channel_flow(self, graph, inputs: list[list[int]]) -> list[int]:
        """Output channel atoms from input atoms (see utils/pruning/graph.py). Unknown to pruning by default:
        its inputs stay whole and its outputs are new, fixed channels."""
        for atoms in inputs:
            graph.fix(atoms)
        return graph.new(self.out_channels, fixed=True)

    def pruned_options(self, kept: KeptChannels) -> dict[str, object]:
        """Cfg options to set (None: remove) so the section describes the pruned layer."""
        return {}

    def removable_span(self, index: int, layers: Sequence[DarknetLayer]) -> range | None:
        """The layers (ending at ``index``) that layer pruning may remove together, their output being
        their input plus a residual; None if this layer does not end such a unit."""
        return None

    def plain_layers(self, block: Block) -> list[PlainLayer] | None:
        return None


def passthrough_flow(graph, inputs: list[list[int]]) -> list[int]:
    """Channel flow of a layer that keeps its input's channels (pooling, upsampling, dropout)."""
    return list(inputs[0])
