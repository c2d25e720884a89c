"""What the command lines share: an argument parser whose errors are one line and whose --help shows every
default, flag types that state their valid range, the device a --device flag names, output folders that never
replace an earlier result unasked, and one way of reporting errors (see :mod:`utils.errors`)."""
from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch

from utils.allocator import tune_allocator
from utils.darknet.cfg import DEFAULT_IMG_SIZE, MAX_IMG_SIZE, SIZE_MULTIPLE
from utils.errors import InputWarning, UserError
from utils.output_files import refuse_filled_folder

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for Ctrl-C
USAGE_EXIT_CODE = 2  # argparse's, for a flag that cannot be parsed


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and "(default: X)" after every flag's help that has a default (flags
    without one say in their help what applies instead; an on/off flag's default is its absence). A default
    of 0 is shown: it is a value, unlike False."""

    def _get_help_string(self, action):
        if action.default is None or action.default == "" or isinstance(action.default, bool) \
                or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error rule: a bad flag is one ``error: ...`` line (exit code 2), not a
    usage block; ``--help`` lists every default."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str):
        print_error(f"{message} (see {self.prog} --help)")
        sys.exit(USAGE_EXIT_CODE)


def integer(low: int | None = None, high: int | None = None, multiple: int = 1) -> Callable[[str], int]:
    """A flag type: a plain integer within [low, high] (and a multiple of ``multiple``), its range in the error."""
    bounds = f" in {low if low is not None else '-inf'} .. {high if high is not None else 'inf'}"
    wanted = f"an integer{bounds if (low, high) != (None, None) else ''}" + \
        (f", a multiple of {multiple}" if multiple > 1 else "")

    def parse(text: str) -> int:
        if not re.fullmatch(r"[+-]?[0-9]+", text.strip(), re.ASCII):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        value = int(text)
        if (low is not None and value < low) or (high is not None and value > high) or value % multiple:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def png_file(text: str) -> str:
    """A flag type: the name of a PNG picture to write (matplotlib and OpenCV choose the format by it)."""
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"expected a file name ending in .png, got {text!r}")
    return text


IMAGE_SIZE = integer(SIZE_MULTIPLE, MAX_IMG_SIZE, multiple=SIZE_MULTIPLE)
SEED = integer(0, 2 ** 32 - 1)  # numpy's seed sequences take no negative seeds


def number(low: float | None = None, high: float | None = None, above: bool = False,
           below: bool = False) -> Callable[[str], float]:
    """A flag type: a finite number within [low, high] (``above``/``below``: strictly above ``low``/below ``high``)."""
    low_text = f"({low:g}" if above else f"[{low:g}" if low is not None else "(-inf"
    high_text = f"{high:g})" if below else f"{high:g}]" if high is not None else "inf)"
    wanted = f"a finite number in {low_text}, {high_text}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not math.isfinite(value) or (low is not None and (value <= low if above else value < low)) \
                or (high is not None and (value >= high if below else value > high)):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def device_flag(text: str) -> str:
    """A flag type for --device: its form is checked here, what the machine has in :func:`select_device`."""
    spec = text.strip()
    if spec in ("", "cpu", "cuda", "mps", "xpu") or re.fullmatch(r"cuda:[0-9]+|[0-9]+(,[0-9]+)*", spec):
        return spec
    raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or GPU indices such as 0 or 0,1; got {text!r}")


def add_half_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--half", action="store_true",
                   help="run the network in half precision: float16 on CUDA, bfloat16 on CPU (1.7-2.6x faster "
                        "where the CPU has AMX); boxes move by up to ~1 px, scores by ~0.01")


def add_run_size_flag(p: argparse.ArgumentParser, what: str = "network input size") -> None:
    """--img_size for a command that runs a trained model: unset, it is the size the model was trained at
    (checkpoint.run_size)."""
    p.add_argument("--img_size", type=IMAGE_SIZE,
                   help=f"{what}, a multiple of {SIZE_MULTIPLE} (default: the size a .pth was trained at, else "
                        f"{DEFAULT_IMG_SIZE})")


def output_folder(requested: str | None, default_root: Path, exist_ok: bool) -> Path:
    """Where a command writes its results: without a named folder the next ``default_root/expN``, claimed
    (created empty, see :func:`claim_run_dir`); a named folder only if it is empty or new, unless ``exist_ok``
    (so an earlier result is never replaced unasked). A named folder is not created here."""
    if requested is None:
        return claim_run_dir(default_root)
    folder = Path(requested)
    refuse_filled_folder(folder, "--output", exist_ok,
                         f"choose another folder or leave --output out to get the next {default_root}/expN")
    return folder


def _torch_build() -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} built for CPU"
    return f"torch {torch.__version__} built with CUDA {torch.version.cuda}, but no GPU is visible"


def _listed_gpus(spec: str) -> list[int] | None:
    """The GPU indices a CUDA spec names ("cuda": every GPU), or None when ``spec`` is not a CUDA spec."""
    if spec == "cuda":
        return list(range(torch.cuda.device_count()))
    if spec.startswith("cuda:") and spec[5:].isdigit():
        return [int(spec[5:])]
    indices = spec.split(",")
    if all(index.strip().isdigit() for index in indices):
        return [int(index) for index in indices]
    return None


def _given(setting: str, value: str) -> str:
    """How the user wrote it: ``--device cuda:1`` on the command line, ``device='cuda:1'`` in Python."""
    return f"{setting} {value}" if setting.startswith("--") else f"{setting}={value!r}"


def select_device(spec: str, local_rank: int = 0, setting: str = "--device") -> torch.device:
    """The device a ``--device`` flag names: "" (CUDA when available, else the CPU), "cpu", "cuda" (every
    GPU), "cuda:N", or GPU indices such as "0" or "0,1". A process takes the ``local_rank``-th GPU listed:
    the first for a single process, one each for the processes torchrun starts (their LOCAL_RANK).
    ``setting``: what errors call it (the flag, or the Python API's keyword)."""
    spec = spec.strip() or ("cuda" if torch.cuda.is_available() else "cpu")
    given = _given(setting, spec)
    gpus = _listed_gpus(spec)
    if gpus is None:
        try:
            return torch.device(spec)  # cpu, or another backend torch knows (mps, xpu)
        except RuntimeError:
            raise UserError(f"{given}: expected cpu, cuda, cuda:N or GPU indices such as 0 or 0,1") from None
    if not torch.cuda.is_available():
        raise UserError(f"{given}: CUDA is not available on this machine ({_torch_build()}); "
                        f"use {_given(setting, 'cpu')}")
    count = torch.cuda.device_count()
    missing = [index for index in gpus if index >= count]
    if missing:
        raise UserError(f"{given}: there is no GPU {missing[0]}; this machine has {count} "
                        f"(0..{count - 1})")
    if local_rank >= len(gpus):
        raise UserError(f"{given} gives {len(gpus)} GPU(s), too few for the process of local rank "
                        f"{local_rank}; list one GPU per process, e.g. {_given(setting, '0,1')}")
    return torch.device("cuda", gpus[local_rank])


def claim_run_dir(root: Path) -> Path:
    """Create ``root/expN`` for the first N from 1 that nothing has taken, and return it. Each try is an
    exclusive mkdir, so commands started at the same moment get a folder each, never a shared one."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((path for path in (root, *root.parents) if path.exists() and not path.is_dir()), root)
        raise UserError(f"{blocker} is not a folder, but the run folders {root}/expN go there; move it away or "
                        f"pass --output") from None
    n = 1
    while True:
        folder = root / f"exp{n}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"  # not "[Errno 2] No such file or directory: 'x'"
    return str(err)


def print_error(message: str) -> None:
    """``error: <message>`` as one line, in one write: under torchrun several processes share stderr, and
    two-part writes from them interleave into one line."""
    sys.stderr.write("error: " + re.sub(r"\s*\n\s*", " ", message.strip()) + "\n")
    sys.stderr.flush()


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation that failed (CUDA's, or the CPU allocator's, which raises a bare
    RuntimeError): the input's size, not a bug."""
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(err)


_PYTHON_FORMAT_WARNING = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """The warnings about the user's input (:class:`InputWarning`: a cfg's ignored keys, a skipped image) as
    ``warning: ...`` lines; Python's own format, with the warning's source line, for everyone else's."""
    if issubclass(category, InputWarning):
        return f"warning: {message}\n"
    return _PYTHON_FORMAT_WARNING(message, category, filename, lineno, line)


def run_main(main: Callable[[], int]) -> int:
    """Run a command line's body and return its exit code. A :class:`UserError` or an ``OSError`` (a file
    the user named) is printed as ``error: <message>`` on stderr and gives 1, as does running out of memory
    (an input too large); Ctrl-C gives ``error: interrupted`` and 130. Anything else is a bug and propagates
    with its traceback. This repo's warnings print as ``warning: <message>`` lines. Every command line runs
    with the allocator set up for tensors (:mod:`utils.allocator`)."""
    tune_allocator()
    python_format, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return main()
    except (UserError, OSError) as err:
        print_error(_message(err))
        return 1
    except (MemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        print_error(f"out of memory ({str(err).splitlines()[0] if str(err) else type(err).__name__}); a smaller "
                    f"input size or batch needs less")
        return 1
    except KeyboardInterrupt:
        print_error("interrupted")
        return INTERRUPTED_EXIT_CODE
    finally:
        warnings.formatwarning = python_format
