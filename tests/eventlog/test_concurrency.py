"""Many appenders at once: processes (flock + catch-up), threads (group commit), asyncio tasks.

Every appended event carries a tag ``"worker:request:index"`` in its content, metadata or
properties, so the log alone tells which request wrote what. After the appenders finish, the
same checks run whatever the concurrency: LSNs dense from 0, every event present exactly once,
the events of one request contiguous and in order, one worker's requests in the order it made
them, ``ts`` never decreasing, and `eventlog.verify` finding nothing.

Followers are checked against a writer in another process: each batch it acknowledges must
reach the follower (sync and async) within a few seconds, in LSN order, and setting the stop
event ends the follower promptly.

Child processes use the spawn start method, so they import this module afresh and share
nothing with the test process but the store directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

import eventlog
from eventlog import events as ev

SEGMENT_BYTES = 16_384  # small, so segments rotate while appenders contend
PROMPT_WAIT_S = 5.0  # how long a follower may take to see an acknowledged event

_SPAWN = multiprocessing.get_context("spawn")


# -- the workload: tagged requests, single events and small batches ------------------------------


@dataclass(frozen=True)
class Shared:
    """Nodes every appender may refer to, created before the appenders start."""

    sessions: tuple[uuid.UUID, ...]  # one per worker: worker w writes into the others'
    agent: uuid.UUID


@dataclass
class Call:
    """One request: a helper of the log, its arguments, how many events it writes."""

    helper: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    events: int
    done: Callable[[Any], None] = lambda _result: None


@dataclass
class Workload:
    """The requests of one appender. `call(k)` plans request k from what it knows so far."""

    worker: int
    shared: Shared
    rng: random.Random
    own_sessions: list[uuid.UUID] = field(default_factory=list)
    own_prompts: list[uuid.UUID] = field(default_factory=list)
    own_responses: list[uuid.UUID] = field(default_factory=list)
    foreign_sessions: list[uuid.UUID] = field(default_factory=list)  # other workers' nodes,
    foreign_prompts: list[uuid.UUID] = field(default_factory=list)  # found by reading the log
    read_from: int = 0
    planned: dict[int, int] = field(default_factory=dict)  # request -> number of events
    first_lsns: dict[int, int] = field(default_factory=dict)  # request -> first LSN, if returned

    def tag(self, request: int, index: int) -> str:
        return f"{self.worker}:{request}:{index}"

    def discover(self, records: Iterable[eventlog.Record]) -> None:
        """Learn the sessions and prompts other workers created (just now, maybe)."""
        for record in records:
            self.read_from = record.lsn + 1
            tag = tag_of(record.event)
            if tag is None or tag.startswith(f"{self.worker}:"):
                continue
            if isinstance(record.event, ev.SessionCreated):
                self.foreign_sessions.append(record.event.id)
            elif isinstance(record.event, ev.PromptAdded):
                self.foreign_prompts.append(record.event.id)

    def others(self) -> list[uuid.UUID]:
        """Sessions created by someone else (the test, for another worker)."""
        return [s for i, s in enumerate(self.shared.sessions) if i % 4 != self.worker % 4]

    def call(self, k: int) -> Call:
        rng, t = self.rng, self.tag
        if k == 0:
            call = Call("create_session", (), {"metadata": {"tag": t(k, 0)}}, 1)
            call.done = lambda s: self.own_sessions.append(s.id)
            return self._planned(k, call)
        choice = rng.randrange(8)
        sessions = self.others() + self.own_sessions + self.foreign_sessions[-5:]
        if choice == 7 and self.foreign_prompts:
            # A response to a prompt another worker (maybe another process) made moments ago.
            prompt = rng.choice(self.foreign_prompts[-10:])
            call = Call("add_response", (prompt, t(k, 0), ev.TokenUsage(1, 1)), {}, 1)
            call.done = self.own_responses.append
        elif choice == 0 or not self.own_prompts:
            call = Call("add_prompt", (rng.choice(self.others()), t(k, 0)), {}, 1)
            call.done = self.own_prompts.append
        elif choice == 1:
            usage = ev.TokenUsage(rng.randrange(100), rng.randrange(100))
            call = Call("add_response", (rng.choice(self.own_prompts), t(k, 0), usage), {}, 1)
            call.done = self.own_responses.append
        elif choice == 2:
            n = rng.randint(2, 5)
            pairs = [(rng.choice(sessions), t(k, j)) for j in range(n)]
            call = Call("add_prompts_batch", (pairs,), {}, n)
            call.done = self.own_prompts.extend
        elif choice == 3:
            items: list[tuple[tuple[uuid.UUID, str], tuple[str, ev.TokenUsage] | None]] = []
            j = 0
            for _ in range(rng.randint(1, 3)):
                question = (rng.choice(sessions), t(k, j))
                j += 1
                answer = None
                if rng.random() < 0.7:
                    answer, j = (t(k, j), ev.TokenUsage(1, 2)), j + 1
                items.append((question, answer))
            call = Call("add_conversations_batch", (items,), {}, j)
        elif choice == 4:
            node = uuid.uuid4()
            target = rng.choice(self.own_prompts + self.others())
            batch: list[ev.EventBase] = [
                ev.NodeAdded(
                    id=node, kind="probe", content=t(k, 0), session_id=target_session(self, target)
                ),
                ev.EdgeAdded(
                    id=uuid.uuid4(),
                    from_id=node,
                    to_id=target,
                    edge_type=ev.EdgeType.REFERENCES,
                    properties={"tag": t(k, 1)},
                ),
            ]
            call = Call("append", (batch,), {"actor": f"worker-{self.worker}"}, 2)

            def took(result: eventlog.Appended, k: int = k) -> None:
                self.first_lsns[k] = result.first_lsn

            call.done = took
        elif choice == 5 and self.own_responses:
            call = Call(
                "add_tool_invocation",
                (rng.choice(self.own_responses), "search", {"tag": t(k, 0)}),
                {},
                1,
            )
        else:
            # An idempotent add_prompt, retried at once: the retry must return the first id.
            key = f"key-{self.worker}-{k}"
            call = Call("add_prompt", (rng.choice(sessions), t(k, 0)), {"idempotency_key": key}, 1)
            call.done = self.own_prompts.append
        return self._planned(k, call)

    def _planned(self, k: int, call: Call) -> Call:
        self.planned[k] = call.events
        return call


def target_session(workload: Workload, target: uuid.UUID) -> uuid.UUID | None:
    """The session a generic node joins: the edge target's session when it is one."""
    return target if target in workload.shared.sessions else None


