"""What an append promises besides durability: optimistic concurrency, idempotent retries,
all-or-nothing requests, isolation inside a group commit, and reads by time.

Each rejected append must leave the log exactly as it was; the tests check that by the log's
last LSN and, where it matters, by reading every event back.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import random
import threading
import uuid
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import msgspec
import pytest

import eventlog
from eventlog import _commands as commands
from eventlog import events as ev

_SPAWN = multiprocessing.get_context("spawn")
_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode


def events_of(path: Path) -> list[eventlog.Record]:
    with eventlog.open(path, readonly=True) as log:
        records = list(log.read())
    assert [r.lsn for r in records] == list(range(len(records)))
    return records


def encoded(events: list[ev.EventBase]) -> list[bytes]:
    return [_ENCODE(e) for e in events]


def node(kind: str = "doc", **fields: Any) -> ev.NodeAdded:
    return ev.NodeAdded(id=uuid.uuid4(), kind=kind, **fields)


# -- optimistic concurrency ----------------------------------------------------------------------


def test_expect_store_lsn(log: eventlog.EventLog) -> None:
    assert log.last_lsn() is None
    with pytest.raises(eventlog.AppendConflict) as conflict:
        log.create_session(expect_store_lsn=0)  # the empty log's last LSN is -1
    assert (conflict.value.expected, conflict.value.actual) == (0, -1)
    assert log.last_lsn() is None

    session = log.create_session(expect_store_lsn=-1).id  # LSN 0
    with pytest.raises(eventlog.AppendConflict):
        log.create_session(expect_store_lsn=-1)
    assert log.add_prompt(session, "one", expect_store_lsn=0)
    for stale in (-1, 0, 2, 99):
        with pytest.raises(eventlog.AppendConflict) as conflict:
            log.add_prompt(session, "stale", expect_store_lsn=stale)
        assert conflict.value.actual == 1
    batch = log.add_prompts_batch([(session, "a"), (session, "b")], expect_store_lsn=1)
    assert log.last_lsn() == 3
    assert log.append(node(), expect_store_lsn=3).first_lsn == 4
    records = list(log.read())
    assert [r.event.content for r in records[1:4]] == ["one", "a", "b"]  # type: ignore[attr-defined]
    assert [r.event.id for r in records[2:4]] == batch  # type: ignore[attr-defined]


def test_expect_session_lsn(store: Path) -> None:
    with eventlog.open(store, segment_bytes=4096) as log:
        s = log.create_session().id  # 0
        agent = log.add_agent("a", "r")  # 1: touches no session
        assert log.last_lsn(s) == 0
        prompt = log.add_prompt(s, "p", expect_session_lsn=0)  # 2
        with pytest.raises(eventlog.AppendConflict) as conflict:
            log.add_prompt(s, "stale", expect_session_lsn=0)
        assert (conflict.value.expected, conflict.value.actual) == (0, 2)
        assert log.last_lsn() == 2
        # A response joins the prompt's session, so it moves the session's LSN too.
        log.add_response(prompt, "r", expect_session_lsn=2)  # 3
        log.assign_agent_to_prompt(prompt, agent)  # 4: an edge in the session
        other = log.create_session().id  # 5
        log.add_prompt(other, "elsewhere")  # 6
        assert log.last_lsn(s) == 4
        log.update_session(s, {"k": 1}, expect_session_lsn=4)  # 7
        with pytest.raises(eventlog.InvalidEvent, match="exactly one session"):
            log.add_prompts_batch([(s, "x"), (other, "y")], expect_session_lsn=7)
        with pytest.raises(eventlog.AppendConflict):
            log.add_prompt(other, "stale", expect_session_lsn=5)

        # The session's last event sealed away in an older segment: still known exactly.
        filler = log.create_session().id
        while log.stats().segments < 3:
            log.add_prompts_batch([(filler, "f" * 100)] * 5)
        assert log.last_lsn(s) == 7
        log.add_prompt(s, "after rotation", expect_session_lsn=7)
        after = log.last_lsn()
        assert log.last_lsn(s) == after
    with eventlog.open(store) as reopened:  # and after reopening
        with pytest.raises(eventlog.AppendConflict):
            reopened.add_prompt(s, "stale", expect_session_lsn=7)
        assert after is not None
        reopened.add_prompt(s, "reopened", expect_session_lsn=after)


def test_expect_session_lsn_sees_another_handle(store: Path) -> None:
    with eventlog.open(store) as a, eventlog.open(store) as b:
        s = a.create_session().id
        last = a.last_lsn(s)
        assert last == 0
        b.add_prompt(s, "b was first")
        with pytest.raises(eventlog.AppendConflict) as conflict:
            a.add_prompt(s, "a thinks it is first", expect_session_lsn=last)
        assert conflict.value.actual == 1
        a.add_prompt(s, "a, informed", expect_session_lsn=1)
    assert [getattr(r.event, "content", None) for r in events_of(store)] == [
        None,
        "b was first",
        "a, informed",
    ]


def race_worker(
    *, path: str, worker: int, session: uuid.UUID, rounds: int, barrier: Barrier, out: str
) -> None:
    """A child process: each round, read the session's last LSN, then append expecting it."""
    wins = []
    with eventlog.open(path) as log:
        for r in range(rounds):
            barrier.wait(timeout=60)
            last = log.last_lsn(session)
            assert last is not None
            barrier.wait(timeout=60)  # both have read the same LSN
            try:
                log.add_prompt(session, f"{worker}:{r}", expect_session_lsn=last)
                wins.append(r)
            except eventlog.AppendConflict:
                pass
    Path(out).write_text(json.dumps(wins))


