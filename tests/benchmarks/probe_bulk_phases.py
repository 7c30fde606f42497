"""Where a bulk append's CPU goes, phase by phase, beside the raw loop's.

    python -m tests.benchmarks.probe_bulk_phases                  # 12 rounds, 5,000 events
    python -m tests.benchmarks.probe_bulk_phases --rounds 20 --events 10000 --case bulk

For `bulk`'s short conversations and `bulk_long`'s long ones (the same events as those
cases), appends batches of 1,000 prebuilt events to a fresh store with durability NONE (no
fsync hides the CPU), in rounds alternating with the raw loop of those cases (encode, zstd
level 3, one write per batch). Each phase of the log's write path is timed with
`time.thread_time` around the function that does it (the calling thread's CPU: the
critical path; a big body's second half is compressed on a helper thread meanwhile), and
the garbage collector by `gc.callbacks`. Prints the medians over rounds, in microseconds
per event, and what the log's thread may spend for 0.8x the raw loop. Issue 14's bulk
target is measured by `python -m tests.benchmarks.run --only bulk,bulk_long`; this says
what bounds it (docs/benchmarks.md, "Bulk appends: one encoding, measured").
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard

import eventlog
from eventlog import _commands, _resolve, _store
from eventlog import events as ev

from . import _sides as s
from ._data import ENCODER, batches, pool

PHASES = [  # (module or class, function, label), in the order of the write path
    (_commands, "_round_trip", "type check: encode, decode"),
    (_commands, "check", "limits"),
    (_resolve.Resolver, "resolve_all", "resolver"),
    (_store, "encode_body", "frame: encode the events again"),
    (_store, "encode_frame", "frame: zstd (this thread's half), CRC"),
    (_store, "_pwrite_all", "pwrite"),
]
_SPENT: dict[str, float] = {}


def _timed(owner: Any, name: str, label: str) -> None:
    """Replace `owner.name` by a wrapper adding its thread CPU to `_SPENT[label]`."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.thread_time()
        try:
            return inner(*args, **kwargs)
        finally:
            _SPENT[label] = _SPENT.get(label, 0.0) + time.thread_time() - began

    setattr(owner, name, wrapper)


def _gc_timer() -> None:
    began = [0.0]

    def callback(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.thread_time()
        else:
            _SPENT["garbage collector"] = (
                _SPENT.get("garbage collector", 0.0) + time.thread_time() - began[0]
            )

    gc.callbacks.append(callback)


def _log(events: list[ev.EventBase], first: list[ev.SessionCreated]) -> Callable[[Path], float]:
    def run(path: Path) -> float:
        with eventlog.open(path, durability=eventlog.Durability.NONE) as log:
            if first:
                log.append(first)
            _SPENT.clear()
            began = time.thread_time()
            for batch in batches(events, s.BATCH):
                log.append(batch)
            return time.thread_time() - began

    return run


def _raw(events: list[ev.EventBase]) -> Callable[[Path], float]:
    def run(path: Path) -> float:
        path.mkdir(parents=True)
        cctx = zstandard.ZstdCompressor(level=s.LEVEL)
        fd = os.open(path / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            began = time.thread_time()
            for batch in batches(events, s.BATCH):
                body = cctx.compress(ENCODER.encode(batch))
                os.write(fd, len(body).to_bytes(4, "little") + body)
            return time.thread_time() - began
        finally:
            os.close(fd)

    return run


def measure(
    name: str, events: list[ev.EventBase], first: list[ev.SessionCreated], rounds: int
) -> None:
    log_runs: list[dict[str, float]] = []
    raw_runs: list[float] = []
    root = Path(tempfile.mkdtemp(prefix="lmg-bulk-phases-"))
    try:
        for r in range(rounds + 1):  # the first round warms up and is not counted
            sides = [("log", _log(events, first)), ("raw", _raw(events))]
            for side, run in sides if r % 2 else sides[::-1]:
                gc.collect()
                total = run(root / f"{side}-{r}")
                shutil.rmtree(root / f"{side}-{r}", ignore_errors=True)
                if r and side == "log":
                    log_runs.append({**_SPENT, "total": total})
                elif r:
                    raw_runs.append(total)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n = len(events)

    def per_event(values: list[float]) -> float:
        return statistics.median(values) / n * 1e6

    raw = per_event(raw_runs)
    total = per_event([run["total"] for run in log_runs])
    print(f"\n== {name}: {n:,} events, {rounds} rounds, load {os.getloadavg()[0]:.1f} ==")
    print(f"{'thread CPU, us per event (medians)':<44}{'log':>8}")
    labels = [*(p[2] for p in PHASES), "garbage collector"]
    for label in labels:
        print(f"  {label:<42}{per_event([run.get(label, 0.0) for run in log_runs]):>8.2f}")
    phases = sum(per_event([run.get(label, 0.0) for run in log_runs]) for label in labels)
    print(f"  {'the rest (append, requests, bookkeeping)':<42}{max(0.0, total - phases):>8.2f}")
    print(f"{'log, in all':<44}{total:>8.2f}")
    print(f"{'raw loop (encode, zstd, write), in all':<44}{raw:>8.2f}")
    print(f"raw/log {raw / total:.2f}x; for 0.8x the log's thread may spend {raw / 0.8:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.probe_bulk_phases")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--events", type=int, default=5_000)
    p.add_argument("--case", choices=["bulk", "bulk_long", "both"], default="both")
    args = p.parse_args(argv)
    pool()
    for owner, name, label in PHASES:
        _timed(owner, name, label)
    _gc_timer()
    if args.case in ("bulk", "both"):
        created, _ = s._sessions(64)
        measure("bulk (short text)", s._conversations(args.events), created, args.rounds)
    if args.case in ("bulk_long", "both"):
        measure("bulk_long (long text)", s.long_conversations(args.events), [], args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
