"""Model files of every kind: ``.pth`` checkpoints, ``.weights`` with their cfg, pretrained backbones.

A checkpoint is a plain dict of tensors, numbers and strings, so ``torch.load(weights_only=True)`` reads
it without running code. It carries the cfg text and class names, so a ``.pth`` alone rebuilds its model.
"""
from __future__ import annotations

import math
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from utils.darknet.cfg import DEFAULT_IMG_SIZE, SIZE_MULTIPLE, Cfg, CfgWarning, parse_cfg
from utils.darknet.cfg_edit import with_classes
from utils.darknet.model import Darknet, layer_of
from utils.darknet.weights import (WeightsFileError, WeightsHeader, check_cutoff, cutoff_from_name,
                                   darknet_weights_size)
from utils.errors import UserError
from utils.fileio import atomic_write, regular_file
from utils.output_files import named_write_errors

CHECKPOINT_SUFFIXES = (".pth", ".pt")


class CheckpointError(UserError, ValueError):
    """A .pth that is not a checkpoint of this repo, or does not fit its cfg."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` atomically; a failed write (a full disk) is one error line naming ``path``."""
    with named_write_errors(path, "checkpoint"), atomic_write(path) as f:
        torch.save(state, f)


def save_weights(model: Darknet, path: str | Path, cutoff: int | None = None) -> None:
    """``model.save_darknet_weights``, a failed write named as :func:`save_checkpoint` names it."""
    with named_write_errors(path, "Darknet weights"):
        model.save_darknet_weights(path, cutoff)


# what a slim .pth keeps of its training run's options: the input size test.py and detect.py run it at, and
# whether its one class stands for all of the data's (--single_cls)
CARRIED_OPTIONS = ("img_size", "single_cls")


def save_model(model: Darknet, out: str | Path, names: list[str] | None = None, trained: dict | None = None,
               cutoff: int | None = None) -> None:
    """A .pth of the weights alone, which train.py (--pretrained_weights), test.py and detect.py take;
    ``trained``: the state of the checkpoint the weights come from, whose CARRIED_OPTIONS it keeps; ``cutoff``:
    only layers 0 .. cutoff-1 (a backbone)."""
    options = {name: value for name, value in trained_options(trained).items() if name in CARRIED_OPTIONS}
    state = model.state_dict() if cutoff is None else leading_layers(model.state_dict(), cutoff)
    save_checkpoint(out, {"model": state, "cfg_text": model.cfg_text, "names": names, "epoch": -1,
                          "options": options})


def trained_options(state: dict | None) -> dict:
    """The options of the training run a checkpoint records ({} for any other file)."""
    options = state.get("options") if state else None
    return options if isinstance(options, dict) else {}


def trained_size(state: dict | None) -> int | None:
    """The --img_size a checkpoint's weights were trained at, where it records one (train.py's checkpoints
    and the files made from them); None for any other file."""
    size = trained_options(state).get("img_size")
    return size if isinstance(size, int) and size >= SIZE_MULTIPLE and size % SIZE_MULTIPLE == 0 else None


def trained_single_class(state: dict | None) -> bool:
    """Whether a checkpoint's run trained every box as one class (--single_cls)."""
    return trained_options(state).get("single_cls") is True


