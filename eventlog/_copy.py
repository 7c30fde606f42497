"""Copying a prefix of a log into a new store: the mechanism under `replay.fork`.

Whole frames are copied byte for byte, so the new store holds the very same events (ids,
times, LSNs). The one frame the cut falls inside, if any, is re-encoded with the events up
to the cut; a request it splits loses its idempotency key, since the request is no longer
whole. The copy is built beside the target, opened once (recovery), fsynced, and renamed
into place, so a crash or a power loss leaves either nothing or a complete store. It is as
private as the store it copies (`Modes.of` its directory), whatever the umask.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from ._files import (
    PRIVATE_DIR,
    Modes,
    create_file,
    make_dir,
    open_file,
    owned,
    process_alive,
    read_bytes,
)
from ._format import (
    SEGMENT_HEADER,
    Request,
    decode_body,
    encode_body,
    encode_frame,
    encode_segment_header,
    segment_name,
    unpack_body,
)
from ._index import fsync_dir
from ._segment import Frame, iter_frames
from .errors import EventLogError, InvalidEvent
from .log import EventLog
from .options import Options

__all__ = [
    "ORIGIN_FILE",
    "Origin",
    "building_store",
    "check_new_store",
    "copy_prefix",
    "fsync_file",
    "origin",
    "replaced_leftovers",
    "sync_tree",
]

ORIGIN_FILE = "ORIGIN"


class Origin(msgspec.Struct, frozen=True, kw_only=True):
    """Where a store copied by `copy_prefix` (a fork) came from."""

    source: str  # the original store, as an absolute path
    last_lsn: int  # the last event copied (-1: none); the fork's own events start after it
    last_ts: int | None  # that event's time, ns
    created_ns: int  # when the copy was made


def origin(path: str | os.PathLike[str]) -> Origin | None:
    """Where the store at `path` was copied from; None if it is not a copy."""
    try:
        return msgspec.json.decode(read_bytes(Path(path) / ORIGIN_FILE), type=Origin)
    except FileNotFoundError:
        return None
    except (msgspec.DecodeError, OSError) as exc:
        raise EventLogError(f"{Path(path) / ORIGIN_FILE} is unreadable: {exc}") from exc


def copy_prefix(
    source: str | os.PathLike[str], target: str | os.PathLike[str], last_lsn: int
) -> int:
    """Create the store `target` holding exactly the events of `source` up to `last_lsn`
    (-1: none). `target` must not exist (or be an empty directory). Returns the number of
    events copied. `source` may be appended to meanwhile."""
    if not isinstance(last_lsn, int) or isinstance(last_lsn, bool) or last_lsn < -1:
        raise InvalidEvent(f"last_lsn must be an int >= -1, got {last_lsn!r}")
    dest = Path(target)
    check_new_store(dest)
    with EventLog.open(source, readonly=True) as log:
        end = log.next_lsn() - 1
        if last_lsn > end:
            raise InvalidEvent(f"the log at {log.path} ends at LSN {end}, not {last_lsn}")
        modes = Modes.of(log.path)
        with building_store(dest, "copying", modes.dir) as building:
            _copy_segments(log, building, last_lsn, modes.file)
            last = next(log.read(last_lsn, last_lsn + 1), None) if last_lsn >= 0 else None
            note = Origin(
                source=str(Path(source).resolve()),
                last_lsn=last_lsn,
                last_ts=None if last is None else last.event.ts,
                created_ns=time.time_ns(),
            )
            _write_new(building / ORIGIN_FILE, msgspec.json.encode(note), modes.file)
    return last_lsn + 1


def check_new_store(dest: Path) -> None:
    """`dest` may become a new store: it does not exist, or is an empty directory.

    A symbolic link (to an empty directory, or to nothing) is refused, saying so: the store
    is built beside `dest` and renamed onto it, which a link stops, so the import or fork
    ran to its end, then failed as "already exists and is not an empty directory"."""
    if dest.is_symlink():
        raise EventLogError(
            f"{dest} is a symbolic link: a new store is made as its own directory (name the "
            "directory it points to)"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise EventLogError(f"{dest} already exists and is not an empty directory")


@contextlib.contextmanager
def building_store(
    dest: Path, purpose: str, dir_mode: int = PRIVATE_DIR, *, replace: bool = False
) -> Iterator[Path]:
    """A directory beside `dest` (mode `dir_mode`, whatever the umask) to build a new store
    in; on leaving without an error it is opened once (recovery, a LOCK file), fsynced and
    renamed to `dest`, so a crash leaves either nothing or the whole store. Leftovers of
    killed builders are removed first. With `replace`, a store at `dest` is swapped with
    the new one in one step, then deleted (`_replace`)."""
    _remove_abandoned(dest, purpose)
    building = dest.with_name(f".{dest.name}.{purpose}-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    make_dir(building, dir_mode)
    try:
        yield building
        EventLog.open(building).close()  # recovery and a LOCK file, before it appears
        sync_tree(building)
        if replace and dest.exists():
            _replace(building, dest)
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                dest.rmdir()  # the empty directory `check_new_store` allows
            os.rename(building, dest)
        except OSError as exc:  # another process made `dest` since `check_new_store`
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            raise EventLogError(f"{dest} already exists and is not an empty directory") from exc
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _replace(building: Path, dest: Path) -> None:
    """Put the store built in `building` at `dest` in place of the one there, and delete
    that one. Exchanged in one step where the system can (after a kill, `dest` holds the
    old store or the new one, and the next build deletes the other under the building's
    name); elsewhere the old one is renamed aside first, leaving no `dest` for a moment,
    so a kill then leaves it as ``.NAME.replaced-PID`` (`replaced_leftovers`)."""
    if not _exchange(building, dest):
        old = dest.with_name(f".{dest.name}.replaced-{os.getpid()}")
        os.rename(dest, old)
        os.rename(building, dest)
        building = old
    fsync_dir(dest.parent)
    shutil.rmtree(building, ignore_errors=True)  # the old store, now


_RENAME_EXCHANGE = 2  # <linux/fs.h>
_AT_FDCWD = -100
_NO_EXCHANGE = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` atomically (Linux `renameat2` with ``RENAME_EXCHANGE``);
    False, changing nothing, where the system or the file system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(b))


@functools.cache
def _renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    """libc's `renameat2`, or None off Linux or with a libc without it (glibc before 2.28)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def replaced_leftovers(dest: str | os.PathLike[str]) -> list[Path]:
    """Stores a killed replace left beside `dest` (``.NAME.replaced-PID``, its process gone):
    the store that was at `dest` before, moved aside, which nothing names any more."""
    path = Path(dest)
    if not path.parent.is_dir():
        return []
    found = []
    for leftover in sorted(path.parent.glob(f".{path.name}.replaced-*")):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            found.append(leftover)
    return found


