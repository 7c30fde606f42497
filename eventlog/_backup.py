"""Backups of a store's log, taken while writers run, and their restore.

A backup is a directory laid out as a store (segments, their index files, a LOCK file) plus
``BACKUP.json``, its manifest. What it holds is the log as it was at one moment, up to a
frame boundary:

1. Sealed segments are immutable: each is copied (or hard-linked), whole, with its index files.
   So are the store's retention policy and fork origin, if it has them.
2. The last segment is copied up to its last complete frame, found from the frame headers and
   checksums as a read-only reader finds it; a frame being written is left out. It gets no
   index files (beside a last segment they would say its successor was lost).
3. A backup is built whole in ``BACKUP.partial/`` inside the directory (a store of its own),
   fsynced and verified (`verify`), and its manifest written there last. Until then the
   older backup, if any, is untouched: a backup killed or stopped by a full disk midway
   leaves the older one restorable, or, with none, a directory without ``BACKUP.json``,
   which is refused, never restored from.
4. Then it is put in place (`_settle`): the older backup's files it does not hold are
   deleted, each of its files is renamed over the older one's, and its manifest last. A
   kill midway leaves its manifest in ``BACKUP.partial/``, and whoever reads the backup
   next (`backup_info`: a restore, the next backup) finishes the move first, so readers
   see the older backup or the new one, never a mix.
5. Incremental: when the directory holds an older backup of the same store, the sealed
   segments it already has (same name, size, tail checksum and source file) are hard-linked
   into the new one, not copied; the rest, and the segment that was last then (it has
   grown, or been sealed since), are copied again. A sealed segment rewritten in the source
   by replacing its file (as an erasure does) is a new file, so it is copied again. On a
   file system without hard links they are copied.

Restoring builds the store beside its target and renames it into place (see `_copy`), so the
target is never half restored.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import google_crc32c
import msgspec

from . import _advert as advert
from ._copy import (
    ORIGIN_FILE,
    Origin,
    building_store,
    check_new_store,
    fsync_file,
    sync_tree,
)
from ._erase import JOURNAL_FILE, Erasure
from ._files import (
    PRIVATE_DIR,
    Modes,
    create_file,
    make_dir,
    naming_errors,
    open_file,
    read_bytes,
)
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
    "backing_up",
    "backup",
    "backup_info",
    "backup_log",
    "restore",
    "restoring",
]

BACKUP_FILE = "BACKUP.json"
_PARTIAL = "BACKUP.partial"  # the directory a backup is built in (a file, by older versions)
_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV)
_LOG_FILE = re.compile(r"[0-9]{20}\.(seg|idx|ids)|LOCK")
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
    """The manifest of the backup at `dest`; `EventLogError` if it holds no complete one. A
    backup killed while it was put in place is put in place first (`_settle`)."""
    root = Path(dest)
    _settle(root)
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
    sealed segments instead of copying them (same file system only; they are immutable).
    One backup runs into `dest` at a time (`backing_up`); another is refused."""
    with backing_up(dest):
        return backup_log(store, dest, link=link)


@contextlib.contextmanager
def backing_up(dest: str | os.PathLike[str], *, restoring: bool = False) -> Iterator[None]:
    """Hold the backup directory `dest` (made if need be) for one backup: an exclusive
    `flock` on the directory itself, so `dest` holds no file of it. A backup (or a restore,
    with `restoring`: a shared one) finding it held is refused: two backups into one place
    deleted each other's copies as they went, and both failed."""
    root = Path(dest)
    if not restoring and not root.exists():
        root.mkdir(mode=PRIVATE_DIR, parents=True)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except NotADirectoryError:
        raise EventLogError(f"{root} is not a directory") from None
    except FileNotFoundError:
        raise EventLogError(f"{root} holds no backup (no {BACKUP_FILE})") from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if restoring else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            outcome = "nothing was restored" if restoring else "nothing was backed up"
            raise EventLogError(
                f"a backup into {root} is running; {outcome}: run this once it ends"
            ) from None
        yield
    finally:
        os.close(fd)


def backup_log(
    store: str | os.PathLike[str], dest: str | os.PathLike[str], *, link: bool = False
) -> BackupRun:
    """`backup`, by a caller that holds `dest` (`backing_up`)."""
    root = Path(dest)
    source = str(Path(store).resolve())
    with EventLog.open(store, readonly=True) as log:
        _check_store_files(log.path, "nothing was backed up")
        older = _older(root, source)
        staged = _stage(root)
        reusable = dict(list(older.segments.items())[:-1]) if older else {}
        with _stopping(root, staged, older):
            run, last_lsn, last_ts = _copy_log(log, root, staged, reusable, link=link)
    info = BackupInfo(
        source=source,
        created_ns=time.time_ns(),
        last_lsn=last_lsn,
        last_ts=last_ts,
        segments=run,
    )
    with _stopping(root, staged, older):
        _finish(staged, info)
    _settle(root)
    copied = sum(1 for name in run if name not in reusable or reusable[name] != run[name])
    moved = sum(run[n].size for n in run if n not in reusable or reusable[n] != run[n])
    return BackupRun(info=info, copied=copied, reused=len(run) - copied, copied_bytes=moved)


