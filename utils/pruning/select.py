"""Which channels stay: a global threshold on |BN gamma|, per class of tied channels."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from utils.darknet.layers import Convolutional
from utils.errors import UserError
from utils.pruning.graph import ChannelGraph


class PruneError(UserError, ValueError):
    """A pruning request that cannot be met (nothing is written)."""


@dataclass
class Selection:
    kept: dict[int, bool]  # class root -> kept
    threshold: float
    percent: float
    safe_percent: float  # the largest percent that empties no layer
    gammas: list[float] = field(default_factory=list)

    @property
    def pruned_share(self) -> float:
        """The share of the prunable channels at or under the threshold (before any per-layer minimum)."""
        return sum(g <= self.threshold for g in self.gammas) / len(self.gammas) if self.gammas else 0.0

    def keep_mask(self, graph: ChannelGraph, atoms: list[int]) -> torch.Tensor:
        return torch.tensor([self.kept.get(graph.atoms.find(a), True) for a in atoms], dtype=torch.bool)


@dataclass
class KeptChannels:
    """What layers ask when they write their pruned cfg (see DarknetLayer.pruned_options)."""

    graph: ChannelGraph
    selection: Selection

    def mask(self, conv: Convolutional) -> torch.Tensor:
        return self.selection.keep_mask(self.graph, self.graph.record(conv).outputs)


@dataclass
class Candidates:
    """The prunable classes of tied channels, scored by their largest |gamma|."""

    scores: dict[int, float]  # class root -> score
    values: list[float]  # every prunable channel's |gamma|, sorted
    segments: list[tuple[int, list[int]]]  # (channels, prunable roots) of each layer that must keep one

    @classmethod
    def of(cls, graph: ChannelGraph, shortcut_mode: str) -> Candidates:
        gammas = graph.gamma_of_atoms()
        members: dict[int, list[int]] = {}
        for atom in gammas:
            members.setdefault(graph.atoms.find(atom), []).append(atom)
        prunable = {root for root, atoms in members.items() if not graph.atoms.is_fixed(root)}
        if shortcut_mode == "skip":
            prunable = {root for root in prunable if len(members[root]) == 1}
        scores = {root: max(gammas[a] for a in members[root]) for root in prunable}
        values = sorted(gammas[a] for root in prunable for a in members[root])
        if not values:
            raise PruneError("nothing in this network can be pruned (no BN conv output is free of fixed ties)")
        segments = [(len(atoms), [r for r in {graph.atoms.find(a) for a in atoms} if r in prunable])
                    for atoms in graph.segments]
        return cls(scores, values, [(size, roots) for size, roots in segments if roots])

    def safe_percent(self) -> float:
        """The largest percent whose threshold stays under every layer's largest score."""
        safe_threshold = min(max(self.scores[r] for r in roots) for _, roots in self.segments)
        return sum(v < safe_threshold for v in self.values) / len(self.values)


def _check(percent: float, shortcut_mode: str, channel_multiple: int) -> None:
    if not 0.0 <= percent < 1.0:
        raise PruneError(f"percent must lie in [0, 1), got {percent}")
    if channel_multiple < 1:
        raise PruneError(f"channel_multiple must be 1 or more, got {channel_multiple}")
    if shortcut_mode not in ("union", "skip"):
        raise PruneError(f"shortcut_mode must be union or skip, got {shortcut_mode!r}")


def _keep_minimum(kept: dict[int, bool], candidates: Candidates, layer_keep: float, percent: float) -> None:
    """Every layer keeps at least one channel (or ``layer_keep`` of them); without layer_keep, refuse instead."""
    for size, roots in candidates.segments:
        minimum = max(1, math.ceil(layer_keep * size)) if layer_keep > 0 else 1
        if sum(kept[r] for r in roots) >= minimum:
            continue
        if layer_keep <= 0:
            safe = candidates.safe_percent()
            raise PruneError(f"pruning {percent:.1%} of the BN channels would empty a layer (a conv, or a "
                             f"[res2net]/[triangle] split group, of {size} channels); the largest safe percent "
                             f"is {safe:.4f} ({safe:.1%}), or pass --layer_keep to keep a minimum per layer")
        for root in sorted(roots, key=lambda r: -candidates.scores[r])[:minimum]:
            kept[root] = True


def select(graph: ChannelGraph, percent: float, layer_keep: float = 0.0, shortcut_mode: str = "union",
           channel_multiple: int = 1) -> Selection:
    _check(percent, shortcut_mode, channel_multiple)
    candidates = Candidates.of(graph, shortcut_mode)
    values = candidates.values
    if percent > 0 and values and values[0] == values[-1]:
        why = ("sparsity training (--sr) with an --s so strong it zeroed them all" if values[0] == 0 else
               "BNs kept frozen in training, --freeze_bn, or never trained")
        raise PruneError(f"every prunable BN |gamma| is {values[0]:g}: the scales rank no channel above another "
                         f"({why}); prune a model trained with its BNs free, with --sr at a smaller --s if any")
    # the int(percent * n) smallest go, and any tied with the largest of them: after --sr many gammas are
    # exactly 0, and a threshold that kept its ties would then keep them all
    count = int(percent * len(values))
    if percent > 0 and count == 0:
        raise PruneError(f"pruning {percent:g} of the {len(values)} prunable BN channels is less than one channel, "
                         f"so nothing would be pruned; the smallest percent that prunes one is "
                         f"{smallest_percent(len(values))}")
    threshold = values[count - 1] if count > 0 else -math.inf
    kept = {root: score > threshold for root, score in candidates.scores.items()}
    _keep_minimum(kept, candidates, layer_keep, percent)
    if channel_multiple > 1:
        _round_up_to_multiple(kept, candidates, channel_multiple)
        if count > 0 and all(kept.values()):
            widest = max(size for size, _ in candidates.segments)
            raise PruneError(f"channel_multiple {channel_multiple} rounds every layer back up to all of its channels "
                             f"(the widest prunable one has {widest}), so nothing would be pruned; choose a smaller "
                             f"multiple or a larger percent")
    return Selection(kept, threshold, percent, candidates.safe_percent(), values)


def smallest_percent(channels: int, decimals: int = 4) -> float:
    """The smallest percent written with ``decimals`` decimals that prunes one of ``channels`` (int(p * n) >= 1)."""
    step = 10.0 ** -decimals
    percent = math.ceil(1 / channels / step) * step
    while int(percent * channels) < 1:  # the float product may land just under 1
        percent += step
    return round(percent, decimals)


def _round_up_to_multiple(kept: dict[int, bool], candidates: Candidates, multiple: int) -> None:
    """Keep more channels, highest |gamma| first, until every layer keeps a multiple of ``multiple`` or all its
    channels: convolution kernels work on channels in blocks of 4 to 16, so an odd count costs about as much
    as the next multiple. Tied channels count in every layer they belong to, so repeat until nothing moves."""
    changed = True
    while changed:
        changed = False
        for size, roots in candidates.segments:
            dropped = sorted({r for r in roots if not kept[r]}, key=lambda r: -candidates.scores[r])
            count = size - sum(not kept[r] for r in roots)
            missing = min(-count % multiple, size - count)
            for root in dropped[:missing]:
                kept[root] = True
                changed = True
