"""The floor of one durable commit at a time on this disk, beside sqlite3 and the log.

    python -m tests.benchmarks.probe_sync_floor                 # 40 rounds of 200 a side
    python -m tests.benchmarks.probe_sync_floor --rounds 60 --appends 300
    strace -c -f python -m tests.benchmarks.probe_sync_floor --only log --rounds 1 --appends 2000

The issue asks single durable appends for 1.2x sqlite3 (WAL, synchronous=FULL). Every
scheme that acknowledges an append only once its bytes are synced, as the log's default
does, pays one sync per append; sqlite3 pays one per commit. So the least any of them can
cost is the disk's own: this probe measures it with no encoding at all, a prebuilt record
of a single append's size (560 bytes) written at successive offsets of a file zero-filled
and synced beforehand, so each sync writes data blocks only:

- ``floor fdatasync``: `pwrite` + `fdatasync` (what the log and sqlite3 do);
- ``floor O_DSYNC``: `pwrite` to a file opened with `O_DSYNC` (one syscall);
- ``floor RWF_DSYNC``: `pwritev` with `RWF_DSYNC` (one syscall, an ordinary descriptor);
- ``floor O_DIRECT``: `O_DIRECT | O_DSYNC`, the 4 KiB block holding the record written
  whole, past the page cache;
- ``floor 4 KiB``: `pwrite` of 4,096 bytes + `fdatasync` (sqlite3's WAL writes a page);
- ``growing fsync``: 560 bytes appended to a growing file + `fsync` (the raw loop's file);

beside the benchmark's own sides: ``raw loop`` (encode, zstd, write, fsync), ``sqlite3``
(one INSERT and commit per event) and ``log`` (`add_prompt`, default FSYNC). Each round runs
every side once in an order that rotates. Per side: the median rate over the rounds (10th
and 90th percentiles), the CPU a commit costs (`time.process_time`: all threads) and the
rest of its time (waiting on the disk). Then per-round ratios against the fastest floor,
and what the 1.2x target would need of it. ``--only NAME`` runs one side alone (for
``strace -c`` or ``perf stat``): the syscalls an append makes beside the floor's two.

``--cpu`` measures the other half of a commit's time, its CPU, with no sync at all: the log
at `Durability.NONE`, sqlite3 at ``synchronous=OFF``, the raw loop and the floor without
their syncs. An append costs its sync plus its CPU; so for 1.2x sqlite3's rate on the same
disk, the log's CPU per append must stay under (sqlite3's CPU - 0.2 x one sync) / 1.2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import eventlog

from . import _sides as s
from ._data import ENCODER
from ._harness import Runner

_LEN = struct.Struct("<I")

_FLOORS = ["floor fdatasync", "floor O_DSYNC", "floor RWF_DSYNC", "floor O_DIRECT"]


class _NoSyncFloor(s.SyncFloor):
    """The floor's `pwrite` alone."""

    def run(self, n: int) -> float:
        fd, record, size, at = self.fd, self.record, self.size, self.at
        self.at += n * size
        began = time.perf_counter()
        for off in range(at, at + n * size, size):
            os.pwrite(fd, record, off)
        return time.perf_counter() - began


class _NoSyncRaw(s.RawSingle):
    """The raw loop without its fsync: encode, zstd, write."""

    def run(self, n: int) -> float:
        events = [next(self.events) for _ in range(n)]
        fd, compress, encode, pack = self.fd, self.cctx.compress, ENCODER.encode, _LEN.pack
        began = time.perf_counter()
        for event in events:
            body = compress(encode(event))
            os.write(fd, pack(len(body)) + body)
        return time.perf_counter() - began


class _SqliteOff(s.SqlitePerEvent):
    """sqlite3 as in the benchmark, but ``synchronous=OFF``: a commit without its sync."""

    def __init__(self, path: Path, total: int) -> None:
        super().__init__(path, total)
        self.conn.execute("PRAGMA synchronous=OFF")


class _LogNone(s.LogAddPrompt):
    """`add_prompt` at `Durability.NONE`: an append without its sync."""

    def __init__(self, path: Path, total: int) -> None:
        created, sessions = s._sessions(1)
        self.session = sessions[0]
        self.texts = s._Texts()
        self.log = eventlog.open(path / "log", durability=eventlog.Durability.NONE)
        self.log.append(created)
        self.before = self.log.stats().stored_bytes


def _cpu_sides() -> dict[str, Callable[[Path, int], Runner]]:
    return {
        "floor, no sync": _NoSyncFloor,
        "raw loop, no sync": _NoSyncRaw,
        "sqlite3, OFF": _SqliteOff,
        "log, NONE": _LogNone,
    }


