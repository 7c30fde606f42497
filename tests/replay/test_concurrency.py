"""Replay beside real writers: appenders, a following projector taking snapshots, pruning.

Two appender processes (this file run as a script) append requests of one shape only: a new
session and exactly `K` prompts in it, as one all-or-nothing batch. Every view of the log at a
point therefore has ``(lsn + 1) / (K + 1)`` sessions, each with ``prompt_count == K``, and `K`
prompts per session; a view holding half a batch would break one of those. Meanwhile
``lmg project --follow --snapshot-every 200`` folds and takes snapshots, and ``lmg snapshot
--keep 3`` now and then takes one more and prunes, deleting chunks. The test process replays
the latest point and "now" again and again: no view may be partial, and no snapshot may be
seen half-written or half-deleted (which would be a `SnapshotSkipped` warning).
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eventlog
import projections
import replay
from eventlog import events as ev
from tests._processes import LMG, WAIT_S, Child

K = 5  # prompts per request, after its session
SECONDS = 3.0  # how long the readers replay while everything runs
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# -- the appender (this file, run as a script) ---------------------------------------------------


def _say(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _append_until_sigterm(store: str, threads: int, pause_s: float) -> None:
    """Append session + K prompts requests from `threads` threads until SIGTERM."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    counts = [0] * threads

    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:

        def work(n: int) -> None:
            while not stopping.is_set():
                session = uuid.uuid4()
                log.append(
                    [
                        ev.SessionCreated(id=session, metadata={"writer": n}),
                        *(
                            ev.PromptAdded(id=uuid.uuid4(), session_id=session, content=f"p{i}")
                            for i in range(K)
                        ),
                    ]
                )
                counts[n] += 1
                time.sleep(pause_s)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        _say({"ready": True})
        for worker in workers:
            worker.join()
        log.flush()
        _say({"requests": sum(counts), "next_lsn": log.next_lsn()})


# -- processes -----------------------------------------------------------------------------------


@pytest.fixture
def children(tmp_path: Path) -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:  # whatever a failing test left running
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
                try:
                    child.proc.wait(10)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()


# -- checking one view ---------------------------------------------------------------------------


def check_view(view: replay.View) -> tuple[int, int]:
    """Assert the view holds whole requests only; returns (its LSN, its sessions)."""
    lsn = view.lsn
    assert (lsn + 1) % (K + 1) == 0, f"LSN {lsn} is not the end of a request"
    ((sessions, prompts, short, low, high),) = view.rows(
        "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM prompts), "
        f"(SELECT count(*) FROM sessions WHERE prompt_count <> {K}), "
        "(SELECT min(lsn) FROM lmg_checkpoints), (SELECT max(lsn) FROM lmg_checkpoints)"
    )
    assert low == high == lsn, f"the view's checkpoints {low}..{high}, not {lsn}"
    assert sessions == (lsn + 1) // (K + 1), f"{sessions} sessions at LSN {lsn}"
    assert short == 0, f"{short} sessions without {K} prompts at LSN {lsn}"
    assert prompts == K * sessions, f"{prompts} prompts for {sessions} sessions at LSN {lsn}"
    return lsn, sessions


def tables(view: replay.View) -> dict[str, list[tuple[Any, ...]]]:
    return {t: view.rows(f"SELECT * FROM {t} ORDER BY ALL") for t in projections.TABLE_NAMES}