def tag_of(event: ev.EventBase) -> str | None:
    """The workload tag an event carries, if any (setup events carry none)."""
    match event:
        case ev.PromptAdded() | ev.ResponseAdded() | ev.NodeAdded():
            return event.content
        case ev.SessionCreated():
            tag = event.metadata.get("tag")
            return tag if isinstance(tag, str) else None
        case ev.EdgeAdded():
            tag = event.properties.get("tag")
            return tag if isinstance(tag, str) else None
        case ev.ToolInvoked():
            return str(event.parameters["tag"])
        case _:
            return None


def run_sync(log: eventlog.EventLog, workload: Workload, requests: int) -> None:
    for k in range(requests):
        if k % 10 == 5:
            workload.discover(log.read(workload.read_from))
        call = workload.call(k)
        result = getattr(log, call.helper)(*call.args, **call.kwargs)
        if "idempotency_key" in call.kwargs:
            again = getattr(log, call.helper)(*call.args, **call.kwargs)
            assert again == result, f"retry of {call.kwargs} returned {again}, not {result}"
        call.done(result)


async def run_async(log: eventlog.AsyncEventLog, workload: Workload, requests: int) -> None:
    for k in range(requests):
        if k % 4 == 3:
            workload.discover([r async for r in log.read(workload.read_from)])
        call = workload.call(k)
        result = await getattr(log, call.helper)(*call.args, **call.kwargs)
        if "idempotency_key" in call.kwargs:
            again = await getattr(log, call.helper)(*call.args, **call.kwargs)
            assert again == result, f"retry of {call.kwargs} returned {again}, not {result}"
        call.done(result)


def setup_shared(log: eventlog.EventLog, workers: int) -> Shared:
    sessions = tuple(log.create_session(metadata={"shared": i}).id for i in range(workers))
    return Shared(sessions, log.add_agent("shared", "helper"))


# -- the checks ----------------------------------------------------------------------------------


