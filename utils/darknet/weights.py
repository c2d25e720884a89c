"""Darknet ``.weights`` files (spec §1).

A file is a little-endian header (major, minor, revision as int32, then ``seen``: int64 when
``major*10 + minor >= 2``, else int32) followed by float32 tensors with no names or padding, in the
order each layer's ``darknet_tensors()`` declares (see utils/darknet/layers/base.py).

Loading checks the file length against the cfg before touching the model, then reads every tensor
straight into its parameter's memory: one pass over the file, no intermediate buffer.
"""
from __future__ import annotations

import numbers
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from utils.fileio import ZIP_MAGIC, atomic_write, regular_file
from utils.errors import InputWarning, UserError, is_number

FLOAT_BYTES = 4


class WeightsFileError(UserError, ValueError):
    """A .weights file that does not fit the model."""


class WeightsWarning(InputWarning):
    """A .weights file that loads but holds values no trained model has."""


@dataclass(frozen=True)
class WeightsHeader:
    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0

    @property
    def seen_bytes(self) -> int:
        # Darknet's own rule (parser.c): the 64-bit field came with version 0.2.
        wide = self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000
        return 8 if wide else 4

    @property
    def size(self) -> int:
        return 12 + self.seen_bytes

    def to_bytes(self) -> bytes:
        seen_format = "<q" if self.seen_bytes == 8 else "<i"
        return struct.pack("<3i", self.major, self.minor, self.revision) + struct.pack(seen_format, self.seen)

    @classmethod
    def read(cls, f, path: Path) -> WeightsHeader:
        head = f.read(12)
        if len(head) < 12:
            raise WeightsFileError(f"{path}: {len(head)} bytes is too short for a Darknet weights header (12+ bytes)")
        major, minor, revision = struct.unpack("<3i", head)
        if min(major, minor, revision) < 0:
            raise WeightsFileError(f"{path}: the header's version {major}.{minor}.{revision} has a negative part: not "
                                   f"a Darknet weights file, whose versions are 0.1.0, 0.2.0 and later")
        header = cls(major, minor, revision)
        seen_raw = f.read(header.seen_bytes)
        if len(seen_raw) < header.seen_bytes:
            raise WeightsFileError(f"{path}: the header ends inside the 'seen' field")
        (seen,) = struct.unpack("<q" if header.seen_bytes == 8 else "<i", seen_raw)
        return cls(major, minor, revision, seen)


def _layer_counts(layers: Sequence) -> tuple[list[list[torch.Tensor]], list[int]]:
    tensors = [layer.darknet_tensors() for layer in layers]
    return tensors, [sum(t.numel() for t in ts) for ts in tensors]


def _describe(layers: Sequence, index: int, locations: Sequence[str] | None) -> str:
    return locations[index] if locations else f"layer {index} [{type(layers[index]).__name__}]"


def _read_into(f, tensor: torch.Tensor, path: Path) -> None:
    nbytes = tensor.numel() * FLOAT_BYTES
    direct = tensor.device.type == "cpu" and tensor.dtype == torch.float32 and tensor.is_contiguous()
    target = tensor.detach() if direct else torch.empty(tensor.shape, dtype=torch.float32)
    got = f.readinto(memoryview(target.numpy()).cast("B"))
    if got != nbytes:
        raise WeightsFileError(f"{path}: the file changed while it was read ({got} of {nbytes} bytes)")
    if not direct:
        with torch.no_grad():
            tensor.copy_(target)


def check_cutoff(cutoff: int | None, layers: Sequence, named: Path | None) -> None:
    """``named``: the file whose ``<net>.conv.N`` name gave the cutoff, when no cutoff was given."""
    if cutoff is not None and not is_number(cutoff, numbers.Integral):
        raise WeightsFileError(f"cutoff: expected a layer count, an integer, got {cutoff!r}")
    if cutoff is None or 1 <= cutoff <= len(layers):  # 0 layers: a file of nothing but a header
        return
    if named is not None and cutoff > 0:
        raise WeightsFileError(f"{named}: its name says a backbone of {cutoff} layers (<net>.conv.{cutoff}), but the "
                               f"cfg has {len(layers)}: the file belongs to a longer network")
    if named is not None:
        raise WeightsFileError(f"{named}: a backbone of 0 layers (<net>.conv.0) holds no weights; rename it "
                               f"<net>.conv.N for the N layers it holds")
    raise WeightsFileError(f"cutoff {cutoff} (--cutoff): expected 1 .. {len(layers)}, the model's layer count")


def cutoff_from_name(path: str | Path) -> int | None:
    """Darknet's backbone files are named ``<net>.conv.<N>`` (e.g. darknet53.conv.74): N leading layers."""
    match = re.search(r"\.conv\.(\d+)$", Path(path).name)
    return int(match.group(1)) if match else None


