"""detect.py's loop: every frame of the inputs, read on a background thread, in batches through preprocessing,
the model and NMS, into a :class:`DetectionWriter` (and a viewer window); timed per stage. It ends at the end of
the inputs, at Ctrl-C or at a stop key in the viewer, and each way leaves complete outputs behind."""
from __future__ import annotations

import numbers
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from tqdm import tqdm

from utils.darknet.cfg import MAX_IMG_SIZE, SIZE_MULTIPLE
from utils.darknet.model import Darknet
from utils.inference.load import detect, preprocess
from utils.errors import is_number
from utils.inference.nms import NmsFilter, SettingsError, require_flags
from utils.inference.reader import FrameReader
from utils.inference.sources import Frame, Input, batches, count_frames, read_frames
from utils.inference.tta import network
from utils.inference.viewer import FrameViewer
from utils.inference.writer import DetectionWriter


@dataclass(frozen=True)
class DetectSettings(NmsFilter):
    """Which boxes are kept (the :class:`NmsFilter` fields) and how images reach the network."""

    img_size: int | None = None  # network input (a SIZE_MULTIPLE); None: the model's (LoadedModel.input_size)
    letterbox: bool = True  # keep the aspect ratio and pad, else stretch
    batch_size: int = 1
    augment: bool = False  # test-time augmentation (utils/inference/tta.py)

    def __post_init__(self):
        super().__post_init__()
        size = self.img_size
        if size is not None and not (is_number(size, numbers.Integral) and SIZE_MULTIPLE <= size <= MAX_IMG_SIZE
                                     and size % SIZE_MULTIPLE == 0):
            raise SettingsError(f"img_size: expected a multiple of {SIZE_MULTIPLE} in {SIZE_MULTIPLE} .. "
                                f"{MAX_IMG_SIZE}, got {size!r}")
        if not (is_number(self.batch_size, numbers.Integral) and self.batch_size >= 1):
            raise SettingsError(f"batch_size: expected an integer of at least 1, got {self.batch_size!r}")
        require_flags(letterbox=self.letterbox, augment=self.augment)



@dataclass
class DetectionRun:
    """What a pass over the inputs did: seconds per stage, what it could not read, live frames it dropped to
    stay current, and why it stopped early (None: the inputs ended)."""

    preprocess_seconds: float = 0.0
    inference_seconds: float = 0.0  # forward + NMS
    skipped: list[str] = field(default_factory=list)
    dropped: int = 0
    stopped: str | None = None


def _detect_batch(model: Darknet, chunk: list[Frame], settings: DetectSettings, run: DetectionRun):
    t0 = time.perf_counter()
    batch, letterboxes = preprocess([f.pixels for f in chunk], settings.img_size, settings.letterbox)
    t1 = time.perf_counter()
    shapes = [f.pixels.shape[:2] for f in chunk]
    detections = detect(network(model, settings.augment), batch, letterboxes, shapes, settings)
    run.preprocess_seconds += t1 - t0
    run.inference_seconds += time.perf_counter() - t1
    return detections


@contextmanager
def _interrupt_after():
    """Hold Ctrl-C until the block ends, so a frame's outputs (video frame, label file, record) are written
    whole or not at all; off the main thread (the Detector API in a worker) signals cannot be caught there."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started ignoring Ctrl-C (nohup, a & job)
        yield
        return
    pending = []
    previous = signal.signal(signal.SIGINT, lambda *_: pending.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def detect_inputs(model: Darknet, inputs: list[Input], writer: DetectionWriter, settings: DetectSettings,
                  viewer: FrameViewer | None = None) -> DetectionRun:
    """Detect in every frame of ``inputs`` (at ``settings.img_size``, which must be set: LoadedModel.input_size)
    and hand the results to ``writer`` (and ``viewer``). Ctrl-C or a stop
    key ends the run cleanly (``stopped`` says which); on any other failure the half-written video is dropped
    (finished files stay) and the error propagates."""
    run = DetectionRun()
    reader = FrameReader(read_frames(inputs, run.skipped))
    try:
        with tqdm(total=count_frames(inputs), desc="detect", unit="frame") as progress:
            for chunk in batches(reader, settings.batch_size):
                for frame, dets in zip(chunk, _detect_batch(model, chunk, settings, run)):
                    with _interrupt_after():
                        annotated = writer.add(frame, dets, annotate=viewer is not None)
                    if viewer is not None and not viewer.show(frame.source.label, annotated):
                        run.stopped = "a stop key in the viewer"
                progress.update(len(chunk))
                if run.stopped:
                    break
    except KeyboardInterrupt:
        run.stopped = "Ctrl-C"
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
        if viewer is not None:
            viewer.close()
    run.dropped = reader.dropped
    return run
