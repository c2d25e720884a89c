"""The model for code that embeds it: images in, boxes in the images' own pixels out.

    from models import Detector
    detector = Detector("runs/train/exp1/best.pth")            # or Detector("yolov3.weights", "cfg/yolov3.cfg",
    result = detector("photo.jpg")                             #                  names="data/coco.names")
    for (x1, y1, x2, y2), score, name in zip(result.boxes, result.scores, result.names):
        ...
    results = detector([frame_bgr, "other.png"])               # a list in, a list of results out, batched

It runs what detect.py runs (the fused, channels-last inference path; the same letterbox and NMS), so it gives
detect.py's boxes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Union

import cv2
import numpy as np
import torch
from torch import nn

from utils.cli import select_device
from utils.darknet.cfg import Cfg
from utils.darknet.model import Darknet
from utils.errors import UserError
from utils.fileio import regular_file
from utils.inference.load import LoadedModel, class_names, detect, load_model, preprocess
from utils.inference.nms import SettingsError, require_flags
from utils.inference.pipeline import DetectSettings
from utils.inference.tta import network

ImageLike = Union[str, Path, np.ndarray]  # a path, or an HxWx3 BGR array as OpenCV reads images
API_BATCH_SIZE = 8  # images per forward pass when a list comes in


class ImageInputError(UserError, ValueError):
    """Something given as an image that is none: a path that cannot be read, an array of the wrong shape or type."""


@dataclass
class Detections:
    """One image's detections, best first."""

    boxes: np.ndarray  # (n, 4) float32: x1, y1, x2, y2 in the image's own pixels
    scores: np.ndarray  # (n,) float32: objectness x class score
    classes: np.ndarray  # (n,) int64: class indices
    names: list[str]  # the class name of each detection
    image_shape: tuple[int, int]  # (height, width)
    source: str | None = None  # the path the image was read from, if it was

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def from_rows(cls, rows: torch.Tensor, class_names: list[str], image_shape: tuple[int, int],
                  source: str | None) -> Detections:
        """From detection rows ``(n, 6)``: x1, y1, x2, y2, score, class."""
        classes = rows[:, 5].to(torch.int64).numpy()
        return cls(rows[:, :4].numpy().astype(np.float32), rows[:, 4].numpy().astype(np.float32), classes,
                   [class_names[c] for c in classes], image_shape, source)


def _bgr8(array: np.ndarray, position: int) -> np.ndarray:
    """``array`` as a contiguous HxWx3 uint8 BGR image (grey and BGRA converted, 16-bit scaled like imread)."""
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    if array.dtype != np.uint8 or array.size == 0 or array.ndim not in (2, 3) \
            or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageInputError(f"image {position}: expected an HxWx3 BGR uint8 array (HxW grey, HxWx4 BGRA and "
                              f"16-bit are taken too), got shape {array.shape} {array.dtype}")
    if array.ndim == 2 or array.shape[2] == 1:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(array)


def read_image(image: ImageLike, position: int = 0) -> tuple[np.ndarray, str | None]:
    """(BGR pixels, the path they came from or None) for a path or an array; ``position`` names it in errors."""
    if isinstance(image, (str, Path)):
        if not str(image).strip():  # an empty string would open the working directory
            raise ImageInputError(f"image {position}: the path is empty")
        path = regular_file(image, "image", ImageInputError)
        pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if pixels is None:
            raise ImageInputError(f"{path}: OpenCV cannot read it as an image")
        return pixels, str(path)
    if isinstance(image, np.ndarray):
        return _bgr8(image, position), None
    raise ImageInputError(f"image {position}: expected a file path or a numpy BGR array, got {type(image).__name__}")


def _check_model_arguments(weights, cfg) -> None:
    if not isinstance(weights, (str, Path, Darknet)):
        raise SettingsError(f"weights: expected a .pth or .weights path, or a Darknet, got {type(weights).__name__}")
    if isinstance(weights, Darknet) and cfg is not None:
        raise SettingsError("cfg: a built Darknet has its own cfg; cfg goes with a .weights path")


