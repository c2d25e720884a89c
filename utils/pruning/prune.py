"""Channel pruning (network slimming), with what may be pruned derived from the graph.

1. ``ChannelGraph`` follows every channel through the network symbolically. Each conv output channel
   is an *atom*; an elementwise add ([shortcut], the hierarchical adds and the residual inside
   [res2net]) unions the atoms it adds, so channels that must go together form one class. Atoms that
   cannot be removed are *fixed*: the network input, outputs of convs without BN (the heads before a
   [yolo]), of grouped convs, or with an activation that is not 0 at 0, channels sliced by
   ``[route] groups`` (Darknet needs equal groups), and the avg-pooled group of ``stype=stage`` blocks.
   No layer index or cfg name is involved.
2. ``select`` keeps, per class, the channels whose largest |BN gamma| reaches the global threshold
   at ``percent`` (``union``), or leaves tied classes alone (``skip``).
3. ``masked_model`` zeroes the removed channels' gamma and beta, after folding the constant each of
   them emitted, act(beta), into the BN running mean (or bias) of every conv that reads it. The
   constants are measured by one forward pass with those gammas at zero, so they follow routes,
   upsampling, pooling and shortcut sums without per-layer rules.
4. ``compact_model`` removes the zeroed channels: the result equals the masked model (same outputs up
   to float rounding), is written as a cfg (``filters``; for blocks ``widths``, ``branch_filters``,
   ``filters``, ``downsample``) plus ``.weights``, and Darknet's own layers run unchanged.

Each layer type's channel flow is registered in ``FLOWS``: a new layer type adds its rule there.
"""
from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from utils.darknet.model import Darknet
from utils.darknet.cfg import read_cfg
from utils.darknet.layers import (Convolutional, Dropout, GlobalAvgPool, HierarchicalSplit, MaxPool, Res2Net, Route,
                          Shortcut, Triangle, Upsample, YOLOLayer, fusable_convs)
from utils.errors import UserError


class PruneError(UserError, ValueError):
    """A pruning request that cannot be met (nothing is written)."""


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


def _zero_at_zero(activation: torch.nn.Module) -> bool:
    return float(activation(torch.zeros(1))) == 0.0


class ChannelGraph:
    def __init__(self, model: Darknet):
        self.atoms = Atoms()
        self.convs: list[ConvRecord] = []
        self.segments: list[list[int]] = []  # channel sets that must each keep at least one channel
        network_input = self.atoms.new(model.hyperparams["channels"], fixed=True)
        outputs: list[list[int]] = []
        for layer in model.layers:
            if layer.sources is None:
                inputs = [outputs[-1] if outputs else network_input]
            else:
                inputs = [outputs[j] for j in layer.sources]
            outputs.append(FLOWS[type(layer)](self, layer, inputs))
        self.layer_outputs = outputs

    def conv(self, conv: Convolutional, inputs: list[int], segment: bool = True) -> list[int]:
        grouped = conv.conv.groups != 1
        prunable = conv.bn is not None and not grouped and _zero_at_zero(conv.act)
        if grouped:
            self.atoms.fix(inputs)
        outputs = self.atoms.new(conv.conv.out_channels, fixed=not prunable)
        self.convs.append(ConvRecord(conv, list(inputs), outputs, prunable))
        if segment:
            self.segments.append(outputs)
        return outputs

    def add(self, a: list[int], b: list[int]) -> None:
        for x, y in zip(a, b):
            self.atoms.union(x, y)

    def gamma_of_atoms(self) -> dict[int, float]:
        gammas = {}
        for record in self.convs:
            if record.prunable:
                for atom, gamma in zip(record.outputs, record.conv.bn.weight.detach().abs().tolist()):
                    gammas[atom] = gamma
        return gammas


def _conv_flow(graph, layer, inputs):
    return graph.conv(layer, inputs[0])


def _route_flow(graph, layer: Route, inputs):
    if layer.groups != 1:
        for atoms in inputs:
            graph.atoms.fix(atoms)
        return [a for atoms, (start, stop) in zip(inputs, layer.slices) for a in atoms[start:stop]]
    return [a for atoms in inputs for a in atoms]


def _shortcut_flow(graph, layer: Shortcut, inputs):
    if layer.input_weights is not None and layer.input_weights.shape[1] > 1:  # per-channel weights
        for atoms in inputs:
            graph.atoms.fix(atoms)
    for other in inputs[1:]:
        graph.add(inputs[0], other)
    return list(inputs[0])


def _pass_flow(graph, layer, inputs):
    return list(inputs[0])


