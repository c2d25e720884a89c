"""Reading Darknet ``.cfg`` files into typed sections.

The grammar is Darknet's: ``[section]`` headers, ``key=value`` lines, comment lines starting with
``#`` or ``;``, blank lines, and whitespace anywhere (Darknet strips every blank from a line before
parsing it, so ``anchors = 10,14,  23,27`` reads as ``10,14,23,27``). We also drop a trailing
``# comment`` after a value, which Darknet would silently mis-read.

Every value is converted once, by the schema of its section (see :class:`Key`); errors carry the
file, the line and the layer index so a user can go straight to the offending line.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from utils.errors import UserError


class CfgError(UserError, ValueError):
    """A cfg file that cannot be turned into a network."""


class CfgWarning(UserWarning):
    """Something in a cfg that is accepted but probably not what the user meant."""


SECTION_ALIASES = {
    "conv": "convolutional",
    "network": "net",
    "max": "maxpool",
    "avg": "avgpool",
}


@dataclass
class RawSection:
    """One ``[name]`` section as written: values are still strings."""

    name: str
    line: int
    options: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (value, line)


def _strip_comment(text: str) -> str:
    for marker in ("#", ";"):
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    return text


def read_cfg(path: str | Path) -> list[RawSection]:
    """Split a cfg file into sections; the first must be ``[net]``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise CfgError(f"{path}: cannot read cfg file: {err.strerror}") from err
    sections: list[RawSection] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"{path}:{lineno}: malformed section header {raw.strip()!r}")
            name = line[1:-1].lower()
            sections.append(RawSection(SECTION_ALIASES.get(name, name), lineno))
            continue
        line = _strip_comment(line)
        key, sep, value = line.partition("=")
        if not sep or not key or not value:
            raise CfgError(f"{path}:{lineno}: expected 'key=value', got {raw.strip()!r}")
        if not sections:
            raise CfgError(f"{path}:{lineno}: option {key!r} appears before the first [section]")
        section = sections[-1]
        if key in section.options:
            first = section.options[key][1]
            raise CfgError(f"{path}:{lineno}: key {key!r} repeats line {first} in the same [{section.name}]")
        section.options[key] = (value, lineno)
    if not sections:
        raise CfgError(f"{path}: no sections found; a Darknet cfg starts with [net]")
    if sections[0].name != "net":
        raise CfgError(f"{path}:{sections[0].line}: the first section must be [net], got [{sections[0].name}]")
    return sections


# ----------------------------------------------------------------------------------------------
# Typed options


REQUIRED = object()


def int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item]


def float_list(text: str) -> list[float]:
    return [float(item) for item in text.split(",") if item]


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a word",
               int_list: "a comma-separated list of integers",
               float_list: "a comma-separated list of numbers"}


@dataclass(frozen=True)
class Key:
    """How one cfg key is typed: a converter, a default (or REQUIRED) and optional allowed values."""

    convert: Callable[[str], Any]
    default: Any = REQUIRED
    choices: tuple | None = None


@dataclass
class Block:
    """A typed section: what layer builders receive. ``block.error`` makes a located CfgError."""

    name: str
    index: int  # Darknet's layer index: 0 for the first section after [net]; -1 for [net] itself
    path: Path
    line: int
    values: dict[str, Any]
    key_lines: dict[str, int]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def given(self, key: str) -> bool:
        return key in self.key_lines

    def where(self, key: str | None = None) -> str:
        line = self.key_lines.get(key, self.line) if key else self.line
        layer = "[net]" if self.index < 0 else f"layer {self.index} [{self.name}]"
        return f"{self.path}:{line}: {layer}"

    def error(self, message: str, key: str | None = None) -> CfgError:
        return CfgError(f"{self.where(key)}: {message}")


def type_section(raw: RawSection, schema: Mapping[str, Key], path: Path, index: int) -> tuple[Block, list[str]]:
    """Convert a raw section by its schema. Returns the block and the keys the schema does not know."""
    block = Block(raw.name, index, path, raw.line, {}, {})
    unknown = []
    for key, (text, line) in raw.options.items():
        spec = schema.get(key)
        if spec is None:
            unknown.append(f"{key} (line {line})")
            continue
        block.key_lines[key] = line
        try:
            value = spec.convert(text)
        except ValueError:
            raise block.error(f"key {key!r} expects {_TYPE_NAMES.get(spec.convert, spec.convert.__name__)}, "
                              f"got {text!r}", key) from None
        if spec.choices is not None and value not in spec.choices:
            raise block.error(f"key {key!r} must be one of {', '.join(map(str, spec.choices))}; got {text!r}", key)
        block.values[key] = value
    for key, spec in schema.items():
        if key in block.values:
            continue
        if spec.default is REQUIRED:
            raise block.error(f"missing required key {key!r}")
        block.values[key] = spec.default
    return block, unknown


