"""Time travel: every view is a fold from zero of exactly the events up to its point.

The key test is differential: a generated history of a few thousand mixed events (every
event type, through the real append API, with batches that put several events in one frame
under one ``ts``) is replayed at many random points, with and without snapshots (taken by
`replay.snapshot` and by a projector), and every table must equal a fresh in-memory fold of
``records[:p + 1]``. `diff` is checked against two independent `at` views, and `step`
against `at` at sampled steps (its view's caches included). The rest pins down points
(LSNs, times, batches sharing a ``ts``, errors), the view's read API, `out` files, cleanup,
and the `lmg replay` / `diff` / `snapshot` commands.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import typing
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pytest
from click.testing import CliRunner, Result

import eventlog
import projections
import replay
from eventlog import Record, TokenUsage
from eventlog import events as ev
from eventlog.events import tag_of
from projections import NotFound, ProjectionError, SnapshotPolicy
from replay import BadPoint, ReplayError, Time, View
from replay.cli import main
from tests._processes import LMG, run_with_full_disk
from tests.projections.test_fold import FAST, OPENING, Interpreter, random_history, table_rows
from tests.replay.test_service import Service

COMPARED = (*projections.TABLE_NAMES, "lmg_checkpoints")
"""Every table and view a replay builds, and the checkpoints (LSN and ts per projection)."""

ALL_TAGS = {tag_of(cls) for cls in typing.get_args(eventlog.Event)}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Replays make their databases in a temp dir of this test's own, which every call (a
    closed view, an exhausted or abandoned step, a diff, a failed replay) must leave empty."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield tmp
    assert sorted(p.name for p in tmp.iterdir()) == [], "a replay left its database behind"


# -- histories -----------------------------------------------------------------------------------


def erase_a_session(store: Path, records: list[Record]) -> list[Record]:
    """Erase the first session's content (sealed segments rewritten, an ``erasure.applied``
    appended); returns the log's records after it."""
    session = next(r.event.id for r in records if isinstance(r.event, ev.SessionCreated))
    eventlog.erase(store, eventlog.Selector.of(sessions=[session]))
    with eventlog.open(store, readonly=True) as log:
        return list(log.read())


def build_history(store: Path, rng: random.Random, events: int, **options: Any) -> list[Record]:
    """At least `events` events: test_fold's operations (every event type, deletions, forks)
    mixed with batch appends, several events to one frame and one ``ts``."""
    with eventlog.open(store, **FAST, **options) as log:
        run = Interpreter(log)
        run.run(OPENING)
        while log.next_lsn() < events:
            roll = rng.random()
            if roll < 0.05:
                conversations_batch(run, rng)
            elif roll < 0.07:
                made = log.create_sessions_batch(rng.randint(2, 4), {"batch": True})
                run.w.sessions.extend(s.id for s in made)
            elif roll < 0.09:
                mixed_batch(run, rng)
            elif roll < 0.11:
                deletions_batch(run, rng)
            else:
                run.run(random_history(rng, 1)[0])
        return list(log.read())


def conversations_batch(run: Interpreter, rng: random.Random) -> None:
    sessions = run.w.live(run.w.sessions)
    if not sessions:
        run.run(OPENING)
        return
    pairs: list[tuple[tuple[uuid.UUID, str], tuple[str, TokenUsage] | None]] = [
        ((rng.choice(sessions), f"q{i}"), (f"a{i}", TokenUsage(i, 2 * i)) if i % 3 else None)
        for i in range(rng.randint(2, 12))
    ]
    made = run.log.add_conversations_batch(pairs)
    for (prompt, response), ((session, _), _) in zip(made, pairs, strict=True):
        run.w.prompts[prompt] = session
        if response is not None:
            run.w.responses.append(response)


def mixed_batch(run: Interpreter, rng: random.Random) -> None:
    """A tool call (completed in the same frame, or not), a note, an edge to a prompt and an
    OpenTelemetry span."""
    responses, prompts = run.w.live(run.w.responses), run.w.live(run.w.prompts)
    if not responses or not prompts:
        run.run(OPENING._replace(kind="response"))
        return
    tool, note, edge = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    done = rng.random() < 0.5
    events: list[ev.EventBase] = [
        ev.ToolInvoked(id=tool, response_id=rng.choice(responses), tool_name="batched"),
        ev.NodeAdded(id=note, kind="note", content="batched", data={"k": 1}),
        ev.EdgeAdded(id=edge, from_id=note, to_id=rng.choice(prompts), edge_type="CITES"),
        ev.SpanRecorded(trace_id=tool.hex, span_id=note.hex[:16], name="batched", end_ns=1),
    ]
    if done:
        events.insert(1, ev.ToolCompleted(tool_id=tool, result=[1, 2], duration_ms=1.5))
    elif rng.random() < 0.5:  # a failed attempt, retried: pending again
        failed = ev.ToolCompleted(tool_id=tool, error="timeout")
        events[1:1] = [failed, ev.ToolRetried(tool_id=tool, parameters={"try": 2})]
    run.log.append(events)
    (run.w.completed if done else run.w.pending).append(tool)
    run.w.nodes.append(note)
    run.w.edges.append(edge)


def deletions_batch(run: Interpreter, rng: random.Random) -> None:
    live = run.w.everything()
    victims = rng.sample(live, min(len(live), rng.randint(2, 4)))
    if victims:
        run.log.delete_nodes_batch(victims)
        run.w.deleted.update(victims)


