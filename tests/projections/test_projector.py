"""The projector as real processes: kill -9, two folders, a poison event, readers, signals, CLI.

Every check ends the same way: the projections a process left behind must equal a fold of the
same log into a fresh database, table by table (``SELECT * ... ORDER BY ALL`` over every name in
`projections.TABLE_NAMES`): nothing doubled, nothing missing. While a run is in flight, its
database must equal a fresh fold of the log up to its checkpoint.

Children are the installed ``lmg`` entry point and `_projector_child.py` (a `Projector` with a
small batch, an appender, a reader); each writes its output to files, every wait has a timeout,
and a fixture kills whatever is left.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import random
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import eventlog
import projections
from eventlog import events as ev
from projections._folder import fold_available
from projections._schema import ensure_schema
from tests._processes import LMG, WAIT_S, Child

from ._projector_child import CONSISTENCY, Workload, check_read, log_counts, populate

CHILD = Path(__file__).with_name("_projector_child.py")
Rows = dict[str, list[tuple[Any, ...]]]


# -- processes -----------------------------------------------------------------------------------


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start children (``spawn("lmg", "project", ...)`` or ``spawn("child", "append", ...)``);
    any still running when the test ends is killed."""
    children: list[Child] = []

    def start(kind: str, *args: str | Path) -> Child:
        head = [str(LMG)] if kind == "lmg" else [sys.executable, str(CHILD)]
        child = Child([*head, *map(str, args)], tmp_path, f"{len(children)}-{kind}-{args[0]}")
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            child.kill()