def _copy_log(
    log: EventLog, root: Path, staged: Path, reusable: dict[str, Segment], *, link: bool
) -> tuple[dict[str, Segment], int, int | None]:
    """Copy the log's segments and small files into `staged`, reusing the older backup's in
    `root`; return the segments, and the last LSN copied with its event's time."""
    firsts = log._store.segments()
    sizes = {segment_name(f): log._store.segment_path(f).stat().st_size for f in firsts[:-1]}
    if firsts:  # the last segment: up to its last complete frame, as a reader sees it
        last = log._store._rebuild_lenient(firsts[-1], counts=False)
        sizes[segment_name(firsts[-1])] = last.size
        last_lsn = last.next_lsn - 1
    else:
        last_lsn = -1
    run = _copy_segments(log, root, staged, sizes, reusable, link=link)
    for name in _STORE_FILES:
        with contextlib.suppress(FileNotFoundError):  # the store has none
            _copy_file(log.path / name, staged / name, None)
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
        root.mkdir(mode=PRIVATE_DIR, parents=True)
        return None
    if not root.is_dir():
        raise EventLogError(f"{root} is not a directory")
    _settle(root)
    if (root / BACKUP_FILE).exists():
        older = backup_info(root)
        if older.source != source:
            raise EventLogError(f"{root} holds a backup of another store ({older.source})")
        return older
    if not any(root.iterdir()):  # made by the user (`mkdir`, by the umask): as a new one
        try:
            os.chmod(root, PRIVATE_DIR)  # its modes are its files' and snapshots' (`Modes.of`)
        except PermissionError:  # another user's (a shared /backups): not made public in it
            raise EventLogError(
                f"{root} is another user's and cannot be made private (mode 0700): nothing"
                " was backed up; back up into a directory of your own inside it (lmg makes"
                " DEST if it does not exist)"
            ) from None
        return None
    if (root / _PARTIAL).exists():
        return None
    raise EventLogError(f"{root} is neither empty nor a backup: not written to")


@contextlib.contextmanager
def _stopping(root: Path, staged: Path, older: BackupInfo | None) -> Iterator[None]:
    """A file that could not be written into the backup (a full disk) is named as it would
    be in `root`, with what it means: the older backup there is whole, or there is none.
    The copies made so far are deleted, to give the room they took back."""
    if older is None:
        left = f"{root} holds no complete backup until one runs to its end"
    else:
        left = f"{root} still holds the older backup (LSN 0..{older.last_lsn})"
    try:
        with _writing_into(
            staged,
            lambda inside, why: (
                f"could not write {root / inside} ({why}): the backup stopped, and {left}"
            ),
        ):
            yield
    except BaseException:
        _discard(staged)
        raise


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


def _stage(root: Path) -> Path:
    """An empty ``BACKUP.partial`` directory in `root` to build the backup in (what a killed
    backup left there is deleted; it never held a complete one, see `_settle`)."""
    staged = root / _PARTIAL
    if staged.is_dir() and not staged.is_symlink():
        shutil.rmtree(staged)
    else:  # the marker file of an older version, or a link: removed, not followed
        staged.unlink(missing_ok=True)
    make_dir(staged, Modes.of(root).dir)
    fsync_dir(root)
    return staged


def _discard(staged: Path) -> None:
    """Delete the copies in `staged`, keeping the directory: it marks the backup stopped."""
    for name in os.listdir(staged):
        with contextlib.suppress(OSError):
            (staged / name).unlink()


def _settle(root: Path) -> None:
    """Put the backup complete in ``root/BACKUP.partial`` (its manifest is there) in place
    of the older one: delete the older one's files it lacks, rename its own over theirs,
    its manifest last. Each step is safe to repeat, so a kill anywhere is finished by the
    next call; the staged copy stays whole until its manifest has moved."""
    staged = root / _PARTIAL
    if staged.is_symlink() or not (staged / BACKUP_FILE).is_file():
        return
    names = {n for n in os.listdir(staged) if n != BACKUP_FILE and not n.startswith(".")}
    for name in os.listdir(root):
        if (_LOG_FILE.fullmatch(name) or name in _STORE_FILES) and name not in names:
            (root / name).unlink()
    for name in sorted(names):
        _move_in(staged, root, name)
    fsync_dir(root)
    os.replace(staged / BACKUP_FILE, root / BACKUP_FILE)
    fsync_dir(root)
    shutil.rmtree(staged)


