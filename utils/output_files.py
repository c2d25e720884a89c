"""What the commands share about their outputs beyond :func:`utils.fileio.atomic_write`: a failed write named
by its file, existing files refused unless the user asked to replace them, a run folder that a failed
command does not leave behind, and the temporary files of killed processes cleared away."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from utils.errors import UserError
from utils.fileio import FOLDER_NOT_FILE, TEMPORARY_NAME

IN_USE_NAME = ".in_use.pid"  # the PID of the process working in a folder


class OutputError(UserError):
    """An output that cannot be written (a full disk, a folder without write permission)."""


def _os_error_behind(err: BaseException) -> OSError | None:
    """The OSError that ``err`` is or that it was raised from or while handling: torch.save reports a failed
    write of its file object as a RuntimeError of its zip writer (``inline_container.cc``), which names
    neither the file nor the reason."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def named_write_errors(path: str | Path, what: str) -> Iterator[None]:
    """Run a body that writes ``path``; a file system error in it becomes one :class:`OutputError` line
    naming ``path``, ``what`` it is and the system's reason (e.g. "No space left on device")."""
    try:
        yield
    except UserError:
        raise
    except (OSError, RuntimeError) as err:
        cause = _os_error_behind(err)
        if cause is None:
            raise
        reason = cause.strerror or str(cause) or type(cause).__name__
        raise OutputError(f"{path}: cannot write the {what}: {reason}") from err


def refuse_existing(paths: Iterable[str | Path], flag: str, exist_ok: bool, override: str = "--exist_ok") -> None:
    """Stop before any work when one of ``paths`` exists (unless ``exist_ok``, the ``override`` flag): an earlier
    result is never replaced unasked; or when it could not be written. ``flag`` names the option that chose it."""
    for path in map(Path, paths):
        if path.is_dir():
            raise UserError(f"{flag} {path}: {FOLDER_NOT_FILE}")
        if path.exists() and not exist_ok:
            raise UserError(f"{flag} {path}: the file exists; choose another name or pass {override} to replace it")
        refuse_unwritable(path, flag)


def refuse_unwritable(path: Path, flag: str, folder: bool = False) -> None:
    """Stop before any work when ``path`` (a file, or with ``folder`` a folder to write in, which ``flag``
    chose) could not be written: a file stands where a folder of its path should be, or the deepest folder
    that exists is not writable."""
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot write in {existing} (permission denied)")


