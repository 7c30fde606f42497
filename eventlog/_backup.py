"""Backups of a store's log, taken while writers run, and their restore.

A backup is a directory laid out as a store (segments, their index files, a LOCK file) plus
``BACKUP.json``, its manifest, written last. What it holds is the log as it was at one
moment, up to a frame boundary:

1. Sealed segments are immutable: each is copied (or hard-linked), whole, with its index files.
   So are the store's retention policy and fork origin, if it has them.
2. The last segment is copied up to its last complete frame, found from the frame headers and
   checksums as a read-only reader finds it; a frame being written is left out. It gets no
   index files (beside a last segment they would say its successor was lost).
3. The copy is fsynced and verified (`verify`) before the manifest is written. While a backup
   runs, ``BACKUP.partial`` marks the directory; a directory without ``BACKUP.json`` is not a
   backup, so a backup killed midway is detected, never restored from.
4. Incremental: when the directory holds an older backup of the same store, the sealed segments
   it already has (same name, size, tail checksum and source file) are kept; the rest, and the
   segment that was last then (it has grown, or been sealed since), are copied again. A
   sealed segment rewritten in the source by replacing its file (as a future erasure would)
   is a new file, so it is copied again.

Restoring builds the store beside its target and renames it into place (see `_copy`), so the
target is never half restored.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import google_crc32c
import msgspec

from ._copy import ORIGIN_FILE, Origin, building_store, check_new_store, sync_tree
from ._erase import JOURNAL_FILE, Erasure
from ._files import Modes, create_file, make_dir, naming_errors, open_file, read_bytes
from ._format import SEGMENT_HEADER, segment_name
from ._index import fsync_dir, write_atomically
from ._retention import RETENTION_FILE, RetentionPolicy
from ._segment import is_reserve, iter_frames, read_segment_header
from ._store import FULL_DISK
from .errors import CorruptionError, EventLogError, StorageFull
from .log import EventLog
from .verify import verify

__all__ = [
    "BACKUP_FILE",
    "BackupInfo",
    "BackupRun",
    "backup",
    "backup_info",
    "restore",
    "restoring",
]

BACKUP_FILE = "BACKUP.json"
_PARTIAL = "BACKUP.partial"
_TAIL = 4096  # bytes whose checksum tells one store's segment from another's of the same size
_COPY = 1 << 20
# Small files of the store a backup carries, with what they hold: an erasure's journal too,
# so that a backup taken while one runs is finished by `lmg erase --resume` on it (or on
# its restore).
_STORE_FILES: dict[str, type[msgspec.Struct]] = {
    RETENTION_FILE: RetentionPolicy,
    ORIGIN_FILE: Origin,
    JOURNAL_FILE: Erasure,
}


class Segment(msgspec.Struct, frozen=True):
    """A segment file of a backup: its size, the CRC32C of its last 4 KiB, and which file of
    the source it was copied from (inode and modification time: a segment rewritten in the
    source, by replacing the file, is copied again even if its size and tail are the same)."""

    size: int
    tail_crc: int
    source_file: tuple[int, int] = (0, 0)


class BackupInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A backup's manifest (``BACKUP.json``)."""

    source: str  # the store backed up, as an absolute path
    created_ns: int
    last_lsn: int  # the last event it holds (-1: none)
    last_ts: int | None  # that event's time, ns
    segments: dict[str, Segment]  # file name -> size and tail checksum


class BackupRun(msgspec.Struct, frozen=True, kw_only=True):
    """What one `backup` call did."""

    info: BackupInfo
    copied: int  # segments copied (or linked)
    reused: int  # segments an older backup in the same place already held
    copied_bytes: int


_SEGMENT_NAME = re.compile(r"[0-9]{20}\.seg")


def backup_info(dest: str | os.PathLike[str]) -> BackupInfo:
    """The manifest of the backup at `dest`; `EventLogError` if it holds no complete one."""
    root = Path(dest)
    try:
        info = msgspec.json.decode((root / BACKUP_FILE).read_bytes(), type=BackupInfo)
    except FileNotFoundError:
        why = "an interrupted backup" if (root / _PARTIAL).exists() else "no backup"
        raise EventLogError(f"{root} holds {why} (no {BACKUP_FILE})") from None
    except msgspec.DecodeError as exc:
        raise CorruptionError(
            f"unreadable manifest ({exc})", str(root / BACKUP_FILE), None, None
        ) from None
    forged = next((n for n in info.segments if not _SEGMENT_NAME.fullmatch(n)), None)
    if forged is not None:  # `../x`: a manifest names the backup's own segments, nothing else
        raise CorruptionError(
            f"manifest names {forged!r}, which is no segment file",
            str(root / BACKUP_FILE),
            None,
            None,
        )
    return info