def check_store(path: Path, workloads: list[Workload]) -> list[eventlog.Record]:
    """Reopen the store and check it against every workload's requests (see the docstring)."""
    assert eventlog.verify(path) == []
    with eventlog.open(path, readonly=True) as log:
        records = list(log.read())
    assert [r.lsn for r in records] == list(range(len(records))), "LSNs are not dense from 0"
    ts = [r.event.ts for r in records]
    assert all(a <= b for a, b in itertools.pairwise(ts)), "ts went back along the log"

    where: dict[str, int] = {}
    for record in records:
        tag = tag_of(record.event)
        if tag is not None:
            assert tag not in where, f"{tag} stored twice: LSNs {where[tag]} and {record.lsn}"
            where[tag] = record.lsn
    expected = {
        f"{w.worker}:{k}:{j}" for w in workloads for k, n in w.planned.items() for j in range(n)
    }
    missing, unexpected = sorted(expected - set(where)), sorted(set(where) - expected)
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    for w in workloads:
        previous = -1
        for k, n in sorted(w.planned.items()):
            first = where[f"{w.worker}:{k}:0"]
            lsns = [where[f"{w.worker}:{k}:{j}"] for j in range(n)]
            assert lsns == list(range(first, first + n)), f"request {w.worker}:{k} interleaved"
            assert first > previous, f"worker {w.worker}'s requests are out of order at {k}"
            assert w.first_lsns.get(k, first) == first, f"request {w.worker}:{k}: wrong first LSN"
            previous = first
    return records


# -- processes -----------------------------------------------------------------------------------


def append_worker(
    *, path: str, worker: int, seed: int, requests: int, shared: Shared, barrier: Barrier, out: str
) -> None:
    """A child process: open the store, wait for the others, append, report what it planned."""
    workload = Workload(worker, shared, random.Random(seed * 1000 + worker))
    with eventlog.open(path, segment_bytes=SEGMENT_BYTES) as log:
        barrier.wait(timeout=60)
        run_sync(log, workload, requests)
    report = {"planned": workload.planned, "first_lsns": workload.first_lsns}
    Path(out).write_text(json.dumps(report))


