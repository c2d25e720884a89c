"""The layer table Darknet prints when it loads a network: shapes, parameters and FLOPs per layer."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from utils.darknet.layers import conv_flops


@dataclass
class LayerRow:
    index: int
    kind: str
    filters: int
    detail: str
    input_shapes: list[tuple[int, ...]]
    output_shape: tuple[int, ...]
    params: int
    flops: int


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape[1:])


@torch.inference_mode()
def summarize(model, img_size: tuple[int, int]) -> list[LayerRow]:
    """Run one forward pass at ``img_size`` (height, width) and record every layer."""
    rows: list[LayerRow] = []
    current: list[int] = [0]
    hooks = []

    def on_layer(index):
        def hook(module, args, output):
            inputs = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
            rows[index].input_shapes = [_shape(t) for t in inputs]
            rows[index].output_shape = _shape(output)
        return hook

    def on_conv(module, args, output):
        rows[current[0]].flops += conv_flops(module, output.shape[-2], output.shape[-1])

    def enter(index):
        def pre_hook(module, args):
            current[0] = index
        return pre_hook

    for index, (block, layer) in enumerate(zip(model.blocks, model.layers)):
        params = sum(p.numel() for p in layer.parameters())
        rows.append(LayerRow(index, block.name, layer.out_channels, layer.describe(), [], (), params, 0))
        hooks.append(layer.register_forward_pre_hook(enter(index)))
        hooks.append(layer.register_forward_hook(on_layer(index)))
    hooks += [m.register_forward_hook(on_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        device = next(model.parameters()).device
        channels = model.hyperparams["channels"]
        model.forward_heads(torch.zeros(1, channels, *img_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    for row in rows:
        if not row.input_shapes:  # a [yolo] whose activated output nothing reads is skipped by forward_heads
            row.input_shapes = [rows[row.index - 1].output_shape]
            row.output_shape = row.input_shapes[0]
    return rows


def _fmt_shape(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{w:4d} x{h:4d} x{c:5d}"


def format_summary(model, rows: list[LayerRow]) -> str:
    lines = [f"{model.cfg_path}: {len(rows)} layers",
             f"{'layer':>5}  {'type':<13}{'filters':>7}  {'size/strd':<12}{'input':>20}   ->{'output':>19}"
             f"{'params':>12}{'BFLOPs':>9}"]
    for r in rows:
        first = _fmt_shape(r.input_shapes[0]) if r.input_shapes else ""
        more = f" +{len(r.input_shapes) - 1}" if len(r.input_shapes) > 1 else "   "
        lines.append(f"{r.index:5d}  {r.kind:<13}{r.filters:7d}  {r.detail:<12}{first:>20}{more} ->"
                     f"{_fmt_shape(r.output_shape):>19}{r.params:12,d}{r.flops / 1e9:9.3f}")
    params = sum(p.numel() for p in model.parameters())
    flops = sum(r.flops for r in rows)
    lines.append(f"Total: {len(rows)} layers, {params:,} parameters, {flops / 1e9:.3f} BFLOPs "
                 f"at {rows[0].input_shapes[0][2]}x{rows[0].input_shapes[0][1]} (width x height)")
    return "\n".join(lines)
