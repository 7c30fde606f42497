"""Where a snapshot's cost goes: in a projector's catch-up, and in a `replay.at` restore.

    python -m tests.benchmarks.probe_snapshots --events 200000 --reps 2
    python -m tests.benchmarks.probe_snapshots --store DIR --every 20000,40000 --reps 3

Builds a store of `--events` mixed events (`_graph_data.build_graph_store`, untimed) unless
`--store` names one, then:

0. whether a fold could go on while a snapshot's checkpoint runs on another cursor: when a
   write on the main connection gets through beside a `CHECKPOINT` (a table of its own);
1. catch-ups from zero: `Projector(store, db, rebuild=True, snapshots=policy).catch_up()`
   without snapshots and with the default policy at each `--every` (events between snapshots),
   in an order that rotates each repetition, the snapshots directory emptied before each.
   It times the whole catch-up (wall and process CPU), and, by wrapping the functions the
   projector calls (not changing them): the checkpoints the fold makes for snapshots
   (`Snapshots._checkpoint`, in the fold's thread: wall and that thread's CPU), the saving
   of chunks on the projector's thread (`Snapshots._save` with pruning: wall and CPU), and
   the fold's waits for that thread (`Projector._saved`);
2. a restore of the newest snapshot the last catch-up left: each chunk's check step by step
   (one thread, CPU of that thread: reading the file, zstd decompression, SHA-256 and
   CRC32C of the bytes, SHA-256 of the stored file, BLAKE2b of the bytes; compressing the
   bytes at zstd levels 1 and 3, and 3 on two threads, and decompressing each), then
   `Snapshots._write_file` whole, with 1 and with 4 threads, checking chunks by the digests
   of their files the manifest records or (as for manifests of older code) by their names,
   alternating (wall and CPU);
3. how much of a restore a previous one could have left in place: for the `replay` case's
   schedule of points (`_replay._pick_points`, `_schedule`), the bytes of each call's
   snapshot whose chunk at the same offset is the one the previous call restored, and the
   time of a restore that copies the previous one's file and writes only those that differ
   (a prototype of that lever: measured, not shipped; docs/benchmarks.md says why).

Prints one line per measurement and the load average beside them.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import google_crc32c
import msgspec
import zstandard

import eventlog
from projections import Projector, SnapshotPolicy, Snapshots
from projections import projector as projector_module
from projections import snapshots as snapshots_module
from tests.benchmarks import _replay
from tests.benchmarks._graph_data import build_graph_store


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class _Timings:
    """Wall and thread-CPU seconds summed per name, from any thread."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        self.wall.clear()
        self.cpu.clear()
        self.count.clear()

    def add(self, name: str, wall: float, cpu: float) -> None:
        with self._lock:
            self.wall[name] = self.wall.get(name, 0.0) + wall
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu
            self.count[name] = self.count.get(name, 0) + 1

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - w, time.thread_time() - c)

        return wrapper


TIMINGS = _Timings()


def _instrument() -> None:
    snaps = snapshots_module.Snapshots
    snaps._checkpoint = TIMINGS.wrap("checkpoint", snaps._checkpoint)  # type: ignore[method-assign]
    snaps._save = TIMINGS.wrap("save (thread)", snaps._save)  # type: ignore[method-assign]
    snaps.prune = TIMINGS.wrap("prune (thread)", snaps.prune)  # type: ignore[method-assign]
    proj = projector_module.Projector
    proj._saved = TIMINGS.wrap("wait for save", proj._saved)  # type: ignore[method-assign]


