"""Darknet ``.cfg`` files as data: text -> :class:`Cfg` (raw sections) -> typed :class:`Block` per section.

The grammar is Darknet's: ``[section]`` headers, ``key=value`` lines, comment lines starting with ``#``
or ``;``, blank lines, and whitespace anywhere (Darknet strips every blank from a line before parsing it,
so ``anchors = 10,14,  23,27`` reads as ``10,14,23,27``). We also drop a trailing ``# comment`` after a
value, which Darknet would silently mis-read.

A :class:`Cfg` keeps the text it came from and the name of its source (a file, or a checkpoint that carries
its cfg), and every section and key keeps its line there, so errors point at the user's own file even
after the cfg was edited (see ``cfg_edit``). Values are converted once, by the schema of their section
(:class:`Key`), in Darknet's plain number syntax and within stated bounds.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from utils.darknet.registry import NET, canonical
from utils.errors import InputWarning, UserError
from utils.fileio import read_text


class CfgError(UserError, ValueError):
    """A cfg file that cannot be turned into a network."""


class CfgWarning(InputWarning):
    """Something in a cfg that is accepted but probably not what the user meant."""


@dataclass
class RawSection:
    """One ``[name]`` section as written: values are still strings. ``name`` is the registered name
    (aliases such as ``[conv]`` resolved)."""

    name: str
    line: int
    options: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (value, line)

    def value(self, key: str, default: str | None = None) -> str | None:
        return self.options[key][0] if key in self.options else default


@dataclass(frozen=True)
class Cfg:
    """A parsed cfg: ``sections[0]`` is ``[net]``, ``sections[1:]`` are the layers in Darknet's order."""

    source: str  # where it came from, as errors name it
    sections: tuple[RawSection, ...]
    text: str  # the text it was read from or rendered to

    @property
    def layers(self) -> tuple[RawSection, ...]:
        return self.sections[1:]

    @property
    def name(self) -> str:
        return Path(self.source.split(" ")[0]).name


def _strip_comment(text: str) -> str:
    for marker in ("#", ";"):
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    return text


def _add_option(source: str, sections: list[RawSection], lineno: int, line: str, raw: str) -> None:
    key, sep, value = _strip_comment(line).partition("=")
    if not sep or not key or not value:
        raise CfgError(f"{source}:{lineno}: expected 'key=value', got {raw.strip()!r}")
    if not sections:
        raise CfgError(f"{source}:{lineno}: option {key!r} appears before the first [section]")
    section = sections[-1]
    if key in section.options:
        raise CfgError(f"{source}:{lineno}: key {key!r} repeats line {section.options[key][1]} in the same "
                       f"[{section.name}]")
    section.options[key] = (value, lineno)


def parse_cfg(text: str, source: str = "<cfg text>") -> Cfg:
    """Split cfg text into sections; the first must be ``[net]``. ``source`` names it in errors."""
    sections: list[RawSection] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] != "[":
            _add_option(source, sections, lineno, line, raw)
        elif line.endswith("]") and len(line) >= 3:
            sections.append(RawSection(canonical(line[1:-1].lower()), lineno))
        else:
            raise CfgError(f"{source}:{lineno}: malformed section header {raw.strip()!r}")
    if not sections:
        raise CfgError(f"{source}: no sections found; a Darknet cfg starts with [net]")
    if sections[0].name != NET:
        raise CfgError(f"{source}:{sections[0].line}: the first section must be [net], got [{sections[0].name}]")
    return Cfg(source, tuple(sections), text)


def read_cfg(path: str | Path) -> Cfg:
    return parse_cfg(read_text(path, "cfg file", CfgError), str(path))


def as_cfg(cfg: str | Path | Cfg) -> Cfg:
    """A Cfg from a Cfg or a path; cfg text is refused, pointing to :func:`parse_cfg`."""
    if isinstance(cfg, Cfg):
        return cfg
    if isinstance(cfg, str) and "\n" in cfg:
        raise CfgError("cfg: this is cfg text, not a path; build a Cfg of it with parse_cfg(text, name)")
    if not isinstance(cfg, (str, os.PathLike)):
        raise CfgError(f"cfg: expected a .cfg path or a Cfg, got {type(cfg).__name__}")
    return read_cfg(cfg)


