"""The contenders: the event log's APIs and the baselines they are measured against.

Each class here is a `Runner`: its constructor sets up in a fresh directory (untimed), `run(n)`
times its next `n` events, `close()` releases everything. Baselines are written the way a user
would write them, with their durability spelled out:

- raw loops: msgspec encode + zstd level 3 (the log's default) + one write + one fsync per
  frame (per event, or per batch of 1,000 encoded as one MessagePack array);
- sqlite3: WAL, ``synchronous=FULL``, one connection, a MessagePack blob per row;
- `eventsourcing` on its SQLite persistence module (WAL; its connections get
  ``synchronous=FULL`` from `install_sqlite_full`, read back and reported).
"""

from __future__ import annotations

import asyncio
import functools
import mmap
import os
import sqlite3
import struct
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import zstandard
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool

import eventlog
from eventlog import events as ev

from ._data import ENCODER, batches, conversation_events, pool, prompt_events, session_events
from ._harness import timer

__all__ = [
    "ES_PRAGMAS",
    "EsBulk",
    "EsSingle",
    "LogAddPrompt",
    "LogAppendBatches",
    "LogAppendOne",
    "LogAsyncAgents",
    "LogPromptsBatch",
    "LogRead",
    "LogThreads",
    "RawBatches",
    "RawRead",
    "RawSingle",
    "SqlitePerEvent",
    "SyncFloor",
    "build_store",
    "count_frames",
    "segment_bytes",
    "sqlite_bytes",
    "store_bytes",
]

LEVEL = 3  # zstd level of the raw loops: the log's default `compression_level`
BATCH = 1000
_LEN = struct.Struct("<I")

# -- helpers ----------------------------------------------------------------------------------


def segment_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.seg"))


def store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


# The frame header as eventlog/_format.py documents it, declared again so that no baseline
# shares code with the log.
_FRAME = struct.Struct("<4sIIQIqqBBHI")
_SEGMENT_HEADER = 32
_CODEC_ZSTD = 1
_CODEC_ZSTD_SPLIT = 2  # two zstd frames of the body's halves after a table of three u32
_SPLIT = struct.Struct("<III")  # stored length of the first half, of the second; raw split


class RawRequest(msgspec.Struct, array_like=True, gc=False):
    """One element of a frame body: ``[events, idempotency_key]``."""

    events: list[ev.Event]
    key: str | None = None


_RAW_DECODER = msgspec.msgpack.Decoder(list[RawRequest])


def count_frames(path: Path) -> tuple[int, int]:
    """(frames, events) in a store's segments, from the frame headers alone."""
    frames = events = 0
    for seg in sorted(path.glob("*.seg")):
        with open(seg, "rb") as f:
            f.seek(_SEGMENT_HEADER)
            while len(head := f.read(_FRAME.size)) == _FRAME.size:
                fields = _FRAME.unpack(head)
                frames += 1
                events += fields[4]
                f.seek(fields[1], os.SEEK_CUR)
    return frames, events


@functools.cache
def _sessions(count: int) -> tuple[list[ev.SessionCreated], list[uuid.UUID]]:
    """Sessions appended first to every fresh store (fixed ids per process)."""
    created = session_events(count)
    return created, [s.id for s in created]


@functools.cache
def _prompts(agents: int, total: int) -> list[ev.PromptAdded]:
    return prompt_events(_sessions(agents)[1], total)


@functools.cache
def _conversations(total: int) -> list[ev.EventBase]:
    return list(conversation_events(_sessions(64)[1], total))


class _Texts:
    """Prompt texts handed out in order."""

    def __init__(self) -> None:
        self.at = 0

    def take(self, n: int) -> list[str]:
        texts = pool().prompt_texts(n, self.at)
        self.at += n
        return texts


# -- single durable appends -------------------------------------------------------------------


