"""Image operations for training and evaluation: the letterbox, Darknet's colour jitter, flips and affine
warps, each moving the boxes with the pixels exactly. Boxes here are ``(n, 5)`` arrays: class, x1, y1, x2, y2
in pixels."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import cv2
import numpy as np

from utils.boxes import Letterbox


PAD_VALUE = 128  # Darknet pads letterboxed images with 0.5
MOSAIC_PROBABILITY = 0.5  # of a batch image being a mosaic when [net] mosaic=1 or --mosaic asks for them


def letterbox_image(image: np.ndarray, size: tuple[int, int], keep_ratio: bool = True) -> tuple[np.ndarray, Letterbox]:
    """Resize into ``size`` (height, width): keep the aspect ratio and pad with grey, or stretch."""
    box = Letterbox.fit(image.shape[:2], size, keep_ratio)
    new_h, new_w = box.resized_size(image.shape[:2])
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_h, new_w) != image.shape[:2] \
        else image
    if (new_h, new_w) == tuple(size):
        return resized, box
    top, left = int(round(box.pad_y - 0.1)), int(round(box.pad_x - 0.1))
    canvas = cv2.copyMakeBorder(resized, top, size[0] - new_h - top, left, size[1] - new_w - left,
                                cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return canvas, Letterbox(box.scale_x, box.scale_y, float(left), float(top))


def clip_and_filter(boxes: np.ndarray, width: int, height: int, min_size: float = 2.0,
                    min_visible: float = 0.2) -> np.ndarray:
    """Clip boxes to the image; drop those under ``min_size`` pixels or with less than ``min_visible``
    of their area left inside."""
    if not len(boxes):
        return boxes
    area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2])
    clipped = boxes.copy()
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, width)
    clipped[:, [2, 4]] = clipped[:, [2, 4]].clip(0, height)
    w, h = clipped[:, 3] - clipped[:, 1], clipped[:, 4] - clipped[:, 2]
    keep = (w >= min_size) & (h >= min_size) & (w * h >= min_visible * np.maximum(area, 1e-9))
    return clipped[keep]


def warp(image: np.ndarray, boxes: np.ndarray, matrix: np.ndarray,
         size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Scale-and-translate ``matrix`` (2x3, no rotation) applied to the image and, exactly, to its boxes."""
    out = cv2.warpAffine(image, matrix, (size[1], size[0]), flags=cv2.INTER_LINEAR,
                         borderValue=(PAD_VALUE,) * 3)
    moved = boxes.copy()
    moved[:, [1, 3]] = boxes[:, [1, 3]] * matrix[0, 0] + matrix[0, 2]
    moved[:, [2, 4]] = boxes[:, [2, 4]] * matrix[1, 1] + matrix[1, 2]
    return out, clip_and_filter(moved, size[1], size[0])


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, hue: float, saturation: float,
               exposure: float) -> np.ndarray:
    """Darknet's colour jitter: hue shifted by up to ±hue (fraction of the circle), saturation and value
    scaled by a factor in [1/s, s]."""
    if hue == 0 and saturation == 1 and exposure == 1:
        return image
    shift = rng.uniform(-hue, hue) * 180
    sat = math.exp(rng.uniform(-math.log(saturation), math.log(saturation))) if saturation > 0 else 1.0
    val = math.exp(rng.uniform(-math.log(exposure), math.log(exposure))) if exposure > 0 else 1.0
    h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    lut = np.arange(256, dtype=np.float32)
    h = cv2.LUT(h, ((lut + shift) % 180).astype(np.uint8))
    s = cv2.LUT(s, np.clip(lut * sat, 0, 255).astype(np.uint8))
    v = cv2.LUT(v, np.clip(lut * val, 0, 255).astype(np.uint8))
    return cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2BGR)


def flip_horizontal(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 1], flipped[:, 3] = width - boxes[:, 3], width - boxes[:, 1]
    return np.ascontiguousarray(image[:, ::-1]), flipped


@dataclass
class Augment:
    """Training augmentation settings; ``from_net`` takes hue/saturation/exposure/flip/mosaic from [net]."""

    hue: float = 0.1
    saturation: float = 1.5
    exposure: float = 1.5
    flip: bool = True
    scale: float = 0.25  # random zoom in [1 - scale, 1 + scale] around the letterbox fit
    translate: float = 0.1  # random shift up to this fraction of the input size
    mosaic: float = 0.0  # probability of a 4-image mosaic

    @classmethod
    def from_net(cls, net: Mapping[str, Any], mosaic: bool | None = None) -> Augment:
        """From the typed [net] section (its schema's defaults are Darknet's: no jitter); ``mosaic`` (the
        --mosaic/--no-mosaic flag) wins over [net] ``mosaic``."""
        use_mosaic = bool(net["mosaic"]) if mosaic is None else mosaic
        return cls(net["hue"], net["saturation"], net["exposure"], bool(net["flip"]),
                   mosaic=MOSAIC_PROBABILITY if use_mosaic else 0.0)
