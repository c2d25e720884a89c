"""What detect.py writes: annotated images or videos, Darknet-style label files, crops and one detections.json
(what it reads is in :mod:`utils.inference.sources`). Every file is complete or absent: images, crops and labels
go through ``atomic_write``, a video is written under a temporary name and renamed when its last frame is in.
Outputs never land on the inputs: :func:`check_output_folder` refuses a folder that overlaps any of them."""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.boxes import xyxy_to_xywh
from utils.errors import UserError
from utils.fileio import atomic_write, temporary_path
from utils.inference.sources import Frame, Input
from utils.inference.visualize import DrawStyle, draw_detections

LABELS_DIR = "labels"  # one Darknet-style label file per image or video frame
CROPS_DIR = "crops"  # with save_crops: one image per detection, a folder per class
RECORD_FILE = "detections.json"  # every image's or frame's detections, and the run's settings


class OutputFolderError(UserError, ValueError):
    """An output folder that would write over, or among, the inputs."""


def check_output_folder(folder: Path, locations: list[Path]) -> None:
    """Refuse an output folder equal to, inside or containing any input location (file or folder, however it
    was named), so no output replaces an input and no later run reads outputs as inputs."""
    out = Path(os.path.realpath(folder))
    for location in locations:
        where = Path(os.path.realpath(location))
        if out == where:
            problem = f"is the input {location}"
        elif where.is_dir() and out.is_relative_to(where):
            problem = f"is inside the input folder {location}"
        elif where.is_relative_to(out):
            problem = f"contains the input {location}"
        else:
            continue
        raise OutputFolderError(f"--output {folder} {problem}; choose an --output outside the inputs so none is "
                                f"overwritten")


def check_default_output(root: Path, locations: list[Path]) -> None:
    """Refuse the default output, the next ``root/expN``, where ``root`` lies in an input folder: a new, empty
    folder can clash with the inputs only that way (later runs on that folder would read it as input)."""
    out = Path(os.path.realpath(root))
    for location in locations:
        where = Path(os.path.realpath(location))
        if where.is_dir() and out.is_relative_to(where):
            raise OutputFolderError(f"the default output folder {root}/expN would lie inside the input folder "
                                    f"{location}; pass an --output outside the inputs")


def class_folders(names: list[str]) -> list[str]:
    """A folder name per class for crops: the name made safe for any file system; numbered ("3_name") for every
    class if two names would otherwise share a folder."""
    safe = [re.sub(r'[\x00-\x1f/\\:*?"<>|]+', "_", name).strip(" .") or "class" for name in names]
    if len({s.lower() for s in safe}) < len(safe):
        return [f"{index}_{s}" for index, s in enumerate(safe)]
    return safe


class VideoSink:
    """Annotated frames of one video, encoded as mp4v into ``target``."""

    def __init__(self, target: Path, fps: float, size_wh: tuple[int, int]):
        target.parent.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.partial = temporary_path(target, keep_suffix=True)
        self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh)
        if not self.writer.isOpened():
            raise OSError(f"{target}: this OpenCV build cannot encode mp4v video")

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)

    def close(self, keep: bool = True) -> None:
        self.writer.release()
        if keep:
            os.replace(self.partial, self.target)
        else:
            self.partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class OutputOptions:
    save_annotated: bool = True  # annotated images and videos; False (--nosave): labels and JSON only
    save_crops: bool = False  # one image per detection under crops/<class>/
    style: DrawStyle = field(default_factory=DrawStyle)


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".jpg", image)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {image.shape[1]}x{image.shape[0]} JPEG")
    with atomic_write(path) as f:
        f.write(encoded.tobytes())


def _frame_stem(frame: Frame) -> str:
    """The name of one frame's label file and crops: the image's stem, or ``<video stem>/<frame number>``."""
    return frame.source.stem if frame.index is None else f"{frame.source.stem}/{frame.index:06d}"


def _crop(pixels: np.ndarray, box: list[float]) -> np.ndarray:
    """The whole pixels a box covers (its edges rounded outwards, clipped to the image)."""
    height, width = pixels.shape[:2]
    x1, y1 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x2, y2 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    return pixels[y1:y2, x1:x2]