class LogAddPrompt:
    """One agent, one `add_prompt(session_id, text)` at a time, default durability (FSYNC)."""

    def __init__(self, path: Path, total: int) -> None:
        created, sessions = _sessions(1)
        self.session = sessions[0]
        self.texts = _Texts()
        self.log = eventlog.open(path / "log")
        self.log.append(created)
        self.before = self.log.stats().stored_bytes  # frames: the file has zeros ahead of them

    def run(self, n: int) -> float:
        texts, add = self.texts.take(n), self.log.add_prompt
        session = self.session
        with timer() as t:
            for text in texts:
                add(session, text)
        return t[0]

    def close(self) -> dict[str, float]:
        stored = self.log.stats().stored_bytes - self.before
        self.log.close()
        return {"bytes_per_event": stored / max(1, self.texts.at)}


class LogAppendOne:
    """One agent, `append(event)` of one prebuilt event at a time (FSYNC)."""

    def __init__(self, path: Path, total: int) -> None:
        created, _ = _sessions(1)
        self.events = iter(_prompts(1, total))
        self.log = eventlog.open(path / "log")
        self.log.append(created)

    def run(self, n: int) -> float:
        events, append = [next(self.events) for _ in range(n)], self.log.append
        with timer() as t:
            for event in events:
                append(event)
        return t[0]

    def close(self) -> dict[str, float]:
        self.log.close()
        return {}


class _RawFile:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.cctx = zstandard.ZstdCompressor(level=LEVEL)

    def close(self) -> dict[str, float]:
        os.close(self.fd)
        return {}


class RawSingle(_RawFile):
    """Raw loop: encode + zstd-3 + one write (4-byte length prefix) + fsync, per event."""

    def __init__(self, path: Path, total: int) -> None:
        super().__init__(path)
        self.events = iter(_prompts(1, total))

    def run(self, n: int) -> float:
        events = [next(self.events) for _ in range(n)]
        fd, compress, encode = self.fd, self.cctx.compress, ENCODER.encode
        with timer() as t:
            for event in events:
                body = compress(encode(event))
                os.write(fd, _LEN.pack(len(body)) + body)
                os.fsync(fd)
        return t[0]


FLOOR_RECORD = 560  # bytes a durable single append writes (the log's frame: header + body)


class SyncFloor:
    """The disk's floor for one durable commit at a time: no encoding, no compression, a
    prebuilt record of a single append's size `pwrite` at successive offsets of a file
    zero-filled and synced beforehand (untimed), so each sync writes data blocks only, no
    metadata; then one sync per record. `how`: ``fdatasync`` after each `pwrite` (what the
    log and sqlite3 do), ``o_dsync`` (a file opened with `O_DSYNC`: one syscall),
    ``rwf_dsync`` (`pwritev` with `RWF_DSYNC`: one syscall, on an ordinary descriptor), or
    ``o_direct`` (`O_DIRECT | O_DSYNC`, past the page cache: the 4 KiB block holding the
    record written whole, as a log padded to blocks would)."""

    def __init__(self, path: Path, total: int, how: str = "fdatasync", size: int = 0) -> None:
        self.size = size or FLOOR_RECORD
        file = path / "floor.bin"
        fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(fd, bytes(total * self.size + 4096), 0)
        os.fsync(fd)
        if how in ("o_dsync", "o_direct"):  # the zero-fill is synced; now writes sync
            os.close(fd)
            direct = os.O_DIRECT if how == "o_direct" else 0
            fd = os.open(file, os.O_RDWR | os.O_DSYNC | direct)
        dir_fd = os.open(path, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)
        self.fd, self.how, self.at = fd, how, 0
        self.record = os.urandom(self.size)
        self.block = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
        self.block.write(os.urandom(4096))

    def run(self, n: int) -> float:
        fd, record, size, at = self.fd, self.record, self.size, self.at
        self.at += n * size
        with timer() as t:
            if self.how == "fdatasync":
                for off in range(at, at + n * size, size):
                    os.pwrite(fd, record, off)
                    os.fdatasync(fd)
            elif self.how == "o_dsync":
                for off in range(at, at + n * size, size):
                    os.pwrite(fd, record, off)
            elif self.how == "o_direct":
                block = self.block
                for off in range(at, at + n * size, size):
                    os.pwrite(fd, block, off & ~4095)
            else:
                buffers, flags = [record], os.RWF_DSYNC
                for off in range(at, at + n * size, size):
                    os.pwritev(fd, buffers, off, flags)
        return t[0]

    def close(self) -> dict[str, float]:
        os.close(self.fd)
        self.block.close()
        return {}


