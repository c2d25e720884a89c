"""ImageNet classification checkpoints onto a cfg's backbone (``convert.py --import_imagenet``).

The mapping comes from the structure of both sides, never from per-cfg tables or key spellings:

- the checkpoint's tensors are grouped into modules by name prefix, in the order they are stored (the order
  the reference code creates its modules: torchvision's conv1, bn1, layer1.0.conv1, ..., downsample.0/1;
  pretrainedmodels' layer0.conv1, ..., se_module.fc1/fc2; Res2Net's convs.i then bns.i; IBN-Net's
  bn1.IN/bn1.BN, which are one IBN norm);
- each norm belongs to the earliest conv still waiting for one that has as many output channels (a conv
  with a bias, like SE's fc1/fc2, takes none); trailing 2-D weights are the classifier and are left out;
- the i-th checkpoint conv fills the i-th [convolutional] of the cfg (blocks' inner convs included, in
  ``.weights`` order), and must fit it exactly: the first tensor that does not is refused with its name
  and both shapes. The backbone ends at the layer holding the last checkpoint conv.

Deformable convs take the plain conv's weights; their offset convs stay at zero (detectron2's start), so
the imported net computes the ImageNet one. ImageNet models read inputs normalised by a mean and std;
the repo's read [0, 1], so the normalisation is folded into the first conv (exact away from its zero
padding, which now pads with black instead of with the mean colour).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from utils.darknet.checkpoint import CHECKPOINT_SUFFIXES, read_torch_file, save_model
from utils.darknet.layers import Convolutional, convolutions
from utils.darknet.model import Darknet
from utils.darknet.weights import cutoff_from_name, output_cutoff
from utils.errors import UserError
from utils.fileio import regular_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WRAPPERS = ("state_dict", "model")  # keys under which training scripts nest a state dict
UNTRACKED = "num_batches_tracked"


class ImagenetImportError(UserError, ValueError):
    """A classification checkpoint that does not fit the cfg's backbone."""