def warn_unknown_keys(path: Path, unknown: list[tuple[str, list[str]]]) -> None:
    """One warning for the whole file, so a cfg full of training-only keys does not flood the log."""
    if not unknown:
        return
    listed = "; ".join(f"{where}: {', '.join(keys)}" for where, keys in unknown)
    warnings.warn(f"{path}: keys this repo does not use were ignored: {listed}", CfgWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------
# [net]

NET_SCHEMA: dict[str, Key] = {
    "width": Key(int),
    "height": Key(int),
    "channels": Key(int, 3),
    "batch": Key(int, 1),
    "subdivisions": Key(int, 1),
    "learning_rate": Key(float, 0.001),
    "learning_rate_min": Key(float, 0.00001),
    "momentum": Key(float, 0.9),
    "decay": Key(float, 0.0001),
    "burn_in": Key(int, 0),
    "power": Key(float, 4.0),
    "max_batches": Key(int, 0),
    "policy": Key(str, "constant", ("constant", "step", "steps", "exp", "poly", "sig", "random", "sgdr")),
    "step": Key(int, 1),
    "steps": Key(int_list, []),
    "scales": Key(float_list, []),
    "gamma": Key(float, 1.0),
    "sgdr_cycle": Key(int, 1000),
    "sgdr_mult": Key(int, 2),
    "angle": Key(float, 0.0),
    "saturation": Key(float, 1.0),
    "exposure": Key(float, 1.0),
    "hue": Key(float, 0.0),
    "aspect": Key(float, 1.0),
    "jitter": Key(float, 0.2),
    "letter_box": Key(int, 0),
    "flip": Key(int, 1),
    "mosaic": Key(int, 0),
    "mosaic_bound": Key(int, 0),
    "cutmix": Key(int, 0),
    "mixup": Key(int, 0),
    "blur": Key(int, 0),
    "gaussian_noise": Key(int, 0),
    "label_smooth_eps": Key(float, 0.0),
    "adam": Key(int, 0),
    "B1": Key(float, 0.9),
    "B2": Key(float, 0.999),
    "eps": Key(float, 1e-7),
    "ema_alpha": Key(float, 0.0),
    "max_chart_loss": Key(float, 20.0),
    "min_crop": Key(int, 0),
    "max_crop": Key(int, 0),
    "time_steps": Key(int, 1),
    "track": Key(int, 0),
    "augment_speed": Key(int, 2),
    "sequential_subdivisions": Key(int, 0),
    "dynamic_minibatch": Key(int, 0),
    "optimized_memory": Key(int, 0),
    "workspace_size_limit_MB": Key(int, 1024),
    "adversarial_lr": Key(float, 0.0),
    "loss_scale": Key(float, 1.0),
    "try_fix_nan": Key(int, 0),
    "show_receptive_field": Key(int, 0),
    "contrastive": Key(int, 0),
    "unsupervised": Key(int, 0),
}


def with_classes(path: str | Path, num_classes: int) -> str:
    """The cfg's text with every [yolo] set to ``num_classes`` and the conv before each one resized to
    ``anchors * (num_classes + 5)`` filters; everything else, comments included, is kept."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    sections = read_cfg(path)
    replace: dict[int, str] = {}
    insert_after: dict[int, list[str]] = {}

    def set_key(section: RawSection, key: str, value: int) -> None:
        if key in section.options:
            replace[section.options[key][1]] = f"{key}={value}"
        else:
            insert_after.setdefault(section.line, []).append(f"{key}={value}")

    for index, section in enumerate(sections):
        if section.name != "yolo":
            continue
        mask_text = section.options.get("mask", (None, 0))[0]
        num = int(section.options.get("num", ("1", 0))[0])
        anchors = len(int_list(mask_text)) if mask_text else num
        before = sections[index - 1]
        if before.name != "convolutional":
            raise CfgError(f"{path}:{section.line}: the layer before this [yolo] is [{before.name}], "
                           f"not a [convolutional] whose filters could be resized")
        set_key(section, "classes", num_classes)
        set_key(before, "filters", anchors * (num_classes + 5))
    out = []
    for lineno, line in enumerate(lines, 1):
        out.append(replace.get(lineno, line))
        out.extend(insert_after.get(lineno, []))
    return "\n".join(out) + "\n"