@pytest.mark.slow
def test_four_processes_append_concurrently(store: Path, rng: random.Random) -> None:
    workers, requests = 4, 200
    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        shared = setup_shared(log, workers)
    seed = rng.randrange(2**32)
    barrier = _SPAWN.Barrier(workers)
    outs = [store.parent / f"worker-{w}.json" for w in range(workers)]
    procs = [
        _SPAWN.Process(
            target=append_worker,
            kwargs={
                "path": str(store),
                "worker": w,
                "seed": seed,
                "requests": requests,
                "shared": shared,
                "barrier": barrier,
                "out": str(outs[w]),
            },
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers

    workloads = []
    for w, out in enumerate(outs):
        report = json.loads(out.read_text())
        workload = Workload(w, shared, random.Random())
        workload.planned = {int(k): n for k, n in report["planned"].items()}
        workload.first_lsns = {int(k): n for k, n in report["first_lsns"].items()}
        workloads.append(workload)
    records = check_store(store, workloads)
    with eventlog.open(store, readonly=True) as log:
        assert log.stats().segments >= 4, "segments should have rotated under contention"
    assert cross_process_responses(records) > 0, "no worker answered another's prompt"
    actors = {r.event.actor for r in records if r.event.actor is not None}
    assert actors <= {f"worker-{w}" for w in range(workers)}


def cross_process_responses(records: list[eventlog.Record]) -> int:
    """Responses by one worker to a prompt another worker wrote."""
    author = {r.event.id: tag_of(r.event) for r in records if isinstance(r.event, ev.PromptAdded)}
    return sum(
        1
        for r in records
        if isinstance(r.event, ev.ResponseAdded)
        and (author.get(r.event.prompt_id) or ":").split(":")[0]
        not in ("", (tag_of(r.event) or ":").split(":")[0])
    )


def test_sixteen_threads_share_one_log(store: Path, rng: random.Random) -> None:
    threads, requests = 16, 40
    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        shared = setup_shared(log, 4)
        workloads = [
            Workload(w, shared, random.Random(rng.randrange(2**32))) for w in range(threads)
        ]
        barrier = threading.Barrier(threads)
        errors: list[BaseException] = []

        def work(workload: Workload) -> None:
            try:
                barrier.wait(timeout=30)
                run_sync(log, workload, requests)
            except BaseException as exc:
                errors.append(exc)
                raise

        running = [threading.Thread(target=work, args=(w,)) for w in workloads]
        for t in running:
            t.start()
        for t in running:
            t.join(timeout=120)
        assert not errors
        frames = _frames(log)
    check_store(store, workloads)
    assert frames < 5 + threads * requests, "group commit never put two requests in one frame"


@pytest.mark.slow
def test_sixty_four_tasks_share_one_async_log(store: Path, rng: random.Random) -> None:
    tasks, requests = 64, 12

    async def main() -> list[Workload]:
        async with await eventlog.open_async(store, segment_bytes=SEGMENT_BYTES) as log:
            s = [(await log.create_session(metadata={"shared": i})).id for i in range(4)]
            shared = Shared(tuple(s), await log.add_agent("shared", "helper"))
            workloads = [
                Workload(w, shared, random.Random(rng.randrange(2**32))) for w in range(tasks)
            ]
            await asyncio.gather(*(run_async(log, w, requests) for w in workloads))
            return workloads

    workloads = asyncio.run(main())
    check_store(store, workloads)


@pytest.mark.parametrize("durability", [eventlog.Durability.NONE, eventlog.Durability.FSYNC])
def test_async_agents_answered_by_one_commit_append_next_in_one_group(
    store: Path, durability: eventlog.Durability, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 agents that append again as soon as an append returns: once the loop has run the
    agents a commit answered, their next appends are one group (one frame, one sync), even
    when the first commit took only some of them. The committer used to take whatever was
    queued when it woke, so the agents split into cohorts that each paid a sync, for good."""
    agents, rounds = 64, 20
    groups: list[int] = []
    # A loaded machine may take longer than 5 ms to run 64 agents: the wait is not the point.
    monkeypatch.setattr(eventlog.log, "SETTLE_WAIT_S", 10.0)

    async def main() -> None:
        async with await eventlog.open_async(store, durability=durability) as log:
            session = (await log.create_session()).id
            log.on_commit = lambda requests, _events, _fsync_s: groups.append(requests)

            async def agent() -> None:
                for _ in range(rounds):
                    await log.add_prompt(session, "next step")

            await asyncio.gather(*(agent() for _ in range(agents)))

    asyncio.run(main())
    assert sum(groups) == agents * rounds
    assert len(groups) <= rounds + 2, groups  # after the first two, every group holds all


def test_handles_with_different_segment_sizes_share_a_store(store: Path) -> None:
    """A handle that rotates early and one that never would: the second must follow the first's
    rotations instead of writing on in a sealed segment."""
    small = eventlog.open(store, segment_bytes=4096)
    large = eventlog.open(store)
    try:
        session = small.create_session().id
        for i in range(100):
            small.add_prompt(session, f"small {i} " + "x" * 40)
            large.add_prompt(session, f"large {i} " + "y" * 40)
    finally:
        small.close()
        large.close()
    assert eventlog.verify(store) == []
    with eventlog.open(store) as log:
        records = list(log.read())
        assert log.stats().segments > 2
    assert [r.lsn for r in records] == list(range(201))
    contents = [r.event.content for r in records[1:] if isinstance(r.event, ev.PromptAdded)]
    assert [c.split()[:2] for c in contents] == [
        [who, str(i)] for i in range(100) for who in ("small", "large")
    ]


def _frames(log: eventlog.EventLog) -> int:
    """Frames in the store (internal summaries: how many group commits were written)."""
    store = log._store
    firsts = store.segments()
    return sum(store.summary(f).frames for f in firsts[:-1]) + store.active_summary().frames


# -- followers -----------------------------------------------------------------------------------


def appender(path: str, commands: Queue[int | None], replies: Queue[int]) -> None:
    """A child process: on each command n, append a batch of n tagged nodes; reply its last LSN."""
    with eventlog.open(path, segment_bytes=4096) as log:
        replies.put(-1)  # open: ready
        batch = 0
        while (n := commands.get(timeout=60)) is not None:
            events = [
                ev.NodeAdded(id=uuid.uuid4(), kind="probe", content=f"9:{batch}:{j}" + "z" * 200)
                for j in range(n)
            ]
            replies.put(log.append(events).last_lsn)
            batch += 1


def _start_appender(path: Path) -> tuple[Any, Queue[int | None], Queue[int]]:
    commands: Queue[int | None] = _SPAWN.Queue()
    replies: Queue[int] = _SPAWN.Queue()
    proc = _SPAWN.Process(target=appender, args=(str(path), commands, replies))
    proc.start()
    assert replies.get(timeout=60) == -1
    return proc, commands, replies


def reached(seen: list[eventlog.Record], lsn: int) -> Callable[[], bool]:
    return lambda: bool(seen) and seen[-1].lsn >= lsn


def _check_followed(records: list[eventlog.Record], batches: list[int]) -> None:
    """Everything the appender acknowledged, once each, in LSN order (after the session)."""
    assert [r.lsn for r in records] == list(range(len(records)))
    tags = [(tag_of(r.event) or "").rstrip("z") for r in records[1:]]
    assert tags == [f"9:{b}:{j}" for b, n in enumerate(batches) for j in range(n)]


@pytest.mark.slow
def test_follow_sees_another_process_promptly(store: Path, rng: random.Random) -> None:
    with eventlog.open(store) as log:
        log.create_session()
    proc, commands, replies = _start_appender(store)
    seen: list[eventlog.Record] = []
    arrived = threading.Condition()
    stop = threading.Event()

    def follow() -> None:
        with eventlog.open(store, readonly=True) as reader:
            for record in reader.follow(0, stop=stop):
                with arrived:
                    seen.append(record)
                    arrived.notify_all()

    follower = threading.Thread(target=follow)
    follower.start()
    batches = [rng.randint(1, 30) for _ in range(12)]
    try:
        for n in batches:
            if rng.random() < 0.3:
                time.sleep(rng.random() * 0.3)  # let the follower go idle in its watcher
            commands.put(n)
            last = replies.get(timeout=30)
            acked = time.monotonic()
            with arrived:
                ok = arrived.wait_for(reached(seen, last), PROMPT_WAIT_S)
            assert ok, f"LSN {last} not followed within {PROMPT_WAIT_S} s"
            assert time.monotonic() - acked < PROMPT_WAIT_S
    finally:
        commands.put(None)
        proc.join(timeout=30)
        stop.set()
        follower.join(timeout=5)
    assert not follower.is_alive(), "follow did not stop when its stop event was set"
    assert proc.exitcode == 0
    _check_followed(seen, batches)


@pytest.mark.slow
def test_async_follow_sees_another_process_promptly(store: Path, rng: random.Random) -> None:
    batches = [rng.randint(1, 30) for _ in range(12)]

    async def main() -> list[eventlog.Record]:
        async with await eventlog.open_async(store) as log:
            await log.create_session()
            proc, commands, replies = _start_appender(store)
            seen: list[eventlog.Record] = []
            arrived = asyncio.Condition()
            stop = asyncio.Event()

            async def consume() -> None:
                async for record in log.follow(0, stop=stop):
                    async with arrived:
                        seen.append(record)
                        arrived.notify_all()

            follower = asyncio.create_task(consume())
            try:
                for n in batches:
                    if rng.random() < 0.3:
                        await asyncio.sleep(rng.random() * 0.3)
                    commands.put(n)
                    last = await asyncio.to_thread(replies.get, True, 30)
                    async with arrived:
                        await asyncio.wait_for(
                            arrived.wait_for(reached(seen, last)),
                            PROMPT_WAIT_S,
                        )
            finally:
                commands.put(None)
                await asyncio.to_thread(proc.join, 30)
                stop.set()
                await asyncio.wait_for(follower, 5)  # a follower that ignores stop fails here
            assert proc.exitcode == 0
            return seen

    _check_followed(asyncio.run(main()), batches)


def _hold_commits(
    log: eventlog.EventLog, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """Make each commit of `log` set the first event, then wait for the second to be set."""
    in_commit, release = threading.Event(), threading.Event()
    commit = log._store.commit

    def slow_commit(requests: list[Any]) -> Any:
        in_commit.set()
        release.wait(10)
        return commit(requests)

    monkeypatch.setattr(log._store, "commit", slow_commit)
    return in_commit, release


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, also in a process a shell started in the background
    (as CI may): such a process ignores SIGINT, and Python then installs no handler."""
    import signal  # noqa: PLC0415

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_raises")
def test_an_interrupted_thread_leaves_no_thread_of_its_group_waiting(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threads one commit served wake in a chain, each waking the next. A Ctrl-C in a
    thread waiting in the middle of that chain (the main thread) is raised once it has woken
    the next thread, so the threads after it still get their results."""
    import signal  # noqa: PLC0415

    log = eventlog.open(store)
    session = log.create_session()
    in_commit, release = _hold_commits(log, monkeypatch)
    results: dict[str, Any] = {}

    def append(name: str) -> None:
        results[name] = log.add_prompt(session.id, name)

    threads = {n: threading.Thread(target=append, args=(n,), daemon=True) for n in "abc"}
    main = threading.main_thread().ident
    assert main is not None

    def queue_interrupt_release() -> None:
        time.sleep(0.3)
        threads["c"].start()  # queued after the main thread
        time.sleep(0.3)
        signal.pthread_kill(main, signal.SIGINT)  # the main thread waits in the queue
        time.sleep(0.3)
        release.set()

    threads["a"].start()  # a commits alone, held in its commit until `release`
    assert in_commit.wait(10)
    threads["b"].start()  # b queues first: it leads the next group and wakes the main thread
    time.sleep(0.3)
    helper = threading.Thread(target=queue_interrupt_release, daemon=True)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        append("main")
    for thread in (*threads.values(), helper):
        thread.join(10)
        assert not thread.is_alive(), "a thread still waits"
    assert set(results) == {"a", "b", "c"}
    log.close()


class _LockInterruptedOnceHeld:
    """A wake-up lock whose first acquire takes the lock, then raises KeyboardInterrupt: a
    Ctrl-C that lands just after a follower was woken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._interrupted = False

    def acquire(self) -> bool:
        self._lock.acquire()
        if not self._interrupted:
            self._interrupted = True
            raise KeyboardInterrupt
        return True

    def release(self) -> None:
        self._lock.release()


def test_an_interrupt_just_after_a_follower_woke_does_not_leave_it_waiting_for_itself(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower must not acquire its wake-up lock a second time: it would wait forever."""
    from eventlog import log as log_module  # noqa: PLC0415

    @dataclasses.dataclass
    class Slot(log_module._Slot):
        wake: Any = dataclasses.field(default_factory=_LockInterruptedOnceHeld)

    log = eventlog.open(store)
    session = log.create_session()
    in_commit, release = _hold_commits(log, monkeypatch)
    monkeypatch.setattr(log_module, "_Slot", Slot)
    outcome: dict[str, Any] = {}

    def append(name: str) -> None:
        try:
            outcome[name] = log.add_prompt(session.id, name)
        except KeyboardInterrupt as exc:
            outcome[name] = exc

    first = threading.Thread(target=append, args=("a",), daemon=True)
    first.start()  # commits alone, held until `release`
    assert in_commit.wait(10)
    second = threading.Thread(target=append, args=("b",), daemon=True)
    second.start()  # queues: a slot, woken when the lead is handed over
    deadline = time.monotonic() + 10
    while not log._committer._queue and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in (first, second):
        thread.join(10)
        assert not thread.is_alive(), "a thread waits for itself"
    assert isinstance(outcome["b"], KeyboardInterrupt)
    assert [e.content for _, e in log.read() if hasattr(e, "content")] == ["a", "b"]
    log.close()


def test_an_interrupt_in_a_follower_leading_after_its_commit_leaves_no_thread_waiting(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main thread queues behind a held commit, so it is handed the lead and commits its
    own request and the one queued after it. An interrupt landing after that commit, as it
    hands the results out, is raised in the main thread only once the other thread is woken
    and the lead handed over: it used to leave that thread, and every later append, waiting
    for good."""
    from eventlog import log as log_module  # noqa: PLC0415

    main = threading.get_ident()

    @dataclasses.dataclass
    class Slot(log_module._Slot):
        made_by: int = dataclasses.field(default_factory=threading.get_ident)

        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            handing_out = name == "result" and value is not None and self.made_by != main
            if handing_out and threading.get_ident() == main:
                raise KeyboardInterrupt  # a Ctrl-C landing just after the leader's commit

    log = eventlog.open(store)
    session = log.create_session()
    in_commit, release = _hold_commits(log, monkeypatch)
    monkeypatch.setattr(log_module, "_Slot", Slot)
    results: dict[str, Any] = {}

    def append(name: str) -> None:
        results[name] = log.add_prompt(session.id, name)

    def queued(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(log._committer._queue) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def queue_then_release() -> None:
        queued(1)  # the main thread waits first in the queue: it leads the next group
        threads["c"].start()
        queued(2)
        release.set()

    threads = {n: threading.Thread(target=append, args=(n,), daemon=True) for n in "acd"}
    threads["a"].start()  # a commits alone, held in its commit until `release`
    assert in_commit.wait(10)
    helper = threading.Thread(target=queue_then_release, daemon=True)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        append("main")
    threads["d"].start()  # a later append: the lead was handed over
    for thread in (*threads.values(), helper):
        thread.join(10)
        assert not thread.is_alive(), "a thread still waits"
    assert set(results) == {"a", "c", "d"}
    contents = [e.content for _, e in log.read() if isinstance(e, ev.PromptAdded)]
    assert sorted(contents) == ["a", "c", "d", "main"]
    log.close()