def run_size(requested: int | None, trained: int | None) -> int:
    """The input size to run a model at: ``requested``, else the size it was trained at (a model trained at 128
    scores far lower at 416), else the default."""
    return requested or trained or DEFAULT_IMG_SIZE


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip that carries code and constants beside its tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load_failure(err: Exception) -> str:
    """What torch.load's error says, without its advice to load the file with weights_only=False (that runs
    whatever code the file holds)."""
    text = str(err)
    if "Weights only load failed" in text:
        allowed = re.search(r"GLOBAL (\S+) was not an allowed global", text)
        return (f"it holds a Python object ({allowed.group(1)}) beyond tensors and plain values, and this repo "
                f"loads no code from a file" if allowed else "not a PyTorch file of tensors")
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def read_torch_file(path: Path, error: type[UserError], map_location="cpu", mmap: bool = False):
    """What ``torch.load`` reads from ``path``, tensors and plain values only; a file it cannot read is an
    ``error`` that says why, in one line (``mmap``: tensors read from disk only when used)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on the pickle protocol of a file it then refuses
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # any file can be named: torch.load fails on foreign bytes in a dozen ways
        if _is_torchscript(path):
            raise error(f"{path}: a TorchScript export (convert.py --torchscript), which runs with torch.jit.load; "
                        f"this repo's commands take the .pth or .weights it was exported from") from None
        raise error(f"{path}: not a readable checkpoint ({_load_failure(err)})") from None


def load_checkpoint(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """The checkpoint dict of ``path`` (``mmap``: its tensors read from disk only when used)."""
    path = regular_file(path, "checkpoint", CheckpointError)
    state = read_torch_file(path, CheckpointError, map_location, mmap)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not a checkpoint of this repo (no 'model' entry of tensors)")
    return state


def exported_state(state: dict) -> dict:
    """The model tensors a checkpoint stands for: its EMA's when it has one (what training evaluates and
    exports), else its model's."""
    return state["ema"]["model"] if state.get("ema") else state["model"]


def checkpoint_cfg(state: dict, path: Path) -> Cfg:
    if not state.get("cfg_text"):
        raise CheckpointError(f"{path}: the checkpoint carries no cfg; pass --model_def")
    return parse_cfg(state["cfg_text"], f"{path} (its cfg)")


def load_model_state(model: Darknet, state_dict: dict, source: Path) -> None:
    """``model.load_state_dict`` with a named error: the first tensor that does not fit, and its layer."""
    own = model.state_dict()
    for name, tensor in own.items():
        theirs = state_dict.get(name)
        if theirs is None or theirs.shape != tensor.shape:
            layer = layer_of(name)
            where = model.blocks[layer].where() if layer is not None else "the model"
            got = "is missing" if theirs is None else f"has shape {tuple(theirs.shape)}"
            raise CheckpointError(f"{source}: tensor {name!r} {got}, but {where} needs {tuple(tensor.shape)}: the "
                                  f"checkpoint does not fit this cfg")
    extra = sorted(set(state_dict) - set(own))
    if extra:
        raise CheckpointError(f"{source}: {len(extra)} tensors the cfg has no place for, first {extra[0]!r}")
    model.load_state_dict(state_dict)


class ClassCountError(WeightsFileError):
    """A .weights file that fits its cfg at another class count, ``classes``."""

    def __init__(self, message: str, classes: int):
        super().__init__(message)
        self.classes = classes


def model_from_file(weights: str | Path, cfg: str | Path | Cfg | None = None) -> tuple[Darknet, dict | None]:
    """``(model, checkpoint dict or None)`` from a .weights file (needs ``cfg``) or a .pth (builds from the
    cfg it carries unless ``cfg`` is given; takes the EMA weights when the checkpoint has them)."""
    weights = regular_file(weights, "weights file", WeightsFileError)
    if weights.suffix in CHECKPOINT_SUFFIXES:
        state = load_checkpoint(weights)
        if cfg is not None:
            model = Darknet(cfg)
        else:
            with warnings.catch_warnings():
                # the cfg training wrote: its ignored keys were reported when that run read the user's file
                warnings.simplefilter("ignore", CfgWarning)
                model = Darknet(checkpoint_cfg(state, weights))
        load_model_state(model, exported_state(state), weights)
        return model, state
    layers = cutoff_from_name(weights)
    if layers is not None:
        raise WeightsFileError(f"{weights}: a backbone (layers 0..{layers - 1}, by its name) holds no detection "
                               f"heads; start a training from it: train.py --pretrained_weights {weights}")
    if weights.suffix != ".weights" and cfg is None:
        raise WeightsFileError(f"{weights}: unknown weights format {weights.suffix!r}; expected .weights or .pth")
    if cfg is None:
        raise WeightsFileError(f"{weights}: a .weights file needs its cfg (--model_def; cfg= in Python)")
    model = Darknet(cfg)
    try:
        model.load_darknet_weights(weights)
    except WeightsFileError as err:
        classes = _other_class_count(model, weights)
        if classes is None:
            raise
        raise ClassCountError(f"{err}; it fits this cfg made for {classes} classes instead of "
                              f"{model.num_classes}", classes) from None
    return model, None