def _move_in(staged: Path, root: Path, name: str) -> None:
    """Put `staged/name` at `root/name` through a second name (a hard link, or a synced copy
    where the file system has none), so that `staged` stays whole until the end."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.samefile(staged / name, root / name):  # a segment reused as it was
            return
    moving = staged / f".{name}.moving"
    moving.unlink(missing_ok=True)
    _link_or_copy(staged / name, moving)
    os.replace(moving, root / name)


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` as the new `target`, or copy it (synced) where links fail."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        _copy_file(source, target, None)
        fsync_file(target)


def _copy_segments(
    log: EventLog,
    root: Path,
    staged: Path,
    sizes: dict[str, int],
    reusable: dict[str, Segment],
    *,
    link: bool,
) -> dict[str, Segment]:
    """Copy the segments `sizes` names into `staged`, with the sealed ones' index files; a
    sealed segment the older backup in `root` holds as it is now is linked from there."""
    names = list(sizes)
    kept: dict[str, Segment] = {}
    for i, name in enumerate(names):
        source = log.path / name
        sealed = i < len(names) - 1
        known = reusable.get(name)
        stat = source.stat()
        here = Segment(sizes[name], _tail_crc(source, sizes[name]), (stat.st_ino, stat.st_mtime_ns))
        if known == here and _matches(root / name, here):
            _link_or_copy(root / name, staged / name)
        elif sealed and link:
            os.link(source, staged / name)
        else:
            _copy_file(source, staged / name, sizes[name])
        kept[name] = here
        for suffix in (".idx", ".ids") if sealed else ():
            index = Path(name).with_suffix(suffix).name
            with contextlib.suppress(FileNotFoundError):  # caches: rebuilt if missing
                _copy_file(log.path / index, staged / index, None)
    return kept


def _matches(path: Path, known: Segment) -> bool:
    """Does the backup's file at `path` hold what the manifest says (size, tail)? Past the
    size, a writer's reserve of zeros may follow (an erasure appended its record there)."""
    try:
        fd = open_file(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's open waits for a writer
    except FileNotFoundError:
        return False
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            return False
        size = found.st_size
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


def _finish(staged: Path, info: BackupInfo) -> None:
    """fsync, verify, then write the manifest: only a checked copy becomes a backup."""
    lock = staged / "LOCK"
    if not lock.exists():
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    sync_tree(staged)
    errors = [p for p in verify(staged) if p.severity == "error"]
    if errors:
        raise CorruptionError(
            f"the backup does not verify ({errors[0]})", str(staged.parent), None, None
        )
    write_atomically(staged / BACKUP_FILE, msgspec.json.encode(info))


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
    with backing_up(root, restoring=True):
        yield from _restoring(root, target, force=force)


def _restoring(root: Path, target: Path, *, force: bool) -> Iterator[tuple[BackupInfo, Path]]:
    info = backup_info(root)
    for name, segment in info.segments.items():
        if not _matches(root / name, segment):
            raise CorruptionError(
                "segment differs from the backup's manifest", str(root / name), None, None
            )
    _check_store_files(root, "nothing was restored")
    _check_apart(root, target)
    _check_target(target, force=force)
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
            if relative.parts[0] in (BACKUP_FILE, _PARTIAL):  # (a stopped backup's copies)
                continue
            if path.is_symlink():
                raise EventLogError(f"{path} is a symbolic link: a backup holds none")
            if not path.is_file():  # a FIFO's open would wait for a writer, for ever
                raise EventLogError(f"{path} is not a regular file: a backup holds none")
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


def _check_apart(root: Path, target: Path) -> None:
    """The backup and the store it is restored into are apart: with `--force`, a backup
    restored onto itself was replaced (it has a LOCK file) by the store, and a backup inside
    the store went with the store it replaced; a store inside the backup became part of it."""
    backup, store = root.resolve(), target.resolve()
    if backup == store or backup.is_relative_to(store) or store.is_relative_to(backup):
        where = (
            "is" if backup == store else "is inside" if backup.is_relative_to(store) else "holds"
        )
        raise EventLogError(
            f"the backup {root} {where} {target}: restore into a store apart from its backup;"
            " nothing was restored"
        )


def _check_target(target: Path, *, force: bool) -> None:
    """`target` may be restored into: it is new or empty, or, with `force`, a store (one
    holding a LOCK file). A directory that is not a store is the user's (a mistyped path).
    A symbolic link is refused: `--force` replaced the link with the restored store, and
    left the link beside it as an interrupted restore's leftover."""
    if target.is_symlink():
        raise EventLogError(
            f"{target} is a symbolic link: a restore makes the store's own directory (name the"
            " directory it points to); nothing was restored"
        )
    try:
        check_new_store(target)
    except EventLogError:
        if not force:
            raise
        if not (target.is_dir() and (target / "LOCK").is_file()):
            raise EventLogError(
                f"{target} is not a store (no LOCK file): --force replaces a store, nothing"
                " else; nothing was restored"
            ) from None
        served = advert.find(target)
        if served is not None:
            raise EventLogError(
                f"{target} is served by lmg serve (pid {served['pid']}, {served['url']}): stop"
                " it first, or the appends it acknowledges go into the store this replaces;"
                " nothing was restored"
            ) from None


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