def backup(
    store: str | os.PathLike[str], dest: str | os.PathLike[str], *, link: bool = False
) -> BackupRun:
    """Back up the log of `store` into `dest` (see the module docstring); `link` hard-links
    sealed segments instead of copying them (same file system only; they are immutable)."""
    root = Path(dest)
    source = str(Path(store).resolve())
    with EventLog.open(store, readonly=True) as log:
        _check_store_files(log.path, "nothing was backed up")
        older = _older(root, source)
        _mark_partial(root)
        reusable = dict(list(older.segments.items())[:-1]) if older else {}
        with _stopping(root):
            run, last_lsn, last_ts = _copy_log(log, root, reusable, link=link)
    info = BackupInfo(
        source=source,
        created_ns=time.time_ns(),
        last_lsn=last_lsn,
        last_ts=last_ts,
        segments=run,
    )
    with _stopping(root):
        _finish(root, info)
    copied = sum(1 for name in run if name not in reusable or reusable[name] != run[name])
    moved = sum(run[n].size for n in run if n not in reusable or reusable[n] != run[n])
    return BackupRun(info=info, copied=copied, reused=len(run) - copied, copied_bytes=moved)


def _copy_log(
    log: EventLog, root: Path, reusable: dict[str, Segment], *, link: bool
) -> tuple[dict[str, Segment], int, int | None]:
    """Copy the log's segments and small files into `root`; return the segments, and the
    last LSN copied with its event's time."""
    firsts = log._store.segments()
    sizes = {segment_name(f): log._store.segment_path(f).stat().st_size for f in firsts[:-1]}
    if firsts:  # the last segment: up to its last complete frame, as a reader sees it
        last = log._store._rebuild_lenient(firsts[-1], counts=False)
        sizes[segment_name(firsts[-1])] = last.size
        last_lsn = last.next_lsn - 1
    else:
        last_lsn = -1
    run = _copy_segments(log, root, sizes, reusable, link=link)
    for name in _STORE_FILES:
        (root / name).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):  # the store has none
            _copy_file(log.path / name, root / name, None)
    event = next(log.read(last_lsn, last_lsn + 1), None) if last_lsn >= 0 else None
    return run, last_lsn, None if event is None else event.event.ts


def redescribe(root: Path) -> None:
    """Write the manifest of the backup at `root` anew from its files, after an erasure ran
    on it (a backup is a store; `lmg erase BACKUP`): its segments were rewritten and it
    holds the erasure's record, so a restore checks them against what they are now. A
    segment is no longer the copy of a source file: the next backup into `root` copies it
    again, from the store backed up (erase that store too)."""
    older = backup_info(root)
    with EventLog.open(root, readonly=True) as log:
        last_lsn = log.next_lsn() - 1
        event = next(log.read(last_lsn, last_lsn + 1), None) if last_lsn >= 0 else None
        names = [segment_name(f) for f in log._store.segments()]
    segments = {}
    for name in names:
        size = _frames_end(root / name)
        segments[name] = Segment(size, _tail_crc(root / name, size))
    info = msgspec.structs.replace(
        older,
        last_lsn=last_lsn,
        last_ts=None if event is None else event.event.ts,
        segments=segments,
    )
    write_atomically(root / BACKUP_FILE, msgspec.json.encode(info))


def _check_store_files(root: Path, outcome: str) -> None:
    """Refuse a small file of the store at `root` (its retention policy, fork origin, an
    erasure's journal) that the store itself refuses as unreadable (`lmg retention`, `lmg
    erase`): a backup would carry it in silence, and a restore make a store of it."""
    for name, kind in _STORE_FILES.items():
        try:
            data = read_bytes(root / name)
        except FileNotFoundError:
            continue
        try:
            msgspec.json.decode(data, type=kind)
        except msgspec.DecodeError as exc:  # ValidationError too
            raise EventLogError(f"{root / name} is unreadable: {exc}; {outcome}") from None


