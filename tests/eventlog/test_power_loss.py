"""Power loss: a simulated disk that keeps only what was fsynced.

`DurableDisk` replaces `os.fsync` and `os.fdatasync` (the store calls them on segment and
index files, and on the directory through `_index.fsync_dir`). It remembers, per inode, the
bytes a file had when it was last fsynced, and, per directory fsync, which names pointed at
which inodes. A power loss drops the open log without closing it cleanly, then rewrites the store
directory to its durable state: a name whose directory entry was never fsynced disappears,
and every file reverts to its last fsynced bytes (empty if never fsynced). Optionally the
unsynced tail of a file partly survives (written back before the power went), as real disks
allow: garbage or zeros past the last fsync, which recovery must cut as a torn tail.

The power goes out at random points: inside an fsync (before or after it "reached the
disk"), between appends, during recovery on open. In the default mode (FSYNC) every
acknowledged append must survive, byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import random
import stat
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import eventlog
from eventlog import events as ev

SEGMENT_BYTES = 4096
_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode


class PowerLoss(BaseException):
    """The power went out (raised from inside the fake fsync). BaseException, so that no
    `except Exception` or `except OSError` in the store mistakes it for an I/O error."""


class DurableDisk:
    """What the disk under `root` would hold after a power loss, given the fsyncs so far."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.listing: dict[str, int] = {}  # name -> inode, as of the last directory fsync
        self.content: dict[int, bytes] = {}  # inode -> bytes, as of its last fsync
        # An fd per inode seen, so the inode number is not reused while we key on it, and
        # so its current (unsynced) bytes can still be read after it was unlinked.
        self._pins: dict[int, int] = {}
        self.calls = 0
        self.lose_power_at: int | None = None  # the fsync call that loses power
        self.before_sync = False  # lose power before that fsync took effect, or after
        self.frozen = False  # the power is out: nothing reaches the disk any more
        self._main = threading.get_ident()
        # One fsync at a time, as in the kernel: a directory snapshot taken by one thread
        # must not land after a newer one (the store seals segments on a background thread).
        self._lock = threading.Lock()
        # The directory was just rewritten to its durable state: all of it is durable.
        self._snapshot_listing()
        for ino in self.listing.values():
            self.content[ino] = self._current(ino)

    def _pin(self, path: str) -> int:
        fd = os.open(path, os.O_RDONLY)
        ino = os.fstat(fd).st_ino
        if ino in self._pins:
            os.close(fd)
        else:
            self._pins[ino] = fd
        return ino

    def _current(self, ino: int) -> bytes:
        fd = self._pins[ino]
        return os.pread(fd, os.fstat(fd).st_size, 0)

    def _snapshot_listing(self) -> None:
        listing: dict[str, int] = {}
        with os.scandir(self.root) as entries:
            for e in entries:
                if not e.is_file(follow_symlinks=False):
                    continue
                try:
                    listing[e.name] = e.inode() if e.inode() in self._pins else self._pin(e.path)
                except FileNotFoundError:
                    continue  # renamed by another thread meanwhile; its own dir fsync follows
        self.listing = listing

    def fsync(self, fd: int) -> None:
        """Stands in for `os.fsync`: records what became durable, maybe loses power."""
        with self._lock:
            self._fsync(fd)

    def _fsync(self, fd: int) -> None:
        if self.frozen:
            return
        self.calls += 1
        lose = self.calls == self.lose_power_at and threading.get_ident() == self._main
        if lose and self.before_sync:
            raise PowerLoss
        proc = f"/proc/self/fd/{fd}"
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            if Path(os.readlink(proc)) == self.root:
                self._snapshot_listing()
        else:
            ino = self._pin(proc)  # reopens the very file fd refers to, even if unlinked
            self.content[ino] = self._current(ino)
        if lose:
            raise PowerLoss

    def lose_power(self, rng: random.Random | None = None) -> bool:
        """Rewrite the directory to what the disk would hold; with `rng`, parts of unsynced
        tails survive too (a prefix of the unsynced bytes, or zeros). True if some did."""
        self.frozen = True
        durable: dict[str, bytes] = {}
        tails = False
        for name, ino in self.listing.items():
            data = self.content.get(ino, b"")
            current = self._current(ino)
            if rng is not None and len(current) > len(data) and current.startswith(data):
                extra = current[len(data) :]
                cut = rng.randrange(len(extra) + 1)
                tail = rng.choice((b"", extra[:cut], bytes(cut)))
                data += tail
                tails = tails or bool(tail)
            durable[name] = data
        for fd in self._pins.values():
            os.close(fd)
        self._pins.clear()
        for entry in os.scandir(self.root):
            if entry.name not in durable:
                os.unlink(entry.path)
        for name, data in durable.items():  # rewriting only what differs keeps this quick
            path = self.root / name
            on_disk = path.read_bytes() if path.exists() else None
            if on_disk is not None and on_disk.startswith(data):
                if len(on_disk) != len(data):
                    os.truncate(path, len(data))
            else:
                path.write_bytes(data)
        return tails


