"""64 asyncio agents with the committer's pacing and without it, beside sqlite3, in one process.

    python -m tests.benchmarks.probe_async_pacing                  # 30 rounds of 1,280 a side
    python -m tests.benchmarks.probe_async_pacing --rounds 40 --appends 2560
    python -m tests.benchmarks.probe_async_pacing --sync-us 200   # a quiet disk, emulated

Each round runs every side once, in an order that rotates: the `concurrent` case's 64 asyncio
agents (`add_prompt`, default FSYNC) on a log whose committer paces its groups as shipped
(`eventlog.log._Pacing`: two cohorts when building the agents' requests outlasts two syncs),
the same with the pacing switched off (every group takes the whole queue, as before), and
sqlite3 WAL FULL, one commit per event. Prints per side the median rate over the rounds
(10th and 90th percentiles), CPU per event (`time.process_time`, all threads) and events per
frame; then the per-round ratios: paced / unpaced, and each against sqlite3.

On a shared machine whose disk takes milliseconds a sync, the log's syncs, not its Python,
bound the rate, and the pacing rightly keeps one group (the sides should come out alike).
``--sync-us N`` shows the other regime there: the log's `os.fdatasync` is replaced by a
sleep of N µs (which, like a sync, releases the GIL), as on a quiet disk that syncs in
about 0.2 ms; nothing is synced then, and sqlite3's rate means nothing beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eventlog import log as eventlog_log

from . import _sides as s
from ._harness import Runner

_SPLIT = eventlog_log._Pacing.split
_MERGE = eventlog_log._Pacing.merge


@contextmanager
def _paced(on: bool) -> Iterator[None]:
    """The committer's pacing as shipped, or switched off: every group takes the queue."""
    if not on:
        eventlog_log._Pacing.split = lambda self, queued, agents: queued  # type: ignore[method-assign]
        eventlog_log._Pacing.merge = lambda self, queued, agents: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        eventlog_log._Pacing.split = _SPLIT  # type: ignore[method-assign]
        eventlog_log._Pacing.merge = _MERGE  # type: ignore[method-assign]


@contextmanager
def _syncs(us: int) -> Iterator[None]:
    """`os.fdatasync` as it is (`us` 0), or a sleep of `us` µs in its place."""
    real = os.fdatasync
    if us:
        os.fdatasync = lambda fd: time.sleep(us / 1e6)
    try:
        yield
    finally:
        os.fdatasync = real


class _Agents:
    """`LogAsyncAgents` with the pacing on or off, counting its frames as it goes."""

    def __init__(self, path: Path, total: int, paced: bool, sync_us: int) -> None:
        self.paced, self.sync_us = paced, sync_us
        self.runner = s.LogAsyncAgents(path, total)

    def run(self, n: int) -> float:
        with _paced(self.paced), _syncs(self.sync_us):
            return self.runner.run(n)

    def close(self) -> dict[str, float]:
        return self.runner.close()


def _spread(values: list[float], fmt: str) -> str:
    v = sorted(values)
    return (
        f"{fmt.format(statistics.median(v))} "
        f"(p10 {fmt.format(v[len(v) // 10])}, p90 {fmt.format(v[len(v) * 9 // 10])})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--appends", type=int, default=1280, help="appends a log side per round")
    p.add_argument("--sqlite", type=int, default=300, help="commits of sqlite3 per round")
    p.add_argument("--sync-us", type=int, default=0, help="emulate syncs of this many µs")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="probe-async-pacing-"))
    count = {"paced": args.appends, "unpaced": args.appends, "sqlite3": args.sqlite}
    try:
        total = args.rounds * args.appends
        runners: dict[str, Runner] = {}
        for name in count:
            (root / name).mkdir()
            runners[name] = (
                s.SqlitePerEvent(root / name, args.rounds * args.sqlite + 100)
                if name == "sqlite3"
                else _Agents(root / name, total + 1280, name == "paced", args.sync_us)
            )
            runners[name].run(1280 if name != "sqlite3" else 100)  # warm-up
        names = list(count)
        rates: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, list[float]] = {k: [] for k in names}
        before = os.getloadavg()
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                c = time.process_time()
                seconds = runners[name].run(count[name])
                cpu[name].append((time.process_time() - c) / count[name] * 1e6)
                rates[name].append(count[name] / seconds)
        after = os.getloadavg()
        frames = {name: runner.close() for name, runner in runners.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    emulated = f"; syncs emulated: {args.sync_us} µs sleeps" if args.sync_us else ""
    print(f"{args.rounds} rounds; load average before {before}, after {after}{emulated}")
    for name in names:
        per_frame = frames[name].get("events_per_frame")
        print(
            f"{name:8} {_spread(rates[name], '{:,.0f}')} events/s; "
            f"CPU {_spread(cpu[name], '{:.1f}')} µs an event"
            + (f"; {per_frame:.1f} events a frame" if per_frame else "")
        )
    for a, b in [("paced", "unpaced"), ("paced", "sqlite3"), ("unpaced", "sqlite3")]:
        ratios = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
        print(f"{a} / {b}: {_spread(ratios, '{:.2f}x')} per round")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
