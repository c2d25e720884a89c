"""Loading a trained model for inference, and running it on images of any size."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import Darknet
from utils.checkpoint import load_checkpoint
from utils.data import letterbox_image
from utils.nms import non_max_suppression


@dataclass
class LoadedModel:
    model: Darknet
    names: list[str]


def load_model(weights: str | Path, cfg: str | Path | None = None, names_file: str | Path | None = None,
               device: torch.device | str = "cpu") -> LoadedModel:
    """A model ready for inference from ``.weights`` (needs ``cfg``) or a ``.pth`` (carries its cfg and names)."""
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no such weights file")
    names = None
    if weights.suffix in (".pth", ".pt"):
        state = load_checkpoint(weights)
        if cfg is None:
            with tempfile.TemporaryDirectory() as tmp:
                cfg_path = Path(tmp) / "model.cfg"
                cfg_path.write_text(state["cfg_text"])
                model = Darknet(cfg_path)
        else:
            model = Darknet(cfg)
        source = state["ema"]["model"] if state.get("ema") else state["model"]
        model.load_state_dict(source)
        names = state.get("names")
    elif weights.suffix == ".weights" or cfg is not None:
        if cfg is None:
            raise ValueError(f"{weights}: a .weights file needs its cfg (--model_def)")
        model = Darknet(cfg)
        model.load_darknet_weights(weights)
    else:
        raise ValueError(f"{weights}: unknown weights format; expected .weights or .pth")
    if names_file is not None:
        names = [n.strip() for n in Path(names_file).read_text().splitlines() if n.strip()]
    if names is None:
        names = [str(i) for i in range(model.num_classes)]
    if len(names) != model.num_classes:
        raise ValueError(f"{names_file}: {len(names)} class names for a model with {model.num_classes} classes")
    model.to(device).prepare_inference()
    return LoadedModel(model, names)


def preprocess(images: list[np.ndarray], size: int, keep_ratio: bool = True):
    """BGR images -> a float batch in [0, 1] and each image's letterbox."""
    boxes, arrays = [], []
    for image in images:
        canvas, box = letterbox_image(image, (size, size), keep_ratio)
        arrays.append(canvas[:, :, ::-1].transpose(2, 0, 1))
        boxes.append(box)
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays))).float().div_(255), boxes


@torch.inference_mode()
def detect(model: Darknet, batch: torch.Tensor, boxes, shapes, conf_thres: float, nms_thres: float,
           max_det: int = 300) -> list[torch.Tensor]:
    """Detections per image, ``(n, 6)``: x1 y1 x2 y2 in original-image pixels, score, class."""
    out = model(batch.to(next(model.parameters()).device))
    results = non_max_suppression(out.float(), conf_thres, nms_thres, max_det=max_det)
    for dets, box, shape in zip(results, boxes, shapes):
        dets[:, :4] = box.to_original(dets[:, :4], shape)
    return [d.cpu() for d in results]