@contextlib.contextmanager
def recording_torn_tails(torn: list[str]) -> Iterator[None]:
    """Let TornTailTruncated through (appending its message to `torn`); any other warning
    is still an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                if not issubclass(w.category, eventlog.TornTailTruncated):
                    raise AssertionError(f"unexpected warning: {w.message!r}")
                torn.append(str(w.message))


class Workload:
    """Random appends that refer to nodes known to be in the log (by LSN, so that what a
    power loss took back can be forgotten)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.sessions: list[tuple[int, uuid.UUID]] = []
        self.prompts: list[tuple[int, uuid.UUID]] = []

    def take_in(self, lsn: int, event: ev.EventBase) -> None:
        if isinstance(event, ev.SessionCreated):
            self.sessions.append((lsn, event.id))
        elif isinstance(event, ev.PromptAdded):
            self.prompts.append((lsn, event.id))

    def forget_from(self, lsn: int) -> None:
        self.sessions = [(n, i) for n, i in self.sessions if n < lsn]
        self.prompts = [(n, i) for n, i in self.prompts if n < lsn]

    def _text(self) -> str:
        size = self.rng.choice((1, 20, 150, 600))
        return self.rng.randbytes(size).hex()[:size]

    def next(self) -> list[ev.EventBase]:
        rng = self.rng
        choice = rng.random()
        if not self.sessions or choice < 0.15:
            sid, pid = uuid.uuid4(), uuid.uuid4()
            return [
                ev.SessionCreated(id=sid, metadata={"k": rng.randrange(100)}),
                ev.PromptAdded(id=pid, session_id=sid, content=self._text()),
                ev.ResponseAdded(id=uuid.uuid4(), prompt_id=pid, content=self._text()),
            ]
        _, session = rng.choice(self.sessions)
        if choice < 0.35 and self.prompts:
            _, prompt = rng.choice(self.prompts)  # often in a sealed segment
            return [ev.ResponseAdded(id=uuid.uuid4(), prompt_id=prompt, content=self._text())]
        count = rng.choice((1, 1, 1, 2, 4, 12))
        return [
            ev.PromptAdded(id=uuid.uuid4(), session_id=session, content=self._text())
            for _ in range(count)
        ]

    def append(self, log: eventlog.EventLog, acked: dict[int, bytes]) -> None:
        appended = log.append(self.next())
        for lsn, event in enumerate(appended.events, appended.first_lsn):
            acked[lsn] = _ENCODE(event)
            self.take_in(lsn, event)


def check(
    records: list[eventlog.Record], acked: dict[int, bytes], seen: list[bytes], start: int = 0
) -> list[bytes]:
    """`records` read from LSN `start`: LSNs dense to the end, every acknowledged event at
    its LSN byte-identical, and nothing read before changed. Returns the log as bytes."""
    assert start <= len(seen)
    lsns = [r.lsn for r in records]
    assert lsns == list(range(start, start + len(records))), f"LSNs not dense from {start}"
    stored = seen[:start] + [_ENCODE(r.event) for r in records]
    assert stored[: len(seen)] == seen, "events read before a power loss changed or vanished"
    lost = sorted(
        lsn for lsn in acked if lsn >= start and (lsn >= len(stored) or stored[lsn] != acked[lsn])
    )
    assert not lost, f"acknowledged events lost or changed by a power loss at LSNs {lost[:10]}"
    return stored