# -- eventsourcing ----------------------------------------------------------------------------

ES_PRAGMAS: dict[str, Any] = {}  # what its SQLite connections ran with, for the report


@functools.cache
def install_sqlite_full() -> None:
    """Make every connection eventsourcing's SQLite module opens use ``synchronous=FULL``.

    The library sets WAL itself and leaves ``synchronous`` at SQLite's default (FULL, 2, for
    this build); we record that default, set FULL explicitly anyway, and read it back.
    """
    original = SQLiteConnectionPool._create_connection

    def create(self: SQLiteConnectionPool) -> SQLiteConnection:
        conn = original(self)
        raw = conn._sqlite_conn
        ES_PRAGMAS.setdefault(
            "library_default_synchronous", raw.execute("PRAGMA synchronous").fetchone()[0]
        )
        raw.execute("PRAGMA synchronous=FULL")
        ES_PRAGMAS["synchronous"] = raw.execute("PRAGMA synchronous").fetchone()[0]
        ES_PRAGMAS["journal_mode"] = raw.execute("PRAGMA journal_mode").fetchone()[0]
        return conn

    SQLiteConnectionPool._create_connection = create  # type: ignore[method-assign]


class Conversation(Aggregate):
    """A session as an eventsourcing aggregate: each prompt is one of its events."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.prompts = 0

    @event("PromptAdded")
    def add_prompt(self, prompt_id: uuid.UUID, content: str) -> None:
        self.prompts += 1


class Conversations(Application[uuid.UUID]):
    """The eventsourcing application the baselines save through."""


class _Es:
    def __init__(self, path: Path, total: int) -> None:
        install_sqlite_full()
        self.app = Conversations(
            env={
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(path / "eventsourcing.db"),
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        )
        self.agg = Conversation(agent="agent-0")
        self.app.save(self.agg)
        self.texts = _Texts()

    def close(self) -> dict[str, float]:
        self.app.close()
        return {}


class EsSingle(_Es):
    """eventsourcing: one aggregate (the session), one new event per `save`."""

    def run(self, n: int) -> float:
        texts = self.texts.take(n)
        ids = [uuid.uuid4() for _ in range(n)]
        agg, save = self.agg, self.app.save
        with timer() as t:
            for prompt_id, text in zip(ids, texts, strict=True):
                agg.add_prompt(prompt_id, text)
                save(agg)
        return t[0]


class EsBulk(_Es):
    """eventsourcing: one aggregate given 1,000 new events per `save`."""

    def run(self, n: int) -> float:
        texts = self.texts.take(n)
        ids = [uuid.uuid4() for _ in range(n)]
        agg, save = self.agg, self.app.save
        with timer() as t:
            for i in range(0, n, BATCH):
                for prompt_id, text in zip(ids[i : i + BATCH], texts[i : i + BATCH], strict=True):
                    agg.add_prompt(prompt_id, text)
                save(agg)
        return t[0]


# -- sqlite3 ----------------------------------------------------------------------------------


def sqlite_open(file: Path, column: str = "BLOB") -> sqlite3.Connection:
    """WAL, synchronous=FULL, Python's default transaction handling (an implicit BEGIN before
    the first INSERT, ended by commit())."""
    conn = sqlite3.connect(file)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"CREATE TABLE events (lsn INTEGER PRIMARY KEY, body {column} NOT NULL)")
    conn.commit()
    return conn


class SqlitePerEvent:
    """sqlite3, WAL, synchronous=FULL: one connection, INSERT + COMMIT per event, in turn."""

    def __init__(self, path: Path, total: int) -> None:
        self.events = iter(_prompts(1, total))
        self.conn = sqlite_open(path / "events.db")

    def run(self, n: int) -> float:
        events, conn = [next(self.events) for _ in range(n)], self.conn
        sql, encode = "INSERT INTO events (body) VALUES (?)", ENCODER.encode
        with timer() as t:
            for event in events:
                conn.execute(sql, (encode(event),))
                conn.commit()
        return t[0]

    def close(self) -> dict[str, float]:
        self.conn.close()
        return {}


# -- concurrent appends -----------------------------------------------------------------------


class LogAsyncAgents:
    """64 asyncio tasks on one loop, each awaiting `add_prompt` in a loop (AsyncEventLog)."""

    agents = 64

    def __init__(self, path: Path, total: int) -> None:
        created, self.sessions = _sessions(self.agents)
        self.path = path / "log"
        self.texts = _Texts()
        self.loop = asyncio.new_event_loop()
        self.log = self.loop.run_until_complete(eventlog.open_async(self.path))
        self.loop.run_until_complete(self.log.append(created))
        self.events = 0

    def run(self, n: int) -> float:
        per = n // self.agents
        texts = self.texts.take(per * self.agents)
        log, sessions = self.log, self.sessions

        async def agent(k: int) -> None:
            session = sessions[k]
            for text in texts[k * per : (k + 1) * per]:
                await log.add_prompt(session, text)

        async def all_agents() -> float:
            with timer() as t:
                await asyncio.gather(*(agent(k) for k in range(self.agents)))
            return t[0]

        self.events += per * self.agents
        return self.loop.run_until_complete(all_agents())

    def close(self) -> dict[str, float]:
        self.loop.run_until_complete(self.log.close())
        self.loop.close()
        frames, _ = count_frames(self.path)
        return {"events_per_frame": self.events / max(1, frames - 1)}


class LogThreads:
    """16 threads sharing one EventLog, each calling `add_prompt` in a loop (group commit).

    The threads live for the whole repetition and wait on a barrier between slices."""

    threads = 16

    def __init__(self, path: Path, total: int) -> None:
        created, self.sessions = _sessions(self.threads)
        self.path = path / "log"
        self.log = eventlog.open(self.path)
        self.log.append(created)
        self.texts = _Texts()
        self.work: list[list[str]] = [[] for _ in range(self.threads)]
        self.errors: list[BaseException] = []
        self.go = threading.Barrier(self.threads + 1)
        self.done = threading.Barrier(self.threads + 1)
        self.stop = False
        self.events = 0
        self.workers = [
            threading.Thread(target=self._agent, args=(k,), daemon=True)
            for k in range(self.threads)
        ]
        for w in self.workers:
            w.start()

    def _agent(self, k: int) -> None:
        session, add = self.sessions[k], self.log.add_prompt
        while True:
            self.go.wait()
            if self.stop:
                return
            try:
                for text in self.work[k]:
                    add(session, text)
            except BaseException as exc:
                self.errors.append(exc)
            self.done.wait()

    def run(self, n: int) -> float:
        per = n // self.threads
        texts = self.texts.take(per * self.threads)
        self.work = [texts[k * per : (k + 1) * per] for k in range(self.threads)]
        with timer() as t:
            self.go.wait()
            self.done.wait()
        if self.errors:
            raise self.errors[0]
        self.events += per * self.threads
        return t[0]

    def close(self) -> dict[str, float]:
        self.stop = True
        self.go.wait()
        for w in self.workers:
            w.join()
        self.log.close()
        frames, _ = count_frames(self.path)
        return {"events_per_frame": self.events / max(1, frames - 1)}


# -- bulk appends -----------------------------------------------------------------------------


class LogAppendBatches:
    """`append(list_of_1000_prebuilt_events)` per call, default durability (FSYNC)."""

    def __init__(self, path: Path, total: int) -> None:
        created, _ = _sessions(64)
        self.batches = batches(_conversations(total), BATCH)
        self.log = eventlog.open(path / "log")
        self.log.append(created)

    def run(self, n: int) -> float:
        todo, append = [next(self.batches) for _ in range(n // BATCH)], self.log.append
        with timer() as t:
            for batch in todo:
                append(batch)
        return t[0]

    def close(self) -> dict[str, float]:
        self.log.close()
        return {}


def long_conversations(total: int) -> list[ev.EventBase]:
    """`total` events of long conversation text (`_graph_data.long_chunks`: sessions, then
    turns of a prompt and its response of about 1 KB each), fresh ids every call."""
    from ._graph_data import long_chunks  # noqa: PLC0415 (only this case needs it)

    events: list[ev.EventBase] = []
    for chunk in long_chunks():
        events += chunk
        if len(events) >= total:
            return events[:total]
    raise AssertionError("long_chunks never ends")


class LogAppendLongBatches(LogAppendBatches):
    """`append` of 1,000 prebuilt events of long conversation text per call (FSYNC)."""

    def __init__(self, path: Path, total: int) -> None:
        self.batches = batches(long_conversations(total), BATCH)
        self.log = eventlog.open(path / "log")


class LogPromptsBatch:
    """`add_prompts_batch` of 1,000 (session, text) pairs per call: the log builds events."""

    def __init__(self, path: Path, total: int) -> None:
        created, self.sessions = _sessions(64)
        self.texts = _Texts()
        self.log = eventlog.open(path / "log")
        self.log.append(created)

    def run(self, n: int) -> float:
        sessions = self.sessions
        pairs = [(sessions[i % 64], text) for i, text in enumerate(self.texts.take(n))]
        todo = [pairs[i : i + BATCH] for i in range(0, n, BATCH)]
        add = self.log.add_prompts_batch
        with timer() as t:
            for batch in todo:
                add(batch)
        return t[0]

    def close(self) -> dict[str, float]:
        self.log.close()
        return {}


class RawBatches(_RawFile):
    """Raw loop: a batch encoded as one MessagePack array + zstd-3 + one write + one fsync."""

    def __init__(self, path: Path, total: int) -> None:
        super().__init__(path)
        self.batches = batches(_conversations(total), BATCH)

    def run(self, n: int) -> float:
        todo = [next(self.batches) for _ in range(n // BATCH)]
        fd, compress, encode = self.fd, self.cctx.compress, ENCODER.encode
        with timer() as t:
            for batch in todo:
                body = compress(encode(batch))
                os.write(fd, _LEN.pack(len(body)) + body)
                os.fsync(fd)
        return t[0]


class RawLongBatches(RawBatches):
    """The raw loop of `RawBatches` over the events of `LogAppendLongBatches`."""

    def __init__(self, path: Path, total: int) -> None:
        _RawFile.__init__(self, path)
        self.batches = batches(long_conversations(total), BATCH)


class _GivenTexts(_Texts):
    """Texts handed out in order from a list."""

    def __init__(self, texts: list[str]) -> None:
        super().__init__()
        self.texts = texts

    def take(self, n: int) -> list[str]:
        self.at += n
        return self.texts[self.at - n : self.at]


class EsLongBulk(EsBulk):
    """eventsourcing's `EsBulk` with the long texts: each prompt's and response's content."""

    def __init__(self, path: Path, total: int) -> None:
        super().__init__(path, total)
        events = long_conversations(2 * total)  # sessions carry no text: enough of the rest
        self.texts = _GivenTexts([t for e in events if (t := getattr(e, "content", ""))])


