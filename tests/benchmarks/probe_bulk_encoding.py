"""Bulk appends with one encoding or with the round trip, side by side in one process.

    python -m tests.benchmarks.probe_bulk_encoding              # 8 rounds, 20,000 events
    python -m tests.benchmarks.probe_bulk_encoding --rounds 12 --events 40000

For `bulk`'s short conversations and `bulk_long`'s long ones (the same events as those
cases), appends batches of 1,000 prebuilt events to a fresh store (durability NONE, so no
fsync hides the CPU), in rounds whose order rotates, three ways: as shipped (a bulk request
copied and checked by exact types, encoded once with marks: `_commands._copies`,
`_format.encode_marked`); with that switched off (`_commands.BULK_FROM` past any request:
the MessagePack round trip and a second encoding under the lock, the code before it); and
the raw loop of `bulk` (encode, zstd level 3, one write per batch). Prints, per event, the
medians over rounds of the calling thread's CPU (the critical path: compression's second
half runs on a helper thread) and of the process's CPU, and their ratios to the raw loop.
A ratio in CPU is what a quiet machine's throughput ratio tends to; on a loaded machine it
is the figure to read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import zstandard

import eventlog
from eventlog import _commands
from eventlog import events as ev

from . import _sides as s
from ._data import ENCODER, batches, pool

Clock = Callable[[], float]


def _log_run(
    events: list[ev.EventBase], first: list[ev.SessionCreated], single: bool
) -> Callable[[Path], None]:
    def run(path: Path) -> None:
        saved = _commands.BULK_FROM
        if not single:
            _commands.BULK_FROM = 1 << 62
        try:
            with eventlog.open(path, durability=eventlog.Durability.NONE) as log:
                if first:
                    log.append(first)
                start = _clocks()
                for batch in batches(events, s.BATCH):
                    log.append(batch)
                _spent(start)
        finally:
            _commands.BULK_FROM = saved

    return run


def _raw_run(events: list[ev.EventBase]) -> Callable[[Path], None]:
    def run(path: Path) -> None:
        path.mkdir(parents=True)
        cctx = zstandard.ZstdCompressor(level=s.LEVEL)
        fd = os.open(path / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            start = _clocks()
            for batch in batches(events, s.BATCH):
                body = cctx.compress(ENCODER.encode(batch))
                os.write(fd, len(body).to_bytes(4, "little") + body)
            _spent(start)
        finally:
            os.close(fd)

    return run


_LAST: list[tuple[float, float]] = []


def _clocks() -> tuple[float, float]:
    return time.thread_time(), time.process_time()


def _spent(start: tuple[float, float]) -> None:
    thread, process = _clocks()
    _LAST.append((thread - start[0], process - start[1]))


def measure(
    name: str, events: list[ev.EventBase], first: list[ev.SessionCreated], rounds: int
) -> None:
    sides = {
        "eventlog, one encoding": _log_run(events, first, single=True),
        "eventlog, round trip": _log_run(events, first, single=False),
        "raw loop": _raw_run(events),
    }
    spent: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    root = Path(tempfile.mkdtemp(prefix="lmg-bulk-ab-"))
    try:
        order = list(sides)
        for r in range(rounds + 1):  # the first round warms up and is not counted
            for k in order:
                _LAST.clear()
                sides[k](root / f"{k}-{r}")
                shutil.rmtree(root / f"{k}-{r}", ignore_errors=True)
                if r:
                    spent[k].append(_LAST[0])
            order = order[1:] + order[:1]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n = len(events)
    raw_thread = statistics.median(t for t, _ in spent["raw loop"]) / n * 1e6
    raw_process = statistics.median(p for _, p in spent["raw loop"]) / n * 1e6
    load = os.getloadavg()[0]
    print(f"\n== {name}: {n:,} events, batches of {s.BATCH:,}, {rounds} rounds, load {load:.1f} ==")
    print(f"{'side':<24}{'thread us/ev':>13}{'process us/ev':>14}{'raw/side':>10}{'(process)':>10}")
    for k, values in spent.items():
        thread = statistics.median(t for t, _ in values) / n * 1e6
        process = statistics.median(p for _, p in values) / n * 1e6
        ratios = f"{raw_thread / thread:>9.2f}x{raw_process / process:>9.2f}x"
        print(f"{k:<24}{thread:>13.2f}{process:>14.2f}{ratios}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.probe_bulk_encoding")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--case", choices=["bulk", "bulk_long", "both"], default="both")
    args = p.parse_args(argv)
    pool()
    if args.case in ("bulk", "both"):
        created, _ = s._sessions(64)
        measure("bulk (short text)", s._conversations(args.events), created, args.rounds)
    if args.case in ("bulk_long", "both"):
        measure("bulk_long (long text)", s.long_conversations(args.events), [], args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
