"""What the command lines share: the device a --device flag names, numbered run folders, and one way of
reporting errors (see :mod:`utils.errors`)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch

from utils.errors import UserError

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for Ctrl-C


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


def select_device(spec: str, local_rank: int = 0) -> torch.device:
    """The device a ``--device`` flag names: "" (CUDA when available, else the CPU), "cpu", "cuda" (every
    GPU), "cuda:N", or GPU indices such as "0" or "0,1". A process takes the ``local_rank``-th GPU listed:
    the first for a single process, one each for the processes torchrun starts (their LOCAL_RANK)."""
    spec = spec.strip() or ("cuda" if torch.cuda.is_available() else "cpu")
    gpus = _listed_gpus(spec)
    if gpus is None:
        try:
            return torch.device(spec)  # cpu, or another backend torch knows (mps, xpu)
        except RuntimeError:
            raise UserError(f"--device {spec}: expected cpu, cuda, cuda:N or GPU indices such as 0 or 0,1") from None
    if not torch.cuda.is_available():
        raise UserError(f"--device {spec}: CUDA is not available on this machine ({_torch_build()}); "
                        f"use --device cpu")
    count = torch.cuda.device_count()
    missing = [index for index in gpus if index >= count]
    if missing:
        raise UserError(f"--device {spec}: there is no GPU {missing[0]}; this machine has {count} "
                        f"(0..{count - 1})")
    if local_rank >= len(gpus):
        raise UserError(f"--device {spec} gives {len(gpus)} GPU(s), too few for the process of local rank "
                        f"{local_rank}; list one GPU per process, e.g. --device 0,1")
    return torch.device("cuda", gpus[local_rank])


def next_run_dir(root: Path) -> Path:
    """``root/expN`` for the first N from 1 that does not exist yet."""
    n = 1
    while (root / f"exp{n}").exists():
        n += 1
    return root / f"exp{n}"


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"  # not "[Errno 2] No such file or directory: 'x'"
    return str(err)


def run_main(main: Callable[[], int]) -> int:
    """Run a command line's body and return its exit code. A :class:`UserError` or an ``OSError`` (a file
    the user named) is printed as ``error: <message>`` on stderr and gives 1; Ctrl-C gives
    ``error: interrupted`` and 130. Anything else is a bug and propagates with its traceback."""
    try:
        return main()
    except (UserError, OSError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
