"""Channel and layer pruning (network slimming), with what may be pruned derived from the channel graph.

1. ``graph.ChannelGraph`` follows every channel through the network by asking each layer for its flow.
2. ``select.select`` keeps, per class of tied channels, those whose largest |BN gamma| reaches the global
   threshold at ``percent`` (``union``), or leaves tied classes alone (``skip``).
3. ``compact.masked_model`` zeroes the rest with their constants folded downstream;
   ``compact.compact_model`` cuts them out into a cfg + weights Darknet runs.
4. ``layers.remove_units`` removes whole residual units first (``--layers``).
"""
from utils.pruning.compact import compact_model, masked_model, pruned_cfg
from utils.pruning.graph import ChannelGraph
from utils.pruning.layers import removable_units, remove_units
from utils.pruning.select import PruneError, Selection, select

__all__ = ["ChannelGraph", "PruneError", "Selection", "compact_model", "masked_model", "pruned_cfg",
           "removable_units", "remove_units", "select"]
