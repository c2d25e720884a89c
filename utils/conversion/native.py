"""Plain-Darknet cfgs: every layer that plain Darknet lacks expanded into Darknet's own layers.

Each layer type declares its expansion (``DarknetLayer.plain_layers``: None when it is plain already, or a
``NotPlainDarknet`` refusal); this module only stitches the expansions together and renumbers every layer
reference. The expansions keep each block's tensors in their order, so the expanded cfg reads the same
``.weights`` file byte for byte.
"""
from __future__ import annotations

from pathlib import Path

from utils.darknet.cfg import Block, Cfg, RawSection
from utils.darknet.cfg_edit import format_value, rebuilt, renumbered
from utils.darknet.layers import NotPlainDarknet, PlainLayer
from utils.darknet.layers.base import BLOCK_INPUT
from utils.darknet.model import build_network
from utils.darknet.registry import layer_type
from utils.fileio import atomic_write
from utils.output_files import named_write_errors


def _plain_section(item: PlainLayer, targets: list[int], index: int, line: int) -> RawSection:
    """A section of an expansion at ``index``, with its references (absolute ``targets``) written relative."""
    options = {key: (format_value(value), line) for key, value in item.options.items()}
    if targets:
        options[layer_type(item.name).reference_key] = (",".join(str(t - index) for t in targets), line)
    return RawSection(item.name, line, options)


def _expansion(block: Block, plain: list[PlainLayer], start: int, block_input: int) -> list[RawSection]:
    """The sections of one expanded block whose first plain layer gets index ``start``."""
    if block.index == 0:
        raise NotPlainDarknet(f"{block.where()}: a block as the first layer cannot be expanded (Darknet has no "
                              f"way to route from the network input)")
    return [_plain_section(item, [block_input if ref == BLOCK_INPUT else start + ref for ref in item.refs],
                           start + k, block.line)
            for k, item in enumerate(plain)]


def darknet_native_cfg(cfg: Cfg) -> Cfg:
    """``cfg`` in plain Darknet layers, with the same ``.weights`` stream; ``cfg`` itself, text and all, when
    every layer is plain Darknet already."""
    network = build_network(cfg)
    sections = [cfg.sections[0]]
    output_of: list[int] = []  # original layer index -> index of the plain layer holding its output
    expanded: dict[str, None] = {}  # the section types expanded, in cfg order
    for index, (raw, block, layer) in enumerate(zip(cfg.layers, network.blocks, network.layers)):
        try:
            plain = layer.plain_layers(block)
        except NotPlainDarknet as err:
            raise NotPlainDarknet(f"{block.where()}: {err}") from None
        if plain is None:
            sections.append(renumbered(raw, index, len(sections) - 1, output_of.__getitem__))
        else:
            expanded[raw.name] = None
            sections += _expansion(block, plain, len(sections) - 1, output_of[-1] if output_of else -1)
        output_of.append(len(sections) - 2)
    if not expanded:
        return cfg
    kinds = "/".join(f"[{name}]" for name in expanded)
    return rebuilt(cfg, sections, f"{cfg.name} with {kinds} expanded into plain Darknet layers by convert.py;\n"
                                  f"it reads the same .weights file as the original.")


def write_native_cfg(source: Cfg, name: str, out: Path) -> str:
    """Write ``source`` (described as ``name``) in plain Darknet layers to ``out``; says what was written."""
    native = darknet_native_cfg(source)
    with named_write_errors(out, "expanded cfg"), atomic_write(out) as f:
        f.write(native.text.encode())
    if native is source:
        return f"wrote {out}: {name} is plain Darknet already, copied unchanged"
    return f"wrote {out}: {name} with its blocks expanded into plain Darknet layers (same .weights)"
