"""kill -9 at random moments: every acknowledged event survives, LSNs stay dense.

A child process (`_crash_child.py`) appends in a loop and reports each append only after it
returned; the parent SIGKILLs it at a random moment, reopens the store (recovery may cut a
torn tail) and checks the log against every acknowledgement of every round so far.

The same, with recovery racing live appenders: several children append to one store at once
while another opens it (recovery: temp files, the chain and its index files, the tail) and
reads it in a loop, and appenders are killed mid-write and restarted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import signal
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

import eventlog
from eventlog import events as ev
from eventlog._store import key_digest
from tests._processes import Child

CHILD = Path(__file__).with_name("_crash_child.py")
SEGMENT_BYTES = 8192
ROUNDS = 20

_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode


@dataclass
class Acks:
    """Everything children reported as acknowledged, over all rounds."""

    by_lsn: dict[int, bytes] = field(default_factory=dict)  # LSN -> event as stored
    contents: dict[uuid.UUID, str] = field(default_factory=dict)  # typed helpers: id -> content
    lines: int = 0

    def take(self, line: dict[str, Any]) -> None:
        self.lines += 1
        if "events" in line:
            for i, hexed in enumerate(line["events"]):
                lsn, stored = line["lsn"] + i, bytes.fromhex(hexed)
                known = self.by_lsn.setdefault(lsn, stored)
                assert known == stored, f"two acknowledgements disagree on LSN {lsn}"
        elif "ids" in line:
            for hexed, content in zip(line["ids"], line["contents"], strict=True):
                self.contents[uuid.UUID(hex=hexed)] = content
        else:
            raise AssertionError(f"unexpected line from the child: {line}")


def complete_lines(path: Path) -> list[dict[str, Any]]:
    """The child's report lines; a last line cut short by the kill was never acknowledged."""
    text = path.read_text()
    lines = text.split("\n")
    return [json.loads(line) for line in lines[:-1]]  # lines[-1] is "" or a torn line