class Known(NamedTuple):
    """A small history whose every LSN is known."""

    session: uuid.UUID
    p1: uuid.UUID
    r1: uuid.UUID
    agent: uuid.UUID
    tool: uuid.UUID
    p2: uuid.UUID
    r2: uuid.UUID
    later: uuid.UUID  # a session made after everything else
    invoked: int  # the tool call's LSN (it is pending from here)
    deleted: int  # p1's tombstone
    records: list[Record]


def known_store(store: Path) -> Known:
    with eventlog.open(store, **FAST) as log:
        s = log.create_session({"user": "ada"}).id  # 0
        p1 = log.add_prompt(s, "What is Rust?")  # 1
        r1 = log.add_response(p1, "A language.", TokenUsage(5, 30))  # 2
        agent = log.add_agent("ada", "planner", ["plan"])  # 3
        log.assign_agent_to_prompt(p1, agent)  # 4
        tool = log.add_tool_invocation(r1, "search", {"q": "rust"})  # 5
        invoked = log.next_lsn() - 1
        log.complete_tool_invocation(tool, result={"hits": 3}, duration_ms=12.5)  # 6
        p2 = log.add_prompt(s, "And Go?", parent_prompt_id=p1)  # 7
        r2 = log.add_response(p2, "Another.", TokenUsage(4, 20))  # 8
        deleted = log.delete_node(p1)  # 9
        later = log.create_session().id  # 10
        records = list(log.read())
    assert (invoked, deleted, len(records)) == (5, 9, 11)
    return Known(s, p1, r1, agent, tool, p2, r2, later, invoked, deleted, records)


# -- comparing -----------------------------------------------------------------------------------


