"""YOLOv5/v8-style dataset YAML files, read into the same :class:`DataConfig` a Darknet ``.data`` gives.

    path: ../datasets/coco128    # dataset root (optional; default: the YAML's folder)
    train: images/train2017      # a folder of images, an image list file, or a list of these
    val: images/val2017
    test:                        # optional
    nc: 80                       # optional when names are given
    names: ['person', 'bicycle'] # a list (inline or block), or a block mapping {index: name}

A relative ``path`` is found as a ``.data`` file's entries are: in the working directory first, then beside
the YAML (with a warning when both hold one). Relative sources are joined to ``path``; like Ultralytics, a
source written ``../x`` that does not exist there is also tried as ``x`` (Roboflow exports write
``../train/images`` beside their YAML). A folder's image files are read sorted, at any depth, and each
image finds its labels by Darknet's rule (the last ``images/`` folder becomes ``labels/``, the extension
``.txt``), which is YOLOv5's rule too. Keys this repo does not use (``download``, ...) are ignored.

PyYAML is not a dependency, so this module reads the subset of YAML these files use, and names the file
and line of anything outside it: ``key: value`` lines at the top level; values that are plain or quoted
scalars, inline lists ``[a, 'b']`` (which may span lines), block lists (``- item``), one-level block
mappings (``0: person``) and block scalars (``|``, ``>``, for keys such as ``download``); ``#`` comments.
Not read: anchors, aliases, tags, inline mappings ``{...}``, deeper nesting, several documents.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from utils.data.config import INTEGER, DataConfig, DataError, DataWarning, ImageSource, resolve_named_path
from utils.data.names import SAME_NAME
from utils.fileio import read_text

# a key (double-quoted, single-quoted, or plain: not starting with an indicator, without ':' or '#'), then ': '
KEY = re.compile(r"""(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"\[\]{},:&*!|>-][^:#]*?)"""
                 r"""\s*:(?:\s+|$)(?P<rest>.*)""")
BLOCK_SCALAR = re.compile(r"[|>][+-]?[0-9]?")
NULLS = ("", "~", "null", "Null", "NULL")
ESCAPES = {"\\": "\\", '"': '"', "/": "/", "n": "\n", "t": "\t", "r": "\r", "0": "\0", " ": " "}
UNSUPPORTED_START = {"&": "anchors (&)", "*": "aliases (*)", "!": "tags (!)", "{": "inline mappings ({...})",
                     "[": "lists inside a list or a mapping",
                     "?": "complex keys (?)", "@": "reserved '@'", "`": "reserved '`'", "%": "directives (%)"}


class YamlError(DataError):
    """A dataset YAML outside the subset this reader takes, or one that does not describe a dataset."""


@dataclass
class Value:
    """A parsed value: a string, None, a list of Values or a dict of Values; ``line`` where it starts."""

    data: object
    line: int


@dataclass
class _Line:
    number: int
    indent: int
    text: str  # without indentation and comment


def _strip_comment(text: str) -> str:
    """``text`` up to a ``#`` that starts a comment: outside quotes, at the start or after a blank."""
    quote = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote == '"' and char == "\\":
            i += 2
            continue
        if quote is None and char == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
        if quote == char:
            quote = None
        elif quote is None and char in "'\"" and (i == 0 or text[i - 1] in " \t[,:"):
            quote = char  # a quote opens a value only where a value starts: "men's" is plain text
        i += 1
    return text.rstrip()


def _lines(path: Path) -> list[_Line]:
    lines = []
    for number, raw in enumerate(read_text(path, "dataset YAML", YamlError).splitlines(), 1):
        body = raw.lstrip(" ")
        if body.startswith("\t"):
            raise YamlError(f"{path}:{number}: a tab indents this line; YAML indents with spaces only")
        lines.append(_Line(number, len(raw) - len(body), _strip_comment(body)))
    return lines


def _unquote(path: Path, line: int, text: str) -> str | None:
    """The string a scalar stands for (None for null); quoted scalars may not be followed by anything."""
    if not text or text[0] not in "'\"":
        if text[:1] in UNSUPPORTED_START:
            raise YamlError(f"{path}:{line}: {UNSUPPORTED_START[text[0]]} are outside the YAML subset this repo "
                            f"reads; write plain values")
        return None if text in NULLS else text
    quote = text[0]
    body = re.match(r'"((?:[^"\\]|\\.)*)"' if quote == '"' else r"'((?:[^']|'')*)'", text)
    if body is None or text[body.end():].strip():
        raise YamlError(f"{path}:{line}: cannot read the quoted value {text!r} (an unclosed quote, or text after it)")
    if quote == "'":
        return body.group(1).replace("''", "'")
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", lambda m: _escape(path, line, m.group(1)), body.group(1))


