"""Where an append's time goes: cProfile of the log's write path beside the raw loop.

    python -m tests.benchmarks.profile_append               # single and bulk, fsync off
    python -m tests.benchmarks.profile_append --case bulk --events 50000 --top 30
    python -m tests.benchmarks.profile_append --durability fsync

Runs each path under cProfile and prints the time per event by category (zstd, msgspec,
syscalls, the resolver, the store's bookkeeping, ...), for the log and for the raw loop of
the same case, then the top functions. Profiles of several threads (the asyncio front end
commits in a worker thread) are added up, so figures are CPU per event, not wall time.
By default the log runs with ``Durability.NONE`` and
the raw loop without fsync, so the CPU work beyond the raw loop is not hidden by fsync
latency; the plain wall time of each (unprofiled) run is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard

import eventlog
import eventlog.log as eventlog_log

from . import _sides as s
from ._data import ENCODER, batches, pool

_LEN = struct.Struct("<I")
WAITING = "(idle: waiting on other threads)"

# (category, test on "file:function") in order; the first match wins.
_CATEGORIES: list[tuple[str, Callable[[str], bool]]] = [
    (WAITING, lambda k: "epoll" in k or ("lock" in k and "acquire" in k) or ":wait" in k),
    ("zstd compress", lambda k: "ZstdCompressor" in k or "zstd" in k.lower()),
    ("msgspec encode", lambda k: "Encoder" in k and "encode" in k),
    ("msgspec decode", lambda k: "Decoder" in k and "decode" in k),
    ("fsync", lambda k: "fsync" in k or "fdatasync" in k),
    ("write", lambda k: "pwrite" in k or "posix.write" in k),
    ("other syscalls", lambda k: "posix." in k or "fcntl." in k),
    (
        "asyncio and executor machinery",
        lambda k: "asyncio" in k or "Context" in k or "concurrent/futures" in k,
    ),
    ("thread wake-ups/locks", lambda k: "lock" in k.lower() or "threading" in k),
    ("pathlib", lambda k: "pathlib" in k),
    ("uuid module", lambda k: "uuid.py" in k),
    ("eventlog/_resolve.py", lambda k: "_resolve.py" in k),
    ("eventlog/_store.py", lambda k: "_store.py" in k),
    ("eventlog/_format.py", lambda k: "_format.py" in k),
    ("eventlog/_commands.py", lambda k: "_commands.py" in k),
    ("eventlog/_ids.py", lambda k: "_ids.py" in k),
    ("eventlog/log.py", lambda k: "eventlog/log.py" in k),
    ("eventlog (other)", lambda k: "/eventlog/" in k),
    ("benchmark loop", lambda k: "benchmarks" in k),
]


def _key(func: tuple[str, int, str]) -> str:
    file, _line, name = func
    return f"{file}:{name}"


def _categorise(stats: pstats.Stats) -> dict[str, float]:
    out: dict[str, float] = {}
    for func, (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        key = _key(func)
        name = next((c for c, test in _CATEGORIES if test(key)), "other (builtins, stdlib)")
        out[name] = out.get(name, 0.0) + tottime
    return out


def _profile(fn: Callable[[], int]) -> tuple[pstats.Stats, int]:
    prof = cProfile.Profile()
    prof.enable()
    n = fn()
    prof.disable()
    return pstats.Stats(prof), n


# -- the paths --------------------------------------------------------------------------------


def _single_log(path: Path, n: int, durability: eventlog.Durability) -> Callable[[], int]:
    created, sessions = s._sessions(1)
    texts = pool().prompt_texts(n)
    log = eventlog.open(path, durability=durability)
    log.append(created)

    def run() -> int:
        try:
            for text in texts:
                log.add_prompt(sessions[0], text)
        finally:
            log.close()
        return n

    return run


def _single_raw(path: Path, n: int, fsync: bool) -> Callable[[], int]:
    events = s._prompts(1, n)
    cctx = zstandard.ZstdCompressor(level=s.LEVEL)
    fd = os.open(path / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def run() -> int:
        try:
            for event in events:
                body = cctx.compress(ENCODER.encode(event))
                os.write(fd, _LEN.pack(len(body)) + body)
                if fsync:
                    os.fsync(fd)
        finally:
            os.close(fd)
        return n

    return run


def _bulk_log(path: Path, n: int, durability: eventlog.Durability) -> Callable[[], int]:
    created, _ = s._sessions(64)
    todo = list(batches(s._conversations(n), s.BATCH))
    log = eventlog.open(path, durability=durability)
    log.append(created)

    def run() -> int:
        try:
            for batch in todo:
                log.append(batch)
        finally:
            log.close()
        return n

    return run


def _bulk_raw(
    path: Path, n: int, fsync: bool, size: int = s.BATCH, agents: int = 0
) -> Callable[[], int]:
    events = s._prompts(agents, n) if agents else s._conversations(n)
    todo = list(batches(list(events), size))
    cctx = zstandard.ZstdCompressor(level=s.LEVEL)
    fd = os.open(path / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def run() -> int:
        try:
            for batch in todo:
                body = cctx.compress(ENCODER.encode(batch))
                os.write(fd, _LEN.pack(len(body)) + body)
                if fsync:
                    os.fsync(fd)
        finally:
            os.close(fd)
        return n

    return run


class _CommitterProfile:
    """Profiles the log's commit function in whichever thread runs it (the asyncio front end
    commits in a worker thread, which a profiler enabled in the main thread never sees).
    Installed only in this profiling process, by replacing `eventlog.log._commit`."""

    def __init__(self) -> None:
        self.profile = cProfile.Profile()
        self.used = False
        self.original: Callable[..., Any] = eventlog_log._commit

    def __enter__(self) -> cProfile.Profile:
        original, profile = self.original, self.profile

        def commit(*args: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                return original(*args)  # the main thread's profiler already sees it
            self.used = True
            profile.enable()
            try:
                return original(*args)
            finally:
                profile.disable()

        eventlog_log._commit = commit  # type: ignore[assignment]
        return profile

    def __exit__(self, *exc: object) -> None:
        eventlog_log._commit = self.original


AGENTS = 64


def _async_log(path: Path, n: int, durability: eventlog.Durability) -> Callable[[], int]:
    created, sessions = s._sessions(AGENTS)
    per = n // AGENTS
    texts = pool().prompt_texts(per * AGENTS)

    async def main() -> None:
        log = await eventlog.open_async(path, durability=durability)
        await log.append(created)

        async def agent(k: int) -> None:
            for text in texts[k * per : (k + 1) * per]:
                await log.add_prompt(sessions[k], text)

        try:
            await asyncio.gather(*(agent(k) for k in range(AGENTS)))
        finally:
            await log.close()

    def run() -> int:
        asyncio.run(main())
        return per * AGENTS

    return run


def _async_raw(path: Path, n: int, fsync: bool) -> Callable[[], int]:
    """The raw loop at the group size 64 agents give: 64 events per frame."""
    return _bulk_raw(path, n, fsync, size=AGENTS, agents=AGENTS)


THREADS = 16


def _threads_log(path: Path, n: int, durability: eventlog.Durability) -> Callable[[], int]:
    """16 threads on one EventLog; each thread profiles itself (the group commit's leader
    runs in whichever caller thread leads), and the profiles are added to the main one."""
    created, sessions = s._sessions(THREADS)
    per = n // THREADS
    texts = pool().prompt_texts(per * THREADS)
    log = eventlog.open(path, durability=durability)
    log.append(created)
    profiles: list[cProfile.Profile] = []
    start = threading.Barrier(THREADS)

    profiling = bool(_PROFILING)

    def agent(k: int) -> None:
        profile = cProfile.Profile()
        start.wait()
        if profiling:
            profile.enable()
        for text in texts[k * per : (k + 1) * per]:
            log.add_prompt(sessions[k], text)
        if profiling:
            profile.disable()
            profiles.append(profile)

    def run() -> int:
        workers = [threading.Thread(target=agent, args=(k,)) for k in range(THREADS)]
        try:
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        finally:
            log.close()
        _WORKER_PROFILES.extend(profiles)
        return per * THREADS

    return run


def _threads_raw(path: Path, n: int, fsync: bool) -> Callable[[], int]:
    """The raw loop at the group size 16 threads reach at best: 16 events per frame."""
    return _bulk_raw(path, n, fsync, size=THREADS, agents=THREADS)


_WORKER_PROFILES: list[cProfile.Profile] = []
_PROFILING: list[bool] = []  # non-empty while the profiled run is being set up and run


PATHS = {
    "single": (_single_log, _single_raw, 5_000),
    "bulk": (_bulk_log, _bulk_raw, 50_000),
    "async": (_async_log, _async_raw, 32_000),
    "threads": (_threads_log, _threads_raw, 16_000),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.profile_append")
    p.add_argument("--case", choices=[*PATHS, "all"], default="all", help="all: single and bulk")
    p.add_argument(
        "--events",
        type=int,
        help="events per run (default: 5,000 single, 50,000 bulk, 32,000 async)",
    )
    p.add_argument("--durability", choices=["none", "fsync"], default="none")
    p.add_argument("--top", type=int, default=20, help="functions to list by own time")
    args = p.parse_args(argv)
    durability = eventlog.Durability(args.durability)
    fsync = durability is eventlog.Durability.FSYNC
    pool()
    for case in ("single", "bulk") if args.case == "all" else [args.case]:
        make_log, make_raw, default_n = PATHS[case]
        n = args.events or default_n
        root = Path(tempfile.mkdtemp(prefix="lmg-profile-"))
        try:
            make_log(root / "warm", min(n, 2_000), durability)()  # warm up
            wall_log = _timed(make_log(root / "t-log", n, durability))
            wall_raw = _timed(make_raw(_mk(root / "t-raw"), n, fsync))
            _WORKER_PROFILES.clear()
            _PROFILING.append(True)
            hook = _CommitterProfile()
            with hook as committer:
                log_stats, _ = _profile(make_log(root / "p-log", n, durability))
            _PROFILING.clear()
            log_stats.add(*([committer] if hook.used else []), *_WORKER_PROFILES)
            raw_stats, _ = _profile(make_raw(_mk(root / "p-raw"), n, fsync))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        _report(
            case=case,
            n=n,
            durability=durability.value,
            walls=(wall_log, wall_raw),
            log_stats=log_stats,
            raw_stats=raw_stats,
            top=args.top,
        )
    return 0


def _mk(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _timed(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _report(
    *,
    case: str,
    n: int,
    durability: str,
    walls: tuple[float, float],
    log_stats: pstats.Stats,
    raw_stats: pstats.Stats,
    top: int,
) -> None:
    wall_log, wall_raw = walls
    mine, theirs = _categorise(log_stats), _categorise(raw_stats)
    print(f"\n== {case}: {n:,} events, log durability={durability} ==")
    print(
        f"unprofiled wall time per event: log {wall_log / n * 1e6:.1f} us, "
        f"raw loop {wall_raw / n * 1e6:.1f} us (ratio raw/log {wall_raw / wall_log:.2f}x)"
    )
    print(f"\n{'profiled, us per event':<34}{'log':>10}{'raw':>10}{'extra':>10}")
    for name in sorted(set(mine) | set(theirs), key=lambda k: -(mine.get(k, 0.0))):
        a, b = mine.get(name, 0.0) / n * 1e6, theirs.get(name, 0.0) / n * 1e6
        if a >= 0.05 or b >= 0.05:
            print(f"{name:<34}{a:>10.2f}{b:>10.2f}{a - b:>+10.2f}")
    total_a = sum(v for k, v in mine.items() if k != WAITING) / n * 1e6
    total_b = sum(v for k, v in theirs.items() if k != WAITING) / n * 1e6
    label = "total CPU (profiled)"
    print(f"{label:<34}{total_a:>10.2f}{total_b:>10.2f}{total_a - total_b:>+10.2f}")
    print(f"\ntop {top} functions of the log's path by own time:")
    log_stats.sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    raise SystemExit(main())
