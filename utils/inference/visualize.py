"""Drawing detections: a distinct colour per class and labels that stay readable on any background."""
from __future__ import annotations

import colorsys

import cv2
import numpy as np


def class_colour(index: int) -> tuple[int, int, int]:
    """Well-separated hues (golden-ratio steps), as BGR."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image: np.ndarray, detections: np.ndarray, names: list[str]) -> np.ndarray:
    """A copy of ``image`` (BGR) with each ``x1 y1 x2 y2 score class`` box and a "name score" label."""
    out = image.copy()
    height, width = out.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    font_scale = max(0.4, min(height, width) / 1000)
    for x1, y1, x2, y2, score, cls in detections:
        colour = class_colour(int(cls))
        top_left, bottom_right = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(out, top_left, bottom_right, colour, thickness, cv2.LINE_AA)
        label = f"{names[int(cls)]} {score:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        above = top_left[1] - text_h - baseline >= 0
        y_text = top_left[1] - baseline if above else top_left[1] + text_h + baseline
        x_text = min(max(top_left[0], 0), max(width - text_w, 0))
        cv2.rectangle(out, (x_text, y_text - text_h - baseline), (x_text + text_w, y_text + baseline), colour, -1)
        luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
        text_colour = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        cv2.putText(out, label, (x_text, y_text), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_colour, thickness,
                    cv2.LINE_AA)
    return out