def reference(records: Sequence[Record], lsn: int) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory fold, from zero, of exactly the events 0..lsn."""
    con = duckdb.connect()
    projections.ensure_schema(con)
    projections.fold_records(con, iter(records[: lsn + 1]))
    return con


def assert_is_fold_from_zero(view: View, records: Sequence[Record], lsn: int) -> None:
    assert view.lsn == lsn
    assert view.ts == (records[lsn].event.ts if lsn >= 0 else None)
    assert projections.checkpoint(view.connection) == lsn
    ref = reference(records, lsn)
    try:
        for table in COMPARED:
            got, want = table_rows(view.connection, table), table_rows(ref, table)
            assert got == want, f"{table} differs at LSN {lsn} (snapshot {view.snapshot})"
    finally:
        ref.close()


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in COMPARED}


def keyed(con: duckdb.DuckDBPyConnection, table: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    cursor = con.execute(f"SELECT * FROM {table}")
    names = [d[0] for d in cursor.description or ()]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return {tuple(row[k] for k in projections.TABLE_KEYS[table]): row for row in rows}


def key_of(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in projections.TABLE_KEYS[table])


def random_points(
    rng: random.Random, records: Sequence[Record], k: int, *, inside: int = 2
) -> list[int]:
    """-1, 0, the last LSN, `k` random LSNs, and `inside` cuts inside a frame (a batch)."""
    last = records[-1].lsn
    cuts = [a.lsn for a, b in itertools.pairwise(records) if a.event.ts == b.event.ts]
    assert cuts, "the history has no batch"
    return sorted({-1, 0, last, *rng.sample(range(last), k), *rng.sample(cuts, inside)})


# -- 1. the differential invariant ---------------------------------------------------------------


@pytest.mark.slow
def test_at_equals_a_fold_from_zero_without_snapshots(store: Path, rng: random.Random) -> None:
    records = build_history(store, rng, 2_000, segment_bytes=16_384)  # over several segments
    records = erase_a_session(store, records)  # erased events mid-history, erasure.applied
    assert {tag_of(r.event) for r in records} == ALL_TAGS  # every event type is replayed
    assert len(list(store.glob("*.seg"))) >= 3
    ts = [r.event.ts for r in records]
    for i, point in enumerate(random_points(rng, records, 3)):
        if i % 2 and point >= 0:  # every other point as a time: its event and all of its ts
            view = replay.at(store, time=ts[point], snapshots=False)
            p = bisect.bisect_right(ts, ts[point]) - 1
        else:
            view, p = replay.at(store, lsn=point, snapshots=False), point
        with view:
            assert view.snapshot is None
            assert_is_fold_from_zero(view, records, p)


@pytest.mark.slow
def test_at_equals_a_fold_from_zero_from_snapshots(
    store: Path, tmp_path: Path, rng: random.Random
) -> None:
    records = build_history(store, rng, 2_000)
    last = records[-1].lsn
    # A projector takes one about every 500 events (between its batches) ...
    policy = SnapshotPolicy(every_events=500)
    with projections.Projector(store, batch_events=500, snapshots=policy) as projector:
        assert projector.catch_up() == last
    by_projector = [s.lsn for s in replay.snapshots(store)]
    assert len(by_projector) >= 3, by_projector
    # ... and replay.snapshot anywhere, folding a private copy (from the newest before).
    asked = rng.sample(range(last), 2)
    for lsn in asked:
        info = replay.snapshot(store, at=lsn)
        assert (info.lsn, info.ts) == (lsn, records[lsn].event.ts)
    taken = sorted(s.lsn for s in replay.snapshots(store))
    assert taken == sorted({*by_projector, *asked})

    exact, after = rng.sample(taken, 2)  # at a snapshot, and just after one
    points = {*random_points(rng, records, 1, inside=1), exact, min(after + 1, last)}
    out_at = rng.choice([p for p in points if p >= taken[0]])
    out = tmp_path / "from-a-snapshot.duckdb"
    for p in sorted(points):
        with replay.at(store, lsn=p, out=out if p == out_at else None) as view:
            newest = max((s for s in taken if s <= p), default=None)
            assert (None if view.snapshot is None else view.snapshot.lsn) == newest, p
            assert_is_fold_from_zero(view, records, p)
            if p == out_at:
                assert view.database == out
                rows = {t: table_rows(view.connection, t) for t in COMPARED}
    # The view restored from a snapshot into `out` stands alone, for any DuckDB client.
    assert not Path(f"{out}.wal").exists()
    with duckdb.connect(str(out), read_only=True) as con:
        assert {t: table_rows(con, t) for t in COMPARED} == rows


def test_an_empty_store_replays_to_an_empty_view(store: Path) -> None:
    eventlog.open(store).close()
    with replay.at(store) as view:
        assert (view.lsn, view.ts, view.time, view.snapshot) == (-1, None, None, None)
        assert all(n == 0 for t, n in counts(view.connection).items() if t != "lmg_checkpoints")
    assert list(replay.step(store)) == []


# -- 2. points -----------------------------------------------------------------------------------


def us(ns: int) -> dt.datetime:
    """The UTC datetime of a time in ns (rounded down to the microsecond)."""
    return EPOCH + dt.timedelta(microseconds=ns // 1_000)


def iso(ns: int) -> str:
    return us(ns).isoformat().replace("+00:00", "Z")


@pytest.mark.slow
def test_a_time_includes_whole_batches(store: Path, log: eventlog.EventLog) -> None:
    s = log.create_session().id  # 0
    time.sleep(0.002)
    prompts = log.add_prompts_batch([(s, f"q{i}") for i in range(5)])  # 1..5: one frame
    time.sleep(0.002)
    log.add_response(prompts[0], "a", TokenUsage(1, 2))  # 6
    records = list(log.read())
    ts = [r.event.ts for r in records]
    batch = ts[1]
    assert set(ts[1:6]) == {batch}
    assert ts[0] < batch < ts[6]
    between = (batch + ts[6]) // 2 // 1_000 * 1_000  # a whole microsecond after the batch
    assert batch < between < ts[6]

    cases: list[tuple[dt.datetime | str | int, int]] = [
        (ts[0] - 1, -1),  # before the first event
        (ts[0], 0),
        (batch - 1, 0),  # 1 ns before the batch: none of it
        (batch, 5),  # the batch's own ts: all of it
        (between, 5),
        (us(between), 5),
        (us(between).replace(tzinfo=None), 5),  # naive: UTC
        (us(between).astimezone(dt.timezone(dt.timedelta(hours=-5))), 5),
        (iso(between), 5),
        (ts[6], 6),
        (ts[6] + 10**12, 6),  # after the last event: the last event
    ]
    for point, lsn in cases:
        with replay.at(store, time=point) as view:
            assert view.lsn == lsn, point
            assert view.rows("SELECT count(*) FROM prompts") == [(min(max(lsn, 0), 5),)]
            if lsn == -1:
                assert (view.ts, view.time) == (None, None)
                assert all(n == 0 for t, n in counts(view.connection).items() if t in COMPARED[:-1])
            else:
                assert view.ts == ts[lsn]
                assert view.time is not None
                assert abs(view.time - us(ts[lsn])) <= dt.timedelta(microseconds=1)

    # Time marks a time where a bare int means an LSN: in diff and step points.
    d = replay.diff(store, Time(batch - 1), Time(iso(between)))
    assert (d.start, d.stop) == (0, 5)
    assert [r.lsn for r in d.events] == [1, 2, 3, 4, 5]
    assert sorted(row["id"] for row in d.tables["prompts"].added) == sorted(prompts)
    d = replay.diff(store, us(ts[0]), Time(batch))  # a datetime needs no Time
    assert (d.start, d.stop) == (-1 if ts[0] % 1_000 else 0, 5)
    assert [s.lsn for s in replay.step(store, Time(batch - 1), Time(batch))] == [1, 2, 3, 4, 5]
    assert [s.lsn for s in replay.step(store, Time(batch), Time(ts[6]))] == [6]
    assert [s.lsn for s in replay.step(store, Time(iso(between)))] == [6]


def test_bad_points_and_stores(store: Path, log: eventlog.EventLog, tmp_path: Path) -> None:
    s = log.create_session().id
    log.add_prompt(s, "q")  # LSNs 0..1

    with pytest.raises(BadPoint, match="not both"):
        replay.at(store, lsn=0, time=0)
    with pytest.raises(BadPoint, match=r"LSN 2 is not in the log, which holds LSNs 0\.\.1"):
        replay.at(store, lsn=2)
    with pytest.raises(BadPoint, match=r"LSN -2 is not in the log"):
        replay.at(store, lsn=-2)
    with pytest.raises(BadPoint, match="not an ISO 8601 time"):
        replay.at(store, time="yesterday")
    with pytest.raises(BadPoint):
        replay.at(store, time="2026-13-01T00:00:00Z")
    for bad in [True, False, 1.0, "1"]:
        with pytest.raises(BadPoint):
            replay.at(store, lsn=bad)  # type: ignore[arg-type]
    for bad_time in [True, 1.5, b"0"]:
        with pytest.raises(BadPoint):
            replay.at(store, time=bad_time)  # type: ignore[arg-type]
    with pytest.raises(BadPoint, match=r"0\.\.1"):
        replay.diff(store, 0, 5)
    with pytest.raises(BadPoint):
        replay.diff(store, True, 1)
    with pytest.raises(BadPoint):
        replay.diff(store, 0, Time("not a time"))
    with pytest.raises(BadPoint):
        next(replay.step(store, 0, 9))
    with pytest.raises(BadPoint):
        next(replay.step(store, False))
    with pytest.raises(BadPoint):
        replay.snapshot(store, at=9)
    assert issubclass(BadPoint, ReplayError)
    assert issubclass(BadPoint, ValueError)

    missing = tmp_path / "missing"
    with pytest.raises(ReplayError, match="cannot read the store"):
        replay.at(missing)
    with pytest.raises(ReplayError):
        replay.diff(missing, 0, 1)
    with pytest.raises(ReplayError):
        next(replay.step(missing))
    with pytest.raises(ReplayError):
        replay.snapshot(missing)
    assert not missing.exists()  # a replay never creates a store
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(ReplayError):
        replay.at(a_file)


def test_out_writes_a_standalone_database(store: Path, tmp_path: Path) -> None:
    k = known_store(store)
    out = tmp_path / "past.duckdb"
    with replay.at(store, lsn=k.invoked, out=out) as view:
        assert view.database == out
        expected = counts(view.connection)
    assert expected["prompts"] == 1
    assert out.exists()
    assert not Path(f"{out}.wal").exists()
    with duckdb.connect(str(out), read_only=True) as con:  # any DuckDB client reads it
        assert counts(con) == expected
        assert projections.checkpoint(con) == k.invoked
        ref = reference(k.records, k.invoked)
        for table in COMPARED:
            assert table_rows(con, table) == table_rows(ref, table), table
        ref.close()

    before = out.read_bytes()
    with pytest.raises(ReplayError, match="already exists"):
        replay.at(store, out=out)
    assert out.read_bytes() == before  # left alone


def test_close_deletes_the_private_database(store: Path) -> None:
    k = known_store(store)
    view = replay.at(store)
    db = view.database
    assert db is not None
    assert db.exists()
    assert view.get_node(k.p2) is not None
    view.close()
    assert not db.parent.exists()
    with pytest.raises(ProjectionError, match="closed"):
        view.get_node(k.p2)
    view.close()  # twice is fine
    assert repr(view) == f"<replay.View of {store} at LSN {k.records[-1].lsn}>"


# -- 3. the view's read API ----------------------------------------------------------------------


def test_views_read_like_a_graph_at_their_point(store: Path) -> None:
    k = known_store(store)
    with replay.at(store, lsn=k.invoked) as past, replay.at(store) as now:
        assert (past.lsn, now.lsn) == (k.invoked, k.records[-1].lsn)

        p1 = past.get_node(k.p1)
        assert isinstance(p1, projections.Prompt)
        assert (p1.content, p1.agent_id, p1.deleted_ts) == ("What is Rust?", k.agent, None)
        assert past.get_node(k.p2) is None  # made after the point
        assert past.get_node(k.later) is None
        tool = past.get_node(k.tool)
        assert isinstance(tool, projections.ToolInvocation)
        assert tool.status == "pending"
        assert [n.id for n in past.query().node_type("prompt").execute()] == [k.p1]
        assert past.query().node_type("response").count() == 1
        [turn] = past.context_window(k.session)
        assert (turn.prompt.id, [r.id for r in turn.responses]) == (k.p1, [k.r1])
        up = {hop.node_id: hop.depth for hop in past.ancestors(k.tool)}
        assert up[k.r1] == 1
        assert up[k.p1] == 2
        assert up[k.agent] == 3  # p1 HANDLED_BY the agent
        session = past.get_session(k.session)
        assert (session.prompt_count, session.response_count, session.tool_count) == (1, 1, 1)
        with pytest.raises(NotFound):
            past.get_session(k.later)
        assert past.sql("SELECT count(*) FROM prompts").fetchall() == [(1,)]
        assert past.rows("SELECT id FROM prompts WHERE id = ?", [k.p1]) == [(k.p1,)]

        # Later, the same ids read otherwise; the past view is unchanged beside it.
        p2 = now.get_node(k.p2)
        assert isinstance(p2, projections.Prompt)
        assert p2.parent_prompt_id == k.p1
        assert now.get_node(k.p1) is None  # tombstoned
        gone = now.get_node(k.p1, include_deleted=True)
        assert gone is not None
        assert gone.deleted_ts == k.records[k.deleted].event.ts
        done = now.get_node(k.tool)
        assert isinstance(done, projections.ToolInvocation)
        assert done.status == "success"
        assert [n.id for n in now.query().node_type("prompt").execute()] == [k.p2]
        assert [t.prompt.id for t in now.context_window(k.session)] == [k.p2]
        assert now.get_session(k.later).prompt_count == 0
        assert now.get_session(k.session).prompt_count == 1  # a tombstone subtracts
        assert past.get_node(k.p1) == p1
        assert past.get_session(k.session).prompt_count == 1


# -- 4. diff -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_diff_of_a_known_history(store: Path) -> None:
    k = known_store(store)
    d = replay.diff(store, k.invoked, k.deleted)
    assert (d.start, d.stop) == (k.invoked, k.deleted)
    assert [r.lsn for r in d.events] == list(range(k.invoked + 1, k.deleted + 1))
    assert [r.event for r in d.events] == [
        r.event for r in k.records[k.invoked + 1 : k.deleted + 1]
    ]
    assert set(d.tables) == set(projections.TABLE_NAMES)

    tools = d.tables["tool_invocations"]
    assert (tools.added, tools.removed) == ([], [])
    [call] = tools.changed
    assert call.key == (k.tool,)
    assert {"status", "result", "duration_ms", "completed_ts"} <= set(call.columns)
    assert (call.before["status"], call.after["status"]) == ("pending", "success")
    assert (call.before["completed_ts"], call.after["completed_ts"]) == (
        None,
        k.records[k.invoked + 1].event.ts,
    )
    assert call.after["result"] == '{"hits":3}'
    assert call.before["tool_name"] == call.after["tool_name"] == "search"

    prompts = d.tables["prompts"]
    assert [row["id"] for row in prompts.added] == [k.p2]
    assert prompts.removed == []
    [tombstoned] = prompts.changed
    assert tombstoned.key == (k.p1,)
    assert tombstoned.columns == ["deleted_ts"]
    assert tombstoned.before["deleted_ts"] is None
    assert tombstoned.after["deleted_ts"] == k.records[k.deleted].event.ts
    assert [row["id"] for row in d.tables["responses"].added] == [k.r2]
    assert [c.key for c in d.tables["sessions"].changed] == [(k.session,)]
    assert not d.tables["agents"]
    assert not d.tables["templates"]
    assert "agents" not in d.changed_tables()
    assert {"prompts", "responses", "tool_invocations", "sessions"} <= set(d.changed_tables())

    # Latest first: the same events; what going back undoes.
    back = replay.diff(store, k.deleted, k.invoked)
    assert (back.start, back.stop) == (k.deleted, k.invoked)
    assert [r.lsn for r in back.events] == [r.lsn for r in d.events]
    for name in projections.TABLE_NAMES:
        there, again = d.tables[name], back.tables[name]
        assert (again.added, again.removed) == (there.removed, there.added), name
        assert [(c.key, c.before, c.after) for c in again.changed] == [
            (c.key, c.after, c.before) for c in there.changed
        ], name

    same = replay.diff(store, k.deleted, k.deleted)
    assert (same.events, same.changed_tables()) == ([], [])
    everything = replay.diff(store, -1, k.records[-1].lsn)
    assert len(everything.events) == len(k.records)
    assert [row["id"] for row in everything.tables["sessions"].added] == [k.session, k.later]


@pytest.mark.slow
def test_diff_equals_the_difference_of_two_views(store: Path, rng: random.Random) -> None:
    records = build_history(store, rng, 800)
    last = records[-1].lsn
    a, b = sorted(rng.sample(range(last), 2))
    pairs = [(a, b), (b, a), (-1, rng.randrange(last))]
    points = sorted({p for pair in pairs for p in pair})
    tables: dict[int, dict[str, dict[tuple[Any, ...], dict[str, Any]]]] = {}
    for p in points:
        with replay.at(store, lsn=p, snapshots=False) as view:
            tables[p] = {t: keyed(view.connection, t) for t in projections.TABLE_NAMES}
    for start, stop in pairs:
        d = replay.diff(store, start, stop)
        assert [r.lsn for r in d.events] == list(range(min(start, stop) + 1, max(start, stop) + 1))
        for name in projections.TABLE_NAMES:
            before, after = tables[start][name], tables[stop][name]
            got = d.tables[name]
            assert {key_of(name, r): r for r in got.added} == {
                key: row for key, row in after.items() if key not in before
            }, (name, start, stop)
            assert {key_of(name, r): r for r in got.removed} == {
                key: row for key, row in before.items() if key not in after
            }, (name, start, stop)
            assert {c.key: (c.before, c.after) for c in got.changed} == {
                key: (before[key], row)
                for key, row in after.items()
                if key in before and before[key] != row
            }, (name, start, stop)


# -- 5. step -------------------------------------------------------------------------------------


def mentioned(event: ev.EventBase) -> list[uuid.UUID]:
    names = ("id", "node_id", "tool_id", "session_id", "prompt_id", "response_id", "agent_id")
    return [v for name in names if isinstance(v := getattr(event, name, None), uuid.UUID)]


def observe(view: View, ids: Sequence[uuid.UUID], sessions: Sequence[uuid.UUID]) -> list[Any]:
    """What the cached reads say (get_node, context_window) about some ids."""
    seen: list[Any] = [view.get_node(i, include_deleted=True) for i in ids]
    seen += [view.get_node(i) for i in ids]
    for s in sessions:
        try:
            seen.append(view.context_window(s, 3))
        except NotFound:
            seen.append(None)
    return seen


@pytest.mark.slow
def test_step_walks_one_event_at_a_time(store: Path, rng: random.Random) -> None:
    records = build_history(store, rng, 600)
    last = records[-1].lsn
    start = rng.randrange(-1, 500)
    stop = start + rng.randrange(40, 60)
    walked = records[start + 1 : stop + 1]
    # Ids the walk changes, and sessions: read at every step, so the view's caches are hot.
    ids = rng.sample(sorted({i for r in walked for i in mentioned(r.event)}), 8)
    every_session = [
        r.event.id for r in records if isinstance(r.event, ev.SessionCreated | ev.SessionForked)
    ]
    sessions = rng.sample(every_session, min(3, len(every_session)))
    checked = set(rng.sample([r.lsn for r in walked], 2))

    lsns = []
    for s in replay.step(store, start, stop):
        lsns.append(s.lsn)
        assert s.event == records[s.lsn].event
        assert (s.view.lsn, s.view.ts) == (s.lsn, records[s.lsn].event.ts)
        seen = observe(s.view, ids, sessions)
        if s.lsn in checked:
            assert_is_fold_from_zero(s.view, records, s.lsn)
            with replay.at(store, lsn=s.lsn, snapshots=False) as fresh:
                for table in COMPARED:
                    assert table_rows(s.view.connection, table) == table_rows(
                        fresh.connection, table
                    ), (table, s.lsn)
                assert seen == observe(fresh, ids, sessions), s.lsn  # no stale cached read
    assert lsns == list(range(start + 1, stop + 1))

    first = [
        (s.lsn, s.view.rows("SELECT count(*) FROM sessions")) for s in replay.step(store, None, 2)
    ]
    assert [lsn for lsn, _ in first] == [0, 1, 2]  # None: from the first event
    assert first[0][1] == [(1,)]  # the opening session, alone
    assert [s.lsn for s in replay.step(store, last - 2)] == [last - 1, last]
    assert list(replay.step(store, 5, 5)) == []
    assert list(replay.step(store, 9, 5)) == []  # latest first: nothing to walk
    for _ in replay.step(store, 0, 10):
        break  # abandoning a walk deletes its database too (checked by private_tmp)


# -- 6. the CLI ----------------------------------------------------------------------------------


def lmg(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def one_line_error(result: Result, *words: str) -> str:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def count_table(stdout: str) -> dict[str, int]:
    lines = stdout.splitlines()
    assert lines[0].split() == ["table", "rows"]
    assert lines[-1] == f"({len(projections.TABLE_NAMES)} rows)"
    return {name: int(n) for name, n in (line.split() for line in lines[2:-1])}


@pytest.mark.slow
def test_cli_replay(store: Path, tmp_path: Path) -> None:
    k = known_store(store)
    with replay.at(store, lsn=k.invoked) as view:
        expected = {t: n for t, n in counts(view.connection).items() if t != "lmg_checkpoints"}

    result = ok(lmg("replay", str(store), "--at", str(k.invoked)))
    assert count_table(result.stdout) == expected
    assert f"at LSN {k.invoked} (" in result.stderr
    assert "folded from zero" in result.stderr

    query = "SELECT id, status, parameters FROM tool_invocations"
    result = ok(
        lmg("replay", str(store), "--at", str(k.invoked), "--sql", query, "--format", "json")
    )
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"id": str(k.tool), "status": "pending", "parameters": '{"q":"rust"}'}
    ]
    query = "SELECT content, lsn, deleted_ts IS NOT NULL AS gone FROM prompts ORDER BY lsn"
    result = ok(
        lmg("replay", str(store), "--at", str(k.deleted), "--sql", query, "--format", "csv")
    )
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["content", "lsn", "gone"],
        ["What is Rust?", "1", "true"],
        ["And Go?", "7", "false"],
    ]
    result = ok(
        lmg("replay", str(store), "--at", "-1", "--sql", "SELECT count(*) AS n FROM prompts")
    )
    assert "at LSN -1 (before the first event)" in result.stderr

    out = tmp_path / "cli.duckdb"
    result = ok(lmg("replay", str(store), "--at", str(k.invoked), "--out", str(out)))
    assert result.stdout == ""
    assert f"wrote {out}" in result.stderr
    with duckdb.connect(str(out), read_only=True) as con:
        assert {t: n for t, n in counts(con).items() if t != "lmg_checkpoints"} == expected
    one_line_error(lmg("replay", str(store), "--at", "0", "--out", str(out)), "already exists")

    ts = [r.event.ts for r in k.records]
    result = ok(lmg("replay", str(store), "--at", iso(ts[6] + 1_000)))  # after event 6 (or 7)
    lsn = 7 if ts[7] <= (ts[6] + 1_000) // 1_000 * 1_000 else 6
    assert f"at LSN {lsn} (" in result.stderr

    one_line_error(lmg("replay", str(store), "--at", "99"), "not in the log", "0..10")
    one_line_error(lmg("replay", str(store), "--at", "whenever"), "not an ISO 8601 time")
    failed = lmg("replay", str(store), "--at", "0", "--sql", "SELECT nope FROM prompts")
    assert failed.exit_code == 1
    assert isinstance(failed.exception, SystemExit)
    assert failed.stderr.splitlines()[-1].startswith("Error: Binder Error")  # after "at LSN 0"
    one_line_error(lmg("replay", str(tmp_path / "missing"), "--at", "0"), "no store at")


def test_cli_diff(store: Path) -> None:
    k = known_store(store)
    result = ok(lmg("diff", str(store), "--from", str(k.invoked), "--to", str(k.deleted)))
    lines = result.stdout.splitlines()
    assert lines[0] == f"from LSN {k.invoked} to LSN {k.deleted}: {k.deleted - k.invoked} events"
    assert "prompts: 1 added, 0 removed, 1 changed" in lines
    assert "tool_invocations: 0 added, 0 removed, 1 changed" in lines
    assert not any(line.startswith("agents:") for line in lines)
    assert '      status "pending" -> "success"' in lines  # a changed row wraps, a field a line

    result = ok(
        lmg(
            "diff", str(store), "--from", str(k.invoked), "--to", str(k.deleted), "--format", "json"
        )
    )
    doc = json.loads(result.stdout)
    assert (doc["start"], doc["stop"]) == (k.invoked, k.deleted)
    assert [e["lsn"] for e in doc["events"]] == list(range(k.invoked + 1, k.deleted + 1))
    assert doc["events"][0]["type"] == "tool.completed"
    assert "agents" not in doc["tables"]
    [call] = doc["tables"]["tool_invocations"]["changed"]
    assert call["key"] == [str(k.tool)]
    assert (call["before"]["status"], call["after"]["status"]) == ("pending", "success")
    assert [row["id"] for row in doc["tables"]["prompts"]["added"]] == [str(k.p2)]

    result = ok(lmg("diff", str(store), "--from", "3", "--to", "3"))
    assert result.stdout.splitlines() == ["from LSN 3 to LSN 3: 0 events", "no table changed"]
    one_line_error(lmg("diff", str(store), "--from", "0", "--to", "11"), "not in the log")


@pytest.mark.slow
def test_cli_diff_text_names_what_it_can_and_cuts_no_string(tmp_path: Path) -> None:
    """`lmg diff` (the installed entry point): agents, templates and titled sessions by name,
    times in ISO 8601, a long string elided with its length, never a raw JSON row."""
    store = tmp_path / "store"
    long = "why " * 60
    with eventlog.open(store, **FAST) as log:
        triage = log.add_agent("triage", "routes questions")  # 0
        billing = log.add_agent("billing", "answers billing questions")  # 1
        s = log.create_session({"title": "double charge"}).id  # 2
        p = log.add_prompt(s, long)  # 3
        log.assign_agent_to_prompt(p, triage)  # 4
        r = log.add_response(p, "A billing question.", TokenUsage(9, 4))  # 5
        log.transfer_to_agent(r, billing, from_agent_id=triage, reason="billing")  # 6
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("lmg")),
            "diff",
            str(store),
            "--from",
            "2",
            "--to",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    text = result.stdout
    assert text == replay.diff(store, 2, 6).text() + "\n"  # the CLI prints the library's text
    assert "from_agent=triage" in text and "to_agent=billing" in text
    assert "session=double charge" in text
    assert str(triage) not in text and str(billing) not in text
    assert f'content="{long[:59]}… ({len(long)} chars)' in text
    assert not any(line.startswith(("  + {", "  ~ {")) for line in text.splitlines())
    assert re.search(r"last_active_ts \S+Z -> \S+Z", text)


@pytest.mark.slow
def test_cli_snapshot(store: Path) -> None:
    k = known_store(store)
    last = k.records[-1].lsn
    assert replay.snapshots(store) == []
    result = ok(lmg("snapshot", str(store)))
    assert result.stdout.startswith(f"snapshot at LSN {last} (")
    ok(lmg("snapshot", str(store), "--at", str(k.invoked)))
    result = ok(lmg("snapshot", str(store), "--list"))
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["lsn", "time", "bytes", "schema"]
    assert [int(line.split()[0]) for line in lines[2:-1]] == [k.invoked, last]
    assert lines[-1] == "(2 rows)"
    assert [s.lsn for s in replay.snapshots(store)] == [k.invoked, last]

    result = ok(lmg("replay", str(store), "--at", str(k.deleted)))
    assert f"folded from snapshot {k.invoked}" in result.stderr
    result = ok(lmg("replay", str(store), "--at", str(k.deleted), "--no-snapshots"))
    assert "folded from zero" in result.stderr


# -- edge cases found while writing these tests ---------------------------------------------------


def test_a_snapshot_before_the_first_event_is_refused_or_listed(store: Path) -> None:
    known_store(store)
    try:
        info = replay.snapshot(store, at=-1)
    except (ReplayError, ProjectionError):
        return  # refused: fine
    assert info.lsn in [s.lsn for s in replay.snapshots(store)]


def test_cli_point_with_dashes_is_a_one_line_error(store: Path) -> None:
    known_store(store)
    one_line_error(lmg("replay", str(store), "--at", "--5"), "not an ISO 8601 time")


def test_a_view_left_by_a_killed_process_is_cleaned_up(store: Path, private_tmp: Path) -> None:
    """kill -9 with a view open leaves its database; the next replay anywhere deletes it."""
    known_store(store)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, replay\n"
            "view = replay.at(sys.argv[1], lsn=0)\n"
            "print(view.database, flush=True)\n"
            "time.sleep(60)\n",
            str(store),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(private_tmp)},
    )
    try:
        assert child.stdout is not None
        left = Path(child.stdout.readline().strip())
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert left.exists() and left.parent.parent == private_tmp
    with replay.at(store, lsn=1) as view:
        assert view.database is not None and view.database.exists()
        assert not left.parent.exists()


# -- 7. a full temporary disk -------------------------------------------------------------------

FULL = 1 << 20
"""A file size limit the view's schema fits in, and its fold of `large_store` does not."""