def load_state_dict_matching(model: torch.nn.Module, state_dict: dict) -> list[str]:
    """Load the tensors whose names and shapes match; return the names left at their initial values."""
    own = model.state_dict()
    matching = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    return [k for k in own if k not in matching]


def _weights_size(cfg: Cfg) -> int:
    with torch.device("meta"), warnings.catch_warnings():  # counts the tensors without allocating them
        warnings.simplefilter("ignore")  # the cfg's warnings were shown when the model was built
        model = Darknet(cfg)
    return darknet_weights_size(model.layers, WeightsHeader())


def _other_class_count(model: Darknet, path: Path) -> int | None:
    """The class count, other than the model's, for which ``path`` would fit ``model``'s cfg exactly, if there
    is one."""
    with open(path, "rb") as f:
        header = WeightsHeader.read(f, path)
    if not model.yolo_layers:
        return None
    base = _weights_size(model.cfg)
    per_class = _weights_size(with_classes(model.cfg, model.num_classes + 1)) - base
    extra = path.stat().st_size - header.size - (base - WeightsHeader().size)
    if per_class <= 0 or extra % per_class:
        return None
    classes = model.num_classes + extra // per_class
    return classes if classes >= 1 and classes != model.num_classes else None


def _load_other_class_count(model: Darknet, path: Path, classes: int) -> str:
    """Load a .weights trained for ``classes`` classes: every layer whose tensors fit; the rest (the head
    convs) keep their initial values."""
    sibling = Darknet(with_classes(model.cfg, classes))
    sibling.load_darknet_weights(path)
    reset = []
    for index, (mine, theirs) in enumerate(zip(model.layers, sibling.layers)):
        if load_state_dict_matching(mine, theirs.state_dict()):
            reset.append(index)
    model.seen.copy_(sibling.seen)
    model.weights_version.copy_(sibling.weights_version)
    return (f"loaded {path}: it was trained for {classes} classes, this model has {model.num_classes}; "
            f"the head convs (layers {', '.join(map(str, reset))}) were re-initialised")


@dataclass
class LayerFit:
    """How a state dict's tensors fit a model's layers, counting the layers that have tensors."""

    present: set[int]  # layers the state has every tensor of, in this model's shapes
    unfit: dict[int, str]  # layer -> why: a tensor of another shape, or one missing where others are there
    absent: set[int]  # layers the state has no tensor of

    @classmethod
    def of(cls, model: Darknet, state: dict) -> LayerFit:
        """``num_batches_tracked`` is left out: a count, not a weight, and many exports lack it."""
        own: dict[int, dict[str, torch.Tensor]] = {}
        for name, tensor in model.state_dict().items():
            layer = layer_of(name)
            if layer is not None and not name.endswith("num_batches_tracked"):
                own.setdefault(layer, {})[name] = tensor
        fit = cls(set(), {}, set())
        for layer, tensors in own.items():
            missing = [name for name in tensors if name not in state]
            wrong = [name for name, tensor in tensors.items() if name in state and state[name].shape != tensor.shape]
            if len(missing) == len(tensors):
                fit.absent.add(layer)
            elif wrong:
                fit.unfit[layer] = (f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, this cfg's "
                                    f"{tuple(tensors[wrong[0]].shape)}")
            elif missing:
                fit.unfit[layer] = f"the file lacks {missing[0]}"
            else:
                fit.present.add(layer)
        return fit

    def backbone_only(self) -> bool:
        """The state holds leading layers whole and nothing of the rest (a backbone file)."""
        return not self.unfit and min(self.absent, default=math.inf) > max(self.present, default=-1)