@pytest.mark.slow
def test_two_processes_racing_on_a_session_one_wins(store: Path) -> None:
    rounds = 15
    with eventlog.open(store) as log:
        session = log.create_session().id
    barrier = _SPAWN.Barrier(2)
    outs = [store.parent / f"race-{w}.json" for w in range(2)]
    procs = [
        _SPAWN.Process(
            target=race_worker,
            kwargs={
                "path": str(store),
                "worker": w,
                "session": session,
                "rounds": rounds,
                "barrier": barrier,
                "out": str(outs[w]),
            },
        )
        for w in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    wins = [set(json.loads(out.read_text())) for out in outs]
    assert wins[0].isdisjoint(wins[1]) and wins[0] | wins[1] == set(range(rounds))
    contents = [getattr(r.event, "content", None) for r in events_of(store)[1:]]
    assert contents == [f"{0 if r in wins[0] else 1}:{r}" for r in range(rounds)]


def test_threads_racing_on_a_session_one_wins(store: Path) -> None:
    """The same race between two handles (two flocks) and 4 threads of each."""
    rounds, racers = 20, 8
    with eventlog.open(store) as a, eventlog.open(store) as b:
        session = a.create_session().id
        barrier = threading.Barrier(racers)
        wins: list[tuple[int, int]] = []

        def race(i: int) -> None:
            handle = (a, b)[i % 2]
            for r in range(rounds):
                barrier.wait(timeout=30)
                last = handle.last_lsn(session)
                assert last is not None
                barrier.wait(timeout=30)
                try:
                    handle.add_prompt(session, f"{i}:{r}", expect_session_lsn=last)
                    wins.append((r, i))
                except eventlog.AppendConflict:
                    pass

        threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert sorted(r for r, _ in wins) == list(range(rounds)), "each round needs one winner"
    contents = [getattr(r.event, "content", None) for r in events_of(store)[1:]]
    assert contents == [f"{i}:{r}" for r, i in sorted(wins)]


# -- idempotency ---------------------------------------------------------------------------------


def test_retry_returns_the_first_result(log: eventlog.EventLog) -> None:
    s = log.create_session(idempotency_key="session").id
    assert log.create_session(idempotency_key="session").id == s
    first = log.append([node(), node()], idempotency_key="pair")
    again = log.append([node(), node()], idempotency_key="pair")  # new ids, same shape
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.first_lsn == first.first_lsn
    assert encoded(again.events) == encoded(first.events)
    end = log.last_lsn()

    p = log.add_prompt(s, "p", idempotency_key="prompt")
    assert log.add_prompt(s, "p", idempotency_key="prompt") == p
    batch = log.add_prompts_batch([(s, "x"), (s, "y")], idempotency_key="batch")
    assert log.add_prompts_batch([(s, "x"), (s, "y")], idempotency_key="batch") == batch
    t = log.create_template("t", "{{a}}", [ev.VariableSpec(name="a")])
    assert log.update_template(t, "v2 {{a}}", idempotency_key="v2") == 2
    assert log.update_template(t, "v2 {{a}}", idempotency_key="v2") == 2  # not version 3
    r = log.add_response(p, "r")
    tool = log.add_tool_invocation(r, "search")
    done = log.complete_tool_invocation(tool, result=1, idempotency_key="done")
    assert log.complete_tool_invocation(tool, result=1, idempotency_key="done") == done
    assert log.last_lsn() == (end or 0) + 8  # no retry wrote anything


def test_retry_after_reopen_and_after_the_segment_was_sealed(store: Path) -> None:
    with eventlog.open(store, segment_bytes=4096) as log:
        s = log.create_session().id
        first = log.append([node(session_id=s), node()], idempotency_key="k")
        p = log.add_prompt(s, "p", idempotency_key="prompt")
    with eventlog.open(store, segment_bytes=4096) as log:  # reopened, still active
        again = log.append([node(), node()], idempotency_key="k")
        assert again.duplicate and encoded(again.events) == encoded(first.events)
        while log.stats().segments < 3:
            log.add_prompts_batch([(s, "filler " * 20)] * 4)
        end = log.last_lsn()
        sealed = log.append([node(), node()], idempotency_key="k")  # now in a sealed segment
        assert sealed.duplicate and sealed.first_lsn == first.first_lsn
        assert encoded(sealed.events) == encoded(first.events)
        assert log.add_prompt(s, "p", idempotency_key="prompt") == p
        assert log.last_lsn() == end
    with eventlog.open(store, segment_bytes=4096) as log:  # sealed, and reopened
        assert log.append([node(), node()], idempotency_key="k").first_lsn == first.first_lsn
        assert log.last_lsn() == end


def retry_worker(path: str, session: uuid.UUID, out: str) -> None:
    """A child process: retry the parent's keyed prompt and report what it was told."""
    with eventlog.open(path) as log:
        prompt = log.add_prompt(session, "retried elsewhere", idempotency_key="cross")
        report = {"prompt": str(prompt), "last": log.last_lsn()}
    Path(out).write_text(json.dumps(report))


def test_retry_from_another_handle_and_process(store: Path) -> None:
    with eventlog.open(store) as a, eventlog.open(store) as b:
        s = a.create_session().id
        p = a.add_prompt(s, "first", idempotency_key="cross")
        assert b.add_prompt(s, "retried", idempotency_key="cross") == p
        keyed = b.add_node("doc", idempotency_key="node")
        assert a.add_node("doc", idempotency_key="node") == keyed
    out = store.parent / "retry.json"
    child = _SPAWN.Process(target=retry_worker, args=(str(store), s, str(out)))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert json.loads(out.read_text()) == {"prompt": str(p), "last": 2}
    assert len(events_of(store)) == 3


def test_reusing_a_key_for_another_request(log: eventlog.EventLog) -> None:
    s = log.create_session().id
    p = log.add_prompt(s, "p", idempotency_key="k")
    end = log.last_lsn()
    with pytest.raises(eventlog.IdempotencyKeyReused):
        log.add_node("doc", idempotency_key="k")  # another event type
    with pytest.raises(eventlog.IdempotencyKeyReused):
        log.add_prompts_batch([(s, "p"), (s, "q")], idempotency_key="k")  # another count
    # A key names a request by its event types and count: the same shape is a retry, even
    # if the caller changed the content (the log returns what it stored the first time).
    assert log.add_prompt(s, "changed", idempotency_key="k") == p
    assert log.last_lsn() == end


def test_a_retry_with_a_stale_expectation_is_still_a_retry(log: eventlog.EventLog) -> None:
    s = log.create_session().id
    p = log.add_prompt(s, "p", expect_session_lsn=0, idempotency_key="k")
    log.add_prompt(s, "later")
    assert log.add_prompt(s, "p", expect_session_lsn=0, idempotency_key="k") == p
    with pytest.raises(eventlog.AppendConflict):
        log.add_prompt(s, "p", expect_session_lsn=0, idempotency_key="new key")


def test_a_rejected_request_does_not_use_up_its_key(log: eventlog.EventLog) -> None:
    s = log.create_session().id
    with pytest.raises(eventlog.UnknownNode):
        log.add_prompt(uuid.uuid4(), "nowhere", idempotency_key="k")
    with pytest.raises(eventlog.AppendConflict):
        log.add_prompt(s, "stale", expect_store_lsn=-1, idempotency_key="k")
    prompt = ev.PromptAdded(id=uuid.uuid4(), session_id=s, content="p")
    appended = log.append(prompt, idempotency_key="k")  # the first to succeed owns the key
    assert not appended.duplicate and appended.first_lsn == 1
    assert log.add_prompt(s, "p", idempotency_key="k") == prompt.id


def test_the_same_key_twice_in_one_group(log: eventlog.EventLog) -> None:
    """Two retries of one request met in one group commit: one write, the same answer."""
    s = log.create_session().id
    one = commands.add_prompt(s, "p", idempotency_key="k").request
    two = commands.add_prompt(s, "p", idempotency_key="k").request
    first, second = log._store.commit([one, two])
    assert isinstance(first, eventlog.Appended) and isinstance(second, eventlog.Appended)
    assert (first.first_lsn, first.duplicate, second.duplicate) == (1, False, True)
    assert encoded(second.events) == encoded(first.events)
    assert log.last_lsn() == 1


def test_a_failed_group_fails_retries_made_within_it(store: Path) -> None:
    """If the frame cannot be written, a retry of a request of the same group was not stored
    either: it must fail too, not report a duplicate of events that are not in the log."""
    with eventlog.open(store, max_request_bytes=4096) as log:
        s = log.create_session().id
        big = "x" * 6000
        one = commands.add_prompt(s, big, idempotency_key="k").request
        two = commands.add_prompt(s, big, idempotency_key="k").request
        results = log._store.commit([one, two])
        assert all(isinstance(r, eventlog.InvalidEvent) for r in results), results
        assert log.last_lsn() == 0
        small = log.add_prompt(s, "small", idempotency_key="k")  # the key is still free
    assert [r.event.id for r in events_of(store)[1:]] == [small]  # type: ignore[attr-defined]


# -- all or nothing ------------------------------------------------------------------------------


def test_a_batch_with_a_bad_fifth_event_writes_nothing(store: Path) -> None:
    with eventlog.open(store, segment_bytes=4096) as log:
        s = log.create_session().id
        doc, prompt, other = (
            node(session_id=s),
            ev.PromptAdded(id=uuid.uuid4(), session_id=s, content="p"),
            node(),
        )
        response = ev.ResponseAdded(id=uuid.uuid4(), prompt_id=prompt.id, content="r")
        good: list[ev.EventBase] = [doc, prompt, response, other]
        bad = ev.EdgeAdded(id=uuid.uuid4(), from_id=doc.id, to_id=uuid.uuid4(), edge_type="X")
        for fifth, error in [
            (bad, eventlog.UnknownNode),
            (ev.ResponseAdded(id=uuid.uuid4(), prompt_id=s, content="r"), eventlog.WrongNodeKind),
            (node(session_id=uuid.uuid4()), eventlog.UnknownNode),
            (ev.NodeAdded(id=prompt.id, kind="doc"), eventlog.InvalidEvent),  # id in use
        ]:
            with pytest.raises(error):
                log.append([*good, fifth, node()])
            assert log.last_lsn() == 0
        # Nothing of the failed batches is known: their ids are free, and the four good
        # events (which refer to each other) go in as a batch of their own.
        appended = log.append(good)
        assert appended.first_lsn == 1 and len(appended.events) == 4
        with pytest.raises(eventlog.UnknownNode):
            log.add_prompts_batch([(s, "1"), (s, "2"), (s, "3"), (s, "4"), (uuid.uuid4(), "5")])
        log.delete_node(other.id)
        with pytest.raises(eventlog.DeletedNodeReference):
            log.delete_nodes_batch([doc.id, prompt.id, response.id, response.id])
        with pytest.raises(eventlog.DeletedNodeReference):
            log.add_edge(doc.id, other.id, "REFERENCES")
        end = log.last_lsn()
    records = events_of(store)
    assert len(records) == 6 and end == 5
    assert encoded([r.event for r in records[1:5]]) == encoded(appended.events)


def test_one_failing_request_in_a_group_does_not_affect_the_others(log: eventlog.EventLog) -> None:
    s = log.create_session().id
    a = node(session_id=s)
    b = ev.PromptAdded(id=uuid.uuid4(), session_id=s, content="b")
    ghost = node()
    edge = ev.EdgeAdded(id=uuid.uuid4(), from_id=b.id, to_id=a.id, edge_type="R")
    requests = [
        commands.append([a]).request,
        commands.append([ghost, node(session_id=uuid.uuid4())]).request,  # unknown session
        commands.append([b, edge]).request,  # refers to a request earlier in the group
        commands.append([node(session_id=ghost.id)]).request,  # refers to the failed request
        commands.add_prompt(s, "stale", expect_store_lsn=0).request,  # a conflict
        commands.add_prompt(s, "current", expect_store_lsn=3).request,
    ]
    results = log._store.commit(requests)
    kinds = [type(r).__name__ for r in results]
    assert kinds == [
        "Appended",
        "UnknownNode",
        "Appended",
        "UnknownNode",
        "AppendConflict",
        "Appended",
    ]
    stored = [r for r in results if isinstance(r, eventlog.Appended)]
    assert [r.first_lsn for r in stored] == [1, 2, 4]
    records = list(log.read())
    assert len(records) == 5
    assert encoded([r.event for r in records[1:]]) == encoded([e for r in stored for e in r.events])
    assert len({r.event.ts for r in records[1:]}) == 1, "one group commit, one ts"


def test_threads_with_failing_requests_do_not_disturb_the_others(
    log: eventlog.EventLog, rng: random.Random
) -> None:
    s = log.create_session().id
    threads, requests = 16, 20
    plans = [[rng.random() < 0.3 for _ in range(requests)] for _ in range(threads)]
    stored: list[list[uuid.UUID]] = [[] for _ in range(threads)]
    failures: list[int] = [0] * threads
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        barrier.wait(timeout=30)
        for k, bad in enumerate(plans[t]):
            target = uuid.uuid4() if bad else s
            try:
                stored[t].extend(log.add_prompts_batch([(s, f"{t}:{k}:0"), (target, f"{t}:{k}:1")]))
            except eventlog.UnknownNode:
                failures[t] += 1

    running = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join(timeout=60)
    assert failures == [sum(p) for p in plans]
    assert [len(ids) for ids in stored] == [2 * (requests - sum(p)) for p in plans]
    records = list(log.read())
    assert {r.event.id for r in records[1:]} == {  # type: ignore[attr-defined]
        i for ids in stored for i in ids
    }
    assert len(records) == 1 + sum(len(ids) for ids in stored)


def test_max_request_bytes_applies_to_each_request_not_to_the_group(store: Path) -> None:
    with eventlog.open(store, max_request_bytes=8192) as log:
        s = log.create_session().id
        requests = [commands.add_prompt(s, f"{i} " + "x" * 5000).request for i in range(3)]
        too_big = commands.add_prompt(s, "y" * 9000).request
        results = log._store.commit([*requests, too_big])
    assert all(isinstance(r, eventlog.Appended) for r in results[:3]), results
    assert isinstance(results[3], eventlog.InvalidEvent)
    assert "max_request_bytes" in str(results[3])


# -- reads by time -------------------------------------------------------------------------------


def test_reads_by_time(store: Path, rng: random.Random) -> None:
    """Brute force: every read by time equals filtering all events by their ts."""
    with eventlog.open(store, segment_bytes=4096, index_interval_bytes=256) as log:
        s = log.create_session().id
        log.add_prompts_batch([(s, f"same ts {i}") for i in range(60)])  # one frame, one ts
        for i in range(40):
            if rng.random() < 0.3:
                log.add_prompts_batch([(s, f"pair {i}")] * rng.randint(2, 8))
            else:
                log.add_prompt(s, f"single {i} " + "x" * rng.randrange(200), occurred_at=i)
        while log.stats().segments < 3:  # the random sizes above may not rotate twice
            log.add_prompt(s, "filler " + "y" * rng.randrange(200, 400))
        log.add_prompts_batch([(s, f"last ts {i}") for i in range(30)])
        assert log.stats().segments >= 3
        records = list(log.read())
        stamps = sorted({r.event.ts for r in records})
        assert len(records) > len(stamps) + 80  # many events share a ts

        def check(
            start: int | None, stop: int | None, lsn: int = 0, lsn_stop: int | None = None
        ) -> None:
            got = list(log.read(lsn, lsn_stop, start_time=start, stop_time=stop))
            want = [
                r
                for r in records[lsn:lsn_stop]
                if (start is None or r.event.ts >= start) and (stop is None or r.event.ts < stop)
            ]
            assert [r.lsn for r in got] == [r.lsn for r in want], (start, stop, lsn, lsn_stop)

        first, last = stamps[0], stamps[-1]
        probes = [0, first - 10**9, first - 1, first, first + 1, last - 1, last, last + 1]
        probes += [t + d for t in rng.sample(stamps, min(20, len(stamps))) for d in (-1, 0, 1)]
        for t in probes:
            check(t, None)
            check(None, t)
        for _ in range(200):
            a, b = sorted(rng.choice(probes) for _ in range(2))
            lsn = rng.randrange(len(records))
            check(a, b)
            check(a, b, lsn, rng.choice([None, lsn + rng.randrange(50)]))
        assert list(log.read(start_time=last + 1)) == []
        assert list(log.read(stop_time=first)) == []
        assert len(list(log.read(start_time=first - 1))) == len(records)

        # A datetime or ISO string names the same instant as int ns (to the microsecond).
        micro = stamps[len(stamps) // 2] // 1000 * 1000
        when = dt.datetime.fromtimestamp(micro // 10**9, dt.UTC).replace(
            microsecond=micro % 10**9 // 1000
        )
        by_int = [r.lsn for r in log.read(start_time=micro)]
        assert [r.lsn for r in log.read(start_time=when)] == by_int
        assert [r.lsn for r in log.read(start_time=when.isoformat())] == by_int
        assert [r.lsn for r in log.read(stop_time=when.replace(tzinfo=None))] == [
            r.lsn for r in log.read(stop_time=micro)
        ]
