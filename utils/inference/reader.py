"""Frames read on a background thread, so decoding overlaps detection and a live source never lags behind.

Frames of files (images, video files) wait in a short queue and none is dropped. Frames of a camera or stream
are read as fast as the source delivers them, and a new one replaces the one still waiting: detection always
gets the newest frame, however slow it is, and the capture's own buffer never fills with stale frames.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Iterable, Iterator

from utils.inference.sources import Frame

FILE_QUEUE_FRAMES = 4  # decoded ahead of detection; enough to hide a slow decode, little memory
CLOSE_WAIT_SECONDS = 5.0  # a stream blocked in a read may not return sooner; the thread is a daemon anyway


class FrameReader:
    """Iterates ``frames`` (e.g. :func:`~utils.inference.sources.read_frames`) on a thread and hands them out
    in order, dropping only stale live frames (counted in ``dropped``). An error while reading is raised by the
    iteration. :meth:`close` stops the reading early (Ctrl-C, a closed viewer); use it as a context manager."""

    def __init__(self, frames: Iterable[Frame], queue_frames: int = FILE_QUEUE_FRAMES):
        self.dropped = 0
        self._queue: deque[Frame] = deque()
        self._capacity = queue_frames
        self._changed = threading.Condition()
        self._finished = False
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, args=(iter(frames),), name="frame-reader", daemon=True)
        self._thread.start()

    def _read(self, frames: Iterator[Frame]) -> None:
        try:
            for frame in frames:
                if not self._put(frame):
                    break
        except BaseException as err:  # handed to the consumer, which raises it where it can be reported
            self._error = err
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # a generator releases its capture now, on this thread
            with self._changed:
                self._finished = True
                self._changed.notify_all()

    def _put(self, frame: Frame) -> bool:
        """Queue ``frame``; False once the reader is closing."""
        with self._changed:
            if frame.source.live:
                while self._queue and self._queue[-1].source is frame.source:
                    self._queue.pop()
                    self.dropped += 1
            else:
                self._changed.wait_for(lambda: len(self._queue) < self._capacity or self._stopping)
            if self._stopping:
                return False
            self._queue.append(frame)
            self._changed.notify_all()
            return True

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._finished)
                if not self._queue:
                    break
                frame = self._queue.popleft()
                self._changed.notify_all()
            yield frame
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop reading and wait (a little) for the thread, which releases its capture."""
        with self._changed:
            self._stopping = True
            self._queue.clear()
            self._changed.notify_all()
        self._thread.join(CLOSE_WAIT_SECONDS)

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
