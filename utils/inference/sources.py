"""What detect.py reads. A ``--source`` names a folder, an image or video file, a glob, a camera index (``0``),
a stream URL (``rtsp://``, ``http://`` ...) or a list file (``.txt``, ``.list``, ``.streams``) of any of these,
one a line. It resolves to :class:`Input` items, each with an output name no other item of the run has, and
the places on disk it was read from (so outputs can be kept away from them). Frames come from
:func:`read_frames`; :mod:`utils.inference.reader` runs that on a background thread."""
from __future__ import annotations

import glob
import itertools
import os
import posixpath
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit

import cv2
import numpy as np

from utils.data.config import IMAGE_SUFFIXES, resolve_path
from utils.errors import InputWarning, UserError
from utils.fileio import read_text
from utils.training.run_files import BEST_CHECKPOINT

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
LIST_SUFFIXES = (".txt", ".list", ".streams")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")
DEFAULT_FPS = 30.0  # for a camera or stream that does not say
GLOB_MAGIC = re.compile(r"[*?[]")
SHOWN_OTHERS = 5  # files skipped as neither image nor video that the warning names


class SourceError(UserError, ValueError):
    """A --source (or a line of a list of sources) that names nothing detect.py can read."""


@dataclass(frozen=True)
class Input:
    """One thing frames are read from. ``kind``: image, video, camera or stream. ``target``: what OpenCV opens
    (a path, a camera index or a URL). ``stem``: the output name without suffix, "/"-separated. ``label``: how
    records and messages name it (a URL without its password)."""

    kind: str
    target: str | int
    stem: str
    label: str

    @property
    def live(self) -> bool:
        """A camera or stream: frames come at the source's pace and only the newest one is worth detecting."""
        return self.kind in ("camera", "stream")

    @property
    def writes_video(self) -> bool:
        return self.kind != "image"


@dataclass
class SourceSet:
    inputs: list[Input]
    locations: list[Path]  # files and folders named (a glob's fixed folder, a list file); outputs stay clear of them


@dataclass
class Frame:
    source: Input
    pixels: np.ndarray  # BGR, uint8
    index: int | None = None  # frame number within a video or stream (dropped frames counted); None for an image
    fps: float = 0.0


def newest_checkpoint(runs: Path = Path("runs")) -> Path | None:
    """The most recently written ``best.pth`` under ``runs/*/*/`` or ``runs/*/``."""
    candidates = [*runs.glob(f"*/*/{BEST_CHECKPOINT}"), *runs.glob(f"*/{BEST_CHECKPOINT}")]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def camera_index(text: str) -> int | None:
    """The camera a source names by number (``0``, ``1`` ...), else None."""
    return int(text) if re.fullmatch(r"[0-9]+", text.strip(), re.ASCII) else None


def is_stream_url(text: str) -> bool:
    parts = urlsplit(text.strip())
    return parts.scheme.lower() in STREAM_SCHEMES and bool(parts.netloc)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("._") or "stream"


def stream_input(url: str) -> Input:
    """A stream, named in outputs by host, port and path, and in records without any password."""
    parts = urlsplit(url.strip())
    port = f"_{parts.port}" if parts.port else ""
    stem = _safe_name(f"{parts.hostname or ''}{port}_{parts.path}")
    label = parts.geturl()
    if parts.password is not None:
        label = parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}").geturl()
    return Input("stream", url.strip(), stem, label)


def camera_input(index: int) -> Input:
    return Input("camera", index, f"camera{index}", f"camera {index}")


def _file_input(path: Path, stem: str) -> Input:
    kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"
    return Input(kind, str(path), stem, str(path))


def _readable_files(files: Iterable[Path]) -> list[Path]:
    """The images and videos among ``files``; the others are skipped, counted and the first few named in one
    warning (a folder of a project's files would otherwise give a line each)."""
    known = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    files = list(files)
    others = [p for p in files if p.suffix.lower() not in known]
    if others:
        named = ", ".join(map(str, others[:SHOWN_OTHERS])) + (f" and {len(others) - SHOWN_OTHERS} more"
                                                             if len(others) > SHOWN_OTHERS else "")
        warnings.warn(f"skipping {len(others)} file(s) that are not images or videos ({', '.join(known)}): {named}",
                      InputWarning, stacklevel=3)
    return [p for p in files if p.suffix.lower() in known]