def _sides() -> dict[str, Callable[[Path, int], Runner]]:
    return {
        "floor fdatasync": lambda p, n: s.SyncFloor(p, n, "fdatasync"),
        "floor O_DSYNC": lambda p, n: s.SyncFloor(p, n, "o_dsync"),
        "floor RWF_DSYNC": lambda p, n: s.SyncFloor(p, n, "rwf_dsync"),
        "floor O_DIRECT": lambda p, n: s.SyncFloor(p, n, "o_direct"),
        "floor 4 KiB": lambda p, n: s.SyncFloor(p, n, "fdatasync", 4096),
        "growing fsync": _Growing,
        "raw loop": s.RawSingle,
        "sqlite3": s.SqlitePerEvent,
        "log": s.LogAddPrompt,
    }


class _Growing:
    """560 bytes appended to a growing file, then `fsync`: the raw loop's file, no encoding."""

    def __init__(self, path: Path, total: int) -> None:
        self.fd = os.open(path / "grow.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.record = os.urandom(s.FLOOR_RECORD)

    def run(self, n: int) -> float:
        fd, record = self.fd, self.record
        began = time.perf_counter()
        for _ in range(n):
            os.write(fd, record)
            os.fsync(fd)
        return time.perf_counter() - began

    def close(self) -> dict[str, float]:
        os.close(self.fd)
        return {}


def _spread(values: list[float], fmt: str) -> str:
    v = sorted(values)
    return (
        f"{fmt.format(statistics.median(v))} "
        f"(p10 {fmt.format(v[len(v) // 10])}, p90 {fmt.format(v[len(v) * 9 // 10])}, "
        f"best {fmt.format(v[-1])})"
    )


def main(argv: list[str] | None = None) -> int:
    sides = {**_sides(), **_cpu_sides()}
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--appends", type=int, default=200, help="commits a side per round")
    p.add_argument("--only", choices=sorted(sides), help="run this side alone")
    p.add_argument("--cpu", action="store_true", help="the sides without their syncs")
    args = p.parse_args(argv)
    if not args.only:
        sides = _cpu_sides() if args.cpu else _sides()
    names = [args.only] if args.only else list(sides)
    root = Path(tempfile.mkdtemp(prefix="probe-sync-floor-"))
    try:
        runners: dict[str, Runner] = {}
        for name in names:
            (root / name).mkdir()
            runners[name] = sides[name](root / name, args.rounds * args.appends + 20)
            runners[name].run(min(20, args.appends))  # first files, caches, imports
        rates: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, list[float]] = {k: [] for k in names}  # µs a commit
        before = os.getloadavg()
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                c = time.process_time()
                seconds = runners[name].run(args.appends)
                cpu[name].append((time.process_time() - c) / args.appends * 1e6)
                rates[name].append(args.appends / seconds)
        after = os.getloadavg()
        for runner in runners.values():
            runner.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.rounds} rounds of {args.appends}; load average before {before}, after {after}")
    for name in names:
        wall = [1e6 / x for x in rates[name]]
        rest = [w - c for w, c in zip(wall, cpu[name], strict=True)]
        print(
            f"{name:16} {_spread(rates[name], '{:,.0f}')} commits/s; "
            f"CPU {_spread(cpu[name], '{:.0f}')} µs, the rest {statistics.median(rest):.0f} µs"
        )
    floors = [n for n in _FLOORS if n in names]
    if not floors or len(names) < 2:
        return 0
    best = max(floors, key=lambda n: statistics.median(rates[n]))
    print(f"fastest floor: {best}; per-round ratios against it:")
    for name in names:
        if name != best:
            ratios = [a / b for a, b in zip(rates[name], rates[best], strict=True)]
            print(f"  {name:16} {_spread(ratios, '{:.2f}x')}")
    if "sqlite3" in names:
        of_floor = statistics.median(
            a / b for a, b in zip(rates["sqlite3"], rates[best], strict=True)
        )
        verdict = "impossible" if 1.2 * of_floor > 1 else "possible in principle"
        print(
            f"1.2x sqlite3 needs {1.2 * of_floor:.2f}x the floor: {verdict} for any append "
            "that syncs once before it is acknowledged"
        )
        quick = max(rates["sqlite3"]) / max(rates[best])
        print(
            f"in the disk's quickest moments (each side's best round): sqlite3 {quick:.2f}x "
            f"the floor, so 1.2x sqlite3 needs {1.2 * quick:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