def reopen(store: Path) -> tuple[list[eventlog.Record], list[str]]:
    """Open the store as a fresh process would (running recovery); all records, and the
    torn tails recovery reported."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
            records = list(log.read())
    torn = []
    for w in caught:
        if not issubclass(w.category, eventlog.TornTailTruncated):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        torn.append(str(w.message))
    return records, torn


def check(records: list[eventlog.Record], seen: list[bytes], acks: Acks) -> list[bytes]:
    """Assert the log holds everything acknowledged and everything read before; return it."""
    assert [r.lsn for r in records] == list(range(len(records))), "LSNs are not dense from 0"
    stored = [_ENCODE(r.event) for r in records]
    assert stored[: len(seen)] == seen, "events read after an earlier round changed or vanished"
    missing = sorted(lsn for lsn in acks.by_lsn if lsn >= len(stored))
    assert not missing, f"acknowledged LSNs missing after kill -9: {missing[:10]}..."
    changed = [lsn for lsn, data in acks.by_lsn.items() if stored[lsn] != data]
    assert not changed, f"acknowledged events differ at LSNs {changed[:10]}"
    by_id = {r.event.id: r.event.content for r in records if isinstance(r.event, ev.PromptAdded)}
    lost = [i for i, content in acks.contents.items() if by_id.get(i) != content]
    assert not lost, f"acknowledged typed-helper appends missing or changed: {lost[:10]}"
    return stored


def wait_ready(proc: subprocess.Popen[bytes], out: Path, err: Path) -> int:
    """Block until the child printed its ready line; its view of the store's length."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = out.read_text()
        if "\n" in text:
            first = json.loads(text.split("\n", 1)[0])
            assert first.get("ready"), first
            return int(first["next_lsn"])
        if proc.poll() is not None:
            pytest.fail(f"child exited ({proc.returncode}) before ready:\n{err.read_text()}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail("child did not get ready within 30 s")


@pytest.mark.slow
def test_kill_9_loop(tmp_path: Path, store: Path, rng: random.Random) -> None:
    acks = Acks()
    seen: list[bytes] = []
    torn_tails: list[str] = []
    early_kills = 0
    for round_ in range(ROUNDS):
        out, err = tmp_path / f"round{round_}.out", tmp_path / f"round{round_}.err"
        # One round in five kills at a random moment from spawn: maybe during start-up,
        # recovery or the first appends; the others give the child time to append first.
        early = rng.random() < 0.2
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(CHILD),
                    "crash",
                    str(store),
                    str(rng.randrange(2**32)),
                    str(SEGMENT_BYTES),
                ],
                stdout=stdout,
                stderr=stderr,
            )
        try:
            if early:
                early_kills += 1
                time.sleep(rng.uniform(0.0, 0.3))
            else:
                next_lsn = wait_ready(proc, out, err)
                assert next_lsn == len(seen), "the child sees another log than the parent"
                time.sleep(rng.uniform(0.05, 0.4))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, (
            f"round {round_}: the child died on its own ({proc.returncode}):\n{err.read_text()}"
        )
        for line in complete_lines(out):
            if "ready" in line:
                assert line["next_lsn"] == len(seen)
            else:
                acks.take(line)
        records, torn = reopen(store)
        torn_tails += torn
        seen = check(records, seen, acks)

    print(
        f"{ROUNDS} rounds ({early_kills} killed early): {len(seen)} events, "
        f"{len(acks.by_lsn)} acknowledged LSNs, {len(acks.contents)} helper ids, "
        f"{len(torn_tails)} torn tails cut"
    )
    segments = sorted(store.glob("*.seg"))
    assert len(segments) > 3, "the test should rotate segments"
    assert len(acks.by_lsn) > 100, "the children acknowledged too little to test anything"
    problems = eventlog.verify(store)
    assert [p for p in problems if p.severity == "error"] == [], problems
    # Recovery has run (reopen above): no torn tail or temp file should be left to warn about.
    assert problems == [], problems


APPENDERS = 3
STRESS_S = 6.0  # how long the appenders and the reopening process run together


def _appender(store: Path, tmp_path: Path, worker: int, run: int, seed: int) -> Child:
    args = [str(CHILD), "shared", str(store), str(seed), str(SEGMENT_BYTES), str(worker)]
    return Child([sys.executable, *args], tmp_path, f"appender{worker}.{run}")


