"""Does the reserve of zeros pay? The log with it and without it, side by side in one process.

    python -m tests.benchmarks.probe_reserve                 # 60 rounds of 50 appends a side
    python -m tests.benchmarks.probe_reserve --rounds 200 --appends 30

Each round runs every side once, in an order that rotates: `add_prompt` at the default FSYNC
on a log with its reserve (as shipped), on a log with the reserve switched off (frames
appended to a growing file, `fdatasync`), the raw loop of the `single` case (encode, zstd,
`write`, `fsync`), and a direct probe of the disk (1 KiB `pwrite` + sync: a growing file
with `fsync`, a zero-filled file with `fdatasync`). Prints, per side, the median rate over
the rounds with its 10th and 90th percentiles, the median sync time, the time an append
spends outside its sync (from one sync's return to the next one's start), and the per-round
ratios of rates and of median sync times, whose spread is what tells a gain from the noise
of a shared disk.
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

import zstandard

import eventlog
from eventlog import _store

from ._data import ENCODER, pool
from ._sides import _prompts, _sessions

_LEN = struct.Struct("<I")
_RESERVE = _store.Store._reserve


def _no_reserve(self: _store.Store, active: object, need: int) -> None:
    """`Store._reserve` switched off: every frame appends to a growing file."""


class _Log:
    def __init__(self, path: Path, reserve: bool) -> None:
        self.reserve = reserve
        created, sessions = _sessions(1)
        self.session, self.at = sessions[0], 0
        with self._switched():
            self.log = eventlog.open(path)
            self.log.append(created)

    def _switched(self) -> _Switch:
        return _Switch(self.reserve)

    def run(self, n: int) -> tuple[float, list[float]]:
        texts = pool().prompt_texts(n, self.at)
        self.at += n
        syncs: list[float] = []
        add, session, store = self.log.add_prompt, self.session, self.log._store
        with self._switched():
            began = time.perf_counter()
            for text in texts:
                add(session, text)
                syncs.append(store.fsync_s or 0.0)
            return time.perf_counter() - began, syncs


class _Switch:
    def __init__(self, reserve: bool) -> None:
        self.reserve = reserve

    def __enter__(self) -> None:
        _store.Store._reserve = _RESERVE if self.reserve else _no_reserve  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        _store.Store._reserve = _RESERVE  # type: ignore[method-assign]


class _Raw:
    def __init__(self, path: Path) -> None:
        path.mkdir()
        self.fd = os.open(path / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.compress = zstandard.ZstdCompressor(level=3).compress
        self.events = _prompts(1, 100_000)
        self.at = 0

    def run(self, n: int) -> tuple[float, list[float]]:
        events = self.events[self.at : self.at + n]
        self.at += n
        fd, compress, encode, syncs = self.fd, self.compress, ENCODER.encode, []
        began = time.perf_counter()
        for event in events:
            body = compress(encode(event))
            os.write(fd, _LEN.pack(len(body)) + body)
            t = time.perf_counter()
            os.fsync(fd)
            syncs.append(time.perf_counter() - t)
        return time.perf_counter() - began, syncs


class _Disk:
    """1 KiB `pwrite` + sync at successive offsets of a fresh file, growing or zero-filled."""

    def __init__(self, path: Path, zeros: bool) -> None:
        self.path, self.zeros = path, zeros

    def run(self, n: int) -> tuple[float, list[float]]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if self.zeros:
                os.pwrite(fd, bytes(n * 1024 + 4096), 0)
                os.fsync(fd)
            sync = os.fdatasync if self.zeros else os.fsync
            data, syncs = os.urandom(1024), []
            began = time.perf_counter()
            for i in range(n):
                os.pwrite(fd, data, i * 1024)
                t = time.perf_counter()
                sync(fd)
                syncs.append(time.perf_counter() - t)
            return time.perf_counter() - began, syncs
        finally:
            os.close(fd)


def _spread(values: list[float], fmt: str) -> str:
    v = sorted(values)
    return (
        f"{fmt.format(statistics.median(v))} "
        f"(p10 {fmt.format(v[len(v) // 10])}, p90 {fmt.format(v[len(v) * 9 // 10])})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--appends", type=int, default=50, help="appends (or syncs) a side per round")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="probe-reserve-"))
    try:
        sides: dict[str, Callable[[int], tuple[float, list[float]]]] = {
            "log, reserve": _Log(root / "reserve", reserve=True).run,
            "log, growing": _Log(root / "growing", reserve=False).run,
            "raw loop": _Raw(root / "raw").run,
            "disk, growing + fsync": _Disk(root / "grow.bin", zeros=False).run,
            "disk, zeros + fdatasync": _Disk(root / "zeros.bin", zeros=True).run,
        }
        names = list(sides)
        rates: dict[str, list[float]] = {k: [] for k in names}
        syncs: dict[str, list[float]] = {k: [] for k in names}
        gaps: dict[str, list[float]] = {k: [] for k in names}  # not syncing, per append
        before = os.getloadavg()
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                seconds, took = sides[name](args.appends)
                rates[name].append(args.appends / seconds)
                syncs[name].append(statistics.median(took) * 1e6)
                gaps[name].append((seconds - sum(took)) / args.appends * 1e6)
        after = os.getloadavg()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.rounds} rounds of {args.appends}; load average before {before}, after {after}")
    for name in names:
        print(
            f"{name:24} {_spread(rates[name], '{:,.0f}')} /s; "
            f"sync p50 {_spread(syncs[name], '{:.0f}')} µs; "
            f"the rest {_spread(gaps[name], '{:.0f}')} µs an append"
        )
    pairs = [
        ("log, reserve", "log, growing"),
        ("log, reserve", "raw loop"),
        ("log, growing", "raw loop"),
        ("disk, zeros + fdatasync", "disk, growing + fsync"),
    ]
    for a, b in pairs:
        ratios = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
        faster = [y / x for x, y in zip(syncs[a], syncs[b], strict=True)]
        print(
            f"{a} / {b}: appends {_spread(ratios, '{:.2f}x')}, "
            f"syncs {_spread(faster, '{:.2f}x')} as fast, per round"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
