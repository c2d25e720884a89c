"""Class-name files (Darknet's .names): one name per line."""
from __future__ import annotations

from pathlib import Path

from utils.errors import UserError
from utils.fileio import read_text


def read_class_names(path: str | Path, error: type[UserError] = UserError) -> list[str]:
    """The names, blank lines and surrounding spaces dropped; an unreadable file is ``error`` naming it."""
    return [line.strip() for line in read_text(path, "names file", error).splitlines() if line.strip()]
