"""Class-name files (Darknet's .names): one name per line."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from utils.errors import InputWarning, UserError
from utils.fileio import read_text

SAME_NAME = "two classes of one name cannot be told apart in the detections"
# the lines of a settings file (a .data file, a cfg): key=value, comments and [sections]; a names file has none
# but the odd name holding '='
SETTING_LINE = re.compile(r"\s*([A-Za-z_]\w*\s*=|[#;]|\[\w+\]\s*$)")


def read_class_names(path: str | Path, error: type[UserError] = UserError) -> list[str]:
    """The names, surrounding spaces dropped; an unreadable file is ``error`` naming it. So is a settings file
    (a .data file or a cfg named where the names belong: every line a ``key=value``, a comment or a
    ``[section]``, two or more of them settings). A name on two lines, and a blank line between names (Darknet
    reads it as a class of no name, so its class numbers after it are one higher than this repo's), warn."""
    numbered = [(number, line.strip()) for number, line in
                enumerate(read_text(path, "names file", error).splitlines(), 1)]
    filled = [(number, name) for number, name in numbered if name]
    settings = sum("=" in name for _, name in filled)
    if settings >= 2 and all(SETTING_LINE.match(name) for _, name in filled):
        raise error(f"{path}: its lines are settings ({filled[0][1]!r} on line {filled[0][0]}), as in a .data file "
                    f"or a cfg; expected a .names file, one class name a line")
    _warn_of_ambiguity(path, numbered, filled)
    return [name for _, name in filled]


def _warn_of_ambiguity(path: str | Path, numbered: list[tuple[int, str]], filled: list[tuple[int, str]]) -> None:
    first_line = {}
    for number, name in filled:
        if name in first_line:
            warnings.warn(f"{path}:{number}: the name {name!r} is also line {first_line[name]}'s; {SAME_NAME}",
                          InputWarning, stacklevel=3)
            break
        first_line[name] = number
    inner_blank = [number for number, name in numbered if not name and filled and filled[0][0] < number < filled[-1][0]]
    if inner_blank:
        warnings.warn(f"{path}:{inner_blank[0]}: a blank line between class names is dropped here, but Darknet reads "
                      f"it as a class of no name, numbering the classes after it one higher", InputWarning,
                      stacklevel=3)