@pytest.mark.slow
def test_power_loss_keeps_every_acknowledged_event(
    store: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    acked: dict[int, bytes] = {}
    seen: list[bytes] = []
    torn: list[str] = []
    work = Workload(rng)
    cycles, checks, in_fsync, during_open = 150, 0, 0, 0
    tails = False
    store.mkdir()
    for cycle in range(cycles):
        disk = DurableDisk(store)
        monkeypatch.setattr(os, "fsync", disk.fsync)
        monkeypatch.setattr(os, "fdatasync", disk.fsync)
        # After a power loss that left a partial tail, often the first fsync: the one of
        # recovery cutting that tail on open.
        disk.lose_power_at = 1 if tails and rng.random() < 0.5 else rng.randint(1, 40)
        disk.before_sync = rng.random() < 0.5
        appends = rng.randint(0, 30)  # unless an fsync loses power first
        log: eventlog.EventLog | None = None
        try:
            with recording_torn_tails(torn):
                log = eventlog.open(store, segment_bytes=SEGMENT_BYTES)
            # The whole log now and then; otherwise from a little before the last check
            # (sealed segments a power loss cannot touch, the tail it can).
            start = 0 if cycle % 25 == 0 else max(0, len(seen) - 300)
            records = list(log.read(start))
            seen = check(records, acked, seen, start)
            checks += 1
            work.forget_from(start)
            for record in records:
                work.take_in(record.lsn, record.event)
            for _ in range(appends):
                work.append(log, acked)
        except PowerLoss:
            in_fsync += 1
            during_open += log is None
        disk.frozen = True
        if log is not None:
            log.close()  # releases fds and the lock; the frozen disk ignores its fsync
        tails = disk.lose_power(rng if rng.random() < 0.5 else None)

    monkeypatch.undo()
    with recording_torn_tails(torn), eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        seen = check(list(log.read()), acked, seen)
    print(
        f"{cycles} power losses ({in_fsync} inside an fsync, {during_open} while opening), "
        f"{checks} checks, {len(acked)} acknowledged events, {len(seen)} in the log, "
        f"{len(list(store.glob('*.seg')))} segments, {len(torn)} torn tails cut"
    )
    assert len(list(store.glob("*.seg"))) > 5, "segments should rotate"
    assert len(acked) > 200
    problems = eventlog.verify(store)
    assert [p for p in problems if p.severity == "error"] == [], problems


def cut_power_and_reopen(
    disk: DurableDisk,
    logs: list[eventlog.EventLog],
    monkeypatch: pytest.MonkeyPatch,
    acked: dict[int, bytes],
) -> list[bytes]:
    """The power goes out: nothing more reaches the disk, the handles die, the directory
    reverts to what was durable. Then reopen with the real fsync and read it all back."""
    disk.frozen = True
    for log in logs:
        log.close()  # releases fds and the lock; the frozen disk ignores its fsync
    disk.lose_power()
    monkeypatch.undo()
    torn: list[str] = []
    with recording_torn_tails(torn), eventlog.open(disk.root, segment_bytes=SEGMENT_BYTES) as log:
        return check(list(log.read()), acked, [])


def _append_some(log: eventlog.EventLog, work: Workload, count: int) -> list[bytes]:
    acked: dict[int, bytes] = {}
    for _ in range(count):
        work.append(log, acked)
    return list(acked.values())


def test_power_loss_with_durability_none_may_lose_acknowledged_events(
    store: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What NONE risks: a power loss takes back acknowledged appends (here, all those since
    the last rotation). What it still guarantees: the store reopens, and what is left is a
    dense prefix of the log, byte-identical."""
    store.mkdir()
    disk = DurableDisk(store)
    monkeypatch.setattr(os, "fsync", disk.fsync)
    monkeypatch.setattr(os, "fdatasync", disk.fsync)
    work = Workload(rng)
    log = eventlog.open(store, segment_bytes=SEGMENT_BYTES, durability=eventlog.Durability.NONE)
    acked: list[bytes] = []
    while len(list(store.glob("*.seg"))) < 4:  # several rotations
        acked += _append_some(log, work, 1)
    acked += _append_some(log, work, 3)  # and some in the active segment
    # The power goes out before close(): nothing unsynced survives.
    stored = cut_power_and_reopen(disk, [log], monkeypatch, {})
    assert stored == acked[: len(stored)], "what survives must be a prefix of what was appended"
    assert len(stored) < len(acked), "NONE was expected to lose the unsynced appends here"
    problems = eventlog.verify(store)
    assert [p for p in problems if p.severity == "error"] == [], problems


def test_power_loss_with_durability_interval_keeps_what_an_interval_ago_acknowledged(
    store: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INTERVAL promises an acknowledged frame is fsynced at most `fsync_interval_ms` later,
    including frames of a segment that was sealed in the meantime."""
    store.mkdir()
    disk = DurableDisk(store)
    monkeypatch.setattr(os, "fsync", disk.fsync)
    monkeypatch.setattr(os, "fdatasync", disk.fsync)
    work = Workload(rng)
    interval_ms = 20
    log = eventlog.open(
        store,
        segment_bytes=SEGMENT_BYTES,
        durability=eventlog.Durability.INTERVAL,
        fsync_interval_ms=interval_ms,
    )
    acked: list[bytes] = []
    while len(list(store.glob("*.seg"))) < 3:  # rotations, quicker than the interval
        acked += _append_some(log, work, 1)
    time.sleep(10 * interval_ms / 1000)  # the interval has passed: all of it must be synced
    stored = cut_power_and_reopen(disk, [log], monkeypatch, dict(enumerate(acked)))
    assert stored == acked


@pytest.mark.parametrize("durability", [eventlog.Durability.INTERVAL, eventlog.Durability.NONE])
def test_power_loss_after_flush_keeps_everything(
    store: Path,
    rng: random.Random,
    monkeypatch: pytest.MonkeyPatch,
    durability: eventlog.Durability,
) -> None:
    """`flush()` fsyncs whatever is written but not yet synced: in every mode, what was
    acknowledged before it survives a power loss, in sealed segments too."""
    store.mkdir()
    disk = DurableDisk(store)
    monkeypatch.setattr(os, "fsync", disk.fsync)
    monkeypatch.setattr(os, "fdatasync", disk.fsync)
    work = Workload(rng)
    # An interval far longer than the test: only flush() and rotations sync.
    log = eventlog.open(
        store, segment_bytes=SEGMENT_BYTES, durability=durability, fsync_interval_ms=60_000
    )
    acked: list[bytes] = []
    while len(list(store.glob("*.seg"))) < 3:
        acked += _append_some(log, work, 1)
    acked += _append_some(log, work, 2)
    log.flush()
    after_flush = _append_some(log, work, 2)  # may be lost: appended after the flush
    stored = cut_power_and_reopen(disk, [log], monkeypatch, dict(enumerate(acked)))
    assert stored[: len(acked)] == acked
    assert stored[len(acked) :] == after_flush[: len(stored) - len(acked)]


def test_power_loss_after_flush_when_another_handle_sealed_the_segment(
    store: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handle A (INTERVAL) writes frames; handle B (another process, as far as the store
    can tell) seals that segment and rotates. A follows B to the new segment: its unsynced
    frames in the sealed one must not be left behind unsynced by A's later flush()."""
    store.mkdir()
    disk = DurableDisk(store)
    monkeypatch.setattr(os, "fsync", disk.fsync)
    monkeypatch.setattr(os, "fdatasync", disk.fsync)
    work = Workload(rng)
    a = eventlog.open(
        store,
        segment_bytes=SEGMENT_BYTES,
        durability=eventlog.Durability.INTERVAL,
        fsync_interval_ms=60_000,
    )
    b = eventlog.open(store, segment_bytes=SEGMENT_BYTES)
    acked: list[bytes] = []
    while (store / f"{0:020d}.seg").stat().st_size < SEGMENT_BYTES:
        acked += _append_some(a, work, 1)  # A fills segment 0, unsynced
    acked += _append_some(b, work, 1)  # B seals segment 0 and starts the next
    assert len(list(store.glob("*.seg"))) == 2
    acked += _append_some(a, work, 1)  # A follows B to the new segment
    a.flush()
    stored = cut_power_and_reopen(disk, [a, b], monkeypatch, dict(enumerate(acked)))
    assert stored == acked
