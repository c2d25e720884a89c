"""Dataset configs: Darknet's ``.data`` files (and YOLOv5/v8 YAML, via :mod:`utils.data.yaml_config`), image lists.

A ``.data`` file names ``classes``, ``train``, ``valid``, ``names`` and optionally ``backup``; ``train`` and
``valid`` are text files with one image path per line, or (beyond Darknet) a folder (its image files,
sorted). Relative paths are tried from the working directory first (Darknet's rule) and then from the
folder of the file that names them, so a dataset folder can move.
"""
from __future__ import annotations

import difflib
import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from utils.data.names import read_class_names
from utils.errors import InputWarning, UserError
from utils.fileio import read_text


SINGLE_CLASS_NAME = "object"  # the one class of --single_cls, when the data has several
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


INTEGER = re.compile(r"[0-9]+", re.ASCII)
DATA_KEYS = ("classes", "train", "valid", "names")  # what this repo reads from a .data file
# what Darknet's detector and classifier read besides, accepted without a word
DARKNET_ONLY_KEYS = ("backup", "eval", "results", "map", "difficult", "labels", "top", "tree", "leaves", "test")


class DataWarning(InputWarning):
    """Something in a .data file that is accepted but probably not what the user meant."""


class DataError(UserError, ValueError):
    """A dataset description or label file that cannot be used."""


def resolve_path(text: str, base_dir: Path) -> Path:
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return base_dir / path


ImageSource = Path | tuple[Path, ...]  # an image list file, a folder of images, or several of these


@dataclass
class DataConfig:
    path: Path
    classes: int
    train: ImageSource
    valid: ImageSource
    names: list[str]
    test: ImageSource | None = None  # only YOLOv5-style YAML configs name one
    names_file: Path | None = None  # the .names file (YAML configs list their names inline)
    merged_from: int | None = None  # the label files' class count, when single_class() made them one class

    def single_class(self) -> DataConfig:
        """The data as one class (--single_cls): every box an object of it, named as the data's only class, else
        'object'; the label files' class ids are still checked against the data's own count."""
        name = self.names[0] if self.classes == 1 else SINGLE_CLASS_NAME
        return replace(self, classes=1, names=[name], merged_from=self.merged_from or self.classes)

    def scored_by(self, model_classes: int, single_class: bool) -> DataConfig:
        """This data as a model of ``model_classes`` classes is scored on it: merged into one class when
        ``single_class`` (--single_cls, or a model trained so), and refused when the class counts differ."""
        data = self.single_class() if single_class else self
        if data.classes != model_classes:
            merged = f" (its {self.classes} merged into one: --single_cls)" if single_class else ""
            hint = ("; a model trained with --single_cls is scored with --single_cls"
                    if model_classes == 1 and not single_class else "")
            raise DataError(f"{self.path}: {data.classes} classes{merged}, but the model predicts {model_classes}"
                            f"{hint}")
        return data

    def sources(self) -> list[Path]:
        """Every list file and folder the images come from (train, valid and a YAML config's test)."""
        return [s for part in (self.train, self.valid, self.test) if part is not None
                for s in (part if isinstance(part, tuple) else (part,))]

    def listed_files(self) -> list[Path]:
        """The files the config names: its .names file and its list files."""
        return [*([self.names_file] if self.names_file else []), *(s for s in self.sources() if s.is_file())]

    def files(self) -> list[Path]:
        """The files this config reads (itself, its names, its list files): what no output may replace."""
        return [self.path, *self.listed_files()]


def _warn_unknown_keys(path: Path, values: dict[str, tuple[str, int]]) -> None:
    for key, (_, lineno) in values.items():
        if key not in DATA_KEYS + DARKNET_ONLY_KEYS:
            close = difflib.get_close_matches(key, DATA_KEYS, 1)
            hint = f"; did you mean {close[0]}=?" if close else f"; the keys read are {', '.join(DATA_KEYS)}"
            warnings.warn(f"{path}:{lineno}: unknown key {key}= is ignored{hint}", DataWarning, stacklevel=3)


