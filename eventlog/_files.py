"""How the project opens and creates the files of a store: never through a link, never
readable by more people than the store itself.

Whoever can create a symbolic link where a store file is expected could otherwise make the
log, a projector or a replay write to any file its user may write (a lock file is truncated
when taken, a segment is written when rotated). So:

1. An existing store file is opened with ``O_NOFOLLOW``: a link is an `UnsafeStore` error,
   and so is a FIFO, device or directory where a file belongs (opened without waiting).
2. A new file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a link, or anything else
   already at a temporary name, is never written through.
3. Opening a store refuses it if any entry of its directory is a link (`refuse_linked_store`):
   DuckDB opens ``projections.duckdb`` and its ``.wal`` itself, so those are checked too,
   before it connects (`refuse_link`).

Permissions do not depend on the umask. A new store's directory is 0700 (0750 when created
with ``Options(group_readable=True)``); every file and directory made in it later takes the
owner and group bits of the store's directory, never bits for others (`Modes.of`). So a
store is exactly as private as its directory says, and what is derived from it (projections,
snapshots, forks, ``lmg replay --out`` files) stays as private as the store.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .errors import UnsafeStore

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "STDOUT",
    "Modes",
    "NamedOutput",
    "create_file",
    "make_dir",
    "naming_errors",
    "open_file",
    "open_or_create",
    "process_alive",
    "read_bytes",
    "refuse_link",
    "refuse_linked_store",
]

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
PRIVATE_DIR = 0o700
GROUP_DIR = 0o750


class Modes(NamedTuple):
    """Permission bits for the files and directories created in one store."""

    file: int = 0o600
    dir: int = PRIVATE_DIR

    @classmethod
    def of(cls, directory: str | os.PathLike[str]) -> Modes:
        """The modes of what is created in a store: its directory's owner and group bits."""
        bits = os.stat(directory).st_mode & 0o770 | 0o700
        return cls(file=bits & 0o666, dir=bits)


def _unsafe(path: str | os.PathLike[str]) -> UnsafeStore:
    return UnsafeStore(f"{path} is a symbolic link: a store's files are never links")


def open_file(path: str | os.PathLike[str], flags: int = os.O_RDONLY) -> int:
    """Open an existing store file, refusing a symbolic link, and anything but a regular file.

    Opened without blocking, then checked: a FIFO where a segment belongs made the open wait
    for a writer, so `lmg verify` (the command to run on a damaged store), `lmg tail` and
    `lmg backup` hung for ever. A caller that passes ``O_NONBLOCK`` itself checks what it
    opened (and keeps the flag)."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _unsafe(path) from None
        raise
    if flags & os.O_NONBLOCK:
        return fd
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeStore(
                f"{path} is not a regular file (a FIFO, device or directory): a store's files "
                "are plain files"
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_file(path: str | os.PathLike[str], mode: int, flags: int = os.O_WRONLY) -> int:
    """Create a new file with exactly `mode`; FileExistsError if anything (a link too) is
    at `path`, so a predictable temporary name cannot be turned against us."""
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask narrowed it, or widened nothing: set it exactly
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_or_create(path: str | os.PathLike[str], mode: int, flags: int = os.O_RDWR) -> int:
    """Open a lock or journal file, creating it with `mode` if missing; never a link."""
    try:
        return create_file(path, mode, flags)
    except FileExistsError:
        return open_file(path, flags)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """A store file's bytes, refusing a symbolic link."""
    with os.fdopen(open_file(path), "rb") as f:
        return f.read()


def make_dir(path: str | os.PathLike[str], mode: int) -> bool:
    """Create a directory with exactly `mode` (True), or find one there (False): a link
    there is refused."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        refuse_link(path)
        return False
    os.chmod(path, mode)
    return True


def refuse_link(path: str | os.PathLike[str]) -> None:
    """UnsafeStore if `path` is a symbolic link (for files others open: DuckDB's)."""
    if os.path.islink(path):
        raise _unsafe(path)


def refuse_linked_store(path: Path) -> None:
    """Refuse a store any of whose entries is a symbolic link (one directory scan, on open)."""
    try:
        with os.scandir(path) as entries:
            link = next((e.path for e in entries if e.is_symlink()), None)
    except FileNotFoundError:
        return
    if link is not None:
        raise _unsafe(link)


def owned(path: str | os.PathLike[str]) -> bool:
    """Whether `path` (not followed if a link) is this user's: what a command may delete as
    a leftover of its own killed run."""
    try:
        return os.lstat(path).st_uid == os.geteuid()
    except FileNotFoundError:
        return False


def process_alive(pid: int) -> bool:
    """Whether `pid` names a running process (of any user). A number no process can have
    (0, negative, past the kernel's range) names none."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        return True
    return True


@contextlib.contextmanager
def naming_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """An OSError raised within that names no file (a write, an fsync) names `path`: the
    one-line error a user reads says which file, not only `[Errno 27] File too large`."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None


STDOUT = "standard output"
"""What a write error of stdout names (`NamedOutput`): it has no path of its own."""


class NamedOutput(io.FileIO):
    """A file written for the user (or standard output, not `own`ed: left open) whose write
    errors (a full disk) name `shown`: the file they asked for, not the temporary one that
    is gone when they read it, or `STDOUT`."""

    def __init__(self, fd: int, shown: str, *, own: bool = True) -> None:
        super().__init__(fd, "wb", closefd=own)
        self._shown = shown

    def write(self, data: ReadableBuffer, /) -> int:
        with naming_errors(self._shown):
            return super().write(data)

    def fsync(self) -> None:
        with naming_errors(self._shown):
            os.fsync(self.fileno())