# -- the test --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_replays_beside_appenders_projector_and_pruning(
    tmp_path: Path, store: Path, children: list[Child]
) -> None:
    started = time.monotonic()
    with eventlog.open(store):
        pass  # created, so every child opens an existing store
    script = [sys.executable, "-m", "tests.replay.test_concurrency", "append", str(store)]
    appenders = [Child([*script, "2", "0.02"], tmp_path, f"append{n}") for n in range(2)]
    children.extend(appenders)
    projector = Child(
        [str(LMG), "project", str(store), "--follow", "--snapshot-every", "200"],
        tmp_path,
        "project",
    )
    children.append(projector)
    for appender in appenders:
        appender.wait_for(appender.said_something, "its ready line")
    projector.wait_for(lambda: bool(replay.snapshots(store)), "its first snapshot")
    projector.wait_for(lambda: "folded to LSN" in projector.stderr(), "its first progress line")
    print(f"children ready after {time.monotonic() - started:.2f} s")

    # Now and then another process takes a snapshot and prunes to 3, deleting chunks.
    pruning = threading.Event()
    pruner_runs: list[subprocess.CompletedProcess[str]] = []

    def prune_loop() -> None:
        while not pruning.wait(0.4):
            pruner_runs.append(
                subprocess.run(
                    [str(LMG), "snapshot", str(store), "--keep", "3"],
                    capture_output=True,
                    text=True,
                    timeout=WAIT_S,
                    check=False,
                )
            )

    pruner = threading.Thread(target=prune_loop)
    pruner.start()

    seen: list[int] = []
    from_snapshots = 0
    skipped: list[str] = []
    try:
        began = progress = time.monotonic()
        # At least SECONDS, and on a loaded machine as long as it takes to see the rounds the
        # assertions below need (4 of them, at 3 points of the log), so long as each round
        # that shows the log grown comes within WAIT_S of the last: a round's replays fold
        # more as the log grows, so on a loaded machine a fixed time held only 3.
        while time.monotonic() - began < SECONDS or len(seen) < 4 or len(set(seen)) < 3:
            waited = time.monotonic() - progress
            assert waited < WAIT_S, f"no round saw the log grow in {waited:.0f} s: {seen}"
            if len(seen) < 2 or seen[-1] > seen[-2]:
                progress = time.monotonic()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with replay.at(store) as latest:
                    lsn, _ = check_view(latest)
                    from_snapshots += latest.snapshot is not None
                    assert not seen or lsn >= seen[-1], "the log's end went back"
                    seen.append(lsn)
                now = time.time_ns()
                point: int | dt.datetime = now
                if len(seen) % 2:  # a datetime, to the microsecond, now and then
                    point = EPOCH + dt.timedelta(microseconds=now // 1000)
                    now = now // 1000 * 1000
                with replay.at(store, time=point) as past:
                    check_view(past)
                    assert past.ts is None or past.ts <= now
                    assert past.lsn >= lsn, "a later time showed less than an earlier read"
                    from_snapshots += past.snapshot is not None
            skipped += [f"{w.category.__name__}: {w.message}" for w in caught]
        assert not skipped, skipped[:5]
    finally:
        pruning.set()
        pruner.join(WAIT_S)
        codes = [appender.stop() for appender in appenders]
        projector_code = projector.stop()

    assert codes == [0, 0], [a.stderr() for a in appenders]
    assert projector_code == 0, projector.stderr()
    assert "Traceback" not in projector.stderr()
    assert "SnapshotSkipped" not in projector.stderr(), projector.stderr()
    for run in pruner_runs:
        assert run.returncode == 0, run.stderr
        assert "warning" not in run.stderr, run.stderr
    requests = sum(a.lines()[-1]["requests"] for a in appenders)
    with eventlog.open(store, readonly=True) as log:
        assert log.next_lsn() == requests * (K + 1)

    print(f"children stopped after {time.monotonic() - started:.2f} s")
    # The end: a replay from the snapshots equals one folded from zero, table by table.
    with replay.at(store) as latest, replay.at(store, snapshots=False) as fresh:
        assert check_view(latest) == (requests * (K + 1) - 1, requests)
        assert latest.snapshot is not None
        assert tables(latest) == tables(fresh)
    listed = replay.snapshots(store)
    print(
        f"{len(seen)} rounds of two replays, {from_snapshots} from a snapshot; LSNs "
        f"{seen[0]}..{seen[-1]}; {requests} requests; {len(pruner_runs)} pruning runs; "
        f"{len(listed)} snapshots left"
    )
    assert len(seen) >= 4, "too few replays to mean anything"
    assert from_snapshots >= len(seen), "most replays should start from a snapshot"
    assert len(set(seen)) >= 3, "the log should grow while the replays run"
    assert pruner_runs, "no pruning ran beside the replays"


if __name__ == "__main__":
    if sys.argv[1:2] == ["append"]:
        _append_until_sigterm(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1:2]}")
