"""The layer table Darknet prints when it loads a network: shapes, parameters and FLOPs per layer.

FLOPs are each layer's own count (``DarknetLayer.flops``), as Darknet's parser computes ``l.bflops``, so the
total equals the ``Total BFLOPS`` Darknet prints for the same cfg and size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerRow:
    index: int
    kind: str
    filters: int
    detail: str
    input_shapes: list[tuple[int, ...]]
    output_shape: tuple[int, ...]
    params: int
    flops: int = 0


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape[1:])


@torch.inference_mode()
def summarize(model, img_size: tuple[int, int]) -> list[LayerRow]:
    """Run one forward pass at ``img_size`` (height, width) and record every layer."""
    rows = [LayerRow(index, block.name, layer.out_channels, layer.describe(), [], (),
                     sum(p.numel() for p in layer.parameters()))
            for index, (block, layer) in enumerate(zip(model.blocks, model.layers))]

    def recorder(row: LayerRow):
        def hook(module, args, output):
            inputs = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
            row.input_shapes = [_shape(t) for t in inputs]
            row.output_shape = _shape(output)
        return hook

    hooks = [layer.register_forward_hook(recorder(row)) for row, layer in zip(rows, model.layers)]
    try:
        device = next(model.parameters(), torch.zeros(0)).device
        model.forward_heads(torch.zeros(1, model.input_channels, *img_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    for row, layer in zip(rows, model.layers):
        if not row.input_shapes:  # a [yolo] whose activated output nothing reads is skipped by forward_heads
            row.input_shapes = [rows[row.index - 1].output_shape]
            row.output_shape = row.input_shapes[0]
        row.flops = layer.flops(row.input_shapes, row.output_shape)
    return rows


def _fmt_shape(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{w:4d} x{h:4d} x{c:5d}"


def format_summary(model, rows: list[LayerRow]) -> str:
    lines = [f"{model.cfg.source}: {len(rows)} layers",
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
