"""Loading a trained model for inference, and running it on images of any size."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from utils.boxes import Letterbox
from utils.data.dataset import check_colour_input
from utils.data.names import read_class_names
from utils.darknet.cfg import Cfg
from utils.darknet.checkpoint import model_from_file, run_size, trained_single_class, trained_size
from utils.darknet.model import Darknet
from utils.data.augment import letterbox_image
from utils.errors import UserError
from utils.inference.nms import NmsFilter, filter_detections


@dataclass
class LoadedModel:
    model: Darknet
    names: list[str]
    trained_size: int | None = None  # the --img_size a checkpoint's training run used, when it records one
    single_class: bool = False  # its run trained every box as one class (--single_cls)

    def input_size(self, requested: int | None) -> int:
        """The network input size to run at (checkpoint.run_size)."""
        return run_size(requested, self.trained_size)


def class_names(names: str | Path | list[str] | None, fallback: list[str] | None, num_classes: int) -> list[str]:
    """The class names to report: ``names`` (a .names file or a list), else ``fallback`` (a checkpoint's), else
    numbers; a count that does not fit the model is an error."""
    if names is None:
        return list(fallback) if fallback is not None else [str(i) for i in range(num_classes)]
    listed = read_class_names(names) if isinstance(names, (str, Path)) else _listed_names(names)
    where = names if isinstance(names, (str, Path)) else "names"
    if len(listed) != num_classes:
        raise UserError(f"{where}: {len(listed)} class names for a model with {num_classes} classes")
    return listed


def _listed_names(names) -> list[str]:
    """Class names given as a list (the API's ``names=``): strings, none empty."""
    listed = list(names) if isinstance(names, Iterable) else None
    wrong = names if listed is None else next((n for n in listed if not isinstance(n, str) or not n.strip()), None)
    if listed is None or wrong is not None:
        raise UserError(f"names: expected a .names file or a list of class names (non-empty strings), got {wrong!r}")
    return listed


def load_model(weights: str | Path, cfg: str | Path | Cfg | None = None, names: str | Path | list[str] | None = None,
               device: torch.device | str = "cpu", half: bool = False) -> LoadedModel:
    """A model ready for inference (``Darknet.prepare_inference``, on ``device``, in half precision with
    ``half``), its class names (``names``: a .names file or a list, else the checkpoint's, else numbers) and
    the input size it was trained at when a training checkpoint records it."""
    model, state = model_from_file(weights, cfg)
    check_colour_input(model.input_channels, model.cfg.source, "inference")
    listed = class_names(names, state.get("names") if state else None, model.num_classes)
    model.to(device).prepare_inference(half)
    return LoadedModel(model, listed, trained_size(state), trained_single_class(state))


def preprocess(images: list[np.ndarray], size: int, keep_ratio: bool = True):
    """BGR images -> a float batch in [0, 1] and each image's letterbox. The batch is (B, 3, H, W) in
    channels-last memory, the layout the images come in and the prepared model runs in: no transposing copy."""
    boxes, arrays = [], []
    for image in images:
        canvas, box = letterbox_image(image, (size, size), keep_ratio)
        arrays.append(canvas[:, :, ::-1])
        boxes.append(box)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255), boxes


@torch.inference_mode()
def detect(model: Darknet, batch: torch.Tensor, letterboxes: list[Letterbox], shapes: list[tuple[int, int]],
           rule: NmsFilter = NmsFilter()) -> list[torch.Tensor]:
    """Detections per image, ``(n, 6)``: x1 y1 x2 y2 in original-image pixels, score, class; ``rule`` says which
    boxes are kept. A box lying wholly in the letterbox's padding has nothing left once clipped to the image,
    and is dropped (written as a label, it would have no width or height)."""
    out = model(batch.to(next(model.parameters()).device))
    kept = []
    for dets, box, shape in zip(filter_detections(out.float(), rule), letterboxes, shapes):
        dets[:, :4] = box.to_original(dets[:, :4], shape)
        kept.append(dets[(dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])].cpu())
    return kept
