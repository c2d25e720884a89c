"""detect.py's loop: every frame of the inputs, in batches, through preprocessing, the model and NMS, into
a :class:`DetectionWriter`; timed per stage."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from utils.darknet.model import Darknet
from utils.inference.load import detect, preprocess
from utils.inference.sources import batches, count_frames, read_frames
from utils.inference.writer import DetectionWriter


@dataclass(frozen=True)
class DetectSettings:
    img_size: int = 416  # network input (multiple of 32)
    conf_thres: float = 0.25
    nms_thres: float = 0.45
    batch_size: int = 1
    letterbox: bool = True  # keep the aspect ratio and pad, else stretch


@dataclass
class DetectionRun:
    """What a pass over the inputs did: seconds per stage, and the files it could not read."""

    preprocess_seconds: float = 0.0
    inference_seconds: float = 0.0  # forward + NMS
    skipped: list[str] = field(default_factory=list)


def detect_files(model: Darknet, inputs: list[Path], writer: DetectionWriter,
                 settings: DetectSettings) -> DetectionRun:
    """Detect in every image and video frame of ``inputs`` and hand the results to ``writer``; on any
    failure the half-written video is dropped (finished files stay) and the error propagates."""
    run = DetectionRun()
    try:
        with tqdm(total=count_frames(inputs), desc="detect", unit="frame") as progress:
            for chunk in batches(read_frames(inputs, run.skipped), settings.batch_size):
                t0 = time.perf_counter()
                batch, boxes = preprocess([f.pixels for f in chunk], settings.img_size, settings.letterbox)
                t1 = time.perf_counter()
                detections = detect(model, batch, boxes, [f.pixels.shape[:2] for f in chunk],
                                    settings.conf_thres, settings.nms_thres)
                run.preprocess_seconds += t1 - t0
                run.inference_seconds += time.perf_counter() - t1
                for frame, dets in zip(chunk, detections):
                    writer.add(frame, dets)
                progress.update(len(chunk))
    except BaseException:
        writer.abort()
        raise
    return run
