"""Layer pruning: remove whole residual units (a conv chain + [shortcut], or a stride-1 [res2net] block).

Each layer type says which layers go with it (``DarknetLayer.removable_span``); a unit is removed only if
nothing outside it reads its inside. Every layer reference that pointed past a removed unit is rewritten
(``cfg_edit.renumbered``), and a reference to a removed unit's output reads the unit's input instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from utils.darknet.cfg_edit import rebuilt, renumbered
from utils.darknet.layers.norm import is_trainable_batch_norm
from utils.darknet.model import Darknet
from utils.pruning.select import PruneError


@dataclass
class Unit:
    """Layers that can go as a whole: their output is their input plus a residual."""

    layers: range
    input: int  # the layer whose output stands in for the unit's
    score: float  # mean |gamma| of the unit's BNs


def _mean_gamma(modules) -> float:
    gammas = [m.weight.detach().abs() for module in modules for m in module.modules()
              if is_trainable_batch_norm(m)]
    return float(torch.cat(gammas).mean()) if gammas else math.inf


def removable_units(model: Darknet) -> list[Unit]:
    layers = list(model.layers)
    readers: dict[int, set[int]] = {}
    for j, layer in enumerate(layers):
        for source in layer.sources or ():
            readers.setdefault(source, set()).add(j)
    units = []
    for i, layer in enumerate(layers):
        span = layer.removable_span(i, layers)
        if span is not None and all(readers.get(k, set()) <= set(span) for k in span[:-1]):
            units.append(Unit(span, span.start - 1, _mean_gamma(layers[k] for k in span)))
    return units


def remove_units(model: Darknet, count: int) -> tuple[Darknet, list[Unit]]:
    """The model without the ``count`` units of lowest mean |gamma|, and those units."""
    units = removable_units(model)
    if count > len(units):
        raise PruneError(f"--layers {count}: the network has only {len(units)} removable residual units "
                         f"and [res2net] blocks")
    chosen = sorted(sorted(units, key=lambda u: u.score)[:count], key=lambda u: u.layers.start)
    removed = {i for unit in chosen for i in unit.layers}
    stands_in = {unit.layers[-1]: unit.input for unit in chosen}
    kept = [i for i in range(len(model.layers)) if i not in removed]
    new_index = {old: new for new, old in enumerate(kept)}

    def moved(i: int) -> int:
        while i in stands_in:
            i = stands_in[i]
        return new_index[i]

    sections = [model.cfg.sections[0]] + [renumbered(model.cfg.layers[i], i, new_index[i], moved) for i in kept]
    thinner = Darknet(rebuilt(model.cfg, sections, f"{model.cfg.name} with {count} residual units removed by "
                                                   f"prune.py")).eval()
    with torch.no_grad():
        for i in kept:
            thinner.layers[new_index[i]].load_state_dict(model.layers[i].state_dict())
    thinner.seen.copy_(model.seen)
    thinner.weights_version.copy_(model.weights_version)
    return thinner, chosen