def _split_flow(graph, split: HierarchicalSplit, inputs):
    widened = graph.conv(split.conv1, inputs, segment=False)
    bounds = [0]
    for width in split.widths:
        bounds.append(bounds[-1] + width)
    groups = [widened[a:b] for a, b in zip(bounds, bounds[1:])]
    graph.segments += groups  # each split group must keep a channel: widths cannot be 0
    if split.pool is not None:
        graph.atoms.fix(groups[-1])  # averaging near the border mixes in padding: not a constant
    outs: list[list[int]] = []
    for i, conv in enumerate(split.convs):
        if i > 0 and not split.stage:
            graph.add(outs[-1], groups[i])
        outs.append(graph.conv(conv, groups[i]))
    if split.scale != 1:
        outs.append(groups[-1])
    return [a for out in outs for a in out]


def _res2net_flow(graph, layer: Res2Net, inputs):
    mid = _split_flow(graph, layer.split, inputs[0])
    out = graph.conv(layer.conv3, mid)
    identity = graph.conv(layer.downsample, inputs[0]) if layer.downsample is not None else inputs[0]
    graph.add(out, identity)
    return out


def _triangle_flow(graph, layer: Triangle, inputs):
    return _split_flow(graph, layer.split, inputs[0])


FLOWS = {
    Convolutional: _conv_flow, Route: _route_flow, Shortcut: _shortcut_flow, Upsample: _pass_flow,
    MaxPool: _pass_flow, GlobalAvgPool: _pass_flow, Dropout: _pass_flow, YOLOLayer: _pass_flow,
    Res2Net: _res2net_flow, Triangle: _triangle_flow,
}


# ----------------------------------------------------------------------------------------------
# selection


@dataclass
class Selection:
    kept: dict[int, bool]  # class root -> kept
    threshold: float
    percent: float
    safe_percent: float  # the largest percent that empties no layer
    gammas: list[float] = field(default_factory=list)

    def keep_mask(self, graph: ChannelGraph, atoms: list[int]) -> torch.Tensor:
        return torch.tensor([self.kept.get(graph.atoms.find(a), True) for a in atoms], dtype=torch.bool)


def select(graph: ChannelGraph, percent: float, layer_keep: float = 0.0, shortcut_mode: str = "union",
           channel_multiple: int = 1) -> Selection:
    if not 0.0 <= percent < 1.0:
        raise PruneError(f"percent must lie in [0, 1), got {percent}")
    if channel_multiple < 1:
        raise PruneError(f"channel_multiple must be 1 or more, got {channel_multiple}")
    if shortcut_mode not in ("union", "skip"):
        raise PruneError(f"shortcut_mode must be union or skip, got {shortcut_mode!r}")
    gammas = graph.gamma_of_atoms()
    members: dict[int, list[int]] = {}
    for atom in gammas:
        members.setdefault(graph.atoms.find(atom), []).append(atom)
    prunable = {root for root, atoms in members.items() if not graph.atoms.fixed[root]}
    if shortcut_mode == "skip":
        prunable = {root for root in prunable if len(members[root]) == 1}
    scores = {root: max(gammas[a] for a in members[root]) for root in prunable}
    values = sorted(gammas[a] for root in prunable for a in members[root])
    if not values:
        raise PruneError("nothing in this network can be pruned (no BN conv output is free of fixed ties)")
    threshold = values[min(int(percent * len(values)), len(values) - 1)] if percent > 0 else -math.inf
    kept = {root: score >= threshold for root, score in scores.items()}

    segments = [[r for r in (graph.atoms.find(a) for a in atoms) if r in prunable] for atoms in graph.segments]
    segments = [(len(atoms), roots) for atoms, roots in zip(graph.segments, segments) if roots]
    safe_threshold = min(max(scores[r] for r in roots) for _, roots in segments)
    safe_percent = sum(v < safe_threshold for v in values) / len(values)
    for size, roots in segments:
        minimum = max(1, math.ceil(layer_keep * size)) if layer_keep > 0 else 1
        if sum(kept[r] for r in roots) >= minimum:
            continue
        if layer_keep <= 0:
            raise PruneError(f"pruning {percent:.1%} of the BN channels would empty a layer (a conv, or a "
                             f"[res2net]/[triangle] split group, of {size} channels); the largest safe percent "
                             f"is {safe_percent:.4f} ({safe_percent:.1%}), or pass --layer_keep to keep a minimum "
                             f"per layer")
        for root in sorted(roots, key=lambda r: -scores[r])[:minimum]:
            kept[root] = True
    if channel_multiple > 1:
        _round_up_to_multiple(kept, scores, segments, channel_multiple)
    return Selection(kept, threshold, percent, safe_percent, values)