# ----------------------------------------------------------------------------------------------
# Typed options: Darknet's plain number syntax (what atoi/atof read in full), nothing Python-only
# such as ``1_6``, ``0x10`` or non-ASCII digits, and no inf or nan.

REQUIRED = object()
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def integer(text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise ValueError(text)
    return int(text)


def number(text: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise ValueError(text)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def word(text: str) -> str:
    return text


def _items(text: str) -> list[str]:
    """The comma-separated items of ``text``; an empty one is an error (Darknet would read it as 0)."""
    items = text.split(",")
    if "" in items:
        raise ValueError(f"an empty item in {text!r}")
    return items


def int_list(text: str) -> list[int]:
    return [integer(item) for item in _items(text)]


def float_list(text: str) -> list[float]:
    """Darknet counts float lists (anchors, scales) by another key (num, steps) and reads no further, so a
    trailing comma is harmless there: it is dropped."""
    return [number(item) for item in _items(text[:-1] if text.endswith(",") else text)]


_TYPE_NAMES = {integer: "an integer", number: "a finite number", word: "a word",
               int_list: "a comma-separated list of integers",
               float_list: "a comma-separated list of finite numbers"}


@dataclass(frozen=True)
class Key:
    """How one cfg key is typed: a converter, a default (or REQUIRED), allowed values or inclusive bounds
    (each element, for lists), and whether this repo acts on it. Keys Darknet knows but this repo does not
    implement are still checked, and reported when set to anything but their default."""

    convert: Callable[[str], Any]
    default: Any = REQUIRED
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    implemented: bool = True

    def check(self, key: str, value: Any, text: str) -> str | None:
        """What is wrong with a converted value, or None."""
        if self.choices is not None and value not in self.choices:
            return f"key {key!r} must be one of {', '.join(map(str, self.choices))}; got {text!r}"
        each = " (each value)" if isinstance(value, list) else ""
        for item in value if isinstance(value, list) else [value]:
            if self.low is not None and item < self.low:
                return f"{key} must be at least {self.low:g}{each}, got {text}"
            if self.high is not None and item > self.high:
                return f"{key} must be at most {self.high:g}{each}, got {text}"
        return None


@dataclass
class Block:
    """A typed section: what layer builders receive. ``block.error`` makes a located CfgError."""

    name: str
    index: int  # Darknet's layer index: 0 for the first section after [net]; -1 for [net] itself
    source: str
    line: int
    values: dict[str, Any]
    key_lines: dict[str, int]
    unknown: list[str] = field(default_factory=list)  # "key (line N)" for keys no schema knows
    unused: list[str] = field(default_factory=list)  # "key=value (line N)" for Darknet keys not implemented

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def given(self, key: str) -> bool:
        return key in self.key_lines

    def where(self, key: str | None = None) -> str:
        line = self.key_lines.get(key, self.line) if key else self.line
        return f"{self.source}:{line}: {self.label}"

    @property
    def label(self) -> str:
        return "[net]" if self.index < 0 else f"layer {self.index} [{self.name}]"

    def error(self, message: str, key: str | None = None) -> CfgError:
        return CfgError(f"{self.where(key)}: {message}")


def _convert(block: Block, key: str, spec: Key, text: str) -> Any:
    try:
        value = spec.convert(text)
    except ValueError:
        raise block.error(f"key {key!r} expects {_TYPE_NAMES.get(spec.convert, spec.convert.__name__)}, "
                          f"got {text!r}", key) from None
    problem = spec.check(key, value, text)
    if problem:
        raise block.error(problem, key)
    return value


def type_section(raw: RawSection, schema: Mapping[str, Key], source: str, index: int) -> Block:
    """Convert a raw section by its schema; keys the schema does not know are listed in ``block.unknown``."""
    block = Block(raw.name, index, source, raw.line, {}, {})
    for key, (text, line) in raw.options.items():
        spec = schema.get(key)
        if spec is None:
            block.unknown.append(f"{key} (line {line})")
            continue
        block.key_lines[key] = line
        block.values[key] = _convert(block, key, spec, text)
        if not spec.implemented and block.values[key] != spec.default:
            block.unused.append(f"{key}={text} (line {line})")
    for key, spec in schema.items():
        if key not in block.values:
            if spec.default is REQUIRED:
                raise block.error(f"missing required key {key!r}")
            block.values[key] = spec.default
    return block


def warn_unknown_keys(source: str, blocks: list[Block]) -> None:
    """One warning for the whole file, so a cfg full of training-only keys does not flood the log."""
    unknown = "; ".join(f"{b.label}: {', '.join(b.unknown)}" for b in blocks if b.unknown)
    unused = "; ".join(f"{b.label}: {', '.join(b.unused)}" for b in blocks if b.unused)
    parts = [f"keys this repo does not know were ignored (a typo?): {unknown}" if unknown else "",
             f"Darknet options this repo does not apply were ignored (train.py's flags set batch size, "
             f"augmentation and multi-scale): {unused}" if unused else ""]
    if unknown or unused:
        warnings.warn(f"{source}: " + "; and ".join(p for p in parts if p), CfgWarning, stacklevel=4)


def with_default(schema: Mapping[str, Key], key: str, default: Any) -> dict[str, Key]:
    """A copy of ``schema`` where ``key`` has another default (e.g. [triangle]'s base_width)."""
    return {**schema, key: replace(schema[key], default=default)}


# ----------------------------------------------------------------------------------------------
# [net]

SIZE_MULTIPLE = 32  # the networks halve their input five times: input sizes are multiples of 32
DEFAULT_IMG_SIZE = 416  # Darknet's yolov3 cfgs' input size: every command's default --img_size
MAX_IMG_SIZE = 8192  # an input side past this is a typo: a colour batch of one at 8192 square is 0.8 GB
POLICIES = ("constant", "steps", "poly", "cosine")  # what the training schedule runs (utils/training/optim.py)


def _darknet_only(convert: Callable, default: Any) -> Key:
    return Key(convert, default, implemented=False)


NET_SCHEMA: dict[str, Key] = {
    "width": Key(integer, low=1, high=MAX_IMG_SIZE),
    "height": Key(integer, low=1, high=MAX_IMG_SIZE),
    "channels": Key(integer, 3, low=1, high=64),
    "learning_rate": Key(number, 0.001, low=0, high=10),
    "momentum": Key(number, 0.9, low=0, high=0.999999),
    "decay": Key(number, 0.0001, low=0, high=1),
    "burn_in": Key(integer, 0, low=0),
    "power": Key(number, 4.0, low=0, high=100),
    "max_batches": Key(integer, 0, low=0),
    "policy": Key(word, "constant", POLICIES),
    "steps": Key(int_list, [], low=0),
    "scales": Key(float_list, [], low=0, high=1000),
    "adam": Key(integer, 0, (0, 1)),
    "hue": Key(number, 0.0, low=0, high=1),
    "saturation": Key(number, 1.0, low=0, high=100),
    "exposure": Key(number, 1.0, low=0, high=100),
    "flip": Key(integer, 1, (0, 1)),
    "mosaic": Key(integer, 0, (0, 1)),
    # Darknet's own training settings: train.py takes these from its flags, or does not implement them.
    **{key: _darknet_only(integer, 1) for key in ("batch", "subdivisions", "step", "time_steps")},
    **{key: _darknet_only(integer, 0) for key in (
        "letter_box", "mosaic_bound", "cutmix", "mixup", "blur", "gaussian_noise", "min_crop", "max_crop",
        "track", "sequential_subdivisions", "dynamic_minibatch", "optimized_memory", "try_fix_nan",
        "show_receptive_field", "contrastive", "unsupervised")},
    **{key: _darknet_only(number, 0.0) for key in ("angle", "label_smooth_eps", "ema_alpha", "adversarial_lr")},
    "learning_rate_min": _darknet_only(number, 0.00001),
    "gamma": _darknet_only(number, 1.0),
    "sgdr_cycle": _darknet_only(integer, 1000),
    "sgdr_mult": _darknet_only(integer, 2),
    "aspect": _darknet_only(number, 1.0),
    "jitter": _darknet_only(number, 0.2),
    "B1": _darknet_only(number, 0.9),
    "B2": _darknet_only(number, 0.999),
    "eps": _darknet_only(number, 1e-7),
    "max_chart_loss": _darknet_only(number, 20.0),
    "augment_speed": _darknet_only(integer, 2),
    "workspace_size_limit_MB": _darknet_only(integer, 1024),
    "loss_scale": _darknet_only(number, 1.0),
}
