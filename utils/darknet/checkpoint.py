"""Training checkpoints (``.pth``) and pretrained weights of either kind.

A checkpoint is a plain dict of tensors, numbers and strings, so ``torch.load(weights_only=True)`` reads
it without running code. It carries the cfg text and class names, so a ``.pth`` alone rebuilds its model.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import torch

from utils.darknet.cfg import with_classes
from utils.darknet.weights import WeightsFileError, WeightsHeader
from utils.fileio import atomic_write


def save_checkpoint(path: str | Path, state: dict) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no such checkpoint") from err
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file; name the file
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a checkpoint of this repo (no 'model' entry)")
    return state


def model_from_file(weights: str | Path, cfg: str | Path | None = None):
    """``(model, checkpoint dict or None)`` from a .weights file (needs ``cfg``) or a .pth (builds from the
    cfg it carries unless ``cfg`` is given; takes the EMA weights when the checkpoint has them)."""
    from utils.darknet.model import Darknet

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no such weights file")
    if weights.suffix in (".pth", ".pt"):
        state = load_checkpoint(weights)
        if cfg is not None:
            model = Darknet(cfg)
        elif state.get("cfg_text"):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.cfg"
                path.write_text(state["cfg_text"])
                model = Darknet(path)
        else:
            raise ValueError(f"{weights}: the checkpoint carries no cfg; pass --model_def")
        model.load_state_dict(state["ema"]["model"] if state.get("ema") else state["model"])
        return model, state
    if weights.suffix != ".weights" and cfg is None:
        raise ValueError(f"{weights}: unknown weights format {weights.suffix!r}; expected .weights or .pth")
    if cfg is None:
        raise ValueError(f"{weights}: a .weights file needs its cfg (--model_def)")
    model = Darknet(cfg)
    model.load_darknet_weights(weights)
    return model, None


def cutoff_from_name(path: str | Path) -> int | None:
    """Darknet's backbone files are named ``<net>.conv.<N>`` (e.g. darknet53.conv.74): N leading layers."""
    match = re.search(r"\.conv\.(\d+)$", Path(path).name)
    return int(match.group(1)) if match else None


def load_state_dict_matching(model: torch.nn.Module, state_dict: dict) -> list[str]:
    """Load the tensors whose names and shapes match; return the names left at their initial values."""
    own = model.state_dict()
    matching = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    return [k for k in own if k not in matching]


def _class_count_of_file(model, path: Path) -> int | None:
    """The class count for which ``path`` would fit ``model``'s cfg exactly, if there is one."""
    with open(path, "rb") as f:
        header = WeightsHeader.read(f, path)
    available = (path.stat().st_size - header.size) // 4
    needed = sum(t.numel() for layer in model.layers for t in layer.darknet_tensors())
    per_class = 0
    for index, layer in enumerate(model.layers):
        if layer in model.yolo_layers:
            conv = model.layers[index - 1].conv
            per_class += layer.num_anchors * (conv.weight[0].numel() + 1)
    if not per_class or (available - needed) % per_class:
        return None
    classes = model.num_classes + (available - needed) // per_class
    return classes if classes >= 1 else None


def load_pretrained(model, path: str | Path, cutoff: int | None = None) -> str:
    """Load ``.weights`` (whole, or ``cutoff`` leading layers, inferred from ``.conv.N`` names) or a ``.pth``.

    Head convs whose class count differs from the file's are left at their initial values, and the
    returned one-line report says so."""
    from utils.darknet.model import Darknet

    path = Path(path)
    if path.suffix in (".pth", ".pt"):
        skipped = load_state_dict_matching(model, load_checkpoint(path)["model"])
        layers = sorted({int(name.split(".")[1]) for name in skipped if name.startswith("layers.")})
        note = f"; layers {', '.join(map(str, layers))} differ in shape and were re-initialised" if layers else ""
        return f"loaded {path}{note}"
    cutoff = cutoff if cutoff is not None else cutoff_from_name(path)
    try:
        model.load_darknet_weights(path, cutoff)
        return f"loaded {path}" + (f" (layers 0..{cutoff - 1})" if cutoff is not None else "")
    except WeightsFileError:
        classes = None if cutoff is not None else _class_count_of_file(model, path)
        if classes is None or classes == model.num_classes:
            raise
    with tempfile.TemporaryDirectory() as tmp:
        sibling_cfg = Path(tmp) / model.cfg_path.name
        sibling_cfg.write_text(with_classes(model.cfg_path, classes))
        sibling = Darknet(sibling_cfg)
    sibling.load_darknet_weights(path)
    heads = [i - 1 for i, layer in enumerate(model.layers) if layer in model.yolo_layers]
    for index, (mine, theirs) in enumerate(zip(model.layers, sibling.layers)):
        if index not in heads:
            mine.load_state_dict(theirs.state_dict())
    model.seen.copy_(sibling.seen)
    model.weights_version.copy_(sibling.weights_version)
    return (f"loaded {path}: it was trained for {classes} classes, this model has {model.num_classes}; "
            f"the head convs (layers {', '.join(map(str, heads))}) were re-initialised")