# -- sequential reads -------------------------------------------------------------------------


def build_store(path: Path, n: int) -> Path:
    """A store of exactly `n` events (64 sessions, then prompts and responses), appended in
    frames of 1,000 so frame boundaries fall on multiples of 1,000 (untimed setup; durability
    NONE only to build it faster: the bytes on disk are the same)."""
    created, _ = _sessions(64)
    if n % BATCH or n <= BATCH:
        raise ValueError("build_store needs a multiple of 1,000 events, more than 1,000")
    events = _conversations(n - len(created))
    first = BATCH - len(created)
    with eventlog.open(path, durability=eventlog.Durability.NONE) as log:
        log.append([*created, *events[:first]])
        for batch in batches(events[first:], BATCH):
            log.append(batch)
    return path


class LogRead:
    """`for record in log.read()` on a store opened read-only: one generator kept across
    slices, each slice pulling the next `n` records (a new pass starts at the end)."""

    def __init__(self, store: Path) -> None:
        self.log = eventlog.open(store, readonly=True)
        self.records = self.log.read()

    def run(self, n: int) -> float:
        count = 0
        with timer() as t:
            while count < n:
                for _record in self.records:
                    count += 1
                    if count == n:
                        break
                else:
                    self.records = self.log.read()
        return t[0]

    def close(self) -> dict[str, float]:
        self.log.close()
        return {}