LARGE_LAST = 1500  # the last LSN of `large_store`


@pytest.fixture
def large_store(store: Path) -> Path:
    """A store whose view takes a few MB, with a snapshot of it."""
    rng = random.Random(7)
    with eventlog.open(store, **FAST) as log:
        session = log.create_session().id
        for _ in range(LARGE_LAST):
            log.add_prompt(session, rng.randbytes(1000).hex())
        assert log.next_lsn() - 1 == LARGE_LAST
    replay.snapshot(store, at=LARGE_LAST)
    return store


@pytest.mark.parametrize(
    ("args", "limit"),
    [
        (["replay", "--at", "{last}", "--no-snapshots"], 8192),  # the new file's header
        (["replay", "--at", "{last}", "--no-snapshots"], 12288),  # the schema's commit
        (["replay", "--at", "{last}", "--no-snapshots"], FULL),  # the fold
        (["replay", "--at", "{last}"], FULL),  # the snapshot's restore
        (["replay", "--at", "{last}", "--out", "{tmp}/past.duckdb"], FULL),
        (["diff", "--from", "0", "--to", "{last}", "--no-snapshots"], 8192),
        (["diff", "--from", "0", "--to", "{last}", "--no-snapshots"], FULL),
    ],
    ids=lambda value: " ".join(value[:4:3]) if isinstance(value, list) else str(value),
)
@pytest.mark.slow
def test_a_full_temporary_disk_is_one_line_without_the_temporary_path(
    large_store: Path,
    private_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    limit: int,
) -> None:
    """Where the view could not be written (connect, the schema, a restore, the fold), `lmg
    replay` and `lmg diff` printed DuckDB's traceback naming /tmp/lmg-replay-.../view.duckdb,
    or a fold's error naming it; a restore said ``[Errno 27] File too large``."""
    monkeypatch.setenv("TMPDIR", str(private_tmp))  # the child's; private_tmp checks it empty
    beside = large_store.parent
    filled = [a.format(last=LARGE_LAST, tmp=beside) for a in args]
    result = run_with_full_disk([str(LMG), filled[0], str(large_store), *filled[1:]], limit)
    assert result.returncode == 1, result.stderr
    out = filled[-1] if "--out" in args else None  # the one path it may name: the user's
    said = result.stderr.replace(out, "OUT") if out else result.stderr
    assert "Traceback" not in said and "/tmp/" not in said, result.stderr
    assert said.splitlines() == [
        f"Error: {'OUT' if out else 'the temporary view'} could not be written: File too large"
    ]
    assert not (beside / "past.duckdb").exists()
    assert [p.name for p in beside.iterdir() if "building" in p.name] == []