class Detector(nn.Module):
    """A trained model ready to detect: ``detector(images)`` takes one image (a path or a BGR array) and returns
    its :class:`Detections`, or a list (or an NxHxWx3 array) and returns a list, read and run in batches of
    ``settings.batch_size``.

    ``weights``: a ``.pth`` (carries its cfg and class names), a ``.weights`` with ``cfg``, or a built
    :class:`Darknet` (prepared for inference in place: fused, so no longer trainable). ``names``: a ``.names``
    file or a list (default: the checkpoint's, else numbers).
    ``device``: as detect.py's --device (default: CUDA when available). ``settings``: thresholds, classes,
    input size (:class:`DetectSettings`; replace ``detector.settings`` at any time; settings without an
    ``img_size`` take the size a training checkpoint was trained at, else 416). ``half``: as detect.py's
    --half (``Darknet.prepare_inference``)."""

    def __init__(self, weights: str | Path | Darknet, cfg: str | Path | Cfg | None = None,
                 names: str | Path | list[str] | None = None, device: str | torch.device | None = None,
                 settings: DetectSettings | None = None, half: bool = False):
        super().__init__()
        require_flags(half=half)
        target = select_device(str(device) if device is not None else "", setting="device")
        _check_model_arguments(weights, cfg)
        if isinstance(weights, Darknet):
            prepared = weights.to(target).prepare_inference(half)
            loaded = LoadedModel(prepared, class_names(names, None, prepared.num_classes))
        else:
            loaded = load_model(weights, cfg, names, target, half)
        self.model, self.names = loaded.model, loaded.names
        self.default_size = loaded.input_size(None)  # what settings without an img_size run at
        self.settings = settings if settings is not None else DetectSettings(batch_size=API_BATCH_SIZE)

    @property
    def settings(self) -> DetectSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: DetectSettings) -> None:
        if not isinstance(settings, DetectSettings):
            raise SettingsError(f"settings: expected a DetectSettings, got {type(settings).__name__}")
        settings.check_classes(self.model.num_classes)
        self._settings = settings if settings.img_size else replace(settings, img_size=self.default_size)

    def train(self, mode: bool = True) -> Detector:
        """Kept in eval mode whatever ``mode`` (as ``model.train()`` on a parent module may ask): a Detector's
        model is prepared for inference (fused), and in train mode it would return raw heads, not detections."""
        return super().train(False)

    def forward(self, images: ImageLike | Iterable[ImageLike]) -> Detections | list[Detections]:
        if isinstance(images, (bytes, bytearray)):
            raise ImageInputError("expected an image (a file path or a numpy BGR array), got encoded bytes: decode "
                                  "them with cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)")
        if isinstance(images, torch.Tensor):  # iterating it would pass rows of pixels as images
            raise ImageInputError(f"expected an image (a file path or a numpy BGR array) or a list of them, got a "
                                  f"torch.Tensor of shape {tuple(images.shape)}: pass HxWx3 BGR uint8 arrays, e.g. "
                                  f"tensor.cpu().numpy(), or run detector.model on a (batch, 3, height, width) tensor")
        single = isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim < 4)
        if not single and not isinstance(images, Iterable):
            raise ImageInputError(f"expected an image (a file path or a numpy BGR array) or a list of them, got "
                                  f"{type(images).__name__}")
        items = [images] if single else list(images)
        settings, results = self.settings, []
        for start in range(0, len(items), settings.batch_size):
            chunk = [read_image(item, start + i) for i, item in enumerate(items[start:start + settings.batch_size])]
            shapes = [pixels.shape[:2] for pixels, _ in chunk]
            batch, letterboxes = preprocess([pixels for pixels, _ in chunk], settings.img_size, settings.letterbox)
            rows = detect(network(self.model, settings.augment), batch, letterboxes, shapes, settings)
            results += [Detections.from_rows(r, self.names, shape, source)
                        for r, shape, (_, source) in zip(rows, shapes, chunk)]
        return results[0] if single else results