def lmg(*args: str | Path, timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
    """Run the ``lmg`` entry point to completion."""
    return subprocess.run(
        [str(LMG), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# -- the database, compared with a fresh fold ----------------------------------------------------


TABLES = projections.TABLE_NAMES


def read_tables(con: duckdb.DuckDBPyConnection) -> Rows:
    return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}


def tables(store: Path, database: Path | None = None) -> Rows:
    with projections.connect(store, database) as con:
        return read_tables(con)


def fresh_fold(store: Path, database: Path, stop_lsn: int | None = None) -> Rows:
    """The tables a fold from zero makes of the log up to `stop_lsn` (excluded; None: all)."""
    if stop_lsn is None:
        projections.rebuild(store, database)
        return tables(store, database)
    for path in (database, Path(f"{database}.wal")):
        path.unlink(missing_ok=True)
    with eventlog.open(store, readonly=True) as log, duckdb.connect(str(database)) as con:
        ensure_schema(con)
        fold_available(con, log, stop_lsn=stop_lsn)
        return read_tables(con)


def assert_same(found: Rows, expected: Rows, where: str) -> None:
    for table in TABLES:
        got, want = found[table], expected[table]
        if got != want:
            extra = [r for r in got if r not in want][:3]
            missing = [r for r in want if r not in got][:3]
            pytest.fail(
                f"{where}: table {table} has {len(got)} rows, a fresh fold {len(want)}; "
                f"only here: {extra}; only in the fresh fold: {missing}"
            )


def checkpoint_of(store: Path) -> int | None:
    """The folded checkpoint, or None while the database (or its schema) does not exist."""
    if not (store / projections.DATABASE_FILE).exists():
        return None
    try:
        with projections.connect(store) as con:
            found = con.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_name = 'lmg_checkpoints'"
            ).fetchall()[0][0]
            if not found:
                return None
            rows = con.execute("SELECT min(lsn), max(lsn) FROM lmg_checkpoints").fetchall()
    except projections.SchemaMismatch as exc:  # killed after making the file, before its schema
        if "holds no projections" not in str(exc):
            raise
        return None
    low, high = rows[0]
    assert low == high, f"projections stopped at different checkpoints: {low} and {high}"
    return int(low)


def consistency(store: Path, database: Path | None = None) -> dict[str, Any]:
    """One read of `CONSISTENCY`, checked against the log up to its checkpoint."""
    with projections.connect(store, database) as con:
        cursor = con.execute(CONSISTENCY)
        names = [d[0] for d in cursor.description or ()]
        row = dict(zip(names, cursor.fetchall()[0], strict=True))
    counts = dict.fromkeys(("sessions", "prompts", "responses"), 0)
    with eventlog.open(store, readonly=True) as log:
        log_counts(log, row["checkpoint"] + 1, 0, counts)
    problems = check_read(row, counts)
    assert not problems, problems
    return row


def next_lsn(store: Path) -> int:
    with eventlog.open(store, readonly=True) as log:
        return log.next_lsn()


def new_store(store: Path, rng: random.Random, events: int) -> Workload:
    workload = Workload(rng)
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        populate(log, workload, events)
    return workload


def wait_checkpoint(store: Path, lsn: int, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while (found := checkpoint_of(store)) is None or found < lsn:
        if time.monotonic() > deadline:
            pytest.fail(f"the projector did not reach LSN {lsn} within {timeout} s")
        time.sleep(0.02)


# -- 1. kill -9 during catch-up ------------------------------------------------------------------

ROUNDS = 12


@pytest.mark.slow
def test_kill_9_during_catch_up(
    tmp_path: Path, store: Path, rng: random.Random, spawn: Callable[..., Child]
) -> None:
    workload = Workload(rng)
    reference = tmp_path / "fresh.duckdb"
    kills = completed = compared = 0
    last_checkpoint = -1
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        populate(log, workload, 3000)
        for round_ in range(ROUNDS):
            # One round in four is killed at a random moment from spawn (start-up, creating
            # the schema, the first open); the others once the projector has opened.
            early = rng.random() < 0.25
            batch, hold_s = rng.choice((20, 50, 100)), rng.choice((0.05, 0.2, 0.5))
            delay = rng.uniform(0.0, 0.8) if early else rng.uniform(0.0, 0.5)
            print(f"round {round_}: batch {batch}, hold {hold_s} s, kill after {delay:.3f} s")
            child = spawn("child", "project", store, batch, hold_s)
            try:
                if not early:
                    child.wait_for(child.said_something, "its ready line")
                time.sleep(delay)
                child.signal(signal.SIGKILL)
                code = child.wait()
            finally:
                child.kill()
            if code == 0:
                completed += 1  # it caught up before the kill: fine, just no kill this round
            else:
                assert code == -signal.SIGKILL, f"the projector failed:\n{child.stderr()}"
                kills += 1
            reported = max((line.get("checkpoint", -1) for line in child.lines()), default=-1)
            checkpoint = checkpoint_of(store)
            if checkpoint is None:
                assert reported == -1, "a committed batch vanished with the database"
                continue
            assert checkpoint >= max(reported, last_checkpoint), (
                f"round {round_}: checkpoint {checkpoint}, but the child reported {reported} "
                f"committed and an earlier round left {last_checkpoint}"
            )
            last_checkpoint = checkpoint
            print(f"  {'caught up' if code == 0 else 'killed'} at checkpoint {checkpoint}")
            consistency(store)
            if round_ % 3 == 0 or code == 0:
                compared += 1
                assert_same(
                    tables(store),
                    fresh_fold(store, reference, checkpoint + 1),
                    f"round {round_}, killed at checkpoint {checkpoint}",
                )
            # New work for the next round; a backlog again if this one caught up before the kill.
            populate(log, workload, 1500 if code == 0 else rng.randrange(50, 200))

    finished = lmg("project", store)
    assert finished.returncode == 0, finished.stderr
    assert "folded to LSN" in finished.stderr
    end = next_lsn(store)
    assert checkpoint_of(store) == end - 1
    assert_same(tables(store), fresh_fold(store, reference), "after the clean run")
    print(
        f"{ROUNDS} rounds: {kills} kills, {completed} caught up first, {compared} compared "
        f"mid-way; {end} events"
    )
    assert kills >= ROUNDS // 3, "most rounds should kill the projector mid-way"


# -- 2. kill -9 during follow --------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_during_follow(
    tmp_path: Path, store: Path, rng: random.Random, spawn: Callable[..., Child]
) -> None:
    new_store(store, rng, 500)
    appender = spawn("child", "append", store, rng.randrange(2**32), 0.003)
    appender.wait_for(appender.said_something, "its ready line")
    checkpoints: list[int] = []
    # Four rounds kill after a catch-up (each folds what the appender added since the last),
    # two at a random moment from spawn, in a random order. Drawn round by round, too few
    # catch-ups came now and then, and on a loaded machine a kill from spawn often lands
    # before the follower has folded anything.
    kinds = [True] * 4 + [False] * 2
    rng.shuffle(kinds)
    for round_, caught_up in enumerate(kinds):
        delay = rng.uniform(0.05, 0.8)
        print(f"round {round_}: kill {delay:.3f} s after {'catch-up' if caught_up else 'spawn'}")
        follower = spawn("lmg", "project", store, "--follow", "--report-every", "0.2")
        try:
            if caught_up:
                follower.wait_stderr("folded to LSN")
            time.sleep(delay)
            follower.signal(signal.SIGKILL)
            code = follower.wait()
        finally:
            follower.kill()
        assert code == -signal.SIGKILL, f"the follower died on its own:\n{follower.stderr()}"
        checkpoint = checkpoint_of(store)
        if checkpoint is not None:
            assert checkpoint >= max(checkpoints, default=-1), "the checkpoint went back"
            checkpoints.append(checkpoint)
            consistency(store)

    appender.signal(signal.SIGTERM)
    assert appender.wait() == 0, appender.stderr()
    final = appender.lines()[-1]
    assert final["appended"] > 100, final
    finished = lmg("project", store)
    assert finished.returncode == 0, finished.stderr
    assert checkpoint_of(store) == final["next_lsn"] - 1
    assert_same(tables(store), fresh_fold(store, tmp_path / "fresh.duckdb"), "after follow")
    print(f"checkpoints after each kill: {checkpoints}; {final['next_lsn']} events in the end")
    assert len(set(checkpoints)) >= 3, "the followers should have folded between kills"


# -- 3. two projectors at once -------------------------------------------------------------------


@pytest.mark.slow
def test_second_projector_is_refused(
    store: Path, rng: random.Random, spawn: Callable[..., Child]
) -> None:
    new_store(store, rng, 300)
    first = spawn("lmg", "project", store, "--follow")
    first.wait_stderr("folded to LSN")

    second = lmg("project", store)
    line = one_line_error(second, "already folded by")
    assert f"lmg project (pid {first.pid})" in line, line

    with pytest.raises(projections.ProjectorBusy, match="already folded by"):
        projections.Projector(store)
    with pytest.raises(projections.ProjectorBusy, match="already folded by"):
        projections.MemoryGraph.open(store)
    # ... and the refused graph let go of the log: appending still works, and the first
    # projector folds it.
    with eventlog.open(store) as log:
        log.create_session()
        end = log.next_lsn()
    wait_checkpoint(store, end - 1)
    # lmg sql reads beside a running projector (it does not try to fold itself).
    result = lmg("sql", store, "SELECT min(lsn) AS c FROM lmg_checkpoints", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"c": end - 1}

    first.signal(signal.SIGTERM)
    assert first.wait() == 0, first.stderr()
    with projections.MemoryGraph.open(store) as graph:  # the lock went with the process
        assert graph.stats().checkpoint_lsn == end - 1


@pytest.mark.slow
def test_follower_waits_for_a_one_off_catch_up(
    store: Path, rng: random.Random, spawn: Callable[..., Child]
) -> None:
    """`lmg project --follow` started while a one-off catch-up (what `lmg sql` runs before its
    query) held the database exited with ProjectorBusy. It waits its turn now, saying so, and
    then follows; a one-off `lmg project` behind a follower is still refused."""
    new_store(store, rng, 300)
    with projections.Projector(store, passing=True) as one_off:  # as `lmg sql` holds it
        follower = spawn("lmg", "project", store, "--follow")
        follower.wait_stderr("waiting for a one-off catch-up")
        time.sleep(0.3)
        assert follower.proc.poll() is None, follower.stderr()
        one_off.catch_up()
    follower.wait_stderr("folded to LSN")
    with eventlog.open(store) as log:
        log.create_session()
        end = log.next_lsn()
    wait_checkpoint(store, end - 1)  # it follows
    line = one_line_error(lmg("project", store), "already folded by")
    assert f"lmg project (pid {follower.pid})" in line, line
    follower.signal(signal.SIGTERM)
    assert follower.wait() == 0, follower.stderr()
    assert "Traceback" not in follower.stderr()


# -- 4. a poison event ---------------------------------------------------------------------------


@pytest.mark.slow
def test_poison_event_stops_the_fold_just_before_it(tmp_path: Path, store: Path) -> None:
    with eventlog.open(store) as log:
        kept, doomed = log.create_session(), log.create_session()
        log.add_prompt(doomed.id, "folded before the damage")
    assert lmg("project", store).returncode == 0
    with duckdb.connect(str(store / projections.DATABASE_FILE)) as con:
        con.execute("DELETE FROM sessions WHERE id = ?", [doomed.id])
    before, poison, after = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with eventlog.open(store) as log:
        first = log.append(ev.PromptAdded(id=before, session_id=kept.id, content="fine"))
        bad = log.append(ev.PromptAdded(id=poison, session_id=doomed.id, content="poison"))
        log.append(ev.PromptAdded(id=after, session_id=kept.id, content="after"))
    assert bad.first_lsn == first.first_lsn + 1

    for attempt in range(2):  # a second run stops at the same place
        result = lmg("project", store)
        line = one_line_error(result, "cannot fold event", str(bad.first_lsn), "prompt.added")
        print(f"attempt {attempt}: {line}")
        assert checkpoint_of(store) == bad.first_lsn - 1
        with projections.connect(store) as con:
            ids = {r[0] for r in con.execute("SELECT id FROM prompts").fetchall()}
            (count,) = con.execute(
                "SELECT prompt_count FROM sessions WHERE id = ?", [kept.id]
            ).fetchone() or (None,)
        assert before in ids, "the event before the poison (same batch) was not folded"
        assert poison not in ids and after not in ids
        assert count == 1

    with projections.Projector(store) as projector:
        with pytest.raises(projections.PoisonEvent) as caught:
            projector.catch_up()
        assert (caught.value.lsn, caught.value.event_type) == (bad.first_lsn, "prompt.added")
        assert projector.checkpoint == bad.first_lsn - 1

    rebuilt = lmg("project", store, "--rebuild")  # the log itself is sound
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert checkpoint_of(store) == bad.first_lsn + 1
    assert_same(tables(store), fresh_fold(store, tmp_path / "fresh.duckdb"), "after --rebuild")


# -- 5. readers while the projector commits -------------------------------------------------------


@pytest.mark.slow
def test_readers_never_see_a_partial_batch(
    tmp_path: Path, store: Path, rng: random.Random, spawn: Callable[..., Child]
) -> None:
    new_store(store, rng, 1000)
    follower = spawn("lmg", "project", store, "--follow", "--report-every", "1")
    follower.wait_stderr("folded to LSN")
    appender = spawn("child", "append", store, rng.randrange(2**32), 0.001)
    appender.wait_for(appender.said_something, "its ready line")
    # Two readers polling like a dashboard (a pause between reads: back to back, overlapping
    # readers can hold the projector off for seconds, as flock has no writer preference).
    readers = [spawn("child", "read", store, 4.0, 0.05) for _ in range(2)]

    # Meanwhile the CLI reads too, without folding: each answer is one consistent snapshot.
    cli_reads: list[dict[str, Any]] = []
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        result = lmg("sql", store, CONSISTENCY, "--format", "json", "--no-fold")
        assert result.returncode == 0, result.stderr
        row = json.loads(result.stdout)
        assert row["checkpoint"] == row["checkpoint_max"], row
        assert row["bad_prompt_counts"] == row["bad_response_counts"] == 0, row
        assert row["max_row_lsn"] <= row["checkpoint"], row
        if cli_reads:
            assert row["checkpoint"] >= cli_reads[-1]["checkpoint"], "the checkpoint went back"
        cli_reads.append(row)

    summaries = []
    for reader in readers:
        assert reader.wait() == 0, reader.stderr()
        summaries.append(reader.lines()[-1])
    appender.signal(signal.SIGTERM)
    assert appender.wait() == 0, appender.stderr()
    follower.signal(signal.SIGTERM)
    assert follower.wait() == 0, follower.stderr()

    for n, s in enumerate(summaries):
        print(
            f"reader {n}: {s['reads']} reads, checkpoints {s['first_checkpoint']}.."
            f"{s['last_checkpoint']} ({s['distinct_checkpoints']} distinct); waited for the "
            f"database: median {s['median_wait_ms']:.1f} ms, p95 {s['p95_wait_ms']:.1f} ms, "
            f"max {s['max_wait_ms']:.1f} ms"
        )
    print(
        f"lmg sql --no-fold: {len(cli_reads)} reads, checkpoints "
        f"{cli_reads[0]['checkpoint']}..{cli_reads[-1]['checkpoint']}"
    )
    print("projector: " + follower.stderr().strip().splitlines()[-1])
    for s in summaries:
        assert s["error_count"] == 0, s["errors"]
        assert s["problem_count"] == 0, s["problems"]
        assert s["reads"] >= 3, s
        assert s["distinct_checkpoints"] >= 3, f"the projector should commit meanwhile: {s}"

    finished = lmg("project", store)
    assert finished.returncode == 0, finished.stderr
    assert_same(tables(store), fresh_fold(store, tmp_path / "fresh.duckdb"), "after the load")


# -- 6. SIGTERM and SIGINT stop a follower cleanly ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_a_follower_cleanly(
    tmp_path: Path,
    store: Path,
    rng: random.Random,
    spawn: Callable[..., Child],
    sig: signal.Signals,
) -> None:
    workload = new_store(store, rng, 100)
    follower = spawn("lmg", "project", store, "--follow")
    follower.wait_stderr("folded to LSN")
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        populate(log, workload, 100)
        wait_checkpoint(store, log.next_lsn() - 1)  # it follows
        populate(log, workload, 400)  # then stop it while it folds, maybe
    time.sleep(rng.uniform(0.0, 0.3))
    follower.signal(sig)
    assert follower.wait() == 0, follower.stderr()
    assert "stopped:" in follower.stderr(), follower.stderr()
    assert "Traceback" not in follower.stderr()

    checkpoint = checkpoint_of(store)
    assert checkpoint is not None
    consistency(store)
    assert_same(
        tables(store),
        fresh_fold(store, tmp_path / "fresh.duckdb", checkpoint + 1),
        f"stopped at {checkpoint}",
    )
    finished = lmg("project", store)  # and a restart folds the rest
    assert finished.returncode == 0, finished.stderr
    assert checkpoint_of(store) == next_lsn(store) - 1