class RawRead:
    """Raw loop over the same files: read a segment whole, then per frame unpack the 48-byte
    header, zstd-decompress the body (a memoryview slice, no copy; a split body's two halves
    one after the other) and decode it into the typed union, touching every event. No
    checksum (CRC32C runs at GB/s), one thread. Slices resume where the last one stopped
    (frames hold 1,000 events and slices are multiples of 1,000)."""

    def __init__(self, store: Path) -> None:
        self.segments = sorted(store.glob("*.seg"))
        self.dctx = zstandard.ZstdDecompressor()
        self.frames = self._frames()

    def _frames(self) -> Iterator[list[RawRequest]]:
        decompress, decode = self.dctx.decompress, _RAW_DECODER.decode
        unpack, size = _FRAME.unpack_from, _FRAME.size
        while True:
            for seg in self.segments:
                with open(seg, "rb", buffering=0) as f:
                    data = memoryview(f.read())
                at, end = _SEGMENT_HEADER, len(data)
                while at + size <= end:
                    _m, length, _c, _l, _n, _t0, _t1, codec, _f, _r, raw_length = unpack(data, at)
                    stored = data[at + size : at + size + length]
                    at += size + length
                    if codec == _CODEC_ZSTD:
                        yield decode(decompress(stored, max_output_size=raw_length))
                    elif codec == _CODEC_ZSTD_SPLIT:
                        first, _tail, half = _SPLIT.unpack_from(stored)
                        cut = _SPLIT.size + first
                        yield decode(
                            decompress(stored[_SPLIT.size : cut], max_output_size=half)
                            + decompress(stored[cut:], max_output_size=raw_length - half)
                        )
                    else:
                        yield decode(stored)

    def run(self, n: int) -> float:
        count, frames = 0, self.frames
        with timer() as t:
            while count < n:
                for request in next(frames):
                    for _event in request.events:
                        count += 1
        return t[0]

    def close(self) -> dict[str, float]:
        return {}


# -- bytes on disk ----------------------------------------------------------------------------


def sqlite_bytes(
    path: Path, events: Sequence[ev.EventBase], encode: Callable[[Any], bytes | str]
) -> int:
    """Bytes of a sqlite3 database holding `events` one per row, inserted 1,000 per
    transaction, checkpointed so that everything is in the main file."""
    file = path / "size.db"
    text = isinstance(encode(events[0]), str)
    conn = sqlite_open(file, "TEXT" if text else "BLOB")
    for batch in batches(list(events), BATCH):
        conn.executemany("INSERT INTO events (body) VALUES (?)", [(encode(e),) for e in batch])
        conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sum(p.stat().st_size for p in path.iterdir() if p.name.startswith("size.db"))
