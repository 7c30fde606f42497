"""A child process for the crash and disk-full tests: appends to a store and reports acks.

Run as ``python _crash_child.py MODE STORE SEED SEGMENT_BYTES [LIMIT]``. Every line it prints
is one JSON object, written and flushed only after the append it reports has returned:

- ``{"ready": true, "next_lsn": N}`` once the store is open (N: events it holds);
- ``{"lsn": L, "events": [hex, ...], "duplicate": bool}`` for an acknowledged `append`:
  the MessagePack of each event as stored (LSNs L, L+1, ...);
- ``{"ids": [hex, ...], "contents": [str, ...]}`` for an acknowledged typed helper, which
  returns ids, not LSNs (mode ``diskfull`` adds ``"lsn"``: it is the only writer, so it
  knows the LSNs its helpers' events took);
- ``{"error": "StorageFull", "errno": 27, "message": "..."}`` (mode ``diskfull`` only).

Modes:

- ``crash``: append forever (the parent SIGKILLs it), mixing single events, batches,
  session -> prompt -> response chains inside one request, references to nodes of earlier
  runs (sealed segments), idempotent retries and typed helpers.
- ``diskfull``: set RLIMIT_FSIZE to LIMIT with SIGXFSZ ignored, so a write past LIMIT fails
  with EFBIG, then append small prompts until `StorageFull`; try once more, then exit 0.
- ``shared``: one of several appenders at once (LIMIT is its worker number): `append` only,
  so every acknowledgement has its LSN, without ``expect_store_lsn`` (others take LSNs
  too); idempotent appends report their key (``"key"``). Until SIGKILL, or SIGTERM, on
  which it closes the store cleanly (trim, tail file) and exits 0.
- ``tear``: a crash in the middle of a frame's write, which SIGKILL alone never makes (a
  frame is one `pwrite`): append one prompt (reported as ``shared`` does), then, under the
  append lock, write the first part of the next frame where it belongs, sync it, leave the
  temp files of a rotation and of an index file cut short, and SIGKILL itself with the
  lock held. Whoever takes the lock next must cut the frame; the next open, the files.
- ``reopen``: open the store (which runs recovery), read it all, close it, in a loop until
  SIGTERM; after each pass ``{"next_lsn": N, "digest": hex, "torn": T}``, the BLAKE2b of
  the events it read (as stored, in LSN order) and the torn tails its recovery cut; every
  fifth pass also runs `eventlog.verify` and says its errors (``"errors"``) if any.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import signal
import sys
import threading
import uuid
import warnings
from typing import Any

import msgspec

import eventlog
from eventlog import events as ev
from eventlog._format import Request, encode_body, encode_frame

_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode


def encode(event: ev.EventBase) -> bytes:
    """The bytes the parent compares: the MessagePack of an event as stored."""
    return _ENCODE(event)


def _say(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _report(appended: eventlog.Appended) -> None:
    _say(
        {
            "lsn": appended.first_lsn,
            "events": [encode(e).hex() for e in appended.events],
            "duplicate": appended.duplicate,
        }
    )


def _text(rng: random.Random) -> str:
    """Content from 1 byte to ~1.5 KiB, compressible or not, so frame sizes vary."""
    size = rng.choice((1, 8, 40, 200, 700))
    if rng.random() < 0.5:
        return rng.randbytes(size).hex()[:size]
    return ("the quick brown fox " * (size // 20 + 1))[:size]


class _Known:
    """Sessions and prompts in the store, so appends can refer to old nodes too."""

    def __init__(self) -> None:
        self.sessions: list[uuid.UUID] = []
        self.prompts: list[uuid.UUID] = []

    def take_in(self, event: ev.EventBase) -> None:
        if isinstance(event, ev.SessionCreated):
            self.sessions.append(event.id)
        elif isinstance(event, ev.PromptAdded):
            self.prompts.append(event.id)


def _chain(rng: random.Random, **response: Any) -> tuple[uuid.UUID, list[ev.EventBase]]:
    """A new session's id, and one request whose events refer to each other: the session,
    a prompt in it, a response to that prompt."""
    sid, pid = uuid.uuid4(), uuid.uuid4()
    return sid, [
        ev.SessionCreated(id=sid, tags=["chain"]),
        ev.PromptAdded(id=pid, session_id=sid, content=_text(rng)),
        *_response(rng, pid, **response),
    ]


def _prompts(rng: random.Random, session: uuid.UUID, count: int) -> list[ev.EventBase]:
    """`count` prompts in `session` (30 often makes a frame past segment_bytes)."""
    return [
        ev.PromptAdded(id=uuid.uuid4(), session_id=session, content=_text(rng))
        for _ in range(count)
    ]


def _response(rng: random.Random, prompt: uuid.UUID, **fields: Any) -> list[ev.EventBase]:
    return [ev.ResponseAdded(id=uuid.uuid4(), prompt_id=prompt, content=_text(rng), **fields)]


def _crash(log: eventlog.EventLog, rng: random.Random, known: _Known, next_lsn: int) -> None:
    session = log.append(ev.SessionCreated(id=uuid.uuid4(), metadata={"run": next_lsn}))
    _report(session)
    known.take_in(session.events[0])
    next_lsn = session.last_lsn + 1
    keys: list[tuple[str, list[ev.EventBase]]] = []
    while True:
        choice = rng.random()
        s = rng.choice(known.sessions[-50:] if rng.random() < 0.8 else known.sessions)
        events: list[ev.EventBase]
        if choice < 0.15:
            _, events = _chain(rng, usage=ev.TokenUsage(3, 4))
        elif choice < 0.40:
            events = _prompts(rng, s, 1)
        elif choice < 0.55 and known.prompts:
            # A prompt from any run, often one in a sealed segment (the .ids tables).
            events = _response(rng, rng.choice(known.prompts))
        elif choice < 0.70:
            events = _prompts(rng, s, rng.choice((2, 3, 5, 8, 30)))
        elif choice < 0.78:
            events = [ev.SessionUpdated(session_id=s, metadata={"n": rng.randrange(1000)})]
        elif choice < 0.86:
            # Typed helpers: they return ids, so report ids and contents.
            contents = [_text(rng) for _ in range(rng.choice((1, 3)))]
            if len(contents) == 1:
                ids = [log.add_prompt(s, contents[0])]
            else:
                ids = log.add_prompts_batch([(s, c) for c in contents])
            _say({"ids": [i.hex for i in ids], "contents": contents})
            known.prompts.extend(ids)
            next_lsn += len(ids)  # the only writer: they took the next LSNs
            continue
        elif choice < 0.93 and keys:
            # An idempotent retry: the log answers with the events it stored the first time.
            key, original = rng.choice(keys)
            retried = log.append(original, idempotency_key=key)
            assert retried.duplicate, retried
            _report(retried)
            continue
        else:
            events = [ev.PromptAdded(id=uuid.uuid4(), session_id=s, content=_text(rng))]
            key = uuid.uuid4().hex
            keys.append((key, events))
            appended = log.append(events, idempotency_key=key, expect_store_lsn=next_lsn - 1)
            _report(appended)
            next_lsn = appended.last_lsn + 1
            known.take_in(appended.events[0])
            continue
        appended = log.append(events)
        _report(appended)
        next_lsn = appended.last_lsn + 1
        for event in appended.events:
            known.take_in(event)


def _disk_full(log: eventlog.EventLog, rng: random.Random, limit: int, next_lsn: int) -> None:
    # Set the limit only now: the store is open, and what was imported is compiled.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    session = log.create_session()
    _say({"lsn": next_lsn, "ids": [session.id.hex], "contents": [""]})
    next_lsn += 1
    failures = 0
    for _ in range(100_000):
        # Small prompts with short, similar contents compress to ~15 bytes each, so a
        # segment holds hundreds of ids: sealing it writes an .ids table bigger than the
        # segment itself, which is where a small file size limit bites at rotation.
        contents = [f"p{rng.randrange(100)}" for _ in range(rng.choice((1, 10, 40)))]
        try:
            ids = log.add_prompts_batch([(session.id, c) for c in contents])
        except eventlog.StorageFull as exc:
            _say({"error": type(exc).__name__, "errno": exc.errno, "message": str(exc)})
            failures += 1
            if failures == 2:
                return
            continue
        except eventlog.EventLogError as exc:
            _say({"error": type(exc).__name__, "errno": None, "message": str(exc)})
            return
        except OSError as exc:  # not the documented error: let the parent see it
            _say({"error": type(exc).__name__, "errno": exc.errno, "message": str(exc)})
            return
        _say({"lsn": next_lsn, "ids": [i.hex for i in ids], "contents": contents})
        next_lsn += len(ids)
    _say({"error": "none", "errno": None, "message": f"no error below {limit} bytes"})


class _Stop:
    """Set by SIGTERM; the loops check it between appends (never inside one)."""

    def __init__(self) -> None:
        self.asked = False
        signal.signal(signal.SIGTERM, self._ask)

    def _ask(self, _signum: int, _frame: object) -> None:
        self.asked = True


def _shared(
    log: eventlog.EventLog, rng: random.Random, known: _Known, worker: int, stop: _Stop
) -> None:
    seq = 0

    def report(appended: eventlog.Appended, key: str | None = None) -> None:
        _say(
            {
                "lsn": appended.first_lsn,
                "events": [encode(e).hex() for e in appended.events],
                "duplicate": appended.duplicate,
                "key": key,
            }
        )
        for event in appended.events:
            known.take_in(event)

    mine = ev.SessionCreated(id=uuid.uuid4(), metadata={"worker": worker})
    report(log.append(mine))
    sessions = [mine.id]
    keys: list[tuple[str, list[ev.EventBase]]] = []
    while not stop.asked:
        seq += 1
        choice = rng.random()
        # Mostly this run's sessions; some of any appender's, any run's (sealed segments).
        s = rng.choice(sessions if rng.random() < 0.7 else known.sessions)
        key = None
        events: list[ev.EventBase]
        if choice < 0.15:
            sid, events = _chain(rng)
            sessions.append(sid)
        elif choice < 0.45:
            events = _prompts(rng, s, 1)
        elif choice < 0.60 and known.prompts:
            events = _response(rng, rng.choice(known.prompts))
        elif choice < 0.72:
            events = _prompts(rng, s, rng.choice((2, 5, 30)))
        elif choice < 0.80:
            # No id of its own: `seq` makes it unique, so "stored once" can be checked.
            events = [ev.SessionUpdated(session_id=s, metadata={"w": worker, "seq": seq})]
        elif choice < 0.88 and keys:
            key, original = rng.choice(keys)
            retried = log.append(original, idempotency_key=key)
            assert retried.duplicate, retried
            report(retried, key)
            continue
        else:
            events = [ev.PromptAdded(id=uuid.uuid4(), session_id=s, content=_text(rng))]
            key = f"{worker}-{uuid.uuid4().hex}"
            keys.append((key, events))
        report(log.append(events) if key is None else log.append(events, idempotency_key=key), key)


def _tear(log: eventlog.EventLog, rng: random.Random, known: _Known) -> None:
    event = ev.PromptAdded(id=uuid.uuid4(), session_id=rng.choice(known.sessions), content="x")
    appended = log.append(event)
    _report(appended)
    store = log._store
    with store._flock():
        active = store._catch_up()
        torn = ev.PromptAdded(id=uuid.uuid4(), session_id=event.session_id, content=_text(rng))
        torn.ts = appended.events[0].ts
        frame = encode_frame(
            encode_body([Request([torn])]),
            first_lsn=active.next_lsn,
            count=1,
            min_ts=torn.ts,
            max_ts=torn.ts,
            level=3,
        )
        os.pwrite(active.fd, frame[: rng.randrange(1, len(frame))], active.end)
        os.fsync(active.fd)
        # What a kill leaves mid-rotation (under the lock) and mid-way through writing index
        # files (outside it, named with the writer's pid): the next open removes both.
        segment = store.segment_path(active.next_lsn)
        segment.with_name(segment.name + ".tmp").write_bytes(b"LMGSEG")
        ids = store.segment_path(active.first_lsn).with_suffix(".ids")
        ids.with_name(f"{ids.name}.{os.getpid()}.{threading.get_ident()}.tmp").write_bytes(b"L")
        os.kill(os.getpid(), signal.SIGKILL)


def _reopen(store: str, segment_bytes: int) -> None:
    stop = _Stop()
    passes = 0
    while not stop.asked:
        passes += 1
        digest = hashlib.blake2b()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with eventlog.open(store, segment_bytes=segment_bytes) as log:
                count = 0
                for record in log.read():
                    assert record.lsn == count, f"read LSN {record.lsn} where {count} was due"
                    digest.update(encode(record.event))
                    count += 1
        torn = [w for w in caught if issubclass(w.category, eventlog.TornTailTruncated)]
        line: dict[str, Any] = {"next_lsn": count, "digest": digest.hexdigest(), "torn": len(torn)}
        if passes % 5 == 0:  # it takes no lock: appenders and recoveries go on meanwhile
            errors = [str(p) for p in eventlog.verify(store) if p.severity == "error"]
            if errors:
                line["errors"] = errors
        _say(line)


def main(argv: list[str]) -> None:
    mode, store, seed, segment_bytes = argv[0], argv[1], int(argv[2]), int(argv[3])
    rng = random.Random(seed)
    if mode == "reopen":
        _reopen(store, segment_bytes)
        return
    stop = _Stop() if mode == "shared" else None  # before "ready": a SIGTERM after it is heard
    with eventlog.open(store, segment_bytes=segment_bytes) as log:
        known = _Known()
        count = 0
        for record in log.read():
            known.take_in(record.event)
            count = record.lsn + 1
        _say({"ready": True, "next_lsn": count})
        if mode == "crash":
            _crash(log, rng, known, count)
        elif mode == "diskfull":
            _disk_full(log, rng, int(argv[4]), count)
        elif mode == "shared":
            assert stop is not None
            _shared(log, rng, known, int(argv[4]), stop)
        elif mode == "tear":
            _tear(log, rng, known)
        else:
            raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