@pytest.mark.slow
def test_recovery_while_others_append(tmp_path: Path, store: Path, rng: random.Random) -> None:
    """Appenders append (durably) and get killed; a process opens the store meanwhile, over
    and over. What each process was told stands: every acknowledged event once, at its LSN;
    what any recovery read is never changed after; the store is sound and fully indexed."""
    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:  # shared nodes, LSN 0..
        log.append([ev.SessionCreated(id=uuid.uuid4()) for _ in range(APPENDERS)])
    reopener = Child(
        [sys.executable, str(CHILD), "reopen", str(store), "0", str(SEGMENT_BYTES)],
        tmp_path,
        "reopener",
    )
    runs = [0] * APPENDERS
    live = [_appender(store, tmp_path, w, 0, rng.randrange(2**32)) for w in range(APPENDERS)]
    done: list[Child] = []
    tears: list[Child] = []
    kills = terms = 0
    ends = time.monotonic() + STRESS_S
    try:
        for step in itertools.count():
            if time.monotonic() > ends:
                break
            time.sleep(rng.uniform(0.1, 0.5))
            if step % 3 == 1:  # a crash that leaves half a frame, for someone to cut
                tear = Child(
                    [
                        sys.executable,
                        str(CHILD),
                        "tear",
                        str(store),
                        str(rng.randrange(2**32)),
                        str(SEGMENT_BYTES),
                    ],
                    tmp_path,
                    f"tear{len(tears)}",
                )
                tears.append(tear)
                assert tear.wait() == -signal.SIGKILL, tear.stderr()
                continue
            w = rng.randrange(APPENDERS)
            child = live[w]
            if child.proc.poll() is not None:
                pytest.fail(f"appender {w} exited ({child.proc.returncode}):\n{child.stderr()}")
            if child.said_something() and rng.random() < 0.15:  # a clean close: trim, tail
                child.signal(signal.SIGTERM)  # (set up once the child said it is ready)
                assert child.wait() == 0, child.stderr()
                terms += 1
            else:  # anywhere: start-up, recovery, mid-frame, mid-fsync, mid-rotation
                child.kill()
                assert child.proc.returncode == -signal.SIGKILL, child.stderr()
                kills += 1
            done.append(child)
            runs[w] += 1
            live[w] = _appender(store, tmp_path, w, runs[w], rng.randrange(2**32))
        reopener.wait_for(lambda: len(reopener.lines()) >= 3, "three passes of recovery")
        assert reopener.stop() == 0, reopener.stderr()
    finally:
        for child in [*live, reopener]:
            child.kill()  # the appenders still live die mid-write too
    done += live + tears

    acks = Acks()
    keys: dict[str, int] = {}  # idempotency key -> LSN of the first event it stored
    for child in done:
        for line in child.lines():
            if "ready" in line:
                continue
            key = line.pop("key", None)
            line.pop("duplicate", None)
            acks.take(line)
            if key is not None:
                assert keys.setdefault(key, line["lsn"]) == line["lsn"], f"key {key} moved"
    passes = reopener.lines()
    records, torn = reopen(store)
    stored = check(records, [], acks)
    assert len(set(stored)) == len(stored), "an event is stored twice"
    # What each recovering opener read is still the log's prefix (nothing it saw was cut).
    for i, seen in enumerate(passes):
        assert "errors" not in seen, f"verify, run during pass {i}: {seen['errors']}"
        prefix = hashlib.blake2b(b"".join(stored[: seen["next_lsn"]])).hexdigest()
        assert seen["next_lsn"] <= len(stored) and prefix == seen["digest"], f"pass {i} changed"

    assert eventlog.verify(store) == []
    assert sorted(store.glob("*.tmp")) == [], "a temp file no recovery removed"
    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        assert [r.lsn for r in log.read()] == list(range(len(stored)))
        # A node's entry holds the LSN that created it; a session's, the last that touched it.
        acked = {
            r.event.id: (r.lsn, r.event)
            for r in records
            if r.lsn in acks.by_lsn and isinstance(r.event, ev.PromptAdded | ev.ResponseAdded)
        }
        entries = log._store.entries([i.int for i in acked] + [key_digest(k) for k in keys])
        found = [None if e is None else e.lsn for e in entries]
        assert found == [lsn for lsn, _ in acked.values()] + list(keys.values()), (
            "the id index misses or moved an acknowledged id"
        )
        kinds = {
            ev.PromptAdded: eventlog.NodeKind.PROMPT,
            ev.ResponseAdded: eventlog.NodeKind.RESPONSE,
        }
        for node, (_lsn, event) in acked.items():
            assert log.kind_of(node) is kinds[type(event)], node
        sessions = [r.event.id for r in records if isinstance(r.event, ev.SessionCreated)]
        assert all(log.kind_of(s) is eventlog.NodeKind.SESSION for s in sessions)

    segments = len(list(store.glob("*.seg")))
    print(
        f"{len(stored)} events in {segments} segments, {len(acks.by_lsn)} acknowledged, "
        f"{len(keys)} keys; {kills} kill -9, {terms} clean stops, {len(tears)} torn frames; "
        f"{len(passes)} reopen passes "
        f"cut {sum(p['torn'] for p in passes)} torn tails, the last open {len(torn)}"
    )
    assert segments > 3 and len(acks.by_lsn) > 200 and kills > 1 and tears, "too little happened"
