"""kill -9 at random moments: every acknowledged event survives, LSNs stay dense.

A child process (`_crash_child.py`) appends in a loop and reports each append only after it
returned; the parent SIGKILLs it at a random moment, reopens the store (recovery may cut a
torn tail) and checks the log against every acknowledgement of every round so far.
"""

from __future__ import annotations

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