def _round_up_to_multiple(kept: dict[int, bool], scores: dict[int, float], segments, multiple: int) -> None:
    """Keep more channels, highest |gamma| first, until every layer keeps a multiple of ``multiple`` or all its
    channels: convolution kernels work on channels in blocks of 4 to 16, so an odd count costs about as much
    as the next multiple. Tied channels count in every layer they belong to, so repeat until nothing moves."""
    changed = True
    while changed:
        changed = False
        for size, roots in segments:
            dropped = sorted({r for r in roots if not kept[r]}, key=lambda r: -scores[r])
            count = size - sum(not kept[r] for r in roots)
            missing = min(-count % multiple, size - count)
            for root in dropped[:missing]:
                kept[root] = True
                changed = True


# ----------------------------------------------------------------------------------------------
# masked and compact models


@torch.no_grad()
def masked_model(model: Darknet, percent: float, layer_keep: float = 0.0, shortcut_mode: str = "union",
                 channel_multiple: int = 1):
    """A copy of ``model`` with the removed channels at zero and their constants folded downstream.
    Returns (masked model, its ChannelGraph, the Selection)."""
    masked = copy.deepcopy(model).eval()
    graph = ChannelGraph(masked)
    selection = select(graph, percent, layer_keep, shortcut_mode, channel_multiple)
    removed = {a for record in graph.convs if record.prunable for a in record.outputs
               if not selection.kept.get(graph.atoms.find(a), True)}
    for record in graph.convs:
        if record.prunable:
            for channel, atom in enumerate(record.outputs):
                if atom in removed:
                    record.conv.bn.weight[channel] = 0.0

    captured: dict[int, torch.Tensor] = {}
    hooks = [record.conv.register_forward_pre_hook(
        lambda module, args, i=i: captured.__setitem__(i, args[0][0, :, 0, 0].clone()))
        for i, record in enumerate(graph.convs)]
    try:
        size = 64
        masked.forward_heads(torch.rand(1, masked.hyperparams["channels"], size, size))
    finally:
        for hook in hooks:
            hook.remove()

    removed_classes = {graph.atoms.find(a) for a in removed}
    for i, record in enumerate(graph.convs):
        gone = torch.tensor([graph.atoms.find(a) in removed_classes for a in record.inputs])
        if not gone.any():
            continue
        constants = torch.where(gone, captured[i], torch.zeros_like(captured[i]))
        delta = record.conv.conv.weight.sum((2, 3)) @ constants
        if record.conv.bn is not None:
            record.conv.bn.running_mean -= delta
        else:
            record.conv.conv.bias += delta
    for record in graph.convs:
        if record.prunable:
            for channel, atom in enumerate(record.outputs):
                if atom in removed:
                    record.conv.bn.bias[channel] = 0.0
    return masked, graph, selection


def _count(mask: torch.Tensor) -> int:
    return int(mask.sum())


def pruned_cfg_text(model: Darknet, graph: ChannelGraph, selection: Selection) -> str:
    """The cfg of the compact model: every section as written, with the pruned sizes."""
    by_conv = {id(r.conv): r for r in graph.convs}

    def kept_out(conv: Convolutional) -> int:
        return _count(selection.keep_mask(graph, by_conv[id(conv)].outputs))

    raw = _raw_sections(model)
    lines = [f"# {model.cfg_path.name} pruned by prune.py: {selection.percent:.1%} of BN channels targeted", ""]
    for section, layer in zip(raw, [None, *model.layers]):
        options = {k: v for k, (v, _) in section.options.items()}
        if isinstance(layer, Convolutional):
            options["filters"] = str(kept_out(layer))
        elif isinstance(layer, (Res2Net, Triangle)):
            split = layer.split
            widened = selection.keep_mask(graph, by_conv[id(split.conv1)].outputs)
            bounds = [0]
            for width in split.widths:
                bounds.append(bounds[-1] + width)
            options["widths"] = ",".join(str(_count(widened[a:b])) for a, b in zip(bounds, bounds[1:]))
            options["branch_filters"] = ",".join(str(kept_out(conv)) for conv in split.convs)
            options.pop("inplanes", None)  # the input may be narrower now
            if isinstance(layer, Res2Net):
                options["filters"] = str(kept_out(layer.conv3))
                options["downsample"] = "1" if layer.downsample is not None else "0"
        lines += [f"[{section.name}]", *(f"{k}={v}" for k, v in options.items()), ""]
    return "\n".join(lines)


