"""Files in and out: text read strictly (UTF-8, named errors), writes that never leave half a file."""
from __future__ import annotations

import os
import re
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from utils.errors import UserError

UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
FOLDER_NOT_FILE = "is a folder, expected a file name"  # an output path that names a folder
ZIP_MAGIC = b"PK\x03\x04"  # how a zip archive starts: PyTorch saves .pth files as zip archives
# what a write puts beside its target until it is complete: ``.{name}.{pid}.tmp`` (and a video, whose
# encoder picks the container by suffix, ``.{stem}.{pid}.tmp.mp4``)
TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]+)\.tmp(\.[A-Za-z0-9]+)?")


def temporary_path(path: Path, keep_suffix: bool = False) -> Path:
    """The temporary file a write of ``path`` fills before renaming it (matches TEMPORARY_NAME)."""
    if keep_suffix:
        return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def regular_file(path: str | Path, what: str, error: type[UserError] = UserError, action: str = "read") -> Path:
    """``path`` if it names a regular file; otherwise ``error`` saying what it is instead. A FIFO or a device
    would block a reader forever or never end, so only plain files are read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise error(f"{path}: cannot {action} {what}: {err.strerror}") from None
    article = "an" if what[:1].lower() in tuple("aeiou") else "a"
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a folder, expected {article} {what}")
    if not stat.S_ISREG(mode):
        raise error(f"{path}: is not a regular file (a pipe, socket or device), expected {article} {what}")
    return path


def read_text(path: str | Path, what: str, error: type[UserError] = UserError) -> str:
    """The text of a UTF-8 file (a byte-order mark is allowed and dropped). Anything else is ``error`` naming
    the file, the line and what the file looks like."""
    path = regular_file(path, what, error)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise error(f"{path}: cannot read {what}: {err.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if data.startswith(ZIP_MAGIC):
            raise error(f"{path}: the {what} is a zip archive, as a PyTorch .pth is, not text") from None
        line = data[:err.start].count(b"\n") + 1
        hint = " (it looks like UTF-16)" if data[:2] in UTF16_BOMS else ""
        raise error(f"{path}:{line}: the {what} is not UTF-8 text{hint}: byte 0x{data[err.start]:02x} at offset "
                    f"{err.start}; save it as UTF-8") from None


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """Write to a temporary file beside ``path`` (creating its folder) and rename it over ``path`` only once
    the body succeeded. A folder at ``path`` is a :class:`UserError`, before anything is written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: {FOLDER_NOT_FILE}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
