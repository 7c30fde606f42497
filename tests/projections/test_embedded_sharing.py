"""An embedded `MemoryGraph` beside readers in other processes (issue 10, item 10).

The graph used to hold the gate and the database file for its whole life: `lmg sql` waited
10 s and failed, a plain read-only DuckDB connect failed at once, and a process holding a
read-only connection made `MemoryGraph.open` fail. It now opens the file only to read and lets
go when a reader waits or when it is idle. Real processes throughout.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import projections
from projections import DatabaseBusy, MemoryGraph
from tests._processes import LMG, WAIT_S, Child

pytestmark = pytest.mark.slow

COUNT = "SELECT count(*) AS c FROM sessions"

HOLDER = """
import duckdb, pathlib, sys, time
con = duckdb.connect(sys.argv[1], read_only=True)
print("holding", flush=True)
while not pathlib.Path(sys.argv[2]).exists():
    time.sleep(0.01)
con.close()
"""
"""A notebook's read-only connection: it ignores the gate, and holds until told to stop."""

PLAIN_READ = """
import duckdb, sys
with duckdb.connect(sys.argv[1], read_only=True) as con:
    print(con.execute("SELECT count(*) FROM sessions").fetchall()[0][0])
"""


def lmg_sql(
    store: Path, query: str = COUNT, wait_s: float = 2.0
) -> subprocess.CompletedProcess[str]:
    """`lmg sql` in a child process, allowed to wait `wait_s` for the database."""
    return subprocess.run(
        [str(LMG), "sql", str(store), query, "--format", "json", "--wait", str(wait_s)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def sessions_seen(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)["c"])


@pytest.fixture
def holder(store: Path, tmp_path: Path) -> Iterator[tuple[Child, Path]]:
    """A child holding the store's database open read-only until the yielded path exists."""
    with MemoryGraph.open(store) as graph:  # the database must exist to be opened read-only
        graph.create_session()
    release = tmp_path / "release"
    child = Child(
        [sys.executable, "-c", HOLDER, str(store / "projections.duckdb"), str(release)],
        tmp_path,
        "holder",
    )
    try:
        child.wait_for(lambda: "holding" in child.stdout(), "its connection")
        yield child, release
    finally:
        child.kill()


def test_lmg_sql_gets_in_while_the_graph_holds_the_database(store: Path) -> None:
    """A reader that announces itself (`lmg sql`) gets the database from a graph in the middle
    of a hold (a long `idle_s`), within its two-second wait; the graph then reads its own
    writes again."""
    with MemoryGraph.open(store, idle_s=60.0) as graph:
        graph.create_session()
        assert graph.rows(COUNT) == [(1,)]  # the graph holds the file now, for up to 60 s

        began = time.monotonic()
        assert sessions_seen(lmg_sql(store)) == 1
        assert time.monotonic() - began < WAIT_S

        graph.create_session()
        assert graph.rows(COUNT) == [(2,)]  # back in, read-your-writes
        assert sessions_seen(lmg_sql(store)) == 2


def test_plain_duckdb_reads_beside_an_idle_graph(store: Path, tmp_path: Path) -> None:
    """A reader that ignores the gate (`duckdb.connect(read_only=True)`) opens the file once
    the graph has been idle for `idle_s`."""
    with MemoryGraph.open(store, idle_s=0.1) as graph:
        graph.create_session()
        assert graph.rows(COUNT) == [(1,)]
        time.sleep(0.3)
        read = subprocess.run(
            [sys.executable, "-c", PLAIN_READ, str(store / "projections.duckdb")],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=False,
        )
        assert read.returncode == 0, read.stderr
        assert read.stdout.strip() == "1"
        graph.create_session()
        assert graph.rows(COUNT) == [(2,)]


def test_graph_opens_and_appends_while_another_process_holds_the_file(
    store: Path, holder: tuple[Child, Path]
) -> None:
    """A notebook's read-only connection made `MemoryGraph.open` fail; now the graph opens and
    appends, a read waits `wait_s` and says what to do, and reads once the connection ends."""
    child, release = holder
    with MemoryGraph.open(store, wait_s=0.3) as graph:
        graph.create_session()  # appends need no database
        with pytest.raises(DatabaseBusy) as busy:
            graph.rows(COUNT)
        message = str(busy.value)
        assert "\n" not in message
        for words in ("stayed locked by another process for 0.3 s", "close it", "lmg sql"):
            assert words in message, message

        release.touch()
        assert child.wait() == 0, child.stderr()
        assert graph.rows(COUNT) == [(2,)]  # the backlog folded, both sessions seen


def test_graph_read_waits_for_a_foreign_connection_to_close(
    store: Path, holder: tuple[Child, Path]
) -> None:
    """A read retries while a connection that ignores the gate holds the file."""
    child, release = holder
    with MemoryGraph.open(store, wait_s=WAIT_S) as graph:
        graph.create_session()
        threading.Timer(0.3, release.touch).start()
        assert graph.rows(COUNT) == [(2,)]
    assert child.wait() == 0, child.stderr()


def test_relation_from_sql_keeps_the_database_until_it_is_garbage(store: Path) -> None:
    """A relation reads lazily on the graph's connection: letting go under it would break it.
    While it lives, readers elsewhere wait (and are told who holds the file); then they get in."""
    with MemoryGraph.open(store, idle_s=0.05) as graph:
        graph.create_session()
        relation = graph.sql(COUNT)
        busy = lmg_sql(store, wait_s=0.5)
        assert busy.returncode != 0
        assert "an embedded MemoryGraph" in busy.stderr and "try again" in busy.stderr
        assert relation.fetchall() == [(1,)]
        del relation
        assert sessions_seen(lmg_sql(store)) == 1


def test_threads_read_while_another_process_polls_lmg_sql(store: Path) -> None:
    """Several threads append and read (each its own writes) while `lmg sql` runs again and
    again in other processes: every read and every query succeeds."""
    failures: list[BaseException] = []
    done = threading.Event()
    with MemoryGraph.open(store) as graph:

        def agent() -> None:
            try:
                mine = 0
                while not done.is_set():
                    session = graph.create_session().id
                    mine += 1
                    assert graph.get_session(session).id == session
                    (count,) = graph.rows(COUNT)[0]
                    assert count >= mine
            except BaseException as exc:
                failures.append(exc)

        agents = [threading.Thread(target=agent) for _ in range(4)]
        for thread in agents:
            thread.start()
        try:
            seen = [sessions_seen(lmg_sql(store, wait_s=5.0)) for _ in range(4)]
        finally:
            done.set()
            for thread in agents:
                thread.join(WAIT_S)
        assert not failures, failures
        assert seen == sorted(seen) and seen[-1] > 0
        assert graph.rows(COUNT)[0][0] == sessions_seen(lmg_sql(store))


def test_connect_gets_in_beside_an_async_graph(store: Path) -> None:
    """`AsyncMemoryGraph` shares the database the same way (reads run in worker threads)."""

    async def main() -> None:
        graph = await projections.AsyncMemoryGraph.open(store, idle_s=60.0)
        try:
            await graph.create_session()
            assert await graph.sql(COUNT) == [(1,)]
            assert sessions_seen(await asyncio.to_thread(lmg_sql, store)) == 1
            await graph.create_session()
            assert await graph.sql(COUNT) == [(2,)]
        finally:
            await graph.close()

    asyncio.run(main())
