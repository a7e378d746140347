"""Files otbench is given (results databases, sweep and config files, dataset files, output folders): what they
are, found by os.stat before anything opens them (a FIFO would block an open, a device would be read or written
forever), and text read with a clear error. Errors are one-line OTBenchErrors naming the file."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import OTBenchError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(path: str | os.PathLike) -> str | None:
    """What `path` is when it is there but not a regular file ("a FIFO (named pipe)", "a directory"...); None for
    a regular file or nothing there. A symlink counts as its target (a link to /dev/null is a character device)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(path) else None
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def require_file(path: Path, what: str, hint: str) -> None:
    """`path` must be an existing regular file: refused by type, at once, otherwise."""
    kind = file_kind(path)
    if kind is not None:
        raise OTBenchError(f"{what} {path} is {kind}, not a file; {hint}")
    if not path.exists():
        raise OTBenchError(f"{what} {path} does not exist; {hint}")


def read_text(path: Path, what: str, hint: str) -> str:
    """A text file's content as UTF-8, or one line saying why it cannot be (not a file, not text, unreadable)."""
    require_file(path, what, hint)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise OTBenchError(f"{what} {path} is not text (not UTF-8: byte {exc.start} is "
                           f"{exc.object[exc.start:exc.start + 1].hex()}); {hint}") from None
    except OSError as exc:
        raise OTBenchError(f"{what} {path} cannot be read ({exc.strerror}); {hint}") from None


def check_output_folder(given: str | os.PathLike, what: str) -> Path:
    """A folder otbench will write files into: an existing writable folder, or a new one under an existing
    writable folder. Nothing is created here."""
    if not str(given).strip():
        raise OTBenchError(f"{what} is empty; give a folder")
    path = Path(given).expanduser()
    kind = file_kind(path)
    if kind not in (None, "a directory") or (kind is None and path.exists()):
        raise OTBenchError(f"{what} {path} is {kind or 'a file'}, not a folder; give a folder to write into")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OTBenchError(f"{what} {path}: {existing} is not a folder; give a folder to write into")
    if not (os.access(existing, os.W_OK) and existing.stat().st_mode & 0o200):
        raise OTBenchError(f"{what} {path}: folder {existing} is read-only; give a writable folder")
    return path
