"""Snapshots: the projections database saved at known LSNs, so replay starts near its target.

A snapshot is a checkpointed copy of a projections database whose checkpoint is its LSN. It is
kept in ``<store>/snapshots/`` as content-addressed chunks plus a manifest:

    snapshots/00000000000000040000.snap     the manifest: LSN, schema version, chunk list, CRC
    snapshots/chunks/3f/3fa2...e1           a chunk, named by the SHA-256 of its bytes

Consecutive snapshots share most of their chunks (DuckDB rewrites only the blocks a checkpoint
changes), so a new snapshot costs what changed, not the whole database. A chunk's name must be
a SHA-256 digest (64 lowercase hex digits: a manifest cannot name a path) and its bytes must
hash to it; the manifest also gives each chunk's CRC32C, and carries its own. Digests, CRCs and
lengths are of the database's bytes; a chunk file holds them compressed as one zstd frame
(DuckDB's own compression leaves about half to take), or, if older code wrote it, as they are:
a file is read as zstd when it starts with zstd's magic number and what it decompresses to
hashes to its name, and as raw bytes otherwise. The manifest also records the SHA-256 of each
chunk's file as its writer stored or checked it, so a restore that finds that very file hashes
the frame rather than what it decompresses to (`_check`). A restore checks all of these, that
the log still holds the history the snapshot folded (the mark of the event at its LSN, see
`_history`), then that the database's schema version, checkpoint and mark are
what the manifest says. Anything that fails is skipped with a `SnapshotSkipped` warning, and
the restore falls back to an older snapshot (or none): a snapshot is a cache of the log, never
trusted over it.

Snapshots are as private as their store: every file and directory here takes the modes of
the store's directory, and none is opened through a symbolic link (`eventlog._files`).

Writers (a projector, `lmg snapshot`) serialise on ``.writer``; a restore holds ``.readers``
shared, and pruning takes it exclusively before deleting chunks, so no restore reads a chunk
being deleted. A projector checkpoints, then saves the chunks on a thread while it folds on
(`Snapshots.take_in_background` says why the file stays as checkpointed meanwhile).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import os
import re
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, BinaryIO

import duckdb
import google_crc32c
import msgspec
import zstandard

from eventlog import UnsafeStore
from eventlog._files import Modes, create_file, make_dir, open_file, open_or_create, read_bytes

from ._folder import LogReader
from ._history import folded_history, history_differs
from ._policy import SnapshotPolicy
from ._schema import SCHEMA_VERSION
from .errors import ProjectionError

__all__ = ["SnapshotInfo", "SnapshotPolicy", "SnapshotSkipped", "Snapshots"]

SNAPSHOT_DIR = "snapshots"
_HEADER_BYTES = 12_288  # DuckDB's file headers; chunks after them align with its 256 KiB blocks
_CHUNK_BYTES = 262_144
_FORMAT = 1
_ZSTD_LEVEL = 3  # level 1 keeps a third more bytes; 6 and above gain nothing on DuckDB blocks
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_RESTORE_THREADS = min(4, os.cpu_count() or 1)  # that decompress and check chunks on restore


class SnapshotSkipped(UserWarning):
    """A snapshot could not be used (damaged, missing, another schema) and was passed over."""


Digest = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
"""A chunk's name: what its bytes hash to, never a path (a manifest naming ``../x`` is damaged)."""


class _Chunk(msgspec.Struct, array_like=True, frozen=True):
    sha256: Digest
    crc32c: int
    length: int