def _folder_files(folder: Path, recursive: bool) -> list[Path]:
    """The files in ``folder`` (with ``recursive`` its subfolders' too, but for hidden ones such as .git)."""
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file())
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1]))


def _glob_root(pattern: str) -> Path:
    """The folder a glob's matches lie under: its components before the first one with a wildcard."""
    fixed = list(itertools.takewhile(lambda part: not GLOB_MAGIC.search(part), Path(pattern).parts))
    return Path(*fixed) if fixed else Path(".")


def _list_prefix(folder: Path, base_dir: Path | None) -> str:
    """In a list (``base_dir`` given), a folder's or glob's outputs go under the folder's name, so two listed
    folders holding the same file names stay apart; alone, they go straight into the output folder."""
    return folder.resolve().name if base_dir is not None else ""


def _folder_inputs(root: Path, files: list[Path], prefix: str) -> list[Input]:
    """Inputs named by their path below ``root`` (under ``prefix``/ when given), the layout outputs mirror."""
    return [_file_input(p, str(Path(prefix, p.relative_to(root).with_suffix("")).as_posix()))
            for p in _readable_files(files)]


def _expand_path(text: str, recursive: bool, base_dir: Path | None) -> tuple[list[Input], Path | None]:
    """(inputs, their location) for a path or glob; relative ones are tried from the working directory, then
    from ``base_dir`` (a list's folder, Darknet's rule)."""
    if GLOB_MAGIC.search(text):
        pattern = os.path.expanduser(text)
        for attempt in (pattern, str(base_dir / pattern)) if base_dir and not Path(pattern).is_absolute() \
                else (pattern,):
            files = [p for p in sorted(map(Path, glob.glob(attempt, recursive=True))) if p.is_file()]
            if files:
                root = _glob_root(attempt)
                return _folder_inputs(root, files, _list_prefix(root, base_dir)), root
        raise SourceError(f"{text}: the pattern matches no files")
    path = resolve_path(text, base_dir) if base_dir is not None else Path(text).expanduser()
    if path.is_file():
        return [_file_input(path, path.stem)], path
    if path.is_dir():
        return _folder_inputs(path, _folder_files(path, recursive), _list_prefix(path, base_dir)), path
    raise SourceError(f"{text}: no such file or folder")


def _expand(text: str, recursive: bool, base_dir: Path | None) -> tuple[list[Input], Path | None]:
    """(inputs, location or None) of one source that is not a list."""
    index = camera_index(text)
    if index is not None and not Path(text).exists():
        return [camera_input(index)], None
    if is_stream_url(text):
        return [stream_input(text)], None
    inputs, location = _expand_path(text, recursive, base_dir)
    if not inputs:
        deeper = not recursive and location is not None and location.is_dir() and any(
            entry.is_dir() and not entry.name.startswith(".") for entry in location.iterdir())
        raise SourceError(f"{text}: no images or videos found" + ("; it has subfolders: --recursive looks in them"
                                                                  if deeper else ""))
    return inputs, location


