"""`replay.fork`: a new store holding exactly a prefix of another, to continue otherwise.

The original is built once per module with small segments (several of them), requests of one
to eight events (so most frames hold several events), idempotency keys on most, and now and
then two keyed requests group-committed into one frame. Forks are cut inside a frame, at a
frame's end, at a segment's end and start, at the log's end, and before the first event. Each
fork must hold the original's events up to the cut byte for byte (ids, ``ts``, LSNs), say
where it came from, continue its own history from the cut, and leave the original untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import random
import signal
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

import eventlog
import projections
import replay
from eventlog import events as ev
from eventlog._commands import prepare
from eventlog._format import SEGMENT_HEADER
from eventlog._segment import iter_frames, read_segment_header
from replay import _service as replay_service
from replay.cli import main

SEGMENT_BYTES = 8192
REQUESTS = 220
LMG = Path(sys.executable).with_name("lmg")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode

Stored = tuple[int, int, bytes]  # LSN, ts, the event as MessagePack


# -- the original --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    """One stored request that created a session and `count - 1` prompts in it."""

    first: int
    count: int
    key: str | None

    @property
    def last(self) -> int:
        return self.first + self.count - 1


@dataclass(frozen=True)
class Frame:
    segment: int  # the first LSN of its segment
    first: int
    next: int  # the LSN after its last event


@dataclass
class Original:
    path: Path
    stored: list[Stored]
    requests: list[Req]  # the conversations (session + prompts), in log order
    groups: list[tuple[Req, Req]]  # two keyed conversations committed as one frame
    frames: list[Frame]

    @property
    def end(self) -> int:
        return len(self.stored) - 1

    @property
    def segments(self) -> list[int]:
        return sorted({f.segment for f in self.frames})

    def session_at(self, lsn: int) -> uuid.UUID:
        event = msgspec.msgpack.decode(self.stored[lsn][2], type=eventlog.Event)
        assert isinstance(event, ev.SessionCreated)
        return event.id

    def segment_of(self, lsn: int) -> int:
        return max(s for s in self.segments if s <= lsn)


def text(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + " ", k=rng.randrange(20, 160)))


def conversation(rng: random.Random, count: int) -> list[ev.EventBase]:
    """A new session and `count - 1` prompts in it: fresh ids every time, same types."""
    session = uuid.uuid4()
    return [
        ev.SessionCreated(id=session, metadata={"n": rng.randrange(99)}),
        *(
            ev.PromptAdded(id=uuid.uuid4(), session_id=session, content=text(rng))
            for _ in range(count - 1)
        ),
    ]


def read_stored(path: Path) -> list[Stored]:
    with eventlog.open(path, readonly=True) as log:
        return [(r.lsn, r.event.ts, _ENCODE(r.event)) for r in log.read()]


def read_frames(path: Path) -> list[Frame]:
    """Every frame of every segment, from the files."""
    frames = []
    for seg in sorted(path.glob("*.seg")):
        fd = os.open(seg, os.O_RDONLY)
        try:
            first = read_segment_header(fd)
            for frame in iter_frames(fd, SEGMENT_HEADER, os.fstat(fd).st_size, first):
                frames.append(Frame(first, frame.head.first_lsn, frame.head.next_lsn))
        finally:
            os.close(fd)
    return frames


def build(path: Path, rng: random.Random) -> Original:
    requests: list[Req] = []
    groups: list[tuple[Req, Req]] = []
    with eventlog.open(path, segment_bytes=SEGMENT_BYTES) as log:
        for i in range(REQUESTS):
            if i % 15 == 14:  # two keyed requests in one frame, as a group commit makes them
                pending = [
                    prepare(conversation(rng, rng.randint(2, 5)), {"idempotency_key": f"g{i}{x}"})
                    for x in "ab"
                ]
                results = log._store.commit(pending)
                made = []
                for x, result in zip("ab", results, strict=True):
                    assert isinstance(result, eventlog.Appended), result
                    made.append(Req(result.first_lsn, len(result.events), f"g{i}{x}"))
                requests += made
                groups.append((made[0], made[1]))
            elif i > 3 and rng.random() < 0.2:  # a lone prompt in an earlier session
                session = rng.choice(requests).first
                stored = log.read(session, session + 1)
                event = next(stored).event
                stored.close()
                assert isinstance(event, ev.SessionCreated)
                log.add_prompt(event.id, text(rng))
            else:
                key = f"r{i}" if rng.random() < 0.7 else None
                events = conversation(rng, rng.randint(1, 8))
                result = log.append(events, idempotency_key=key) if key else log.append(events)
                requests.append(Req(result.first_lsn, len(result.events), key))
    original = Original(path, read_stored(path), requests, groups, read_frames(path))
    assert [f.first for f in original.frames] == sorted(f.first for f in original.frames)
    assert original.frames[-1].next == len(original.stored)
    assert len(original.segments) >= 5, "the cuts need several segments"
    starts = {f.first for f in original.frames}
    for a, b in groups:  # each group really is one frame
        assert a.first in starts and b.first not in starts and b.first == a.last + 1
    return original


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    return build(tmp_path_factory.mktemp("fork") / "original", random.Random(1_220))


def file_hashes(path: Path) -> dict[str, str]:
    """Every file under `path` but LOCK: relative path -> SHA-256."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "LOCK"
    }


