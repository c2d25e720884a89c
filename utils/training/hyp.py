"""Training hyperparameters as a file (``--hyp FILE``, what ``--evolve`` writes) and where each one acts.

The file is plain text, one ``key = value`` line per hyperparameter, ``#`` starting a comment; any subset of
the keys below may be given, each at most once. Keys left out keep their usual source: the cfg's ``[net]`` and
``[yolo]`` sections, or the augmentation defaults.

- ``[net]`` keys (``learning_rate``, ``momentum``, ``decay``, ``hue``, ``saturation``, ``exposure``) and
  ``[yolo]`` keys (``obj_normalizer``, ``cls_normalizer``, ``iou_normalizer``, set in every [yolo]) are written
  into the run's cfg (``model.cfg``), so the checkpoint carries them and a resumed run trains with them;
  train.py's flags (``--lr``, ``--momentum``, ``--weight_decay``) still override the ``[net]`` values.
  ``iou_normalizer`` acts only in a [yolo] whose ``iou_loss`` is not ``mse``.
- ``scale``, ``translate`` (random zoom in [1 - scale, 1 + scale], shift up to translate of the input) and
  ``mosaic`` (the probability of a 4-image mosaic) have no cfg key: the run's options carry them;
  ``--mosaic``/``--no-mosaic`` (probability 0.5 or 0) win over the file's ``mosaic``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from utils.darknet.cfg import NET_SCHEMA, Cfg, Key, type_section
from utils.darknet.cfg_edit import edited, typed_sections
from utils.darknet.layers import YOLOLayer
from utils.darknet.layers.yolo import YoloLossOptions
from utils.data.augment import MOSAIC_PROBABILITY, Augment
from utils.errors import UserError
from utils.fileio import read_text


class HypError(UserError, ValueError):
    """A hyperparameter file that cannot be used."""


@dataclass(frozen=True)
class HypKey:
    section: str  # "net", "yolo" or "augment": where the value acts
    low: float  # the valid range, [low, high]
    high: float


def _cfg_keys(section: str, schema: Mapping[str, Key], names: tuple[str, ...]) -> dict[str, HypKey]:
    """Keys written into the cfg take the cfg's own bounds, so whatever a cfg holds (what --evolve starts from)
    a hyperparameter file may hold too."""
    return {name: HypKey(section, schema[name].low, schema[name].high) for name in names}


HYP_KEYS: dict[str, HypKey] = {
    **_cfg_keys("net", NET_SCHEMA, ("learning_rate", "momentum", "decay", "hue", "saturation", "exposure")),
    "scale": HypKey("augment", 0.0, 0.9),
    "translate": HypKey("augment", 0.0, 0.9),
    "mosaic": HypKey("augment", 0.0, 1.0),
    **_cfg_keys("yolo", YOLOLayer.cfg_keys, ("obj_normalizer", "cls_normalizer", "iou_normalizer")),
}


@dataclass(frozen=True)
class HypFile:
    """A --hyp file as read: where it is (what no output may replace) and its values."""

    path: Path
    values: dict[str, float]


def parse_hyp_text(text: str, source: str) -> dict[str, float]:
    """The ``key = value`` lines of a hyperparameter file; an unknown key, a repeated one, a value that is not
    a finite number or lies outside its range is a :class:`HypError` naming ``source:line``."""
    values: dict[str, float] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#")[0].strip()
        if not line:
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        where = f"{source}:{lineno}"
        if not sep:
            raise HypError(f"{where}: expected 'key = value', got {raw.strip()!r}")
        if key not in HYP_KEYS:
            raise HypError(f"{where}: unknown hyperparameter {key!r}; known: {', '.join(HYP_KEYS)}")
        if key in values:
            raise HypError(f"{where}: {key} is given twice")
        values[key] = _checked_value(key, value, where)
    return values


def _checked_value(key: str, text: str, where: str) -> float:
    spec = HYP_KEYS[key]
    try:
        value = float(text)
    except ValueError:
        raise HypError(f"{where}: {key} = {text!r} is not a number") from None
    if not math.isfinite(value) or not spec.low <= value <= spec.high:
        raise HypError(f"{where}: {key} = {text} is outside its range [{spec.low:g}, {spec.high:g}]")
    return value


def read_hyp_file(path: str | Path) -> dict[str, float]:
    return parse_hyp_text(read_text(path, "hyperparameter file", HypError), str(path))


def format_hyp(values: Mapping[str, float], header: str = "") -> str:
    """The file text: ``header`` as comment lines, then one ``key = value`` line per key in HYP_KEYS order."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"{key} = {values[key]:.6g}" for key in HYP_KEYS if key in values]
    return "\n".join(lines) + "\n"


def with_hyp(cfg: Cfg, values: Mapping[str, float]) -> Cfg:
    """``cfg`` with the [net] and [yolo] hyperparameters among ``values`` written in (every other line kept)."""
    edits: dict[tuple[int, str], float] = {}
    for key, value in values.items():
        if HYP_KEYS[key].section == "net":
            edits[(0, key)] = value
        elif HYP_KEYS[key].section == "yolo":
            edits.update({(index + 1, key): value for index, _ in typed_sections(cfg, YOLOLayer)})
    return edited(cfg, edits) if edits else cfg


def augment_values(values: Mapping[str, float] | None) -> dict[str, float]:
    """The augmentation hyperparameters among ``values`` (``scale``, ``translate``, ``mosaic``)."""
    return {key: value for key, value in (values or {}).items() if HYP_KEYS[key].section == "augment"}


def cfg_hyperparameters(cfg: Cfg, mosaic_flag: bool | None = None) -> dict[str, float]:
    """Every hyperparameter's value as a run of ``cfg`` would train: its [net] values, its first [yolo]'s loss
    normalisers, the augmentation defaults, and mosaic from --mosaic/--no-mosaic or else [net] mosaic; what
    ``--evolve`` starts from."""
    net = type_section(cfg.sections[0], NET_SCHEMA, cfg.source, -1)
    values = {key: float(net[key]) for key, spec in HYP_KEYS.items() if spec.section == "net"}
    values.update(scale=Augment().scale, translate=Augment().translate)  # no cfg key: the augmentation's own
    loss = _first_yolo_loss(cfg)
    values.update({key: float(getattr(loss, key)) for key, spec in HYP_KEYS.items() if spec.section == "yolo"})
    mosaic = bool(net["mosaic"]) if mosaic_flag is None else mosaic_flag
    values["mosaic"] = MOSAIC_PROBABILITY if mosaic else 0.0
    return values


def _first_yolo_loss(cfg: Cfg) -> YoloLossOptions:
    first = next(typed_sections(cfg, YOLOLayer), None)
    if first is None:
        raise HypError(f"{cfg.source}: the cfg has no [yolo] layer, so it has no loss hyperparameters")
    return YoloLossOptions.from_block(first[1])