def output_cutoff(out: Path, cutoff: int | None, given_as: str) -> int | None:
    """The layers a .weights output ``out`` is to hold: ``cutoff``, else N of a ``<net>.conv.N`` name, else None
    (all). A name saying another N than ``cutoff`` (``given_as`` says where that came from) is refused, as is
    ``<net>.conv.0``."""
    named = cutoff_from_name(out)
    if named is not None and cutoff is not None and named != cutoff:
        raise WeightsFileError(f"{out}: the name says {named} layers (<net>.conv.N is read as layers 0..N-1, as "
                               f"train.py reads it), {given_as}; name it {out.name[:-len(str(named))]}{cutoff}")
    if named == 0:
        raise WeightsFileError(f"{out}: a backbone of 0 layers holds no weights; name it <net>.conv.N with N >= 1")
    return cutoff if cutoff is not None else named


def load_darknet_weights(layers: Sequence, path: str | Path, cutoff: int | None = None,
                         locations: Sequence[str] | None = None) -> WeightsHeader:
    """Read ``path`` into the tensors of ``layers[:cutoff]`` (``cutoff`` None: N of a ``<net>.conv.N`` name,
    else all). Nothing is changed if the file does not fit."""
    path = Path(path)
    named = cutoff is None and cutoff_from_name(path) is not None  # a backbone file holds exactly its N layers
    cutoff = cutoff if cutoff is not None else cutoff_from_name(path)
    check_cutoff(cutoff, layers, path if named else None)
    layers = list(layers)[:cutoff]
    tensors, counts = _layer_counts(layers)
    path = regular_file(path, "weights file", WeightsFileError, "open")
    try:
        f = open(path, "rb")
    except OSError as err:
        raise WeightsFileError(f"{path}: cannot open weights file: {err.strerror}") from err
    with f:
        file_size = os.fstat(f.fileno()).st_size
        if f.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
            raise WeightsFileError(f"{path}: a zip archive, as a PyTorch checkpoint is, not Darknet weights; a .pth "
                                   f"loads under a .pth name, and convert.py turns one into .weights")
        f.seek(0)
        header = WeightsHeader.read(f, path)
        payload = file_size - header.size
        if payload % FLOAT_BYTES:
            raise WeightsFileError(f"{path}: {payload} bytes after the {header.size}-byte header is not a whole "
                                   f"number of float32 values")
        available, needed = payload // FLOAT_BYTES, sum(counts)
        if available < needed:
            total = 0
            for index, count in enumerate(counts):
                if total + count > available:
                    break
                total += count
            hint = ""
            if total == available and total > 0:
                held = index
                while held > 0 and counts[held - 1] == 0:  # layers without weights (route, shortcut) end no backbone
                    held -= 1
                hint = (f"; the file holds exactly layers 0..{held - 1}: a backbone of {held} layers (Darknet's "
                        f"partial), which loads as such when named <net>.conv.{held} or given cutoff {held}")
            raise WeightsFileError(
                f"{path}: the file ends inside {_describe(layers, index, locations)}: the cfg needs {total + count:,} "
                f"floats up to and including this layer, the file has {available:,} (after the {header.size}-byte "
                f"{header.major}.{header.minor}.{header.revision} header){hint}")
        if available > needed and (cutoff is None or named):
            kept = f"layers 0..{cutoff - 1}, as its name says," if named else "the last layer"
            raise WeightsFileError(
                f"{path}: {available - needed:,} floats are left over after {kept} (the cfg needs {needed:,}, the "
                f"file has {available:,}): the file belongs to another cfg" + ("" if named else ", or pass a cutoff"))
        for layer_tensors in tensors:
            for tensor in layer_tensors:
                _read_into(f, tensor, path)
    _warn_non_finite(tensors, path, layers, locations)
    return header


def _warn_non_finite(tensors: list[list[torch.Tensor]], path: Path, layers: Sequence,
                     locations: Sequence[str] | None) -> None:
    """NaN or inf weights load, but training would then blame its learning rate: say so at once."""
    bad = [sum(int((~torch.isfinite(t)).sum()) for t in ts) for ts in tensors]
    if any(bad):
        first = next(i for i, count in enumerate(bad) if count)
        warnings.warn(f"{path}: {sum(bad):,} weights are NaN or infinite, the first in "
                      f"{_describe(layers, first, locations)} ({bad[first]:,} there)", WeightsWarning, stacklevel=3)


def darknet_weights_size(layers: Sequence, header: WeightsHeader) -> int:
    """Bytes that ``save_darknet_weights`` writes for ``layers``: the header plus float32 per owned value."""
    return header.size + 4 * sum(_layer_counts(list(layers))[1])


def save_darknet_weights(layers: Sequence, path: str | Path, header: WeightsHeader,
                         cutoff: int | None = None) -> None:
    """Write ``layers[:cutoff]`` to ``path`` through a temporary file, so a failure leaves no half file."""
    check_cutoff(cutoff, layers, None)
    tensors, _ = _layer_counts(list(layers)[:cutoff])
    with atomic_write(path) as f:
        f.write(header.to_bytes())
        for layer_tensors in tensors:
            for tensor in layer_tensors:
                f.write(memoryview(tensor.detach().to("cpu", torch.float32).contiguous().numpy()).cast("B"))
