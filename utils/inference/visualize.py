"""Drawing detections: a distinct colour per class and labels that stay readable on any background."""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class DrawStyle:
    line_thickness: int | None = None  # pixels; None: about 1 per 300 pixels of the image's shorter side
    hide_labels: bool = False  # boxes only
    hide_conf: bool = False  # labels show the class name without the score


def class_colour(index: int) -> tuple[int, int, int]:
    """Well-separated hues (golden-ratio steps), as BGR."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def _auto_thickness(image: np.ndarray) -> int:
    return max(1, round(min(image.shape[:2]) / 300))


def _draw_label(out: np.ndarray, text: str, top_left: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """``text`` on a filled box of ``colour`` just above ``top_left`` (below it at the image's top edge). Its
    size follows the image, not the box lines, so thick lines keep a readable font."""
    height, width = out.shape[:2]
    thickness = _auto_thickness(out)
    font_scale = max(0.4, min(height, width) / 1000)
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    above = top_left[1] - text_h - baseline >= 0
    y_text = top_left[1] - baseline if above else top_left[1] + text_h + baseline
    x_text = min(max(top_left[0], 0), max(width - text_w, 0))
    cv2.rectangle(out, (x_text, y_text - text_h - baseline), (x_text + text_w, y_text + baseline), colour, -1)
    luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    text_colour = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(out, text, (x_text, y_text), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_colour, thickness,
                cv2.LINE_AA)


def draw_detections(image: np.ndarray, detections: np.ndarray, names: list[str],
                    style: DrawStyle = DrawStyle()) -> np.ndarray:
    """A copy of ``image`` (BGR) with each ``x1 y1 x2 y2 score class`` box and, unless hidden, a
    "name score" label."""
    out = image.copy()
    thickness = style.line_thickness or _auto_thickness(out)
    for x1, y1, x2, y2, score, cls in detections:
        colour = class_colour(int(cls))
        top_left = (int(x1), int(y1))
        cv2.rectangle(out, top_left, (int(x2), int(y2)), colour, thickness, cv2.LINE_AA)
        if not style.hide_labels:
            name = names[int(cls)]
            _draw_label(out, name if style.hide_conf else f"{name} {score:.2f}", top_left, colour)
    return out
