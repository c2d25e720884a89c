"""Conversions: Darknet .weights <-> .pth checkpoints, plain-Darknet cfgs for Res2Net models, ONNX."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from utils.darknet.model import Darknet, build_layers
from utils.darknet.cfg import read_cfg
from utils.darknet.checkpoint import save_checkpoint
from utils.fileio import atomic_write
from utils.darknet.layers import BLOCK_INPUT, PlainLayer


def weights_to_checkpoint(model: Darknet, out: Path, names: list[str] | None = None) -> None:
    """A .pth that train.py (--pretrained_weights), test.py and detect.py accept; keeps seen and version."""
    save_checkpoint(out, {"model": model.state_dict(), "cfg_text": model.cfg_text,
                          "names": names, "epoch": -1})


def darknet_native_cfg(cfg_path: Path) -> str:
    """The cfg with every [res2net]/[triangle] expanded into plain Darknet layers (each block type declares
    its expansion: utils/layers.py ``plain_layers``), every route/shortcut index renumbered, and the same
    ``.weights`` stream: the expansion keeps each block's tensors in their order."""
    raw_sections = read_cfg(cfg_path)
    _, blocks, layers = build_layers(cfg_path)
    lines = [f"# {cfg_path.name} with [res2net]/[triangle] expanded into plain Darknet layers by convert.py;",
             "# it reads the same .weights file as the original.", ""]
    lines += _section_text("net", {k: v for k, (v, _) in raw_sections[0].options.items()})
    output_of: list[int] = []  # compact layer index -> index of the plain layer holding its output
    count = 0
    for index, (raw, block, layer) in enumerate(zip(raw_sections[1:], blocks, layers)):
        if hasattr(layer, "plain_layers"):
            if index == 0:
                raise ValueError(f"{block.where()}: a block as the first layer cannot be expanded (Darknet has "
                                 f"no way to route from the network input)")
            start = count
            plain = layer.plain_layers(block["activation"])
            for item in plain:
                refs = [output_of[index - 1] if ref == BLOCK_INPUT else start + ref for ref in item.refs]
                lines += _section_text(item.name, _with_refs(item, refs, count))
                count += 1
        else:
            options = {k: v for k, (v, _) in raw.options.items()}
            key = {"route": "layers", "shortcut": "from"}.get(raw.name)
            if key is not None:
                sources = layer.sources if raw.name == "route" else layer.sources[1:]
                written = [int(v) for v in options[key].split(",") if v]
                options[key] = ",".join(str(output_of[src] - count if ref < 0 else output_of[src])
                                        for src, ref in zip(sources, written))
            lines += _section_text(raw.name, options)
            count += 1
        output_of.append(count - 1)
    return "\n".join(lines)


def _with_refs(item: PlainLayer, refs: list[int], index: int) -> dict:
    options = dict(item.options)
    if refs:
        options["layers" if item.name == "route" else "from"] = ",".join(str(r - index) for r in refs)
    return options


def _section_text(name: str, options: dict) -> list[str]:
    return [f"[{name}]", *(f"{k}={v}" for k, v in options.items()), ""]


def export_onnx(model: Darknet, out: Path, img_size: int, fuse: bool = False, opset: int = 17) -> None:
    """ONNX with a dynamic batch; outputs as the eval forward: (batch, N, 5 + classes)."""
    model.eval()
    if fuse:
        model.fuse()
    dummy = torch.zeros(1, model.hyperparams["channels"], img_size, img_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that the TorchScript-based exporter is the older one
        torch.onnx.export(model, (dummy,), buffer, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["detections"],
                          dynamic_axes={"images": {0: "batch"}, "detections": {0: "batch"}})
    with atomic_write(out) as f:
        f.write(buffer.getvalue())