def resolve_named_path(text: str, config: Path, entry: str) -> Path:
    """A path that ``entry`` (as "file:line: key=value", for messages) of the ``config`` file names, by Darknet's rule
    (the working directory first, then the config's folder); a warning when both hold a different file of that
    name, as a run from another folder may."""
    chosen = resolve_path(text, config.parent)
    beside = config.parent / Path(text).expanduser()
    if chosen != beside and beside.exists() and not os.path.samefile(chosen, beside):
        warnings.warn(f"{entry} is read from the working directory ({chosen.absolute()}), not from beside the "
                      f"{config.suffix or 'config'} file ({beside}): Darknet's rule tries the working directory first",
                      DataWarning, stacklevel=4)
    return chosen


def _entry_path(data_path: Path, values: dict[str, tuple[str, int]], key: str) -> Path:
    """The file a .data entry names (:func:`resolve_named_path`)."""
    text, lineno = values[key]
    if not text:  # Path("") is the working directory, which would be read as a folder of images
        raise DataError(f"{data_path}:{lineno}: {key}= is empty; name a file or folder")
    return resolve_named_path(text, data_path, f"{data_path}:{lineno}: {key}={text}")


def parse_data_config(path: str | Path) -> DataConfig:
    """A Darknet ``.data`` file, or a YOLOv5/v8-style ``.yaml``/``.yml`` dataset config."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        from utils.data.yaml_config import parse_yaml_config  # imported here: that module builds on this one
        return parse_yaml_config(path)
    lines = read_text(path, "data config", DataError).splitlines()
    values: dict[str, tuple[str, int]] = {}
    for lineno, raw in enumerate(lines, 1):
        # Darknet's comments are whole lines starting with # or ;; a # after a space ends a line too, but one
        # inside a value (train=set#1/train.txt) is part of it
        line = re.split(r"\s#", raw, maxsplit=1)[0].strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DataError(f"{path}:{lineno}: expected 'key=value', got {raw.strip()!r}")
        if key.strip() in values:
            raise DataError(f"{path}:{lineno}: {key.strip()}= is given again (first on line "
                            f"{values[key.strip()][1]}); keep one")
        values[key.strip()] = (value.strip(), lineno)
    _warn_unknown_keys(path, values)
    for key in ("classes", "train", "valid", "names"):
        if key not in values:
            typo = difflib.get_close_matches(key, [k for k in values if k not in DATA_KEYS], 1)
            seen = f"; {typo[0]}= on line {values[typo[0]][1]} looks like a typo of it" if typo else ""
            raise DataError(f"{path}: missing '{key}=' (a .data file needs classes, train, valid and names){seen}")
    text, lineno = values["classes"]
    if not INTEGER.fullmatch(text) or int(text) < 1:
        raise DataError(f"{path}:{lineno}: classes must be a positive integer, got {text!r}")
    names_path = _entry_path(path, values, "names")
    try:
        names = read_class_names(names_path, DataError)
    except DataError as err:
        raise DataError(f"{path}:{values['names'][1]}: names={values['names'][0]}: {err}") from None
    if len(names) != int(text):
        raise DataError(f"{path}: classes={text} but {names_path} lists {len(names)} names")
    return DataConfig(path, int(text), _entry_path(path, values, "train"), _entry_path(path, values, "valid"), names,
                      names_file=names_path)


def describe_source(source: ImageSource) -> str:
    """An ImageSource as a log or an error names it: the path, or the paths joined by ' + '."""
    return " + ".join(map(str, source)) if isinstance(source, tuple) else str(source)


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (any depth), sorted by path, as YOLOv5 reads a folder source."""
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(f"{folder}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def read_image_list(source: ImageSource) -> list[Path]:
    """The images of a list file (one path a line), of a folder, or of several such sources in order."""
    if isinstance(source, tuple):
        return [image for part in source for image in read_image_list(part)]
    if source.is_dir():
        return image_files(source)
    lines = read_text(source, "image list", DataError).splitlines()
    images = [resolve_path(line.strip(), source.parent) for line in lines if line.strip()]
    if not images:
        raise DataError(f"{source}: the image list is empty")
    return images