class DetectionWriter:
    """Writes, under ``output``: ``<stem>.jpg`` per image or ``<stem>.mp4`` per video, camera or stream (boxes
    drawn; not with ``save_annotated=False``), ``labels/<stem>.txt`` per image or ``labels/<stem>/<frame>.txt``
    per video frame (``class cx cy w h score``, normalised like Darknet's labels), with ``save_crops``
    ``crops/<class>/<frame stem>_<k>.jpg`` for the k-th detection of a frame, and ``detections.json`` on
    ``finish``. Stems come from the inputs (:class:`~utils.inference.sources.Input`), distinct within a run."""

    def __init__(self, output: Path, names: list[str], options: OutputOptions = OutputOptions()):
        self.output, self.names, self.options = output, names, options
        self.crop_folders = class_folders(names)
        self.records: list[dict] = []
        self.counts: Counter[str] = Counter()
        self.video: VideoSink | None = None
        self.video_source: Input | None = None

    def add(self, frame: Frame, detections: torch.Tensor, annotate: bool = False) -> np.ndarray | None:
        """Write one frame's outputs; ``detections``: ``(n, 6)`` x1 y1 x2 y2 in the frame's pixels, score, class.
        Returns the annotated frame when it was drawn (saved, or ``annotate`` asked for it, e.g. to view it)."""
        record = {"image": frame.source.label, "width": frame.pixels.shape[1], "height": frame.pixels.shape[0]}
        if frame.index is not None:
            record["frame"] = frame.index
        annotated = None
        if self.options.save_annotated or annotate:
            annotated = draw_detections(frame.pixels, detections.numpy(), self.names, self.options.style)
        if self.options.save_annotated:
            record["annotated"] = self._save_annotated(frame, annotated)
        record["labels"] = self._save_labels(frame, detections)
        boxes = detections[:, :4].tolist()
        scores, classes = detections[:, 4].tolist(), [int(c) for c in detections[:, 5].tolist()]
        record["detections"] = [{"class": c, "name": self.names[c], "score": round(s, 5),
                                 "box_xyxy": [round(v, 2) for v in box]}
                                for box, s, c in zip(boxes, scores, classes)]
        if self.options.save_crops:
            for k, (entry, box, c) in enumerate(zip(record["detections"], boxes, classes)):
                entry["crop"] = self._save_crop(frame, box, self.crop_folders[c], k)
        self.counts.update(self.names[c] for c in classes)
        self.records.append(record)
        return annotated

    def _save_annotated(self, frame: Frame, annotated: np.ndarray) -> str:
        if frame.index is None:
            name = f"{frame.source.stem}.jpg"
            _write_jpeg(self.output / name, annotated)
            return name
        self._video_for(frame).write(annotated)
        return f"{frame.source.stem}.mp4"

    def _save_labels(self, frame: Frame, detections: torch.Tensor) -> str:
        height, width = frame.pixels.shape[:2]
        xywh = xyxy_to_xywh(detections[:, :4]) / torch.tensor([width, height, width, height])
        scores, classes = detections[:, 4].tolist(), [int(c) for c in detections[:, 5].tolist()]
        name = f"{LABELS_DIR}/{_frame_stem(frame)}.txt"
        with atomic_write(self.output / name) as f:
            f.write("".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f} {s:.4f}\n"
                            for (x, y, w, h), s, c in zip(xywh.tolist(), scores, classes)).encode())
        return name

    def _save_crop(self, frame: Frame, box: list[float], folder: str, k: int) -> str | None:
        pixels = _crop(frame.pixels, box)
        if pixels.size == 0:
            return None  # a box with no whole pixel inside the image
        name = f"{CROPS_DIR}/{folder}/{_frame_stem(frame)}_{k}.jpg"
        _write_jpeg(self.output / name, pixels)
        return name

    def _video_for(self, frame: Frame) -> VideoSink:
        if self.video_source is not frame.source:
            self._close_video(keep=True)
            height, width = frame.pixels.shape[:2]
            self.video = VideoSink(self.output / f"{frame.source.stem}.mp4", frame.fps, (width, height))
            self.video_source = frame.source
        return self.video

    def _close_video(self, keep: bool) -> None:
        if self.video is not None:
            self.video.close(keep)
            self.video, self.video_source = None, None

    def finish(self, run_info: dict) -> None:
        """Close the open video and write ``detections.json`` (``run_info`` plus one record per image/frame)."""
        self._close_video(keep=True)
        with atomic_write(self.output / RECORD_FILE) as f:
            f.write(json.dumps({**run_info, "images": self.records}, indent=1).encode())

    def abort(self) -> None:
        """Drop the half-written video after a failure; finished files stay."""
        self._close_video(keep=False)