def _read_list(path: Path, recursive: bool) -> tuple[list[Input], list[Path]]:
    """The inputs of every source a list file names (blank lines and ``#`` comments skipped); a bad line is an
    error naming the file and line."""
    inputs, locations = [], [path]
    for number, line in enumerate(read_text(path, "list of sources", SourceError).splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if Path(text).suffix.lower() in LIST_SUFFIXES:
            raise SourceError(f"{path}:{number}: {text}: a list of sources cannot name another list")
        try:
            found, location = _expand(text, recursive, path.parent)
        except SourceError as err:
            raise SourceError(f"{path}:{number}: {err}") from None
        inputs += found
        locations += [location] if location is not None else []
    if not inputs:
        raise SourceError(f"{path}: the list of sources names none (one path, glob, camera or URL a line)")
    return inputs, locations


def _without_repeats(inputs: list[Input]) -> list[Input]:
    """Each file, camera and stream once (the first time it is named), so no output is written twice."""
    seen, kept = set(), []
    for item in inputs:
        key = os.path.realpath(item.target) if item.kind in ("image", "video") else (item.kind, item.target)
        if key in seen:
            warnings.warn(f"{item.label} is named more than once; it is read once", InputWarning, stacklevel=3)
            continue
        seen.add(key)
        kept.append(item)
    return kept


class OutputNames:
    """Gives each input an output stem no other input of the run has: the first to want a stem gets it, later
    ones get ``stem_2``, ``stem_3`` ... Stems compare case-insensitively (as on macOS and Windows). Images write
    ``<stem>.jpg`` and ``labels/<stem>.txt``; videos, cameras and streams ``<stem>.mp4`` and
    ``labels/<stem>/<frame>.txt``, so a video also clashes with images directly inside a folder of its stem (then
    the later one's folder part is numbered)."""

    def __init__(self):
        self.images: set[str] = set()
        self.videos: set[str] = set()
        self.image_folders: set[str] = set()

    def _free(self, stem: str, video: bool) -> bool:
        key = stem.lower()
        if video:
            return key not in self.videos and key not in self.image_folders
        return key not in self.images and posixpath.dirname(key) not in self.videos

    def _candidate(self, wanted: str, n: int, video: bool) -> str:
        folder, name = posixpath.split(wanted)
        if not video and folder.lower() in self.videos:
            return f"{folder}_{n}/{name}"  # the clash is the folder: another name in it would clash as well
        return f"{wanted}_{n}"

    def claim(self, wanted: str, video: bool) -> str:
        stem, n = wanted, 1
        while not self._free(stem, video):
            n += 1
            stem = self._candidate(wanted, n, video)
        if video:
            self.videos.add(stem.lower())
        else:
            self.images.add(stem.lower())
            self.image_folders.add(posixpath.dirname(stem.lower()))
        return stem


def resolve_sources(spec: str, recursive: bool = False) -> SourceSet:
    """The inputs ``spec`` names, in order, each once, with distinct output stems, and where they lie."""
    if not spec.strip():
        raise SourceError("the source is empty: name a folder, image, video, glob, camera index, stream URL or list "
                          "file ('.' for the current folder)")
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        inputs, locations = _read_list(path, recursive)
    else:
        inputs, location = _expand(spec, recursive, None)
        locations = [location] if location is not None else []
    names = OutputNames()
    unique = [replace(item, stem=names.claim(item.stem, item.writes_video)) for item in _without_repeats(inputs)]
    return SourceSet(unique, locations)


def _read_video(source: Input, skipped: list[str]) -> Iterator[Frame]:
    """Every frame of a video file, camera or stream until it ends; the capture is released however the
    reading stops (the end, an error, or the consumer closing the generator)."""
    capture = cv2.VideoCapture(source.target)
    index = 0
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
        while capture.isOpened():
            ok, pixels = capture.read()
            if not ok:
                break
            yield Frame(source, pixels, index, fps)
            index += 1
    finally:
        capture.release()
    if index == 0:
        warnings.warn(f"skipping {source.label}: cannot open or read it as a {source.kind}", InputWarning,
                      stacklevel=2)
        skipped.append(source.label)


def read_frames(sources: Iterable[Input], skipped: list[str]) -> Iterator[Frame]:
    """Every image, and every frame of every video, camera and stream, in order. What cannot be read is
    warned about, appended to ``skipped`` and passed over."""
    for source in sources:
        if source.writes_video:
            yield from _read_video(source, skipped)
            continue
        pixels = cv2.imread(source.target, cv2.IMREAD_COLOR)  # applies EXIF rotation; grey, RGBA, 16-bit -> BGR8
        if pixels is None:
            warnings.warn(f"skipping unreadable image {source.label}", InputWarning, stacklevel=2)
            skipped.append(source.label)
            continue
        yield Frame(source, pixels)


def count_frames(sources: Iterable[Input]) -> int | None:
    """Images plus the frame counts videos declare (for progress; a video may hold fewer); None when a camera
    or stream is among them (no end known)."""
    total = 0
    for source in sources:
        if source.live:
            return None
        if source.kind == "video":
            capture = cv2.VideoCapture(source.target)
            total += max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            capture.release()
        else:
            total += 1
    return total


def batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    frames = iter(frames)
    while chunk := list(itertools.islice(frames, size)):
        yield chunk
