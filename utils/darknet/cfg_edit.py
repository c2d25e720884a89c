"""Editing cfgs as data: the one place that changes values, renders sections and renumbers references.

- :func:`edited` sets values in place: the new text is the old one with only the edited lines changed
  (a key that was absent goes right after its section header), so comments and layout survive, and the
  sections keep the user's own file and line numbers for errors.
- :func:`rebuilt` makes a cfg from new sections (pruning, plain-Darknet expansion), rendered plainly.
- :func:`renumbered` rewrites a section's layer references (route ``layers``, shortcut ``from``, ...: each
  layer type declares its ``reference_key``) after layers were inserted or removed, keeping relative
  references relative.
- :func:`with_classes` adapts the class count (each layer type says what that changes; see ``class_edits``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable, Iterator, Mapping

from utils.darknet.cfg import Block, Cfg, RawSection, int_list, type_section
from utils.darknet.registry import layer_type

Edits = Mapping[tuple[int, str], Any]  # (section index, 0 being [net]; key) -> new value


def format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def edited(cfg: Cfg, edits: Edits) -> Cfg:
    """``cfg`` with the given values set; every other byte of its text is kept."""
    sections = [replace(s, options=dict(s.options)) for s in cfg.sections]
    replace_line: dict[int, str] = {}
    insert_after: dict[int, list[str]] = {}
    for (index, key), value in edits.items():
        section, text = sections[index], format_value(value)
        if key in section.options:
            line = section.options[key][1]
            replace_line[line] = f"{key}={text}"
        else:
            line = section.line
            insert_after.setdefault(line, []).append(f"{key}={text}")
        section.options[key] = ("".join(text.split()), line)  # as parsing stores it: Darknet drops every blank
    out = []
    for lineno, line in enumerate(cfg.text.splitlines(), 1):
        out.append(replace_line.get(lineno, line))
        out.extend(insert_after.get(lineno, []))
    newline = "\r\n" if "\r\n" in cfg.text else "\n"
    return Cfg(cfg.source, tuple(sections), newline.join(out) + newline)


def render(sections: Iterable[RawSection], comment: str = "") -> str:
    lines = [f"# {line}" for line in comment.splitlines()] + ([""] if comment else [])
    for section in sections:
        lines += [f"[{section.name}]", *(f"{k}={v}" for k, (v, _) in section.options.items()), ""]
    return "\n".join(lines)


def rebuilt(cfg: Cfg, sections: Iterable[RawSection], comment: str) -> Cfg:
    """A cfg of new sections, rendered with a leading comment; errors still name ``cfg``'s source."""
    sections = tuple(sections)
    return Cfg(cfg.source, sections, render(sections, comment))


def with_options(section: RawSection, changes: Mapping[str, Any]) -> RawSection:
    """A copy of ``section`` with options set (value None removes the key)."""
    options = dict(section.options)
    for key, value in changes.items():
        if value is None:
            options.pop(key, None)
        else:
            options[key] = (format_value(value), options.get(key, ("", section.line))[1])
    return replace(section, options=options)


def typed_sections(cfg: Cfg, kind: type) -> Iterator[tuple[int, Block]]:
    """(layer index, typed section) for each layer of type ``kind``, in cfg order."""
    for index, section in enumerate(cfg.layers):
        if layer_type(section.name) is kind:
            yield index, type_section(section, kind.cfg_keys, cfg.source, index)


def renumbered(section: RawSection, old_index: int, new_index: int, moved: Callable[[int], int]) -> RawSection:
    """``section``, now at ``new_index``, with each reference to old layer j pointing at ``moved(j)``."""
    kind = layer_type(section.name)
    key = kind.reference_key if kind is not None else None
    if key is None or key not in section.options:
        return section
    written = int_list(section.options[key][0])
    targets = [moved(old_index + ref if ref < 0 else ref) for ref in written]
    return with_options(section, {key: [t - new_index if ref < 0 else t for t, ref in zip(targets, written)]})


def with_classes(cfg: Cfg, num_classes: int) -> Cfg:
    """``cfg`` adapted to ``num_classes``: each layer type declares its edits (a [yolo] sets ``classes`` and
    resizes the conv before it to ``anchors * (num_classes + 5)`` filters); everything else is kept."""
    edits: dict[tuple[int, str], Any] = {}
    for index, section in enumerate(cfg.layers):
        kind = layer_type(section.name)
        if kind is not None:
            edits.update(kind.class_edits(cfg, index, num_classes))
    return edited(cfg, edits)