def _row_groups(rows: int) -> None:
    """Make the projector attach its database with `ROW_GROUP_SIZE rows` (a probe of the
    layout, not how the project opens it: DuckDB keeps no row group size in the file)."""

    def opened(db: Path, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        config = {"memory_limit": kwargs.get("memory_limit") or "256MB"}
        if kwargs.get("checkpoint_threshold"):
            config["checkpoint_threshold"] = kwargs["checkpoint_threshold"]
        con = duckdb.connect(":memory:", config=config)
        con.execute(f"ATTACH '{db}' AS lmg (ROW_GROUP_SIZE {rows})")
        con.execute("USE lmg")
        return con

    projector_module.open_database = opened  # type: ignore[attr-defined]


def _catch_up(store: Path, db: Path, every: int | None) -> tuple[float, float, int]:
    """Seconds, CPU seconds, snapshots taken."""
    shutil.rmtree(store / "snapshots", ignore_errors=True)
    for p in (db, Path(f"{db}.wal")):
        p.unlink(missing_ok=True)
    policy = None if every is None else SnapshotPolicy(every_events=every)
    began, cpu = time.perf_counter(), time.process_time()
    with Projector(store, db, rebuild=True, snapshots=policy) as projector:
        projector.catch_up()
    took = time.perf_counter() - began, time.process_time() - cpu
    return *took, len(Snapshots(store).all())


def catch_ups(store: Path, work: Path, everies: list[int], reps: int) -> None:
    sides: list[int | None] = [None, *everies]
    results: dict[int | None, list[tuple[float, float]]] = {s: [] for s in sides}
    for rep in range(reps):
        order = sides[rep % len(sides) :] + sides[: rep % len(sides)]
        for every in order:
            TIMINGS.clear()
            wall, cpu, taken = _catch_up(store, work / "probe.duckdb", every)
            results[every].append((wall, cpu))
            parts = ", ".join(
                f"{k} {TIMINGS.wall[k]:.2f} s wall / {TIMINGS.cpu[k]:.2f} CPU-s"
                f" ({TIMINGS.count[k]}x)"
                for k in sorted(TIMINGS.wall)
            )
            name = "no snapshots" if every is None else f"every {every:,}"
            print(
                f"rep {rep + 1} {name:>14}: {wall:6.2f} s, {cpu:6.2f} CPU-s, {taken} snapshots"
                f"{'; ' + parts if parts else ''}  [load {_load()}]",
                flush=True,
            )
    base = results[None]
    for every in everies:
        ratios = [b[0] / s[0] for s, b in zip(results[every], base, strict=True)]
        by_cpu = [b[1] / s[1] for s, b in zip(results[every], base, strict=True)]
        print(
            f"every {every:,}: with / without by wall {statistics.median(ratios):.2f}x "
            f"({', '.join(f'{r:.2f}' for r in ratios)}), by CPU {statistics.median(by_cpu):.2f}x"
        )


@contextmanager
def _thread_cpu(totals: dict[str, float], name: str) -> Iterator[None]:
    began = time.thread_time()
    yield
    totals[name] = totals.get(name, 0.0) + time.thread_time() - began


def restore_steps(store: Path, reps: int) -> None:
    snaps = Snapshots(store)
    newest = snaps.all()[-1]
    manifest = snaps._read_manifest(Path(newest.path))
    assert manifest is not None
    raw_mb = manifest.size / 1e6
    totals: dict[str, float] = {}
    stored_bytes = 0
    sizes: dict[str, int] = {}
    for chunk in manifest.chunks:
        path = snaps._chunk_path(chunk.sha256)
        with _thread_cpu(totals, "read the file"):
            stored = path.read_bytes()
        stored_bytes += len(stored)
        with _thread_cpu(totals, "zstd decompress"):
            data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=chunk.length)
        with _thread_cpu(totals, "SHA-256 of the bytes"):
            hashlib.sha256(data).hexdigest()
        with _thread_cpu(totals, "CRC32C of the bytes"):
            google_crc32c.value(data)
        with _thread_cpu(totals, "SHA-256 of the stored file"):
            hashlib.sha256(stored).hexdigest()
        with _thread_cpu(totals, "BLAKE2b-256 of the bytes"):
            hashlib.blake2b(data, digest_size=32).hexdigest()
        for level, threads in ((1, 0), (3, 0), (3, 2)):
            name = f"zstd level {level}{f' threads={threads}' if threads else ''}"
            with _thread_cpu(totals, f"compress, {name}"):
                frame = zstandard.ZstdCompressor(level=level, threads=threads).compress(data)
            sizes[name] = sizes.get(name, 0) + len(frame)
            if threads == 0:
                with _thread_cpu(totals, f"decompress, {name}"):
                    zstandard.ZstdDecompressor().decompress(frame, max_output_size=chunk.length)
    print(
        f"restore of snapshot {newest.lsn:,}: {raw_mb:,.0f} MB in {len(manifest.chunks)} chunks,"
        f" {stored_bytes / 1e6:,.0f} MB stored; CPU ms per pass, one thread: "
        + ", ".join(f"{k} {v * 1e3:,.0f}" for k, v in totals.items())
        + f"  [load {_load()}]",
        flush=True,
    )
    print(
        "compressed sizes: "
        + ", ".join(f"{k} {raw_mb / (v / 1e6):.2f}x smaller" for k, v in sizes.items()),
        flush=True,
    )
    without = msgspec.structs.replace(manifest, frames=None)  # as older code wrote them
    variants = {
        (threads, name): m
        for threads in (1, 4)
        for name, m in (("by the frames' digests", manifest), ("by name", without))
    }
    walls: dict[tuple[int, str], list[float]] = {k: [] for k in variants}
    cpus: dict[tuple[int, str], list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "restored.duckdb"
        for rep in range(reps):
            keys = list(variants) if rep % 2 == 0 else list(variants)[::-1]
            for key in keys:
                snapshots_module._RESTORE_THREADS = key[0]
                target.unlink(missing_ok=True)
                w, c = time.perf_counter(), time.process_time()
                snaps._write_file(variants[key], target)
                walls[key].append(time.perf_counter() - w)
                cpus[key].append(time.process_time() - c)
    for (threads, name), wall in walls.items():
        print(
            f"_write_file, {threads} thread(s), chunks checked {name}: wall "
            f"{', '.join(f'{x * 1e3:,.0f}' for x in wall)} ms, CPU "
            f"{', '.join(f'{x * 1e3:,.0f}' for x in cpus[threads, name])} ms  [load {_load()}]",
            flush=True,
        )


def reuse(store: Path, events: int, points: int) -> None:
    """Bytes a restore could leave in place from the one before, on the case's schedule."""
    snaps = Snapshots(store)
    infos = snaps.all()
    lsns = [i.lsn for i in infos]
    chunks = {}
    for info in infos:
        manifest = snaps._read_manifest(Path(info.path))
        assert manifest is not None
        chunks[info.lsn] = [(c.sha256, c.length) for c in manifest.chunks]
    calls = [p for p, snaps_on, _ in _replay._schedule(_replay._pick_points(events, points))]
    previous: list[tuple[str, int]] = []
    same = total = 0
    for point in calls:
        start = max((s for s in lsns if s <= point), default=None)
        if start is None:
            previous = []
            continue
        current = chunks[start]
        same += sum(c[1] for c, p in zip(current, previous, strict=False) if c == p)
        total += sum(c[1] for c in current)
        previous = current
    neighbours = [
        sum(c[1] for c, p in zip(chunks[b], chunks[a], strict=False) if c == p)
        / sum(c[1] for c in chunks[b])
        for a, b in itertools.pairwise(lsns)
    ]
    print(
        f"reuse on the replay case's schedule ({len(calls)} calls): {same / max(total, 1):.0%} "
        f"of restored bytes at the same offset as the previous call's; between consecutive "
        f"snapshots, median {statistics.median(neighbours):.0%}",
        flush=True,
    )
    starts = [max((s for s in lsns if s <= p), default=None) for p in calls]
    pairs = [(a, b) for a, b in itertools.pairwise(starts) if a is not None and b is not None]
    _time_reuse(snaps, infos, pairs[:8])


def _time_reuse(snaps: Snapshots, infos: list[Any], pairs: list[tuple[int, int]]) -> None:
    """A restore as now against one that copies the previous restore's file and writes only
    the chunks that differ (checked as any), for pairs of the schedule's snapshots."""
    manifests = {}
    for info in infos:
        manifest = snaps._read_manifest(Path(info.path))
        assert manifest is not None
        manifests[info.lsn] = manifest
    times: dict[str, list[tuple[float, float]]] = {"whole": [], "from the previous": []}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(4) as pool:
        previous, target = Path(tmp) / "previous.duckdb", Path(tmp) / "target.duckdb"
        for k, (a, b) in enumerate(pairs):
            previous.unlink(missing_ok=True)
            snaps._write_file(manifests[a], previous)
            for way in (
                ("whole", "from the previous") if k % 2 == 0 else ("from the previous", "whole")
            ):
                target.unlink(missing_ok=True)
                w, c = time.perf_counter(), time.process_time()
                if way == "whole":
                    snaps._write_file(manifests[b], target)
                else:
                    _restore_over(snaps, (manifests[a], previous), manifests[b], target, pool)
                times[way].append((time.perf_counter() - w, time.process_time() - c))
    for way, xs in times.items():
        print(
            f"restore {way}: median wall {statistics.median(x[0] for x in xs) * 1e3:,.0f} ms, "
            f"CPU {statistics.median(x[1] for x in xs) * 1e3:,.0f} ms over {len(xs)} pairs"
            f"  [load {_load()}]",
            flush=True,
        )


def _restore_over(
    snaps: Snapshots, restored: tuple[Any, Path], after: Any, target: Path, pool: Any
) -> None:
    before, previous = restored
    with open(previous, "rb") as src, open(target, "wb") as dst:
        left = os.fstat(src.fileno()).st_size
        while left > 0:
            left -= os.copy_file_range(src.fileno(), dst.fileno(), left)
        dst.truncate(after.size)
        fd = dst.fileno()
        offsets = list(itertools.accumulate((c.length for c in after.chunks), initial=0))
        frames = snapshots_module._frames(after)
        todo = [
            (chunk, frame, offset)
            for i, (chunk, frame, offset) in enumerate(
                zip(after.chunks, frames, offsets, strict=False)
            )
            if i >= len(before.chunks) or before.chunks[i] != chunk
        ]
        for _ in pool.map(lambda t: os.pwrite(fd, snaps._read_chunk(t[0], t[1]), t[2]), todo):
            pass


def write_during_checkpoint(work: Path) -> None:
    """Can a fold go on while another cursor checkpoints (a snapshot's checkpoint off the
    fold's path)? A table of 2M rows with 500k more in the write-ahead log (100 commits); a
    thread runs `CHECKPOINT` on a cursor while the main connection begins, inserts and
    commits."""
    db = work / "checkpoint.duckdb"
    con = duckdb.connect(str(db), config={"checkpoint_threshold": "1GB"})
    con.execute("CREATE TABLE t AS SELECT range AS n, repeat('x', 200) AS s FROM range(2000000)")
    con.execute("CHECKPOINT")
    for k in range(100):  # small commits, so they go to the write-ahead log (a large one
        # is written straight to the file: `auto_checkpoint_skip_wal_threshold`)
        con.execute(
            f"INSERT INTO t SELECT range, md5(range::VARCHAR) || repeat('y', 150) "
            f"FROM range({k * 5000}, {(k + 1) * 5000})"
        )
    cursor = con.cursor()
    before = Path(f"{db}.wal").stat().st_size
    began = time.perf_counter()
    marks: dict[str, float] = {}
    left: list[int] = []  # bytes of write-ahead log the checkpoint left

    def checkpoint() -> None:
        cursor.execute("CHECKPOINT")
        marks["checkpoint done"] = time.perf_counter() - began
        wal = Path(f"{db}.wal")
        left.append(wal.stat().st_size if wal.exists() else 0)

    thread = threading.Thread(target=checkpoint)
    thread.start()
    time.sleep(0.01)
    for step in ("BEGIN", "INSERT INTO t VALUES (1, 'a')", "COMMIT"):
        con.execute(step)
        marks[step.split()[0].lower()] = time.perf_counter() - began
    thread.join()
    con.close()
    ordered = sorted(marks.items(), key=lambda kv: kv[1])
    print(
        "a write beside a checkpoint on another cursor: "
        + ", ".join(f"{k} at {v * 1e3:,.0f} ms" for k, v in ordered)
        + f"; write-ahead log {before / 1e6:,.1f} MB before the checkpoint, {left[0] / 1e6:,.1f}"
        " MB after it",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--every", default=str(SnapshotPolicy().every_events))
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--points", type=int, default=25)
    parser.add_argument("--row-group-size", type=int, help="attach with this ROW_GROUP_SIZE")
    parser.add_argument("--skip", default="", help="comma-separated: catch-up,restore,reuse")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    _instrument()
    if args.row_group_size:
        _row_groups(args.row_group_size)
    with tempfile.TemporaryDirectory(prefix="lmg-probe-snapshots-") as tmp:
        work = Path(tmp)
        store = args.store
        if store is None:
            store = work / "store"
            began = time.perf_counter()
            build_graph_store(store, args.events)
            print(f"built {args.events:,} events in {time.perf_counter() - began:.1f} s")
        write_during_checkpoint(work)
        if "catch-up" not in skip:
            catch_ups(store, work, [int(e) for e in args.every.split(",")], args.reps)
        if not Snapshots(store).all():
            _catch_up(store, work / "probe.duckdb", SnapshotPolicy().every_events)
        if "restore" not in skip:
            restore_steps(store, args.reps)
        with eventlog.open(store, readonly=True) as log:
            n = log.next_lsn()
        if "reuse" not in skip:
            reuse(store, n, args.points)


if __name__ == "__main__":
    main()
