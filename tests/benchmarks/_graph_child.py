"""Child processes of the projections' benchmarks: ``python -m tests.benchmarks._graph_child``.

    project STORE OUT            a following projector, as `lmg project STORE --follow` runs
                                 it; prints "ready" once caught up, writes its commits to OUT
                                 (JSON) after SIGTERM
    append STORE OUT RATE SECS   a steady appender: RATE events/s for SECS seconds, in one
                                 request every TICK_S; prints "started", writes each
                                 request's (first LSN, events, time) to OUT
    rss STORE DATABASE           an embedded MemoryGraph: open (folding any backlog), a few
                                 hundred reads, print the peak RSS and timings as JSON

Times are `time.monotonic_ns()`, one clock for every process of a machine (Linux).
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import threading
import time
import uuid
from itertools import islice
from pathlib import Path
from typing import Any

import msgspec

import eventlog

from ._graph_data import mixed_chunks

__all__ = ["TICK_S", "main"]

TICK_S = 0.01  # the appender's request interval: 2,000 events/s is 20 events per request

_ENCODE = msgspec.json.Encoder().encode


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in KiB: VmHWM (peak resident set of this process's
    memory map since exec) or VmRSS (now); -1 where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def _peak_kb() -> int:
    """The peak RSS of this process. Not `ru_maxrss`: when a large parent spawns a child,
    Linux carries the parent's high-water mark into the child's `ru_maxrss` across the
    exec (it records the memory map it replaces), so a child of a 300 MB benchmark reports
    at least 300 MB whatever it does. VmHWM belongs to the new memory map alone."""
    return _status_kb("VmHWM")


def project(store: Path, out: Path) -> None:
    from projections import Progress, Projector  # noqa: PLC0415 (see `rss`)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    commits: list[tuple[int, int, float, float | None, int]] = []

    def on_progress(p: Progress) -> None:
        commits.append((time.monotonic_ns(), p.checkpoint, p.waited_ms, p.lag_ms, p.lag_events))

    with Projector(store, snapshots=None) as projector:  # the fold alone
        projector.catch_up()
        caught_up = projector.checkpoint
        print("ready", flush=True)
        projector.follow(stop, on_progress=on_progress)
        waited = projector.progress().waited_ms
    out.write_bytes(
        _ENCODE({"caught_up": caught_up, "commits": commits, "waited_ms_total": waited})
    )


def append(store: Path, out: Path, rate: float, seconds: float) -> None:
    per_tick = max(1, round(rate * TICK_S))
    ticks = int(seconds / TICK_S)
    flat = (e for chunk in mixed_chunks(seed=7) for e in chunk)
    requests = [list(islice(flat, per_tick)) for _ in range(ticks)]  # built before timing
    done: list[tuple[int, int, int, int]] = []
    late = 0
    with eventlog.open(store) as log:  # default durability: FSYNC
        print("started", flush=True)
        start = time.monotonic()
        for k, request in enumerate(requests):
            due = start + k * TICK_S
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -TICK_S:
                late += 1
            asked = time.monotonic_ns()
            appended = log.append(request)
            done.append((appended.first_lsn, len(request), asked, time.monotonic_ns()))
        elapsed = time.monotonic() - start
    out.write_bytes(_ENCODE({"requests": done, "late": late, "elapsed_s": elapsed}))


def rss(store: Path, database: Path) -> None:
    import_kb = _peak_kb()
    # Imported here, not at the top, so that the memory of the imports can be told apart.
    from projections import MemoryGraph  # noqa: PLC0415

    imported_kb = _peak_kb()
    began = time.perf_counter()
    with MemoryGraph.open(store, database=database) as g:
        open_s = time.perf_counter() - began
        open_kb = _peak_kb()

        def ids(table: str, k: int) -> list[uuid.UUID]:
            sql = f"SELECT id FROM {table} USING SAMPLE reservoir({k} ROWS) REPEATABLE (7)"
            return [row[0] for row in g.rows(sql)]

        reads = 0
        began = time.perf_counter()
        for node in ids("prompts", 100) + ids("responses", 100) + ids("tool_invocations", 50):
            g.get_node(node)
            reads += 1
        for session in ids("sessions", 50):
            g.context_window(session, 10)
            reads += 1
        for response in ids("responses", 20):
            g.ancestors(response, depth=5)
            reads += 1
        for _ in range(5):
            g.rows("SELECT * FROM agent_stats")
            reads += 1
        reads_s = time.perf_counter() - began
        # the instance's own setting (the caller's SQL may not read it)
        memory_limit = g._run(
            lambda r: r.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        )
        checkpoint = g.stats().checkpoint_lsn
    result: dict[str, Any] = {
        "start_kb": import_kb,
        "imported_kb": imported_kb,
        "open_kb": open_kb,
        "max_kb": _peak_kb(),
        "end_kb": _status_kb("VmRSS"),
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "open_s": open_s,
        "reads": reads,
        "reads_s": reads_s,
        "checkpoint": checkpoint,
        "memory_limit": memory_limit,
    }
    print(_ENCODE(result).decode(), flush=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks._graph_child")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("project")
    a.add_argument("store", type=Path)
    a.add_argument("out", type=Path)
    b = sub.add_parser("append")
    b.add_argument("store", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("rate", type=float)
    b.add_argument("seconds", type=float)
    c = sub.add_parser("rss")
    c.add_argument("store", type=Path)
    c.add_argument("database", type=Path)
    args = p.parse_args(argv)
    if args.command == "project":
        project(args.store, args.out)
    elif args.command == "append":
        append(args.store, args.out, args.rate, args.seconds)
    else:
        rss(args.store, args.database)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