def _older(root: Path, source: str) -> BackupInfo | None:
    """The backup `root` already holds (None: it is new, empty, or an interrupted backup)."""
    if not root.exists():
        root.mkdir(mode=0o700, parents=True)
        return None
    if not root.is_dir():
        raise EventLogError(f"{root} is not a directory")
    if (root / BACKUP_FILE).exists():
        older = backup_info(root)
        if older.source != source:
            raise EventLogError(f"{root} holds a backup of another store ({older.source})")
        return older
    if (root / _PARTIAL).exists() or not any(root.iterdir()):
        return None
    raise EventLogError(f"{root} is neither empty nor a backup: not written to")


def _stopping(root: Path) -> contextlib.AbstractContextManager[None]:
    """A file that could not be written into the backup `root` (a full disk) is named, with
    what it means: `root` holds no complete backup until one runs to its end (an older
    backup there was no longer one once this one began)."""
    return _writing_into(
        root,
        lambda inside, why: (
            f"could not write {root / inside} ({why}): the backup stopped, and "
            f"{root} holds no complete backup until one runs to its end"
        ),
    )


@contextlib.contextmanager
def _writing_into(directory: Path, say: Callable[[Path, str], str]) -> Iterator[None]:
    """An OSError on a file under `directory` (a full disk) becomes one line, `say(the file
    relative to directory, the system's reason)`; other errors pass as they are."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None or not Path(exc.filename).is_relative_to(directory):
            raise
        inside = Path(exc.filename).relative_to(directory)
        raise _stopped(exc, say(inside, str(exc.strerror))) from None


def _mark_partial(root: Path) -> None:
    """From here until `_finish`, `root` is not a backup (a kill leaves it detectably so)."""
    write_atomically(root / _PARTIAL, str(os.getpid()).encode())
    with contextlib.suppress(FileNotFoundError):
        (root / BACKUP_FILE).unlink()
    fsync_dir(root)


def _copy_segments(
    log: EventLog, root: Path, sizes: dict[str, int], reusable: dict[str, Segment], *, link: bool
) -> dict[str, Segment]:
    names = list(sizes)
    kept: dict[str, Segment] = {}
    for i, name in enumerate(names):
        source = log.path / name
        target = root / name
        sealed = i < len(names) - 1
        known = reusable.get(name)
        stat = source.stat()
        here = Segment(sizes[name], _tail_crc(source, sizes[name]), (stat.st_ino, stat.st_mtime_ns))
        if known == here and _matches(target, here):
            kept[name] = known
        elif sealed and link:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            os.link(source, target)
            kept[name] = here
        else:
            _copy_file(source, target, sizes[name])
            kept[name] = here
        for suffix in (".idx", ".ids"):
            index = Path(name).with_suffix(suffix).name
            with contextlib.suppress(FileNotFoundError):
                (root / index).unlink()
            if sealed:
                with contextlib.suppress(FileNotFoundError):  # caches: rebuilt if missing
                    _copy_file(log.path / index, root / index, None)
    stems = {Path(n).stem for n in names}
    for stale in os.listdir(root):  # an older backup's files the log no longer has
        if stale.endswith((".seg", ".idx", ".ids")) and Path(stale).stem not in stems:
            (root / stale).unlink()
    return kept


def _matches(path: Path, known: Segment) -> bool:
    """Does the backup's file at `path` hold what the manifest says (size, tail)? Past the
    size, a writer's reserve of zeros may follow (an erasure appended its record there)."""
    try:
        fd = open_file(path)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(fd).st_size
        beyond = size == known.size or (size > known.size and is_reserve(fd, known.size, size))
    finally:
        os.close(fd)
    return beyond and _tail_crc(path, known.size) == known.tail_crc


def _frames_end(path: Path) -> int:
    """Where the frames of the segment at `path` end: its size, less a writer's reserve."""
    fd = open_file(path)
    try:
        end = SEGMENT_HEADER
        for frame in iter_frames(fd, SEGMENT_HEADER, os.fstat(fd).st_size, read_segment_header(fd)):
            end = frame.offset + frame.head.size
        return end
    finally:
        os.close(fd)


def _tail_crc(path: Path, size: int) -> int:
    with path.open("rb") as f:
        f.seek(max(0, size - _TAIL))
        return int(google_crc32c.value(f.read(min(size, _TAIL))))


