"""detect.py --view: the annotated frames in a window, when there is a display to show them on."""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np

STOP_KEYS = (ord("q"), 27)  # q, Esc


def display_problem() -> str | None:
    """Why no window can be shown here, or None when one can (as far as can be told without opening one)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    return None


class FrameViewer:
    """One window per source, updated with every annotated frame; q or Esc in a window stops the run."""

    def __init__(self):
        self.windows: set[str] = set()
        self.unavailable = False  # OpenCV could not open a window after all; said once, then frames are not shown

    @classmethod
    def open(cls) -> FrameViewer | None:
        """A viewer, or None after saying in one line why frames will not be shown."""
        problem = display_problem()
        if problem is not None:
            _say_not_shown(problem)
            return None
        return cls()

    def show(self, title: str, image: np.ndarray) -> bool:
        """Show ``image``; False when the user pressed a stop key."""
        if self.unavailable:
            return True
        try:
            cv2.imshow(title, image)
        except cv2.error as err:  # an OpenCV built without a GUI, or a display it cannot connect to
            self.unavailable = True
            _say_not_shown(f"OpenCV cannot open a window ({str(err).strip().splitlines()[-1]})")
            return True
        self.windows.add(title)
        return (cv2.waitKey(1) & 0xFF) not in STOP_KEYS

    def close(self) -> None:
        if self.windows:
            cv2.destroyAllWindows()


def _say_not_shown(problem: str) -> None:
    print(f"--view: {problem}; detecting without showing frames", file=sys.stderr)