def _remove_abandoned(dest: Path, purpose: str) -> None:
    """Delete builds of `dest` left by killed processes (their pid is gone), of this user
    only (`owned`): in a shared directory, run as root, another user's was deleted."""
    if not dest.parent.is_dir():
        return
    for leftover in dest.parent.glob(f".{dest.name}.{purpose}-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)) and owned(leftover):
            shutil.rmtree(leftover, ignore_errors=True)


def sync_tree(directory: Path) -> None:
    """fsync every file of the new store, then the directory: the copy is as durable as an
    acknowledged append before it is renamed into place."""
    for path in directory.iterdir():
        if path.is_dir():
            sync_tree(path)
        else:
            fsync_file(path)
    fsync_dir(directory)


def fsync_file(path: Path) -> None:
    """fsync one file (never through a link)."""
    fd = open_file(path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    with os.fdopen(create_file(path, mode), "wb") as f:
        f.write(data)


def _copy_file(source: Path, dest: Path, mode: int) -> None:
    """Copy a store file into the new store: never through a link, with the copy's mode."""
    with os.fdopen(open_file(source), "rb") as src, os.fdopen(create_file(dest, mode), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _copy_segments(log: EventLog, dest: Path, last_lsn: int, mode: int) -> None:
    store = log._store
    firsts = store.segments()
    for first, successor in zip(firsts, [*firsts[1:], None], strict=True):
        if first > last_lsn:
            return
        source = store.segment_path(first)
        if successor is not None and successor - 1 < last_lsn:
            _copy_file(source, dest / source.name, mode)  # sealed, wholly before the cut
            for index in (source.with_suffix(".ids"), source.with_suffix(".idx")):
                with contextlib.suppress(FileNotFoundError):  # caches: rebuilt if missing
                    _copy_file(index, dest / index.name, mode)
            continue
        _copy_cut_segment(source, dest / segment_name(first), first, last_lsn, mode)
        return


def _copy_cut_segment(source: Path, dest: Path, first: int, last_lsn: int, mode: int) -> None:
    """The segment the cut falls in (or ends): its frames up to `last_lsn`, the last maybe cut.
    It is the new store's last segment, so it gets no index files (those would say a later
    segment was lost)."""
    fd = open_file(source)
    try:
        out = create_file(dest, mode)
    except BaseException:
        os.close(fd)
        raise
    try:
        os.write(out, encode_segment_header(first))
        size = os.fstat(fd).st_size
        for frame in iter_frames(fd, SEGMENT_HEADER, size, first):
            head = frame.head
            if head.first_lsn > last_lsn:
                break
            if head.next_lsn - 1 <= last_lsn:
                os.write(out, os.pread(fd, head.size, frame.offset))
            else:
                os.write(out, _cut(frame, last_lsn))
                break
        os.fsync(out)
    finally:
        os.close(fd)
        os.close(out)


def _cut(frame: Frame, last_lsn: int) -> bytes:
    head = frame.head
    keep = last_lsn - head.first_lsn + 1
    requests: list[Request] = []
    for request in decode_body(unpack_body(head, frame.body)):
        if keep <= 0:
            break
        whole = len(request.events) <= keep
        requests.append(Request(request.events[:keep], request.key if whole else None))
        keep -= len(request.events)
    count = sum(len(r.events) for r in requests)
    times = [e.ts for r in requests for e in r.events]
    return encode_frame(
        encode_body(requests),
        first_lsn=head.first_lsn,
        count=count,
        min_ts=min(times),
        max_ts=max(times),
        level=Options().compression_level,
    )