def _escape(path: Path, line: int, code: str) -> str:
    if code[0] == "u" and len(code) == 5:
        return chr(int(code[1:], 16))
    if code in ESCAPES:
        return ESCAPES[code]
    raise YamlError(f"{path}:{line}: unknown escape '\\{code}' in a double-quoted value")


def _flow_items(path: Path, line: int, text: str) -> list[Value]:
    """The items of an inline list ``[a, 'b, c', d]`` (``text`` holds the whole list, brackets included)."""
    items, current, quote, i = [], "", None, 1
    while i < len(text):
        char = text[i]
        if quote:
            current += char
            if char == "\\" and quote == '"' and i + 1 < len(text):
                current += text[i + 1]
                i += 1
            elif char == quote:
                quote = None
        elif char in "'\"" and not current.strip():
            quote, current = char, current + char
        elif char in ",]":
            if current.strip() or char == ",":
                items.append(Value(_unquote(path, line, current.strip()), line))
            current = ""
            if char == "]":
                if text[i + 1:].strip():
                    raise YamlError(f"{path}:{line}: text after the closing ']' of an inline list")
                return items
        elif char in "[{":
            raise YamlError(f"{path}:{line}: nested lists or mappings inside an inline list are outside the YAML "
                            f"subset this repo reads")
        else:
            current += char
        i += 1
    raise YamlError(f"{path}:{line}: the inline list opened here has no closing ']'")


def _flow_text(lines: list[_Line], start: int, first: str) -> tuple[str, int]:
    """An inline list that may continue on later lines: its whole text and the index after its last line."""
    text, index = first, start + 1
    while not _closed(text) and index < len(lines):
        text += " " + lines[index].text
        index += 1
    return text, index


def _closed(text: str) -> bool:
    without_quotes = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\']|\'\')*\'', "", text)
    return "]" in without_quotes


def _block(path: Path, lines: list[_Line], start: int, parent: _Line) -> tuple[Value, int]:
    """The indented block under ``parent`` (a ``key:`` with nothing after it): a list, a mapping or null."""
    index = start
    while index < len(lines) and not lines[index].text:
        index += 1
    if index == len(lines) or lines[index].indent <= parent.indent:
        return Value(None, parent.number), start
    indent, first = lines[index].indent, lines[index]
    is_list = first.text == "-" or first.text.startswith("- ")
    items: list[Value] | dict[str, Value] = [] if is_list else {}
    while index < len(lines) and (not lines[index].text or lines[index].indent >= indent):
        line = lines[index]
        index += 1
        if not line.text:
            continue
        if line.indent != indent:
            raise YamlError(f"{path}:{line.number}: deeper nesting is outside the YAML subset this repo reads")
        if is_list:
            if not (line.text == "-" or line.text.startswith("- ")):
                raise YamlError(f"{path}:{line.number}: expected a list item '- value' like line {first.number}")
            items.append(Value(_unquote(path, line.number, line.text[1:].strip()), line.number))
        else:
            key, rest = _key(path, line)
            _add(path, items, key, Value(_unquote(path, line.number, rest), line.number))
    return Value(items, first.number), index


def _key(path: Path, line: _Line) -> tuple[str, str]:
    match = KEY.fullmatch(line.text)
    if match is None:
        raise YamlError(f"{path}:{line.number}: expected 'key: value', got {line.text!r}")
    key = match.group("key")
    return (_unquote(path, line.number, key) if key[0] in "'\"" else key), match.group("rest").strip()


def _add(path: Path, mapping: dict[str, Value], key: str, value: Value) -> None:
    if key in mapping:
        raise YamlError(f"{path}:{value.line}: key {key!r} repeats line {mapping[key].line}")
    mapping[key] = value


def _block_scalar(lines: list[_Line], start: int, parent: _Line, folded: bool) -> tuple[Value, int]:
    """A ``|`` or ``>`` block: the more-indented lines after ``parent`` (read, as this repo never uses them)."""
    index, body = start, []
    while index < len(lines) and (not lines[index].text or lines[index].indent > parent.indent):
        body.append(lines[index].text)
        index += 1
    return Value((" " if folded else "\n").join(body).strip(), parent.number), index


def parse_yaml(path: Path) -> dict[str, Value]:
    """The top-level mapping of a YAML file in the subset described above."""
    lines, mapping, index = _lines(path), {}, 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.text or (line.text == "---" and not mapping):  # a document start before any key
            continue
        if line.indent:
            raise YamlError(f"{path}:{line.number}: unexpected indentation (top-level keys start in column 1)")
        key, rest = _key(path, line)
        if not rest:
            value, index = _block(path, lines, index, line)
        elif BLOCK_SCALAR.fullmatch(rest):
            value, index = _block_scalar(lines, index, line, rest[0] == ">")
        elif rest.startswith("["):
            text, index = _flow_text(lines, index - 1, rest)
            value = Value(_flow_items(path, line.number, text), line.number)
        else:
            value = Value(_unquote(path, line.number, rest), line.number)
        _add(path, mapping, key, value)
    return mapping