def _copy_file(source: Path, target: Path, length: int | None) -> None:
    """Copy `length` bytes (None: all) of `source` into a private new `target`. Neither may
    be a symbolic link (a backup holding one is refused, not followed). An error reading
    or writing names the file it was reading or writing (a full disk names `target`)."""
    src = open_file(source)
    try:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        out = create_file(target, Modes.of(target.parent).file)
        try:
            end = os.fstat(src).st_size if length is None else length
            offset = 0
            while offset < end:
                with naming_errors(source):
                    data = os.pread(src, min(_COPY, end - offset), offset)
                if not data:
                    raise EventLogError(f"{source} ended at {offset} bytes, not {end}")
                with naming_errors(target):
                    _write_all(out, data)
                offset += len(data)
        finally:
            os.close(out)
    finally:
        os.close(src)


def _stopped(exc: OSError, message: str) -> EventLogError:
    """The error to raise for `exc` with `message`: `StorageFull` if the disk is full (or a
    file size limit was hit), so callers can tell it from damage."""
    if exc.errno in FULL_DISK:
        return StorageFull(exc.errno, message)
    return EventLogError(message)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _finish(root: Path, info: BackupInfo) -> None:
    """fsync, verify, then write the manifest: only a checked copy becomes a backup."""
    lock = root / "LOCK"
    if not lock.exists():
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    sync_tree(root)
    errors = [p for p in verify(root) if p.severity == "error"]
    if errors:
        raise CorruptionError(f"the backup does not verify ({errors[0]})", str(root), None, None)
    write_atomically(root / BACKUP_FILE, msgspec.json.encode(info))
    (root / _PARTIAL).unlink()
    fsync_dir(root)


def restore(
    dest: str | os.PathLike[str], store: str | os.PathLike[str], *, force: bool = False
) -> BackupInfo:
    """Create the store `store` from the backup at `dest`: every file of the backup (the log,
    and what else it holds, such as snapshots), checked against the manifest and verified.
    `store` must be new or empty, unless `force` (then it is replaced, whole, at the end)."""
    with restoring(dest, store, force=force) as (info, _building):
        return info


@contextlib.contextmanager
def restoring(
    dest: str | os.PathLike[str], store: str | os.PathLike[str], *, force: bool = False
) -> Iterator[tuple[BackupInfo, Path]]:
    """`restore`, giving the backup's manifest and the directory the store is built in,
    copied and verified, before it is renamed into place: what the caller writes there (the
    projections' database) appears with the store, or not at all. An error within leaves
    no store."""
    root, target = Path(dest), Path(store)
    info = backup_info(root)
    for name, segment in info.segments.items():
        if not _matches(root / name, segment):
            raise CorruptionError(
                "segment differs from the backup's manifest", str(root / name), None, None
            )
    _check_store_files(root, "nothing was restored")
    if not force:
        check_new_store(target)
    with (
        building_store(target, "restoring", replace=force) as building,
        _writing_into(
            building,
            lambda inside, why: (
                f"could not write {inside} into {target} ({why}); nothing was restored"
            ),
        ),
    ):
        for path in _files(root):
            relative = path.relative_to(root)
            if str(relative) in (BACKUP_FILE, _PARTIAL):
                continue
            if path.is_symlink():
                raise EventLogError(f"{path} is a symbolic link: a backup holds none")
            _make_dirs(building, relative.parent)
            _copy_file(path, building / relative, None)
        errors = [p for p in verify(building) if p.severity == "error"]
        if errors:
            # Name the backup's damaged file, not its copy in the temporary directory (which
            # is removed on the way out: a path the user can neither see nor act on).
            first = errors[0]
            inside = Path(first.path).is_relative_to(building)
            damaged = root / Path(first.path).relative_to(building) if inside else root
            raise CorruptionError(
                f"the backup does not restore: {first.message}",
                str(damaged),
                first.offset,
                first.lsn,
            )
        yield info, building


def _make_dirs(root: Path, relative: Path) -> None:
    """Create `relative`'s directories under `root`, each with the store's modes (a
    `mkdir(parents=True)` would make the intermediate ones by the umask)."""
    mode = Modes.of(root).dir
    for depth in range(1, len(relative.parts) + 1):
        make_dir(root.joinpath(*relative.parts[:depth]), mode)


def _files(root: Path) -> Iterator[Path]:
    for folder, _dirs, files in os.walk(root):
        for name in sorted(files):
            yield Path(folder) / name