_HOLDING_READER = """
import json, pathlib, sys, time, projections
with projections.connect(sys.argv[1]) as con:  # the gate shared, the file open
    count = "SELECT count(*) FROM prompts"
    print(json.dumps({"prompts": con.execute(count).fetchall()[0][0]}), flush=True)
    while not pathlib.Path(sys.argv[2]).exists():  # the test's word that it may finish
        time.sleep(0.01)
    print(json.dumps({"prompts": con.execute(count).fetchall()[0][0]}), flush=True)
"""


def _inode(path: Path) -> int | None:
    return path.stat().st_ino if path.exists() else None


@pytest.mark.slow
def test_a_rebuild_deletes_the_database_once_readers_let_go(
    tmp_path: Path, store: Path, rng: random.Random
) -> None:
    """A rebuild deletes the database with the gate held exclusively, as an erasure does: a
    reader in another process with the file open reads on to its end, then the rebuild goes
    on; one given `wait_s` raises `DatabaseBusy` after it, leaves the file as it was, and
    lets go of the folder lock (the rebuild after it is not refused)."""
    new_store(store, rng, 300)
    end = projections.rebuild(store)
    db = store / projections.DATABASE_FILE
    inode = _inode(db)
    finish = tmp_path / "finish"
    args = [sys.executable, "-c", _HOLDING_READER, str(store), str(finish)]
    reader = Child(args, tmp_path, "reader")
    try:
        reader.wait_for(reader.said_something, "its first read")
        for rebuild in (True, False):  # waiting to delete the file, or to open it: in vain
            with pytest.raises(projections.DatabaseBusy):  # (and it holds nothing after)
                projections.Projector(store, rebuild=rebuild, wait_s=0.2, snapshots=None)
        kept_by_busy = _inode(db)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            rebuilding = pool.submit(projections.rebuild, store, snapshots=None)
            time.sleep(0.5)
            waited, kept = not rebuilding.done(), _inode(db)
            finish.touch()  # the reader reads once more and lets go: the rebuild goes on
            rebuilt = rebuilding.result(timeout=WAIT_S)
        assert reader.wait() == 0, reader.stderr()
    finally:
        finish.touch()
        reader.kill()
    assert kept_by_busy == inode and waited and kept == inode and rebuilt == end
    first, second = reader.lines()
    assert first == second and first["prompts"] > 0
    assert _inode(db) is not None and checkpoint_of(store) == end