# -- 1. the fork holds the prefix, and continues on its own -----------------------------------


def pick_cut(original: Original, cut: str, rng: random.Random) -> int:
    frames, segments = original.frames, original.segments
    if cut == "inside-a-frame":
        frame = rng.choice([f for f in frames if f.next - f.first >= 3])
        return rng.randrange(frame.first, frame.next - 1)  # never its last event
    if cut == "at-a-frame-end":
        seg_ends = {s - 1 for s in segments}
        return rng.choice([f.next - 1 for f in frames if f.next - 1 not in seg_ends])
    if cut == "at-a-segment-end":
        return rng.choice(segments[1:]) - 1
    if cut == "at-a-segment-start":
        return rng.choice(segments[1:])
    if cut == "at-the-log-end":
        return original.end
    assert cut == "before-the-first-event"
    return -1


CUTS = [
    "inside-a-frame",
    "at-a-frame-end",
    "at-a-segment-end",
    "at-a-segment-start",
    "at-the-log-end",
    "before-the-first-event",
]


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.slow
def test_fork_holds_exactly_the_prefix_and_goes_its_own_way(
    original: Original, tmp_path: Path, rng: random.Random, cut: str
) -> None:
    p = pick_cut(original, cut, rng)
    print(f"{cut}: fork at LSN {p} of 0..{original.end}")
    untouched = file_hashes(original.path)
    fork = tmp_path / "fork"

    made = replay.fork(original.path, p, fork)

    # Where it came from, in the return value and in the fork itself.
    assert replay.origin(fork) == made
    assert Path(made.source).is_absolute()
    assert made.source == str(original.path.resolve())
    assert made.last_lsn == p
    assert made.last_ts == (original.stored[p][1] if p >= 0 else None)
    assert replay.origin(original.path) is None
    # The very same events: ids, payloads, ts and LSNs.
    assert read_stored(fork) == original.stored[: p + 1]
    assert not [x for x in eventlog.verify(fork) if x.severity == "error"]
    # Whole segments before the cut are copied byte for byte; the cut one ends the fork.
    forked = sorted(int(s.stem) for s in fork.glob("*.seg"))
    assert forked == ([s for s in original.segments if s <= p] or [0])
    for first in forked[:-1]:
        name = f"{first:020d}.seg"
        assert (fork / name).read_bytes() == (original.path / name).read_bytes()

    # The fork's own future: its next LSN continues the cut.
    before_the_cut = [r for r in original.requests if r.last <= p]
    after_the_cut = [r for r in original.requests if r.first > p]
    with projections.MemoryGraph.open(fork) as graph:
        assert graph.next_lsn() == p + 1
        if before_the_cut:
            session = original.session_at(rng.choice(before_the_cut).first)
        else:
            session = graph.create_session(metadata={"fork": True}).id
        first_own = graph.next_lsn()
        prompt = graph.add_prompt(session, "a future the original never had")
        assert graph.next_lsn() == first_own + 1
        assert [r.lsn for r in graph.read(p + 1)] == list(range(p + 1, first_own + 1))
        node = graph.get_node(prompt)
        assert isinstance(node, projections.Prompt) and node.session_id == session
        # A node that exists only after the cut, in the original, does not exist here.
        if after_the_cut:
            later = original.session_at(rng.choice(after_the_cut).first)
            with pytest.raises(eventlog.UnknownNode):
                graph.add_prompt(later, "into a session of another future")
            assert graph.next_lsn() == first_own + 1
        end = graph.next_lsn() - 1

    assert read_stored(fork)[-1][0] == end
    with replay.at(original.path) as view:
        assert view.lsn == original.end and view.get_node(prompt) is None
    assert file_hashes(original.path) == untouched, "forking or appending changed the original"
    assert read_stored(original.path) == original.stored
    assert replay.origin(fork) == made  # appending keeps the note