def leading_layers(state: dict, cutoff: int) -> dict:
    """``state`` less the tensors of layers ``cutoff`` and after."""
    return {name: tensor for name, tensor in state.items() if (layer_of(name) or 0) < cutoff}


def _load_pretrained_checkpoint(model: Darknet, path: Path, cutoff: int | None) -> str:
    """Start from a .pth of this cfg's network, or of it with another class count (the head convs re-initialise),
    or of its leading layers (a backbone file, or with ``cutoff`` the first layers of any checkpoint: the rest
    keep their initial values); a file of another network is refused, naming the first layer that does not
    fit, rather than loading the few tensors that happen to."""
    check_cutoff(cutoff, model.layers, None)  # as load_darknet_weights checks a .weights file's
    state = exported_state(load_checkpoint(path))
    if cutoff is not None:
        state = leading_layers(state, cutoff)
    fit = LayerFit.of(model, state)
    if not fit.present and not fit.unfit:
        below = f" below --cutoff {cutoff}" if cutoff else ""
        raise CheckpointError(f"{path} holds no layer of {model.cfg.source}{below}; nothing would load")
    heads = set(model.head_conv_indices)
    if not fit.backbone_only() and (fit.absent or set(fit.unfit) - heads):
        index = min((set(fit.unfit) - heads) | fit.absent)
        why = fit.unfit.get(index, "the file has no tensor of it")
        raise CheckpointError(f"{path} does not fit {model.blocks[index].where()}: {why}; --pretrained_weights "
                              f"takes a checkpoint of this cfg's network (another class or anchor count re-initialises "
                              f"the head convs) or of its leading layers (with --cutoff N, layers 0..N-1 of a related "
                              f"network's)")
    load_state_dict_matching(model, state)
    not_in_file = sorted(i for i in fit.absent if cutoff is None or i < cutoff)
    taken = ""
    if cutoff is not None:  # the file may end before the cutoff
        taken = f" (layers 0..{max(fit.present, default=-1) if not_in_file else cutoff - 1})"
    if fit.unfit:
        return (f"loaded {path}{taken}; the head convs (layers {', '.join(map(str, sorted(fit.unfit)))}) differ "
                f"in shape (another class or anchor count) and were re-initialised")
    past_cutoff = sorted(fit.absent.difference(not_in_file))
    left = [f"{_span(indices)} ({why})" for indices, why in
            ((not_in_file, "not in the file: a backbone"), (past_cutoff, "past --cutoff")) if indices]
    return f"loaded {path}{taken}" + (f"; {' and '.join(left)} keep their initial values" if left else "")


def _span(indices: list[int]) -> str:
    return f"layer {indices[0]}" if len(indices) == 1 else f"layers {indices[0]}..{indices[-1]}"


def load_pretrained(model: Darknet, path: str | Path, cutoff: int | None = None) -> str:
    """Load ``.weights`` (whole, or ``cutoff`` leading layers, inferred from ``.conv.N`` names) or a ``.pth``
    (whole, or its ``cutoff`` leading layers).

    Head convs whose class count differs from the file's are left at their initial values, and the
    returned one-line report says so."""
    path = regular_file(path, "pretrained weights", WeightsFileError)
    if path.suffix in CHECKPOINT_SUFFIXES:
        return _load_pretrained_checkpoint(model, path, cutoff)
    taken = cutoff if cutoff is not None else cutoff_from_name(path)
    try:
        model.load_darknet_weights(path, cutoff)  # a <net>.conv.N name says N there, and its errors say so
        return f"loaded {path}" + (f" (layers 0..{taken - 1})" if taken is not None else "")
    except WeightsFileError:
        classes = None if taken is not None else _other_class_count(model, path)
        if classes is None:
            raise
    return _load_other_class_count(model, path, classes)
