"""File-to-file conversions between Darknet ``.weights`` and checkpoints, and backbone cuts.

The formats themselves are the Darknet core's (utils/darknet/checkpoint.py, utils/darknet/weights.py); this module
chooses the model a source file makes and what part of it an output holds.
"""
from __future__ import annotations

from pathlib import Path

from utils.darknet.checkpoint import model_from_file, save_model, save_weights
from utils.darknet.model import Darknet
from utils.darknet.weights import cutoff_from_name, output_cutoff
from utils.errors import UserError
from utils.inference.load import class_names


def to_checkpoint(source: Path, cfg: Path | None, out: Path, class_path: str | None = None) -> str:
    """``source`` (.weights with ``cfg``, or .pth) as a checkpoint; names from ``class_path``, else the source's."""
    model, state = model_from_file(source, cfg)
    names = class_names(class_path, None, model.num_classes) if class_path else (state or {}).get("names")
    save_model(model, out, names, state)
    return f"wrote {out}"


def weights_cutoff(out: Path, cutoff: int | None) -> int | None:
    """The layers a .weights output holds: ``cutoff``, else N of a '<net>.conv.N' name (None: all)."""
    cutoff = output_cutoff(out, cutoff, f"--cutoff {cutoff}")
    if out.suffix != ".weights" and cutoff is None:
        raise UserError(f"{out}: unknown output extension {out.suffix!r}; expected .pth or .weights "
                        f"(or a backbone name like darknet53.conv.74, or --cutoff)")
    return cutoff


def backbone_model(source: Path, cfg: Path | None, cutoff: int | None) -> Darknet:
    """A ``<net>.conv.N`` input, to be cut to its first ``cutoff`` <= N layers (Darknet's partial of a
    partial); the model's later layers keep their initial values and are not written."""
    held = cutoff_from_name(source)
    if cutoff is None or cutoff > held:
        wanted = "all the cfg's layers" if cutoff is None else f"layers 0..{cutoff - 1}"
        raise UserError(f"{source}: a backbone holds layers 0..{held - 1} (by its name), and the output asks for "
                        f"{wanted}; a backbone is cut to fewer layers (--cutoff N or a <net>.conv.N name, N <= {held})"
                        f", or starts a training: train.py --pretrained_weights {source}")
    if cfg is None:
        raise UserError(f"{source}: a .weights file needs its cfg (--model_def)")
    model = Darknet(cfg)
    model.load_darknet_weights(source)
    return model


def to_darknet_weights(source: Path, cfg: Path | None, out: Path, cutoff: int | None = None) -> str:
    """``source`` as Darknet .weights: all layers, or 0..cutoff-1 (``cutoff``, or N of an ``OUT.conv.N`` name)."""
    cutoff = weights_cutoff(out, cutoff)
    model = backbone_model(source, cfg, cutoff) if cutoff_from_name(source) is not None \
        else model_from_file(source, cfg)[0]
    save_weights(model, out, cutoff)
    header = model.weights_header
    layers = f"layers 0..{cutoff - 1}" if cutoff is not None else f"all {len(model.layers)} layers"
    return f"wrote {out}: {layers}, header {header.major}.{header.minor}.{header.revision}, seen {header.seen}"