class _Manifest(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    lsn: int
    ts: int | None
    schema_version: int
    created_ns: int
    size: int
    chunks: list[_Chunk]
    mark: int | None = None  # of the event at `lsn` (`_history`); None: written by older code
    # The SHA-256 of each chunk's file, a zstd frame, as this manifest's writer stored it or
    # found it intact (None: not a frame); the list is None if older code wrote it (`_check`).
    frames: list[Digest | None] | None = None


class SnapshotInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a manifest says about one snapshot."""

    lsn: int  # the last LSN folded into it
    ts: int | None  # that event's time (ns), when known
    schema_version: int
    created_ns: int
    size: int  # bytes of the database file
    path: str  # the manifest


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Manifest).decode


class Snapshots:
    """The snapshots of one store (``<store>/snapshots``)."""

    def __init__(self, store: str | os.PathLike[str]) -> None:
        self.dir = Path(store) / SNAPSHOT_DIR
        self._store = Path(store)
        # The chunks this object wrote or read back intact, with their files' SHA-256.
        self._checked: dict[str, str | None] = {}

    # -- reading ------------------------------------------------------------------------------

    def all(self) -> list[SnapshotInfo]:
        """Every snapshot whose manifest reads, oldest first (a damaged manifest is skipped
        with a warning; chunks are checked only on restore)."""
        found = []
        for path in self._manifest_paths():
            manifest = self._read_manifest(path)
            if manifest is not None:
                found.append(_info(manifest, path))
        return found

    def restore(
        self,
        target: Path,
        *,
        at_most: int,
        log: LogReader,
        config: dict[str, str | bool | int | float | list[str]] | None = None,
    ) -> tuple[SnapshotInfo, duckdb.DuckDBPyConnection] | None:
        """Write the newest usable snapshot with LSN <= `at_most` to `target` and open it
        read-write; None if there is none. Damaged ones, and those that folded a history
        `log` no longer holds, are skipped with a warning."""
        if not self.dir.is_dir():
            return None
        with self._lock(".readers", fcntl.LOCK_SH):
            candidates = [p for p in self._manifest_paths() if _lsn_of(p) <= at_most]
            for path in reversed(candidates):
                manifest = self._read_manifest(path)
                if manifest is None:
                    continue
                if manifest.schema_version != SCHEMA_VERSION:
                    _skip(path, f"schema version {manifest.schema_version}, not {SCHEMA_VERSION}")
                    continue
                why = history_differs(log, manifest.lsn, manifest.ts, manifest.mark)
                if why is not None:
                    _skip(path, why)
                    continue
                con = self._materialise(path, manifest, target, config or {})
                if con is not None:
                    return _info(manifest, path), con
        return None

    def _materialise(
        self,
        path: Path,
        manifest: _Manifest,
        target: Path,
        config: dict[str, str | bool | int | float | list[str]],
    ) -> duckdb.DuckDBPyConnection | None:
        try:
            self._write_file(manifest, target)
        except _Damaged as damaged:
            _remove_database(target)
            _skip(path, str(damaged))
            return None
        try:
            con = duckdb.connect(str(target), config=config)
        except duckdb.Error as exc:
            _remove_database(target)
            _skip(path, f"DuckDB cannot open it ({exc})")
            return None
        try:
            rows = con.execute("SELECT value FROM lmg_meta WHERE key = 'schema_version'").fetchall()
            found, _ts, mark = folded_history(con)
            if rows != [(str(SCHEMA_VERSION),)] or found != manifest.lsn or mark != manifest.mark:
                raise _Damaged(f"its database says schema {rows} at LSN {found} (mark {mark})")
        except (duckdb.Error, _Damaged) as exc:
            con.close()
            _remove_database(target)
            _skip(path, f"its database does not match its manifest ({exc})")
            return None
        return con

    def _write_file(self, manifest: _Manifest, target: Path) -> None:
        """Write the snapshot's database to `target`, each chunk at its offset, reading,
        decompressing and checking them on a few threads (zstandard and hashlib free the GIL:
        a restore is CPU-bound on them). No fsync here, as before: a replay's copy is private
        and deleted after use; DuckDB syncs what it later checkpoints into the file."""
        offsets = list(itertools.accumulate((c.length for c in manifest.chunks), initial=0))
        if offsets[-1] != manifest.size:
            raise _Damaged(f"its chunks hold {offsets[-1]} bytes, not {manifest.size}")
        fd = create_file(target, Modes.of(target.parent).file)
        pool = ThreadPoolExecutor(_RESTORE_THREADS)
        try:
            for _ in pool.map(
                lambda chunk, frame, offset: os.pwrite(fd, self._read_chunk(chunk, frame), offset),
                manifest.chunks,
                _frames(manifest),
                offsets,
            ):
                pass  # in order: the first damaged chunk raises, as it would alone
        finally:
            pool.shutdown(cancel_futures=True)  # waits for those running, before the close
            os.close(fd)

    def _read_chunk(self, chunk: _Chunk, frame: str | None = None) -> bytes:
        """A chunk's bytes, checked (`_check`); `frame`: its manifest's digest of its file."""
        return _check(chunk, self._chunk_file(chunk), frame)

    def _chunk_file(self, chunk: _Chunk) -> bytes:
        """What the file of `chunk` holds (unchecked)."""
        path = self._chunk_path(chunk.sha256)
        try:
            return read_bytes(path)
        except FileNotFoundError:
            raise _Damaged(f"chunk {path.name} is missing") from None
        except UnsafeStore:
            raise _Damaged(f"chunk {path.name} is a symbolic link") from None
        except OSError as exc:  # a file where a directory should be, a directory, no access
            raise _Damaged(f"chunk {path.name} is unreadable ({exc.strerror})") from None

    def copy_to(self, store: str | os.PathLike[str], *, at_most: int) -> SnapshotInfo | None:
        """Copy the newest intact snapshot with LSN <= `at_most` into the snapshots of `store`
        (a backup): the chunks it lacks first, the manifest last, then drop its others. None
        if there is no such snapshot."""
        if not self.dir.is_dir():
            return None
        target = Snapshots(store)
        with self._lock(".readers", fcntl.LOCK_SH):  # no pruning deletes a chunk meanwhile
            for path in reversed([p for p in self._manifest_paths() if _lsn_of(p) <= at_most]):
                manifest = self._read_manifest(path, warn=False)
                if manifest is None or manifest.schema_version != SCHEMA_VERSION:
                    continue
                try:
                    target._receive(self, manifest)
                except _Damaged:
                    continue
                copy = target._manifest_path(manifest.lsn)
                _write_durably(copy, path.read_bytes())
                for other in target._manifest_paths():
                    if other != copy:
                        other.unlink()
                target._collect_garbage()
                return _info(manifest, copy)
        return None

    def _receive(self, source: Snapshots, manifest: _Manifest) -> None:
        """Store the chunks of `manifest` this side lacks, read (and checked) from `source`."""
        self._make_dir(self.dir)
        self._make_dir(self.dir / "chunks")
        written: list[Path] = []
        for chunk, frame in zip(manifest.chunks, _frames(manifest), strict=True):
            if not self._intact(chunk, frame):
                target = self._chunk_path(chunk.sha256)
                self._make_dir(target.parent)  # the store's modes, never the umask's
                _replace(target, _compress(source._read_chunk(chunk, frame)), sync=False)
                written.append(target)
        _sync_chunks(written, self.dir / "chunks")

    # -- writing ------------------------------------------------------------------------------

    def take(self, con: duckdb.DuckDBPyConnection, db: Path, *, ts: int | None) -> SnapshotInfo:
        """Checkpoint the database `con` has open read-write (file `db`, no transaction open,
        no other writer) and save it as the snapshot at its checkpoint LSN. `ts` is the time
        of the event at that LSN. Idempotent per LSN (and history)."""
        return self._save(self._checkpoint(con, db, ts=ts))

    def take_in_background(
        self,
        con: duckdb.DuckDBPyConnection,
        db: Path,
        *,
        ts: int | None,
        keep: int,
        pool: Executor,
    ) -> Future[SnapshotInfo]:
        """`take`, then `prune(keep)`, with only the checkpoint done now: reading, hashing
        and storing the file's chunks and the manifest run on `pool` while the caller goes
        on folding into the database (a projector).

        That is safe because DuckDB commits to its write-ahead log, and never writes a
        block the last checkpoint uses before the next checkpoint has replaced it (so that
        a crash always leaves that checkpoint whole): the file's first `size` bytes stay as
        this checkpoint left them until the database is checkpointed again. The caller
        must wait for the result before that: before another snapshot, and before closing
        the connection (which checkpoints). Should a checkpoint happen all the same, the
        file's header no longer matches when the chunks are read, and the snapshot fails
        (`ProjectionError`) instead of being saved."""
        point = self._checkpoint(con, db, ts=ts)

        def save() -> SnapshotInfo:
            info = self._save(point)
            self.prune(keep)
            return info

        return pool.submit(save)

    def _checkpoint(self, con: duckdb.DuckDBPyConnection, db: Path, *, ts: int | None) -> _Point:
        """Checkpoint, and note what a snapshot of the file as it now stands needs."""
        self._make_dir(self.dir)
        self._make_dir(self.dir / "chunks")
        con.execute("CHECKPOINT")
        lsn, _ts, mark = folded_history(con)
        if lsn < 0:
            raise ProjectionError("an empty database needs no snapshot")
        wal = Path(f"{db}.wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise ProjectionError(f"{db} still has a write-ahead log after a checkpoint")
        with os.fdopen(open_file(db), "rb") as file:
            size = os.fstat(file.fileno()).st_size
            header = file.read(_HEADER_BYTES)
        return _Point(db=db, lsn=lsn, ts=ts, mark=mark, size=size, header=header)

    def _save(self, point: _Point) -> SnapshotInfo:
        """Save the checkpointed file of `point` as its snapshot (unless a usable one of the
        same LSN and history exists)."""
        with self._lock(".writer", fcntl.LOCK_EX):
            path = self._manifest_path(point.lsn)
            existing = self._read_manifest(path, warn=False) if path.exists() else None
            if existing is not None and existing.mark == point.mark and self._usable(existing):
                return _info(existing, path)
            stored = self._store_chunks(point)
            manifest = _Manifest(
                format=_FORMAT,
                lsn=point.lsn,
                ts=point.ts,
                schema_version=SCHEMA_VERSION,
                created_ns=time.time_ns(),
                size=point.size,
                chunks=[chunk for chunk, _ in stored],
                mark=point.mark,
                frames=[frame for _, frame in stored],
            )
            body = _encode(manifest)
            _write_durably(path, body + f"\n{google_crc32c.value(body):08x}\n".encode())
            return _info(manifest, path)

    def _store_chunks(self, point: _Point) -> list[tuple[_Chunk, str | None]]:
        """Cut the file into chunks, 16 MiB at a time (a projector's memory stays flat),
        hashing them on two threads, and write those not stored yet; they are synced
        together at the end, before the manifest names them (see `_sync_chunks`). The
        header is read again last: a checkpoint since `point` fails the snapshot."""
        chunks: list[tuple[_Chunk, str | None]] = []
        written: list[Path] = []
        try:
            with (
                os.fdopen(open_file(point.db), "rb") as file,
                ThreadPoolExecutor(2) as pool,  # hashlib frees the GIL
            ):
                file.seek(len(point.header))
                rest = _pieces(file, point.size - len(point.header))
                pieces = itertools.chain([point.header], rest)
                while group := list(itertools.islice(pieces, 64)):
                    digests = pool.map(lambda b: hashlib.sha256(b).hexdigest(), group)
                    for data, digest in zip(group, digests, strict=True):
                        chunks.append(self._store_chunk(data, digest, written))
                file.seek(0)
                header = file.read(_HEADER_BYTES)
            if header != point.header or sum(c.length for c, _ in chunks) != point.size:
                raise ProjectionError(f"{point.db} was checkpointed while its snapshot was read")
            _sync_chunks(written, self.dir / "chunks")
        except BaseException:
            for path in written:  # not known durable
                self._checked.pop(path.name, None)
            raise
        return chunks

    def _store_chunk(
        self, data: bytes, digest: str, written: list[Path]
    ) -> tuple[_Chunk, str | None]:
        """The chunk of `data` and the SHA-256 of its file, which is written unless an intact
        one is there."""
        chunk = _Chunk(digest, google_crc32c.value(data), len(data))
        target = self._chunk_path(digest)
        # A chunk is read back once per object (a projector's lifetime) and rewritten if new
        # or damaged; after that, that it still exists is enough (another process may have
        # pruned it, or written it again: a restore that finds another file than the one
        # recorded checks it against the chunk's name, as any other).
        if digest not in self._checked or not target.exists():
            try:
                found = self._chunk_file(chunk)
                raw = _check(chunk, found, None) is found  # a raw chunk of older code
                self._checked[digest] = None if raw else hashlib.sha256(found).hexdigest()
            except _Damaged:
                self._make_dir(target.parent)
                frame = _compress(data)
                _replace(target, frame, sync=False)
                written.append(target)
                self._checked[digest] = hashlib.sha256(frame).hexdigest()
        return chunk, self._checked[digest]

    def _usable(self, manifest: _Manifest) -> bool:
        """Is this snapshot one a restore would take (this schema, every chunk intact)?"""
        return manifest.schema_version == SCHEMA_VERSION and all(
            self._intact(c, f) for c, f in zip(manifest.chunks, _frames(manifest), strict=True)
        )

    def _intact(self, chunk: _Chunk, frame: str | None = None) -> bool:
        try:
            self._read_chunk(chunk, frame)
        except _Damaged:
            return False
        return True

    def prune(self, keep: int) -> list[int]:
        """Keep at most `keep` snapshots of this schema version, spread over the history;
        drop the rest, and any that are unreadable or of an older schema version (a newer
        version's belong to newer code, running beside). Returns the LSNs dropped."""
        if keep < 1:
            raise ProjectionError(f"keep must be at least 1, got {keep}")
        if not self.dir.is_dir():
            return []
        with self._lock(".writer", fcntl.LOCK_EX):
            infos = {_lsn_of(p): self._read_manifest(p, warn=False) for p in self._manifest_paths()}
            kept = sorted(
                lsn for lsn, m in infos.items() if m and m.schema_version == SCHEMA_VERSION
            )
            while len(kept) > keep:
                kept.remove(_closest(kept))
            newer = {lsn for lsn, m in infos.items() if m and m.schema_version > SCHEMA_VERSION}
            drop = [lsn for lsn in infos if lsn not in kept and lsn not in newer]
            if not drop:
                return []
            with self._lock(".readers", fcntl.LOCK_EX):  # no restore reads while chunks go
                for lsn in drop:
                    self._manifest_path(lsn).unlink(missing_ok=True)
                self._collect_garbage()
            return sorted(drop)

    def drop_other_histories(self, log: LogReader) -> list[int]:
        """Drop the snapshots that folded events `log` no longer holds (it lost its tail and
        new events took those LSNs): a restore would skip them every time. Returns their LSNs.
        One log seek per snapshot: called when a projector finds its history changed."""
        if not self.dir.is_dir():
            return []
        with self._lock(".writer", fcntl.LOCK_EX):
            drop = []
            for path in self._manifest_paths():
                manifest = self._read_manifest(path, warn=False)
                if manifest and history_differs(log, manifest.lsn, manifest.ts, manifest.mark):
                    drop.append(path)
            if drop:
                with self._lock(".readers", fcntl.LOCK_EX):
                    for path in drop:
                        path.unlink(missing_ok=True)
                    self._collect_garbage()
            return [_lsn_of(p) for p in drop]

    def drop_from(self, lsn: int) -> list[int]:
        """Drop the snapshots at `lsn` or later, and the chunks only they used (an erasure
        from `lsn`: those folded the erased content; older ones never saw it). Returns their
        LSNs."""
        if not self.dir.is_dir():
            return []
        with self._lock(".writer", fcntl.LOCK_EX):
            drop = [p for p in self._manifest_paths() if _lsn_of(p) >= lsn]
            with self._lock(".readers", fcntl.LOCK_EX):
                for path in drop:
                    path.unlink(missing_ok=True)
                self._collect_garbage()
            return [_lsn_of(p) for p in drop]

    def _collect_garbage(self) -> None:
        live: set[str] = set()
        for path in self._manifest_paths():
            manifest = self._read_manifest(path, warn=False)
            if manifest is None:  # unreadable: keep every chunk rather than guess
                return
            live.update(c.sha256 for c in manifest.chunks)
        for chunk in (self.dir / "chunks").glob("*/*"):
            if chunk.name not in live:
                chunk.unlink(missing_ok=True)
                self._checked.pop(chunk.name, None)

    # -- files --------------------------------------------------------------------------------

    def _make_dir(self, path: Path) -> None:
        """Create `path` if need be; anything else in its place is a one-line error."""
        with contextlib.suppress(NotADirectoryError):  # a file where a parent should be
            make_dir(path, Modes.of(self._store).dir)
        if not path.is_dir():
            raise ProjectionError(f"{path} is not a directory: no snapshot can be saved")

    def _manifest_paths(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("*.snap") if p.stem.isdigit())

    def _manifest_path(self, lsn: int) -> Path:
        return self.dir / f"{lsn:020d}.snap"

    def _chunk_path(self, digest: str) -> Path:
        return self.dir / "chunks" / digest[:2] / digest

    def _read_manifest(self, path: Path, *, warn: bool = True) -> _Manifest | None:
        try:
            raw = read_bytes(path)
            body, _, crc = raw.rstrip(b"\n").rpartition(b"\n")
            if not re.fullmatch(rb"[0-9a-f]{8}", crc) or int(crc, 16) != google_crc32c.value(body):
                raise _Damaged("its manifest fails its checksum")
            manifest = _decode(body)
            if manifest.format != _FORMAT or manifest.lsn != _lsn_of(path):
                raise _Damaged("its manifest does not match its name or format")
        except FileNotFoundError:
            return None
        except (_Damaged, ValueError, msgspec.DecodeError, UnsafeStore) as exc:
            if warn:
                _skip(path, str(exc))
            return None
        return manifest

    @contextlib.contextmanager
    def _lock(self, name: str, mode: int) -> Iterator[None]:
        try:
            self._make_dir(self.dir)  # it may have been deleted since we looked
            fd = open_or_create(self.dir / name, Modes.of(self._store).file)
        except PermissionError:
            if mode != fcntl.LOCK_SH:
                raise
            try:  # a reader of a store it may not write: flock works read-only too
                fd = open_file(self.dir / name)
            except FileNotFoundError:  # no writer ever ran here: nothing to keep out
                yield
                return
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)


class _Damaged(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class _Point:
    """A checkpointed database file, as a snapshot of it needs it."""

    db: Path
    lsn: int  # its checkpoint
    ts: int | None  # the time of the event at `lsn`
    mark: int | None  # of that event (`_history`)
    size: int  # bytes of the file
    header: bytes  # its first `_HEADER_BYTES`: DuckDB's headers, new at every checkpoint


def _lsn_of(path: Path) -> int:
    return int(path.stem)


def _info(manifest: _Manifest, path: Path) -> SnapshotInfo:
    return SnapshotInfo(
        lsn=manifest.lsn,
        ts=manifest.ts,
        schema_version=manifest.schema_version,
        created_ns=manifest.created_ns,
        size=manifest.size,
        path=str(path),
    )


def _skip(path: Path, why: str) -> None:
    warnings.warn(f"snapshot {path.name} skipped: {why}", SnapshotSkipped, stacklevel=3)


def _closest(lsns: list[int]) -> int:
    """The inner snapshot whose neighbours are closest: dropping it widens the least gap."""
    inner = range(1, len(lsns) - 1)
    if not inner:
        return lsns[0]
    return lsns[min(inner, key=lambda i: (lsns[i + 1] - lsns[i - 1], lsns[i]))]


def _compress(data: bytes) -> bytes:
    """A chunk's bytes as one zstd frame (zstandard's compressors are not thread-safe: one
    per call costs microseconds against the milliseconds of compressing 256 KiB)."""
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data)


def _check(chunk: _Chunk, stored: bytes, frame: str | None) -> bytes:
    """The bytes of `chunk` from what its file holds, `stored`, checked.

    A file whose SHA-256 is `frame`, what the manifest records of it, is the zstd frame the
    manifest's writer wrote, or checked against the chunk's name: it is decompressed, and
    only its length and CRC32C are checked again (against a faulty decompression), not its
    name. So a restore hashes the frame (about half the bytes) instead of what it
    decompresses to, with the same strength: SHA-256 binds the file to the one the writer
    checked. Any other file (damaged, or written again by another version of zstd) gets
    every check: its bytes must have the manifest's length, CRC32C and name. A manifest
    forged along with a chunk file gets no more than it could before: it could as well name
    new chunks of its own; a manifest of its own writer never takes another file."""
    if (
        frame is not None
        and stored.startswith(_ZSTD_MAGIC)
        and hashlib.sha256(stored).hexdigest() == frame
    ):
        with contextlib.suppress(zstandard.ZstdError):
            data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=chunk.length)
            if len(data) == chunk.length and google_crc32c.value(data) == chunk.crc32c:
                return data
    for data in _contents(stored, chunk.length):
        if (
            len(data) == chunk.length
            and google_crc32c.value(data) == chunk.crc32c
            and hashlib.sha256(data).hexdigest() == chunk.sha256
        ):
            return data
    raise _Damaged(f"chunk {chunk.sha256} is damaged (checksum mismatch)")


def _frames(manifest: _Manifest) -> list[str | None]:
    """What the manifest records of each chunk's file (nothing, if older code wrote it, or if
    its lists do not pair up)."""
    frames = manifest.frames
    if frames is None or len(frames) != len(manifest.chunks):
        return [None] * len(manifest.chunks)
    return frames


def _contents(stored: bytes, length: int) -> Iterator[bytes]:
    """What a chunk file may hold: its bytes decompressed if it looks like zstd, then the
    file as it is (a raw chunk of older code may start with zstd's magic by chance)."""
    if stored.startswith(_ZSTD_MAGIC):
        with contextlib.suppress(zstandard.ZstdError):
            yield zstandard.ZstdDecompressor().decompress(stored, max_output_size=length)
    yield stored


def _pieces(file: BinaryIO, length: int) -> Iterator[bytes]:
    """The next `length` bytes of `file` in pieces of `_CHUNK_BYTES` (fewer at its end)."""
    while length > 0 and (piece := file.read(min(_CHUNK_BYTES, length))):
        length -= len(piece)
        yield piece


def _write_durably(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    _replace(path, data, sync=True)
    if sync_dir:
        _fsync_dir(path.parent)


def _replace(path: Path, data: bytes, *, sync: bool) -> None:
    """Write `data` to a temporary file and rename it to `path` (fsynced first if `sync`)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a killed writer's (writers serialise on .writer), or a link
    fd = create_file(tmp, Modes.of(path.parent).file)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk's half file: no litter in a backup
        raise


def _sync_chunks(paths: list[Path], chunks: Path) -> None:
    """Make the chunk files just written durable, then their directories. One pass after all
    are written, not an fsync after each: the kernel writes them back together and the first
    fsync's journal commit covers the others' renames (about half the time on a shared disk).
    Until the manifest naming them is written, a crash leaves at worst a damaged chunk that
    no manifest names; a later snapshot checks every chunk it reuses and writes it again."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for directory in {*(p.parent for p in paths), chunks}:
        _fsync_dir(directory)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_database(path: Path) -> None:
    for p in (path, Path(f"{path}.wal")):
        p.unlink(missing_ok=True)