@dataclass
class SourceConv:
    """One conv of the checkpoint with its norm: tensors by name relative to each module."""

    name: str
    tensors: dict[str, torch.Tensor]  # weight, and bias if it has one
    norm_name: str = ""
    norm: dict[str, torch.Tensor] = field(default_factory=dict)  # BN: weight, bias, running_mean, ...

    @property
    def out_channels(self) -> int:
        return self.tensors["weight"].shape[0]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = regular_file(path, "checkpoint", ImagenetImportError)
    state = read_torch_file(path, ImagenetImportError)
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImagenetImportError(f"{path}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _modules(state: dict[str, torch.Tensor]) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Tensors grouped by module, in stored order; an InstanceNorm directly followed by a BN of the same
    parent (IBN-Net's bn1.IN, bn1.BN) becomes one norm named after the parent, keys ``IN.weight``, ..."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        prefix, _, name = key.rpartition(".")
        grouped.setdefault(prefix, {})[name] = tensor
    modules: list[tuple[str, dict[str, torch.Tensor]]] = []
    for prefix, tensors in grouped.items():
        parent, _, child = prefix.rpartition(".")
        if modules and parent and _is_norm(tensors) and _is_instance_norm(modules[-1][1]) \
                and modules[-1][0].rpartition(".")[0] == parent:
            instance_name, instance = modules.pop()
            merged = {f"{instance_name.rpartition('.')[2]}.{k}": v for k, v in instance.items()}
            merged.update({f"{child}.{k}": v for k, v in tensors.items()})
            modules.append((parent, merged))
        else:
            modules.append((prefix, tensors))
    return modules


def _is_norm(tensors: dict[str, torch.Tensor]) -> bool:
    """A BN, an InstanceNorm, or an IBN made of both: every weight it has is one value per channel."""
    weights = [t for key, t in tensors.items() if key.rpartition(".")[2] == "weight"]
    return bool(weights) and all(t.ndim == 1 for t in weights)


def _is_instance_norm(tensors: dict[str, torch.Tensor]) -> bool:
    return _is_norm(tensors) and "running_mean" not in tensors


def _norm_channels(norm: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() for k, t in norm.items() if k.rpartition(".")[2] == "weight")


def source_convs(state: dict[str, torch.Tensor], path: Path) -> tuple[list[SourceConv], list[str]]:
    """The checkpoint's convs in order, each with its norm; and the classifier tensors left out."""
    modules = _modules(state)
    last_conv = max((i for i, (_, t) in enumerate(modules) if t.get("weight") is not None and t["weight"].ndim == 4),
                    default=-1)
    if last_conv < 0:
        raise ImagenetImportError(f"{path}: no convolution weights (4-D '*.weight' tensors) in the checkpoint")
    convs: list[SourceConv] = []
    waiting: list[SourceConv] = []  # convs without a bias whose norm is still to come
    for name, tensors in modules[:last_conv + 1]:
        if _is_norm(tensors):
            _attach_norm(waiting, name, tensors, path)
        elif tensors.get("weight") is not None and tensors["weight"].ndim in (2, 4):
            conv = SourceConv(name, tensors)
            convs.append(conv)
            if "bias" not in tensors:
                waiting.append(conv)
        else:
            raise ImagenetImportError(f"{path}: module {name!r} ({', '.join(tensors)}) is neither a conv nor a norm")
    dropped = []
    for name, tensors in modules[last_conv + 1:]:  # what follows the last conv: its norm, then the classifier
        if _is_norm(tensors) and any(conv.out_channels == _norm_channels(tensors) for conv in waiting):
            _attach_norm(waiting, name, tensors, path)
        else:
            dropped += [f"{name}.{key}" for key in tensors]
    return convs, dropped


def _attach_norm(waiting: list[SourceConv], name: str, norm: dict[str, torch.Tensor], path: Path) -> None:
    channels = _norm_channels(norm)
    for conv in waiting:
        if conv.out_channels == channels:
            conv.norm_name, conv.norm = name, norm
            waiting.remove(conv)
            return
    raise ImagenetImportError(f"{path}: norm {name!r} ({channels} channels) follows no conv with {channels} "
                              f"output channels")


@dataclass
class Target:
    """A [convolutional] of the cfg (or of a block) and where its layer is, for messages."""

    conv: Convolutional
    layer: int
    where: str


def cfg_convs(model: Darknet) -> list[Target]:
    return [Target(conv, index, block.where()) for index, (block, layer) in enumerate(zip(model.blocks, model.layers))
            for conv in convolutions(layer)]


def _refuse(path: Path, name: str, got: Sequence[int] | str, target: Target, wanted: Sequence[int] | str,
            what: str) -> ImagenetImportError:
    got_text = got if isinstance(got, str) else f"has shape {tuple(got)}"
    wanted_text = wanted if isinstance(wanted, str) else f"needs {tuple(wanted)}"
    return ImagenetImportError(f"{path}: checkpoint tensor {name!r} {got_text}, but {target.where} {wanted_text} "
                               f"for its {what}: the checkpoint does not fit this cfg's backbone")


def _conv_weight(source: SourceConv, target: Target, path: Path) -> torch.Tensor:
    weight, wanted = source.tensors["weight"], target.conv.conv.weight.shape
    if weight.ndim == 2 and tuple(wanted[2:]) == (1, 1):
        weight = weight.reshape(*weight.shape, 1, 1)  # a Linear layer is a 1x1 conv on a 1x1 map
    if weight.shape != wanted:
        raise _refuse(path, f"{source.name}.weight", source.tensors["weight"].shape, target, wanted, "conv weight")
    return weight


def _norm_state(source: SourceConv, target: Target, path: Path) -> dict[str, torch.Tensor]:
    """The target's norm state (or conv bias) taken from the source, every shape checked."""
    conv = target.conv
    if conv.bn is None:
        bias = source.tensors.get("bias")
        if bias is None or source.norm:
            got = f"is followed by norm {source.norm_name!r}" if source.norm else "has no bias"
            raise _refuse(path, f"{source.name}.weight", got, target, "has a conv bias and no norm", "bias")
        if bias.shape != conv.conv.bias.shape:
            raise _refuse(path, f"{source.name}.bias", bias.shape, target, conv.conv.bias.shape, "conv bias")
        return {"bias": bias}
    if not source.norm:
        raise _refuse(path, f"{source.name}.weight", "has no norm after it", target, "has a norm", "norm")
    state = {}
    for key, tensor in conv.bn.state_dict().items():
        if key.rpartition(".")[2] == UNTRACKED:
            continue
        theirs = source.norm.get(key)
        if theirs is None:
            raise _refuse(path, f"{source.norm_name}.{key}", "is missing", target, tuple(tensor.shape), "norm")
        if theirs.shape != tensor.shape:
            raise _refuse(path, f"{source.norm_name}.{key}", theirs.shape, target, tuple(tensor.shape), "norm")
        state[key] = theirs
    extra = sorted(k for k in source.norm if k not in state and k.rpartition(".")[2] != UNTRACKED)
    if extra:
        raise _refuse(path, f"{source.norm_name}.{extra[0]}", "has no place", target, f"has a {type(conv.bn).__name__}",
                      "norm")
    return state


@torch.no_grad()
def _copy(source: SourceConv, target: Target, path: Path) -> None:
    weight = _conv_weight(source, target, path)
    state = _norm_state(source, target, path)
    target.conv.conv.weight.copy_(weight)
    if target.conv.bn is None:
        target.conv.conv.bias.copy_(state["bias"])
    else:
        target.conv.bn.load_state_dict(state, strict=False)


@torch.no_grad()
def fold_input_normalization(first: Target, mean: Sequence[float], std: Sequence[float]) -> None:
    """conv((x - mean) / std) = conv'(x) - shift with conv' = conv / std and shift = conv'(mean): divide the
    weights by std; the output then carries an extra shift, which the norm takes out."""
    conv = first.conv
    if conv.conv.in_channels != len(mean) or len(mean) != len(std):
        raise ImagenetImportError(f"{first.where}: the first conv reads {conv.conv.in_channels} channels; "
                                  f"--input_mean and --input_std give {len(mean)} and {len(std)} values")
    std_t = torch.tensor(std, dtype=conv.conv.weight.dtype).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=conv.conv.weight.dtype).view(1, -1, 1, 1)
    conv.conv.weight.div_(std_t)
    conv.absorb_output_shift(-(conv.conv.weight * mean_t).sum((1, 2, 3)))


@dataclass
class Imported:
    model: Darknet
    cutoff: int  # layers 0 .. cutoff-1 hold the checkpoint's weights
    convs: int
    dropped: list[str]


def import_imagenet(checkpoint: str | Path, model: Darknet, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> Imported:
    """Fill ``model``'s backbone from a classification checkpoint; see the module docstring."""
    path = Path(checkpoint)
    sources, dropped = source_convs(read_state_dict(path), path)
    targets = cfg_convs(model)
    if len(sources) > len(targets):
        raise ImagenetImportError(f"{path}: the checkpoint has {len(sources)} convs, the cfg only {len(targets)}")
    for source, target in zip(sources, targets):
        _copy(source, target, path)
    cutoff = targets[len(sources) - 1].layer + 1
    inside = sum(t.layer < cutoff for t in targets)
    if inside != len(sources):
        layer = targets[len(sources)]
        raise ImagenetImportError(f"{path}: the checkpoint's {len(sources)} convs end inside {layer.where}, which "
                                  f"has more convs: the checkpoint does not fit this cfg's backbone")
    if targets[0].layer != 0:
        raise ImagenetImportError(f"{targets[0].where}: the backbone must start with a conv reading the image")
    fold_input_normalization(targets[0], mean, std)
    return Imported(model, cutoff, len(sources), dropped)


def write_backbone(imported: Imported, out: Path) -> str:
    """Write the imported backbone as ``.weights`` (layers 0 .. cutoff-1; a ``<net>.conv.N`` name must carry the
    right N) or as a ``.pth`` of those layers' tensors; returns how to train from it."""
    model, cutoff = imported.model, imported.cutoff
    if out.suffix in CHECKPOINT_SUFFIXES:
        save_model(model, out, cutoff=cutoff)
        return f"--pretrained_weights {out}"
    named = cutoff_from_name(out)
    output_cutoff(out, cutoff, f"the backbone has {cutoff}")
    if named is None and out.suffix != ".weights":
        raise ImagenetImportError(f"{out}: unknown output extension {out.suffix!r}; expected .weights, a "
                                  f"backbone name like resnet50.conv.{cutoff}, or .pth")
    model.save_darknet_weights(out, cutoff)
    return f"--pretrained_weights {out}" + ("" if named is not None else f" --cutoff {cutoff}")
