"""What detect.py reads: the input files a folder, file or glob names, their frames (an image is one frame,
a video one per frame) in batches, and the newest trained model when none is named."""
from __future__ import annotations

import glob
import itertools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from utils.data.dataset import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class Frame:
    path: Path
    pixels: np.ndarray  # BGR, uint8
    index: int | None = None  # frame number within a video; None for a still image
    fps: float = 0.0


def newest_checkpoint(runs: Path = Path("runs")) -> Path | None:
    """The most recently written ``best.pth`` under ``runs/*/*/`` or ``runs/*/``."""
    candidates = [*runs.glob("*/*/best.pth"), *runs.glob("*/best.pth")]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def collect_inputs(spec: str, recursive: bool) -> tuple[Path, list[Path]]:
    """(root the outputs mirror, image and video files). Other files in a folder are skipped, named."""
    path = Path(spec)
    if path.is_file():
        return path.parent, [path]
    if path.is_dir():
        files = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if p.is_file())
        root = path
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        root = Path(os.path.commonpath([p.parent for p in files])) if files else Path(".")
    known = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    for other in (p for p in files if p.suffix.lower() not in known):
        warnings.warn(f"skipping {other}: not an image or video ({', '.join(known)})", stacklevel=2)
    return root, [p for p in files if p.suffix.lower() in known]


def read_frames(paths: Iterable[Path], skipped: list[str]) -> Iterator[Frame]:
    """Every image, and every frame of every video, in order. Unreadable files are warned about, appended to
    ``skipped`` and passed over."""
    for path in paths:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
            index = 0
            while capture.isOpened():
                ok, pixels = capture.read()
                if not ok:
                    break
                yield Frame(path, pixels, index, fps)
                index += 1
            capture.release()
            if index == 0:
                warnings.warn(f"skipping unreadable video {path}", stacklevel=2)
                skipped.append(str(path))
            continue
        pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)  # applies EXIF rotation; grey, RGBA, 16-bit -> BGR8
        if pixels is None:
            warnings.warn(f"skipping unreadable image {path}", stacklevel=2)
            skipped.append(str(path))
            continue
        yield Frame(path, pixels)


def count_frames(paths: Iterable[Path]) -> int:
    """Images plus the frame counts videos declare (for progress; a video may hold fewer)."""
    total = 0
    for path in paths:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            total += max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            capture.release()
        else:
            total += 1
    return total


def batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    while chunk := list(itertools.islice(frames, size)):
        yield chunk
