"""Masked and compact models: removed channels zeroed with their constants folded downstream, then cut out.

``masked_model`` zeroes the removed channels' gamma and beta, after folding the constant each of them
emitted, act(beta), into the BN running mean (or bias) of every conv that reads it. The constants are
measured by one forward pass with those gammas at zero, so they follow routes, upsampling, pooling and
shortcut sums without per-layer rules. ``compact_model`` removes the zeroed channels: the result equals
the masked model (same outputs up to float rounding), and its cfg is each section as written with what
its layer type reports for the pruned sizes (``DarknetLayer.pruned_options``), so Darknet runs it.
"""
from __future__ import annotations

import copy

import torch

from utils.darknet.cfg import Cfg
from utils.darknet.cfg_edit import rebuilt, with_options
from utils.darknet.layers import convolutions
from utils.darknet.model import Darknet
from utils.pruning.graph import ChannelGraph
from utils.pruning.select import KeptChannels, Selection, select

CONSTANT_PROBE_SIZE = 64  # input side of the forward pass that measures each removed channel's constant


def _removed_atoms(graph: ChannelGraph, selection: Selection) -> set[int]:
    return {a for record in graph.convs if record.prunable for a in record.outputs
            if not selection.kept.get(graph.atoms.find(a), True)}


def _zero_removed(graph: ChannelGraph, removed: set[int], parameter: str) -> None:
    for record in graph.convs:
        if record.prunable:
            for channel, atom in enumerate(record.outputs):
                if atom in removed:
                    getattr(record.conv.bn, parameter)[channel] = 0.0


def _conv_inputs(model: Darknet, graph: ChannelGraph) -> list[torch.Tensor]:
    """What each conv of the graph receives at one position of a random input (removed channels: constants)."""
    captured: dict[int, torch.Tensor] = {}
    hooks = [record.conv.register_forward_pre_hook(
        lambda module, args, i=i: captured.__setitem__(i, args[0][0, :, 0, 0].clone()))
        for i, record in enumerate(graph.convs)]
    try:
        model.forward_heads(torch.rand(1, model.input_channels, CONSTANT_PROBE_SIZE, CONSTANT_PROBE_SIZE))
    finally:
        for hook in hooks:
            hook.remove()
    return [captured[i] for i in range(len(graph.convs))]


def _fold_constants(model: Darknet, graph: ChannelGraph, removed: set[int]) -> None:
    removed_classes = {graph.atoms.find(a) for a in removed}
    for record, inputs in zip(graph.convs, _conv_inputs(model, graph)):
        gone = torch.tensor([graph.atoms.find(a) in removed_classes for a in record.inputs])
        if not gone.any():
            continue
        constants = torch.where(gone, inputs, torch.zeros_like(inputs))
        record.conv.absorb_output_shift(record.conv.conv.weight.sum((2, 3)) @ constants)


@torch.no_grad()
def masked_model(model: Darknet, percent: float, layer_keep: float = 0.0, shortcut_mode: str = "union",
                 channel_multiple: int = 1):
    """A copy of ``model`` with the removed channels at zero and their constants folded downstream.
    Returns (masked model, its ChannelGraph, the Selection)."""
    masked = copy.deepcopy(model).eval()
    graph = ChannelGraph(masked)
    selection = select(graph, percent, layer_keep, shortcut_mode, channel_multiple)
    removed = _removed_atoms(graph, selection)
    _zero_removed(graph, removed, "weight")
    _fold_constants(masked, graph, removed)
    _zero_removed(graph, removed, "bias")
    return masked, graph, selection


def pruned_cfg(model: Darknet, graph: ChannelGraph, selection: Selection) -> Cfg:
    """The cfg of the compact model: every section as written, with the sizes its layer reports."""
    kept = KeptChannels(graph, selection)
    sections = [model.cfg.sections[0]] + [with_options(section, layer.pruned_options(kept))
                                          for section, layer in zip(model.cfg.layers, model.layers)]
    return rebuilt(model.cfg, sections, f"{model.cfg.name} pruned by prune.py: {selection.percent:.1%} of BN "
                                        f"channels targeted")


def _inside_convolution(name: str, conv_names: set[str]) -> bool:
    return any(name.startswith(prefix + ".") for prefix in conv_names)


@torch.no_grad()
def compact_model(masked: Darknet, graph: ChannelGraph, selection: Selection) -> Darknet:
    """The pruned model, built from its cfg, holding the masked model's kept tensors: each conv takes its
    kept channels, every other tensor (shortcut weights, seen, version) is copied as it is."""
    compact = Darknet(pruned_cfg(masked, graph, selection)).eval()
    for source, target in zip(convolutions(masked), convolutions(compact)):
        record = graph.record(source)
        target.copy_kept(source, selection.keep_mask(graph, record.outputs), selection.keep_mask(graph, record.inputs))
    targets = set(convolutions(compact))
    conv_names = {name for name, module in compact.named_modules() if module in targets}
    source_state = masked.state_dict()
    for name, tensor in compact.state_dict().items():
        if not _inside_convolution(name, conv_names):
            tensor.copy_(source_state[name])
    return compact