# -- 7. the CLI ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sql_and_project_commands(tmp_path: Path, store: Path) -> None:
    with eventlog.open(store) as log:
        session = log.create_session(metadata={"user": "ada"}, tags=["cli"])
        p1 = log.add_prompt(session.id, "What is Rust?")
        p2 = log.add_prompt(session.id, 'Say "hi", then stop')
        log.add_response(p1, "A systems language.", ev.TokenUsage(5, 30))
    db = store / projections.DATABASE_FILE

    # No projections yet: --no-fold has nothing to read, a plain query folds first.
    one_line_error(lmg("sql", store, "SELECT 1", "--no-fold"), "does not exist yet")
    assert not db.exists()
    table = lmg("sql", store, "SELECT content, prompt_tokens FROM responses")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == [
        "content              prompt_tokens",
        "-------------------  -------------",
        "A systems language.  5",
        "(1 row)",
    ]
    assert db.exists()

    # Read-only queries side by side (real processes, at once: they share the database).
    query = (
        "SELECT p.id, p.content, s.prompt_count, s.tags, s.metadata, p.previous_prompt_id "
        "FROM prompts p JOIN sessions s ON s.id = p.session_id ORDER BY p.lsn"
    )
    runs = {
        "json": ("sql", store, query, "--format", "json"),
        "csv": ("sql", store, query, "--format", "csv"),
        "empty": ("sql", store, "SELECT * FROM agents"),
        "binder": ("sql", store, "SELECT nope FROM prompts"),
        "parser": ("sql", store, "SELEC 1", "--no-fold"),
        "write": ("sql", store, "DELETE FROM prompts"),
    }
    with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
        futures = {name: pool.submit(lmg, *args) for name, args in runs.items()}
        done = {name: future.result() for name, future in futures.items()}

    assert done["json"].returncode == 0, done["json"].stderr
    rows = [json.loads(line) for line in done["json"].stdout.splitlines()]
    assert [(r["id"], r["content"], r["prompt_count"], r["tags"]) for r in rows] == [
        (str(p1), "What is Rust?", 2, ["cli"]),
        (str(p2), 'Say "hi", then stop', 2, ["cli"]),
    ]
    assert json.loads(rows[0]["metadata"]) == {"user": "ada"}
    assert [r["previous_prompt_id"] for r in rows] == [None, str(p1)]

    assert done["csv"].returncode == 0, done["csv"].stderr
    parsed = list(csv.reader(io.StringIO(done["csv"].stdout)))
    assert parsed[0] == [
        "id",
        "content",
        "prompt_count",
        "tags",
        "metadata",
        "previous_prompt_id",
    ]
    assert [r[:3] for r in parsed[1:]] == [
        [str(p1), "What is Rust?", "2"],
        [str(p2), 'Say "hi", then stop', "2"],
    ]
    assert parsed[1][5] == "" and parsed[2][5] == str(p1)

    assert done["empty"].returncode == 0, done["empty"].stderr
    assert done["empty"].stdout.splitlines()[-1] == "(0 rows)"
    one_line_error(done["binder"], "nope")
    one_line_error(done["parser"], "SELEC")
    one_line_error(done["write"], "read-only")

    # New events: --no-fold answers from what is folded, a plain query folds them first.
    with eventlog.open(store) as log:
        log.add_prompt(session.id, "one more")
    count = "SELECT count(*) AS n FROM prompts"
    assert json.loads(lmg("sql", store, count, "--format", "json", "--no-fold").stdout) == {"n": 2}
    assert json.loads(lmg("sql", store, count, "--format", "json").stdout) == {"n": 3}

    # --rebuild folds from zero: damage done to the tables is gone.
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM prompts WHERE id = ?", [p2])
        con.execute("UPDATE sessions SET prompt_count = 99")
    rebuilt = lmg("project", store, "--rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "folded to LSN 4 of 4" in rebuilt.stderr, rebuilt.stderr
    assert_same(tables(store), fresh_fold(store, tmp_path / "fresh.duckdb"), "after --rebuild")
    with projections.connect(store) as con:
        assert con.execute("SELECT prompt_count FROM sessions").fetchall() == [(3,)]


@pytest.mark.slow
def test_two_prompts_at_the_largest_request_fold(store: Path) -> None:
    """Two prompts of the largest size the log accepts, folded in one batch, needed more than
    the projector's 256 MB of DuckDB memory: every `lmg project` and `lmg sql` failed for good.
    Batches are bounded by bytes too, so each such prompt is folded in a transaction of its own."""
    limit = eventlog.Options().max_request_bytes
    with eventlog.open(store) as log:
        session = log.create_session()
        with pytest.raises(eventlog.InvalidEvent, match="max_request_bytes"):
            log.add_prompt(session.id, "x" * limit)
        size = limit - 1024  # the event's other fields and framing fit in the rest
        for letter in "ab":
            log.add_prompt(session.id, letter * size)
    assert lmg("project", store, timeout=120).returncode == 0
    query = "SELECT left(content, 1), length(content) FROM prompts ORDER BY lsn"
    done = lmg("sql", store, query, "--format", "csv", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [f"a,{size}", f"b,{size}"]


def project_under_size_limit(store: Path, limit: int) -> subprocess.CompletedProcess[str]:
    """`lmg project` in a child whose writes past `limit` bytes fail with EFBIG (a full
    disk, even for root)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # or the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [str(LMG), "project", str(store), "--snapshot-every", "0"],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
        preexec_fn=apply,
    )


@pytest.mark.slow
def test_failed_commit_reports_its_cause(store: Path) -> None:
    """A COMMIT that fails (here: the WAL cannot grow) used to be hidden by the ROLLBACK after
    it ("cannot rollback - no transaction is active"). The cause is one line now, and the next
    `lmg project` with room folds the batch."""
    with eventlog.open(store) as log:
        session = log.create_session()
    assert lmg("project", store, "--snapshot-every", "0").returncode == 0
    with eventlog.open(store) as log:
        log.add_prompts_batch([(session.id, f"{n} " + "y" * 4096) for n in range(2_000)])
    database = store / projections.DATABASE_FILE
    limit = max(database.stat().st_size, 1 << 20) + 256 * 1024  # the WAL needs 8 MB
    done = project_under_size_limit(store, limit)
    line = one_line_error(done, "cannot commit LSNs 1..2000")
    assert "File too large" in line or "No space" in line, line
    assert "no transaction is active" not in line
    assert lmg("project", store, "--snapshot-every", "0").returncode == 0
    done = lmg("sql", store, "SELECT count(*) FROM prompts", "--format", "csv")
    assert done.stdout.splitlines() == ["count_star()", "2000"], done