_CALLS = """
import sys, replay
store, last = sys.argv[1], int(sys.argv[2])
calls = {
    "at": lambda: replay.at(store, lsn=last, snapshots=False).close(),
    "at from a snapshot": lambda: replay.at(store, lsn=last).close(),
    "diff": lambda: replay.diff(store, 0, last, snapshots=False),
    "step": lambda: [s.lsn for s in replay.step(store, snapshots=False)],
    "snapshot": lambda: replay.snapshot(store, at=last, keep=None),
}
for name, call in calls.items():
    try:
        call()
    except Exception as exc:
        print(name, type(exc).__name__, isinstance(exc, replay.ReplayError), exc, sep="|")
"""


@pytest.mark.slow
def test_a_full_temporary_disk_is_a_replay_error_and_leaves_no_file(
    large_store: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replay.at`, `diff`, `step` and `snapshot` raised DuckDB's IOException, a FoldFailed
    naming the temporary file, or a bare OSError (a snapshot's restore): now a `ReplayError`,
    and the temporary directory goes (checked by `private_tmp`)."""
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    args = [sys.executable, "-c", _CALLS, str(large_store), str(LARGE_LAST)]
    result = run_with_full_disk(args, FULL)
    assert result.returncode == 0, result.stderr
    said = "ViewStorageFull|True|the temporary view could not be written: File too large"
    assert result.stdout.splitlines() == [
        f"{name}|{said}" for name in ("at", "at from a snapshot", "diff", "step", "snapshot")
    ]


@pytest.mark.slow
def test_a_full_temporary_disk_is_507_storage_full_from_lmg_serve(
    large_store: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A diff or a SQL query `at` a point whose view the server's disk has no room for was
    422 `replay_error`, as if the request were wrong; it is the server's disk, as a full
    store's is 507 `storage_full`. The service goes on: a request that fits answers."""
    with projections.MemoryGraph.open(large_store) as graph:
        graph.rows("SELECT 1")  # folded now: the service has no large file of its own to write
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    served = Service(tmp_path, [str(large_store)], file_size_limit=FULL)
    try:
        requests = [
            ("GET", f"/diff?from=0&to={LARGE_LAST}", None),
            ("POST", "/sql", {"query": "SELECT count(*) FROM prompts", "at": LARGE_LAST}),
        ]
        for method, route, body in requests:
            answer = served.http.request(method, f"/v1/stores/default{route}", json=body)
            assert answer.status_code == 507, answer.text
            error = answer.json()["error"]
            assert error["code"] == "storage_full"
            assert error["message"] == "the temporary view could not be written: File too large"
        small = {"query": "SELECT count(*) FROM prompts", "at": 3}
        assert served.http.post("/v1/stores/default/sql", json=small).json()["rows"] == [[3]]
    finally:
        assert served.stop() == 0
