"""Class-name files (Darknet's .names): one name per line."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from utils.errors import InputWarning, UserError
from utils.fileio import read_text

SETTING_LINE = re.compile(r"\s*[A-Za-z_]\w*\s*=")  # key=value: a .data file's or a cfg's line, not a class name


def read_class_names(path: str | Path, error: type[UserError] = UserError) -> list[str]:
    """The names, surrounding spaces dropped; an unreadable file is ``error`` naming it. So is a file of
    ``key=value`` lines (a .data file or a cfg named where the names belong) and a name on two lines (its two
    classes could not be told apart). A blank line between names is dropped with a warning: Darknet reads it as
    a class of no name, so its class numbers after it are one higher than this repo's."""
    numbered = [(number, line.strip()) for number, line in
                enumerate(read_text(path, "names file", error).splitlines(), 1)]
    filled = [(number, name) for number, name in numbered if name]
    if filled and all(SETTING_LINE.match(name) for _, name in filled):
        raise error(f"{path}: every line is a key=value setting ({filled[0][1]!r} on line {filled[0][0]}), as in a "
                    f".data file or a cfg; expected a .names file, one class name a line")
    first_line = {}
    for number, name in filled:
        if name in first_line:
            raise error(f"{path}:{number}: the name {name!r} is also line {first_line[name]}'s; two classes of one "
                        f"name cannot be told apart")
        first_line[name] = number
    inner_blank = [number for number, name in numbered if not name and filled and filled[0][0] < number < filled[-1][0]]
    if inner_blank:
        warnings.warn(f"{path}:{inner_blank[0]}: a blank line between class names is dropped here, but Darknet reads "
                      f"it as a class of no name, numbering the classes after it one higher", InputWarning,
                      stacklevel=2)
    return [name for _, name in filled]