# ----------------------------------------------------------------------------------------------
# the dataset the mapping describes


def _text(path: Path, key: str, value: Value) -> str:
    if not isinstance(value.data, str):
        kind = "empty" if value.data is None else "a list or mapping"
        raise YamlError(f"{path}:{value.line}: {key}: expected a path, got {kind}")
    return value.data


def _source_path(path: Path, root: Path, key: str, value: Value) -> Path:
    """One source (folder or list file), joined to the dataset root; ``../x`` falls back to ``x`` there."""
    text = _text(path, key, value)
    source = Path(text).expanduser()
    candidates = [source] if source.is_absolute() else [root / source]
    if not source.is_absolute() and text.startswith("../"):
        candidates.append(root / text[3:])
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise YamlError(f"{path}:{value.line}: {key}: {text} does not exist (looked for "
                    f"{' and '.join(str(c.absolute()) for c in candidates)})")


def _source(path: Path, root: Path, key: str, value: Value) -> ImageSource:
    if isinstance(value.data, list):
        if not value.data:
            raise YamlError(f"{path}:{value.line}: {key}: the list of sources is empty")
        return tuple(_source_path(path, root, key, item) for item in value.data)
    return _source_path(path, root, key, value)


def _names_from_mapping(path: Path, value: Value) -> list[str]:
    """``{index: name}`` with indices 0 .. n-1, in any order."""
    by_index = {}
    for key, name in value.data.items():
        if not INTEGER.fullmatch(key):
            raise YamlError(f"{path}:{name.line}: names: key {key!r} is not a class index 0, 1, ...")
        by_index[int(key)] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise YamlError(f"{path}:{value.line}: names: the class indices must run 0 .. {len(by_index) - 1} "
                        f"without gaps; got {', '.join(map(str, sorted(by_index)))}")
    return [_name(path, by_index[i]) for i in range(len(by_index))]


def _name(path: Path, value: Value) -> str:
    if not isinstance(value.data, str) or not value.data.strip():
        raise YamlError(f"{path}:{value.line}: names: every class needs a non-empty name")
    return value.data.strip()


def _class_names(path: Path, mapping: dict[str, Value]) -> list[str]:
    """The names, checked against ``nc``; ``class_0 ...`` when only ``nc`` is given (as Ultralytics does)."""
    count = None
    if "nc" in mapping:
        text = mapping["nc"].data
        if not isinstance(text, str) or not INTEGER.fullmatch(text) or int(text) < 1:
            raise YamlError(f"{path}:{mapping['nc'].line}: nc must be a positive integer, got {text!r}")
        count = int(text)
    names_value = mapping.get("names")
    if names_value is None or names_value.data is None:
        if count is None:
            raise YamlError(f"{path}: missing 'names:' (and 'nc:'); a dataset YAML needs the class names")
        return [f"class_{i}" for i in range(count)]
    if isinstance(names_value.data, dict):
        names = _names_from_mapping(path, names_value)
    elif isinstance(names_value.data, list):
        names = [_name(path, item) for item in names_value.data]
    else:
        raise YamlError(f"{path}:{names_value.line}: names: expected a list or a mapping of class names")
    if not names:
        raise YamlError(f"{path}:{names_value.line}: names: the list is empty")
    repeated = next((i for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        warnings.warn(f"{path}:{names_value.line}: names: {names[repeated]!r} names classes "
                      f"{names.index(names[repeated])} and {repeated}; {SAME_NAME}", DataWarning, stacklevel=4)
    if count is not None and count != len(names):
        raise YamlError(f"{path}:{mapping['nc'].line}: nc={count} but names lists {len(names)} classes")
    return names


def parse_yaml_config(path: str | Path) -> DataConfig:
    """A YOLOv5/v8 dataset YAML as a DataConfig (``valid`` is its ``val``; ``test`` is None when absent)."""
    path = Path(path)
    mapping = parse_yaml(path)
    for key in ("train", "val"):
        if key not in mapping or mapping[key].data is None:
            raise YamlError(f"{path}: missing '{key}:' (a dataset YAML needs train, val and names)")
    root = path.parent
    if "path" in mapping and mapping["path"].data is not None:
        text = _text(path, "path", mapping["path"])
        root = resolve_named_path(text, path, f"{path}:{mapping['path'].line}: path: {text}")
    names = _class_names(path, mapping)
    return DataConfig(path, len(names), _source(path, root, "train", mapping["train"]),
                      _source(path, root, "val", mapping["val"]), names, test=_test_source(path, root, mapping))


def _test_source(path: Path, root: Path, mapping: dict[str, Value]) -> ImageSource | None:
    """The optional test source; None also when it does not exist, as exports often name a test split they
    leave out (nothing here reads it; Ultralytics checks only train and val too)."""
    test = mapping.get("test")
    if test is None or test.data is None:
        return None
    try:
        return _source(path, root, "test", test)
    except YamlError:
        return None
