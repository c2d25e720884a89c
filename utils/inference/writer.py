"""What detect.py writes: annotated images or videos, Darknet-style label files and one detections.json
(what it reads is in :mod:`utils.inference.sources`). Every file is complete or absent: images and labels
go through ``atomic_write``, a video is written under a temporary name and renamed when its last frame is in."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.boxes import xyxy_to_xywh
from utils.fileio import atomic_write
from utils.inference.sources import Frame
from utils.inference.visualize import draw_detections


class VideoSink:
    """Annotated frames of one video, encoded as mp4v into ``target``."""

    def __init__(self, target: Path, fps: float, size_wh: tuple[int, int]):
        target.parent.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.partial = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
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


class DetectionWriter:
    """Writes, under ``output``: ``<name>.jpg`` per image or ``<name>.mp4`` per video (boxes drawn),
    ``labels/<name>.txt`` per image or ``labels/<name>/<frame>.txt`` per video frame (``class cx cy w h score``,
    normalised like Darknet's labels), and ``detections.json`` on ``finish``. Names keep the inputs' layout
    below ``root``."""

    def __init__(self, output: Path, root: Path, names: list[str]):
        self.output, self.root, self.names = output, root, names
        self.records: list[dict] = []
        self.counts: Counter[str] = Counter()
        self.video: VideoSink | None = None
        self.video_source: Path | None = None

    def add(self, frame: Frame, detections: torch.Tensor) -> None:
        """``detections``: ``(n, 6)`` x1 y1 x2 y2 in the frame's pixels, score, class."""
        path = frame.path
        relative = path.relative_to(self.root) if path.is_relative_to(self.root) else Path(path.name)
        annotated = draw_detections(frame.pixels, detections.numpy(), self.names)
        if frame.index is None:
            ok, encoded = cv2.imencode(".jpg", annotated)
            if ok:
                with atomic_write((self.output / relative).with_suffix(".jpg")) as f:
                    f.write(encoded.tobytes())
            label_file = (self.output / "labels" / relative).with_suffix(".txt")
        else:
            self._video_for(frame, relative).write(annotated)
            label_file = self.output / "labels" / relative.with_suffix("") / f"{frame.index:06d}.txt"
        height, width = frame.pixels.shape[:2]
        xywh = xyxy_to_xywh(detections[:, :4]) / torch.tensor([width, height, width, height])
        scores, classes = detections[:, 4].tolist(), [int(c) for c in detections[:, 5].tolist()]
        with atomic_write(label_file) as f:
            f.write("".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f} {s:.4f}\n"
                            for (x, y, w, h), s, c in zip(xywh.tolist(), scores, classes)).encode())
        self.counts.update(self.names[c] for c in classes)
        record = {"image": str(path), "width": width, "height": height}
        if frame.index is not None:
            record["frame"] = frame.index
        record["detections"] = [{"class": c, "name": self.names[c], "score": round(s, 5),
                                 "box_xyxy": [round(v, 2) for v in box]}
                                for box, s, c in zip(detections[:, :4].tolist(), scores, classes)]
        self.records.append(record)

    def _video_for(self, frame: Frame, relative: Path) -> VideoSink:
        if self.video_source != frame.path:
            self._close_video(keep=True)
            height, width = frame.pixels.shape[:2]
            self.video = VideoSink((self.output / relative).with_suffix(".mp4"), frame.fps, (width, height))
            self.video_source = frame.path
        return self.video

    def _close_video(self, keep: bool) -> None:
        if self.video is not None:
            self.video.close(keep)
            self.video, self.video_source = None, None

    def finish(self, run_info: dict) -> None:
        """Close the open video and write ``detections.json`` (``run_info`` plus one record per image/frame)."""
        self._close_video(keep=True)
        with atomic_write(self.output / "detections.json") as f:
            f.write(json.dumps({**run_info, "images": self.records}, indent=1).encode())

    def abort(self) -> None:
        """Drop the half-written video after a failure; finished files stay."""
        self._close_video(keep=False)