def test_verify_knows_a_forks_origin_file(original: Original, tmp_path: Path) -> None:
    """ORIGIN is a file of the store's own: `verify` does not warn about it."""
    replay.fork(original.path, original.end // 2, tmp_path / "fork")
    assert eventlog.verify(tmp_path / "fork") == []


# -- 2. idempotency keys across the cut ----------------------------------------------------------


def test_whole_requests_keep_their_keys_and_a_cut_one_loses_it(
    original: Original, tmp_path: Path, rng: random.Random
) -> None:
    # A group frame in a later segment, cut inside its second request.
    late = [
        (a, b)
        for a, b in original.groups
        if b.count >= 2 and original.segment_of(a.first) >= original.segments[2]
    ]
    first_of_group, cut_one = rng.choice(late)
    p = rng.randrange(cut_one.first, cut_one.last)
    cut_segment = original.segment_of(p)
    keyed = [r for r in original.requests if r.key is not None]
    sealed = rng.choice([r for r in keyed if r.last < cut_segment])  # a segment copied whole
    same_segment = [r for r in keyed if cut_segment <= r.first and r.last < first_of_group.first]
    after = rng.choice([r for r in keyed if r.first > cut_one.last])
    print(f"fork at {p}, inside {cut_one} (after {first_of_group} in its frame)")
    fork = tmp_path / "fork"
    replay.fork(original.path, p, fork)

    def retry(log: eventlog.EventLog, req: Req) -> eventlog.Appended:
        assert req.key is not None
        return log.append(conversation(rng, req.count), idempotency_key=req.key)

    with eventlog.open(fork) as log:
        for req in [sealed, first_of_group, *same_segment[-2:]]:
            again = retry(log, req)
            assert again.duplicate, f"{req} was copied whole: its key should hold"
            assert again.first_lsn == req.first
            assert [_ENCODE(e) for e in again.events] == [
                s[2] for s in original.stored[req.first : req.last + 1]
            ]
        assert log.next_lsn() == p + 1, "a duplicate appended something"

        cut = retry(log, cut_one)
        assert not cut.duplicate, "a request cut in half kept its key"
        assert (cut.first_lsn, len(cut.events)) == (p + 1, cut_one.count)
        assert retry(log, cut_one).duplicate  # the key now names the new request

        beyond = retry(log, after)  # a request of the original's future never happened here
        assert not beyond.duplicate and beyond.first_lsn == cut.last_lsn + 1


# -- 3. where a fork may not go ------------------------------------------------------------------


def test_fork_refuses_an_occupied_target_and_creates_nothing(
    original: Original, tmp_path: Path
) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    a_store = tmp_path / "a-store"
    replay.fork(original.path, 10, a_store)
    listing = sorted(p.name for p in tmp_path.iterdir())
    store_files = file_hashes(a_store)

    for target in (occupied, a_file, a_store):
        with pytest.raises(replay.ReplayError, match="already exists"):
            replay.fork(original.path, 20, target)
    with pytest.raises(replay.BadPoint):
        replay.fork(original.path, original.end + 1, tmp_path / "past-the-end")
    assert sorted(p.name for p in tmp_path.iterdir()) == listing, "a refused fork left files"
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]
    assert a_file.read_text() == "not a directory"
    assert file_hashes(a_store) == store_files
    assert replay.origin(a_store) is not None and replay.origin(a_store).last_lsn == 10  # type: ignore[union-attr]

    empty = tmp_path / "empty"
    empty.mkdir()  # an empty directory is fine
    assert replay.fork(original.path, 20, empty).last_lsn == 20
    assert read_stored(empty) == original.stored[:21]