def make_folder(folder: Path, flag: str) -> None:
    """Create ``folder`` (and its parents) now, before any work, or say in one line why it cannot be made."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{flag} {folder}: cannot make the folder: {err.strerror or err}") from None


def unused_name(path: Path) -> Path:
    """``path``, or where it exists the first of ``path2``, ``path3``, ... that does not."""
    number = 2
    candidate = path
    while candidate.exists():
        candidate, number = path.with_name(f"{path.name}{number}"), number + 1
    return candidate


def refuse_replacing_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path | None], flag: str) -> None:
    """Refuse an output that is one of the inputs (the same file by any name), with --exist_ok or --force too:
    those replace earlier results, never what the command reads."""
    existing = {_identity(output): output for output in map(Path, outputs) if output.exists()}
    if not existing:
        return
    for source in (Path(name) for name in inputs if name):
        output = existing.get(_identity(source)) if source.exists() else None
        if output is not None:
            raise UserError(f"{flag} {output} is the input {source}; write it elsewhere (--exist_ok and "
                            f"--force replace earlier results, never an input)")


def _identity(path: Path) -> tuple[int, int]:
    """What makes two names the same file (os.path.samefile's test), for comparing one against many."""
    status = path.stat()
    return status.st_dev, status.st_ino


def refuse_shared_outputs(outputs: Iterable[tuple[str, str | Path]]) -> None:
    """Refuse two outputs of one command, given as (flag, path), that are the same file: the second write
    would replace the first, which no --exist_ok or --force asked for."""
    seen: dict[Path, tuple[str, Path]] = {}
    for flag, path in outputs:
        target = Path(path).resolve()
        if target in seen:
            first_flag, first = seen[target]
            raise UserError(f"{flag} {path} and {first_flag} {first} are the same file: the second would replace "
                            f"the first; give them different names")
        seen[target] = flag, Path(path)


def refuse_filled_folder(folder: Path, flag: str, exist_ok: bool, instead: str = "choose a new or empty one") -> None:
    """Stop before any work when ``folder`` (chosen by ``flag``) is a file, or a folder that holds anything
    (unless ``exist_ok``): an earlier result is never replaced unasked. ``instead`` says what else to do."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder}: is a file, expected a folder")
    if folder.is_dir() and any(folder.iterdir()) and not exist_ok:
        raise UserError(f"{flag} {folder} already holds results; {instead}, or pass --exist_ok to write into it "
                        f"(replacing the files it shares with the output)")
    refuse_unwritable(folder, flag, folder=True)


def refuse_inputs_inside(folder: Path, inputs: Iterable[tuple[str, Path]], flag: str) -> None:
    """Stop when an input file or folder, given as (its flag, its path), lies at or below ``folder``, which
    ``flag`` makes an output: writing there could replace the inputs themselves, so not even --exist_ok allows
    it."""
    target = folder.resolve()
    for input_flag, path in inputs:
        if path.resolve().is_relative_to(target):
            raise UserError(f"{input_flag} {path} is at or inside {folder}, where {flag} writes: the output could "
                            f"replace it; move it, or choose another {flag}")


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except (OverflowError, ValueError):
        return False  # beyond any process id
    return True


def remove_orphan_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` that a process killed mid-write left (``kill -9`` skips
    atomic_write's clean-up); those of running processes are theirs and stay. Returns what was removed."""
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = TEMPORARY_NAME.fullmatch(path.name)
        if match and path.is_file() and not process_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def in_use(folder: Path, work: str) -> Iterator[None]:
    """Mark ``folder`` as this process's for the body (its PID in ``IN_USE_NAME``), refusing it while another
    live process holds it: two runs writing one folder would overwrite each other's files. A mark whose
    process died (``kill -9``) is taken over."""
    mark = folder / IN_USE_NAME
    for _ in range(2):  # a dead holder's mark is removed once, then the exclusive create is tried again
        try:
            descriptor = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            holder = _holder(mark)
            if holder is not None and process_alive(holder):
                raise UserError(f"{folder} is being {work} by process {holder}; wait for it to end or stop it, or "
                                f"choose another --output ({mark} holds its PID)") from None
            _unmark(mark)
        except OSError as err:  # a folder that cannot be written: say so before any work, naming it
            raise _unwritable_folder(folder, err) from None
    else:
        raise UserError(f"{folder}: another process marked it as in use at the same moment; try again")
    with os.fdopen(descriptor, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        mark.unlink(missing_ok=True)


def _unmark(mark: Path) -> None:
    """Remove a dead process's in-use mark."""
    try:
        mark.unlink(missing_ok=True)
    except OSError as err:
        raise _unwritable_folder(mark.parent, err) from None


def _unwritable_folder(folder: Path, err: OSError) -> OutputError:
    return OutputError(f"{folder}: cannot write into the folder (to mark it in use by this process): "
                       f"{err.strerror or err}")


def _holder(mark: Path) -> int | None:
    try:
        return int(mark.read_text().strip())
    except (OSError, ValueError):
        return None  # unreadable or half-written: no live holder to protect


@contextmanager
def removed_on_failure(folder: Path, results: tuple[str, ...] = (), claimed: bool = False) -> Iterator[None]:
    """Run a body that creates ``folder`` and writes into it. Should the body fail while ``folder`` holds
    none of ``results`` (names or glob patterns; none given: whatever it holds), ``folder`` goes again if
    the body created it or it was ``claimed`` for this run (:func:`utils.cli.claim_run_dir`), so a failed
    start leaves no empty or half-written run behind. Any other folder that existed before is never removed."""
    existed = folder.exists() and not claimed
    try:
        yield
    except BaseException:
        if not existed and folder.is_dir() and not any(next(folder.glob(pattern), None) for pattern in results):
            shutil.rmtree(folder, ignore_errors=True)
        raise


@contextmanager
def made_folder(folder: Path, flag: str, results: tuple[str, ...] = (), claimed: bool = False) -> Iterator[Path]:
    """``folder`` made now (one that cannot be made is one line naming ``flag``) for a body that writes into it,
    and removed again as :func:`removed_on_failure` says should the body fail."""
    with removed_on_failure(folder, results, claimed):
        make_folder(folder, flag)
        yield folder