@torch.no_grad()
def compact_model(masked: Darknet, graph: ChannelGraph, selection: Selection, cfg_path: Path) -> Darknet:
    """Write the pruned cfg to ``cfg_path`` and build the compact model with the masked model's kept tensors."""
    cfg_path.write_text(pruned_cfg_text(masked, graph, selection))
    compact = Darknet(cfg_path).eval()
    by_conv = {id(r.conv): r for r in graph.convs}
    for source, target in zip(fusable_convs(masked), fusable_convs(compact)):
        record = by_conv[id(source)]
        out_keep = selection.keep_mask(graph, record.outputs)
        in_keep = selection.keep_mask(graph, record.inputs)
        target.conv.weight.copy_(source.conv.weight[out_keep][:, in_keep])
        if source.conv.bias is not None:
            target.conv.bias.copy_(source.conv.bias[out_keep])
        if source.bn is not None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(target.bn, name).copy_(getattr(source.bn, name)[out_keep])
    for source, target in zip(masked.layers, compact.layers):
        if isinstance(source, Shortcut) and source.input_weights is not None:
            target.input_weights.copy_(source.input_weights)
    compact.seen.copy_(masked.seen)
    compact.weights_version.copy_(masked.weights_version)
    return compact


# ----------------------------------------------------------------------------------------------
# layer pruning


@dataclass
class Unit:
    """Layers that can go as a whole: their output is their input plus a residual (shortcut unit or
    [res2net] without downsample), and nothing outside reads their inside."""

    layers: range
    input: int  # the layer whose output stands in for the unit's
    score: float  # mean |gamma| of the unit's BNs


def _mean_gamma(modules) -> float:
    gammas = [m.weight.detach().abs() for module in modules for m in module.modules()
              if isinstance(m, torch.nn.BatchNorm2d)]
    return float(torch.cat(gammas).mean()) if gammas else math.inf


def removable_units(model: Darknet) -> list[Unit]:
    layers = list(model.layers)
    readers: dict[int, set[int]] = {}
    for j, layer in enumerate(layers):
        for source in layer.sources or ():
            readers.setdefault(source, set()).add(j)
    units = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Shortcut) and len(layer.sources) == 2 and layer.input_weights is None \
                and isinstance(layer.act, torch.nn.Identity) and layer.add_channels[0] == layer.out_channels:
            start = layer.sources[1] + 1
            inside = range(start, i)
            chain = all(layers[k].sources is None for k in inside) and len(inside) > 0
            private = all(readers.get(k, set()) <= set(range(start, i + 1)) for k in inside)
            if chain and private and layers[layer.sources[1]].out_channels == layer.out_channels:
                units.append(Unit(range(start, i + 1), start - 1, _mean_gamma(layers[k] for k in inside)))
        elif isinstance(layer, Res2Net) and layer.downsample is None and i > 0:
            units.append(Unit(range(i, i + 1), i - 1, _mean_gamma([layer])))
    return units


def remove_units(model: Darknet, count: int, cfg_path: Path) -> tuple[Darknet, list[Unit]]:
    """Remove the ``count`` units with the lowest mean |gamma|; write the cfg to ``cfg_path``."""
    units = removable_units(model)
    if count > len(units):
        raise PruneError(f"--layers {count}: the network has only {len(units)} removable residual units "
                         f"and [res2net] blocks")
    chosen = sorted(sorted(units, key=lambda u: u.score)[:count], key=lambda u: u.layers.start)
    removed = {i for unit in chosen for i in unit.layers}
    stands_in = {unit.layers[-1]: unit.input for unit in chosen}
    new_index, kept = {}, []
    for i in range(len(model.layers)):
        if i not in removed:
            new_index[i] = len(kept)
            kept.append(i)

    def resolve(i: int) -> int:
        while i in stands_in:
            i = stands_in[i]
        return new_index[i]

    raw = _raw_sections(model)
    lines = [f"# {model.cfg_path.name} with {count} residual units removed by prune.py", ""]
    lines += [f"[{raw[0].name}]", *(f"{k}={v}" for k, (v, _) in raw[0].options.items()), ""]
    for i in kept:
        section, layer = raw[i + 1], model.layers[i]
        options = {k: v for k, (v, _) in section.options.items()}
        key = {"route": "layers", "shortcut": "from"}.get(section.name)
        if key is not None:
            sources = layer.sources if section.name == "route" else layer.sources[1:]
            written = [int(v) for v in options[key].split(",") if v]
            options[key] = ",".join(str(resolve(src) - new_index[i] if ref < 0 else resolve(src))
                                    for src, ref in zip(sources, written))
        if section.name in ("res2net", "triangle"):
            options.pop("inplanes", None)
        lines += [f"[{section.name}]", *(f"{k}={v}" for k, v in options.items()), ""]
    cfg_path.write_text("\n".join(lines))
    thinner = Darknet(cfg_path).eval()
    with torch.no_grad():
        for i in kept:
            thinner.layers[new_index[i]].load_state_dict(model.layers[i].state_dict())
    thinner.seen.copy_(model.seen)
    thinner.weights_version.copy_(model.weights_version)
    return thinner, chosen


def _raw_sections(model: Darknet):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / model.cfg_path.name
        path.write_text(model.cfg_text)
        return read_cfg(path)