@pytest.mark.slow
def test_a_killed_fork_leaves_nothing_or_a_whole_store(tmp_path: Path, rng: random.Random) -> None:
    source = tmp_path / "big"
    with eventlog.open(source, durability=eventlog.Durability.NONE, segment_bytes=1 << 20) as log:
        filler = random.Random(rng.random())
        while log.next_lsn() < 8_000:
            session = uuid.uuid4()
            log.append(
                [
                    ev.SessionCreated(id=session),
                    *(
                        ev.PromptAdded(
                            id=uuid.uuid4(), session_id=session, content=filler.randbytes(600).hex()
                        )
                        for _ in range(5)
                    ),
                ]
            )
    stored = read_stored(source)
    print(f"{len(stored)} events, {sum(f.stat().st_size for f in source.iterdir()):,} bytes")

    mid_copy = whole = untouched = 0
    for attempt in range(12):
        target = tmp_path / f"fork{attempt}"
        p = rng.randrange(len(stored) // 2, len(stored))
        proc = subprocess.Popen(
            [str(LMG), "fork", str(source), "--at", str(p), str(target)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            building = target.with_name(f".{target.name}.copying-{proc.pid}")
            deadline = time.monotonic() + 30
            while not building.exists() and proc.poll() is None:
                assert time.monotonic() < deadline, "the fork never started copying"
                time.sleep(0.0005)
            time.sleep(rng.uniform(0.0, 0.03))
            proc.send_signal(signal.SIGKILL)
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            err = proc.stderr.read().decode()
            proc.stderr.close()
        assert code in (0, -signal.SIGKILL), err
        if target.exists():  # then it is complete: its events, its origin, and it opens
            whole += 1
            assert read_stored(target) == stored[: p + 1]
            found = replay.origin(target)
            assert found is not None and found.last_lsn == p
            assert not [x for x in eventlog.verify(target) if x.severity == "error"]
        elif building.exists():
            mid_copy += 1  # killed while building: nothing at the target
        else:
            untouched += 1  # killed before it began
        if mid_copy >= 2:
            break
    leftovers = sorted(p.name for p in tmp_path.glob(".*.copying-*"))
    print(
        f"{mid_copy} killed mid-copy, {whole} complete, {untouched} before copying; left "
        f"beside the targets: {leftovers}"
    )
    assert mid_copy >= 1, "no attempt was killed while copying"
    # A later fork to a target whose first attempt was killed succeeds.
    retried = tmp_path / "fork0"
    if not retried.exists():
        assert replay.fork(source, 100, retried).last_lsn == 100


# -- 4. the command ------------------------------------------------------------------------------


def test_lmg_fork_prints_the_origin(original: Original, tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "fork"
    p = next(f.next - 1 for f in original.frames if f.next - 1 >= original.end // 3)  # a frame end
    result = runner.invoke(main, ["fork", str(original.path), "--at", str(p), str(target)])
    assert result.exit_code == 0, (result.output, result.exception)
    head, when = result.output.removesuffix(")\n").split(" (")
    assert head == f"forked {target} from {original.path.resolve()} at LSN {p}"
    # The time said is the event's (to the microsecond), and as a point it holds the event.
    said = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    ts = original.stored[p][1]
    assert abs((said - EPOCH) // dt.timedelta(microseconds=1) * 1000 - ts) < 1000, (when, ts)
    again = runner.invoke(main, ["fork", str(original.path), "--at", when, str(tmp_path / "t")])
    assert again.exit_code == 0, (again.output, again.exception)
    assert f"at LSN {p} (" in again.output
    assert read_stored(target) == original.stored[: p + 1]

    empty = tmp_path / "empty"
    result = runner.invoke(main, ["fork", str(original.path), "--at", "-1", str(empty)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.output.endswith("at LSN -1 (before the first event)\n")
    assert read_stored(empty) == []

    refused = runner.invoke(main, ["fork", str(original.path), "--at", "5", str(target)])
    assert refused.exit_code == 1
    assert refused.output.startswith("Error: cannot fork ") and "already exists" in refused.output


# -- 4. the service's fork route, in this process ------------------------------------------------


@contextlib.contextmanager
def _serving(path: Path) -> Iterator[TestClient]:
    """`lmg serve`'s app serving `path` as ``default``, without auth, in this process."""
    app, _ = replay_service.app({"default": path})
    with TestClient(app, base_url="http://127.0.0.1") as client:  # a loopback Host
        yield client


def _fork(client: TestClient, at: int, name: str) -> Any:
    return client.post("/v1/stores/default/fork", json={"at": at, "name": name})


def test_a_fork_the_service_cannot_open_leaves_no_folder_taking_its_name(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy is made, then the service fails to open it: the answer is an error, the
    copy is removed, and the name can be used again (it used to stay taken: a 409)."""
    with eventlog.open(store) as log:
        log.create_session()

    def unopenable(_log: object) -> None:
        raise projections.ProjectionError("the fork's projections cannot be opened")

    with _serving(store) as client:
        with monkeypatch.context() as patched:
            patched.setattr(replay_service, "Owner", unopenable)
            failed = _fork(client, 0, "try")
        assert failed.status_code == 500, failed.text
        assert sorted(p.name for p in store.parent.iterdir()) == ["store"]
        made = _fork(client, 0, "try")
        assert made.status_code == 200, made.text
        assert client.get("/v1/stores").json()["stores"] == ["default", "try"]


def test_a_forks_event_count_is_what_it_holds_after_an_erasure(store: Path) -> None:
    """`events` in the route's answer is the number of events the fork holds. An erasure
    blanks content and keeps every event and LSN (LSNs stay dense from 0), so that number
    is ``last_lsn + 1`` also after one."""
    with eventlog.open(store) as log:
        sessions = [log.create_session(metadata={"user": f"u{i}"}).id for i in range(3)]
        for session in sessions:
            log.add_prompt(session, "words to erase")
    projections.erase(store, eventlog.Selector(sessions=[sessions[1]]))
    with _serving(store) as client:
        made = _fork(client, 6, "after").json()  # the erasure's record is LSN 6
    with eventlog.open(store.parent / "after", readonly=True) as fork:
        held = [r.lsn for r in fork.read()]
    assert held == list(range(7))
    assert made["events"] == len(held) == made["last_lsn"] + 1
