"""The channel graph: every channel followed through the network, so pruning ties and fixes are derived,
never written per cfg.

Each conv output channel is an *atom*. An elementwise add ([shortcut], the hierarchical adds and the
residual inside [res2net]) ties the atoms it adds, so channels that must go together form one class.
Atoms that cannot be removed are *fixed*: the network input, outputs of convs that are not prunable (no
trained BN, grouped, deformable, or an activation that is not 0 at 0), inputs of grouped and deformable
convs, and whatever a layer type fixes in its own
``channel_flow`` (``[route] groups`` slices, the pooled group of ``stype=stage`` blocks, per-channel
shortcut weights, layers pruning knows nothing about).
"""
from __future__ import annotations

from dataclasses import dataclass

from utils.darknet.layers import Convolutional


class Atoms:
    """Union-find over channels, with a 'fixed' flag per class."""

    def __init__(self):
        self.parent: list[int] = []
        self.fixed: list[bool] = []

    def new(self, count: int, fixed: bool) -> list[int]:
        start = len(self.parent)
        self.parent += range(start, start + count)
        self.fixed += [fixed] * count
        return list(range(start, start + count))

    def find(self, atom: int) -> int:
        while self.parent[atom] != atom:
            self.parent[atom] = self.parent[self.parent[atom]]
            atom = self.parent[atom]
        return atom

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.fixed[ra] = self.fixed[ra] or self.fixed[rb]

    def fix(self, atoms) -> None:
        for atom in atoms:
            self.fixed[self.find(atom)] = True

    def is_fixed(self, atom: int) -> bool:
        return self.fixed[self.find(atom)]


@dataclass
class ConvRecord:
    conv: Convolutional
    inputs: list[int]  # an atom per input channel
    outputs: list[int]  # an atom per output channel
    prunable: bool


class ChannelGraph:
    """Built by asking each layer for its ``channel_flow``; layers call :meth:`new`, :meth:`fix`, :meth:`tie`
    and :meth:`conv`."""

    def __init__(self, model):
        self.atoms = Atoms()
        self.convs: list[ConvRecord] = []
        self.segments: list[list[int]] = []  # channel sets that must each keep at least one channel
        network_input = self.new(model.input_channels, fixed=True)
        outputs: list[list[int]] = []
        for layer in model.layers:
            if layer.sources is None:
                inputs = [outputs[-1] if outputs else network_input]
            else:
                inputs = [outputs[j] for j in layer.sources]
            outputs.append(layer.channel_flow(self, inputs))
        self.layer_outputs = outputs
        self._records = {id(r.conv): r for r in self.convs}

    def new(self, count: int, fixed: bool) -> list[int]:
        return self.atoms.new(count, fixed)

    def fix(self, atoms: list[int]) -> None:
        self.atoms.fix(atoms)

    def tie(self, a: list[int], b: list[int]) -> None:
        """An elementwise add of ``a`` and ``b`` (their leading channels, if widths differ)."""
        for x, y in zip(a, b):
            self.atoms.union(x, y)

    def conv(self, conv: Convolutional, inputs: list[int], segment: bool = True) -> list[int]:
        """A conv reading ``inputs``: new atoms for its outputs, free if the conv is prunable. ``segment``:
        the conv must keep at least one output channel."""
        if conv.reads_whole_input:
            self.atoms.fix(inputs)
        prunable = conv.prunable
        outputs = self.atoms.new(conv.conv.out_channels, fixed=not prunable)
        self.convs.append(ConvRecord(conv, list(inputs), outputs, prunable))
        if segment:
            self.segments.append(outputs)
        return outputs

    def record(self, conv: Convolutional) -> ConvRecord:
        return self._records[id(conv)]

    def gamma_of_atoms(self) -> dict[int, float]:
        gammas = {}
        for record in self.convs:
            if record.prunable:
                for atom, gamma in zip(record.outputs, record.conv.bn.weight.detach().abs().tolist()):
                    gammas[atom] = gamma
        return gammas
