"""The `replay` benchmark: snapshots, `replay.at`, and what snapshots cost the projector and
the writer.

On the run's store of mixed events (`_graph.graph_store`, shared with fold, reads and rss):

1. catch-up: `Projector(store).catch_up()` into the store's own database with the default
   `SnapshotPolicy` (which writes ``<store>/snapshots``) against the same catch-up with
   `snapshots=None` into another file, alternating, from zero each time;
2. space: ``<store>/snapshots`` (chunks and manifests) against ``<store>/projections.duckdb``;
3. `replay.at(store, lsn=p)` at random points, and at a few of them the same with
   `snapshots=False` (a fold from zero), in a child process (`_replay_child`);

then, on stores of their own:

4. append: a writer appending batches of 1,000 (default FSYNC) while `lmg project STORE
   --follow` runs beside it, with `--snapshot-every 5000` or `--snapshot-every 0`. Both sides
   run at once, each with its own store and projector, taking turns in slices; the projector
   of the side not in its turn is stopped (SIGSTOP) so that it takes no CPU or disk from the
   other side, and resumed (SIGCONT) for its own turns.

The snapshots and database this case makes in the shared store are removed when it ends
(so are any snapshots an earlier case left there: `projections.rebuild` takes them too).
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import msgspec

import eventlog
from eventlog import events as ev
from projections import Projector, SnapshotPolicy, Snapshots

from ._graph import GraphStore, _frozen_heap, _loadavg, _pct, _store_note, _target_row, graph_store
from ._graph_data import mixed_chunks
from ._harness import Plan, Row, log, remove_tree

__all__ = ["APPEND_SNAPSHOT_EVERY", "replay"]

ROOT = Path(__file__).resolve().parents[2]
AT_P95_S = 1.0  # target: replay.at p95 under a second
SPEEDUP = 10.0  # target: replay.at at least 10x faster than a fold from zero to the point
REBUILD_RATE = 100_000  # target: a rebuild from zero at 100,000 events/s or more
APPEND_SNAPSHOT_EVERY = 5_000  # the following projector's --snapshot-every, snapshots on
APPEND_MIN_RATIO = 0.9  # "no measurable difference": within the ~10% this disk can tell
BATCH = 1_000
SEED = 20241121
PROJECTOR_START_S = 120.0
PROJECTOR_STOP_S = 300.0

_MB = 1e6


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


# -- the store's own database and snapshots ---------------------------------------------------


def _drop_database(db: Path) -> None:
    for suffix in ("", ".wal", ".lock", ".gate"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _clean_store(store: Path) -> None:
    """Remove what a projector leaves in a store: its default database and the snapshots."""
    shutil.rmtree(store / "snapshots", ignore_errors=True)
    _drop_database(store / "projections.duckdb")


def _catch_up(
    gs: GraphStore, database: Path | None, policy: SnapshotPolicy | None, cpu: list[float]
) -> float:
    """`Projector(store, database, snapshots=policy).catch_up()` from zero; seconds."""
    with _frozen_heap():
        began, cpu_began = time.perf_counter(), time.process_time()
        if policy is None:
            projector = Projector(gs.path, database, rebuild=True, snapshots=None)
        else:  # the default policy, as `lmg project` and `Projector(store)` take it
            projector = Projector(gs.path, database, rebuild=True)
        with projector:
            lsn = projector.catch_up()
        seconds = time.perf_counter() - began
        cpu.append(time.process_time() - cpu_began)
    if lsn != gs.events - 1:
        raise RuntimeError(f"the catch-up stopped at LSN {lsn} of {gs.events - 1}")
    return seconds


@dataclass
class _CatchUps:
    snap_s: list[float] = field(default_factory=list)
    none_s: list[float] = field(default_factory=list)
    snap_cpu: list[float] = field(default_factory=list)
    none_cpu: list[float] = field(default_factory=list)
    none_db_bytes: int = 0  # the database of the last catch-up without snapshots


def _catch_ups(gs: GraphStore, work: Path, reps: int) -> _CatchUps:
    """Alternating catch-ups from zero; the last one with snapshots is left in the store."""
    out = _CatchUps()
    other = work / "no-snapshots.duckdb"
    for rep in range(reps):
        for side in ("snap", "none") if rep % 2 == 0 else ("none", "snap"):
            if side == "snap":
                _clean_store(gs.path)
                out.snap_s.append(_catch_up(gs, None, SnapshotPolicy(), out.snap_cpu))
            else:
                _drop_database(other)
                out.none_s.append(_catch_up(gs, other, None, out.none_cpu))
        n = gs.events
        log(
            f"  {'replay':<11} rep {rep + 1}/{reps}  catch-up with snapshots "
            f"{n / out.snap_s[-1]:>9,.0f} events/s ({out.snap_s[-1]:.1f} s), without "
            f"{n / out.none_s[-1]:>9,.0f} events/s ({out.none_s[-1]:.1f} s)"
        )
    out.none_db_bytes = other.stat().st_size
    _drop_database(other)
    return out


@dataclass
class _Space:
    snapshots: int
    snapshot_bytes: int  # every file under <store>/snapshots
    manifest_bytes: int
    chunk_files: int
    database_bytes: int  # <store>/projections.duckdb (and .wal, if any)
    median_size: float  # median database size a manifest describes
    mean_new: float  # mean bytes of chunks a snapshot added (not in an older one)
    first_new: int  # the first snapshot's (the whole file)
    lsns: list[int]


def _manifest(path: Path) -> dict[str, Any]:
    """A manifest's JSON body (the last line is its CRC, checked by restores, not here)."""
    body = path.read_bytes().rstrip(b"\n").rpartition(b"\n")[0]
    out: dict[str, Any] = msgspec.json.decode(body)
    return out


def _space(store: Path) -> _Space:
    snaps = store / "snapshots"
    files = [p for p in snaps.rglob("*") if p.is_file()]
    manifests = sorted(snaps.glob("*.snap"))
    seen: set[str] = set()
    new: list[int] = []
    sizes: list[int] = []
    for path in manifests:
        m = _manifest(path)
        sizes.append(int(m["size"]))
        added = {sha: int(length) for sha, _crc, length in m["chunks"] if sha not in seen}
        seen.update(added)
        new.append(sum(added.values()))
    db = store / "projections.duckdb"
    db_bytes = sum(p.stat().st_size for p in (db, Path(f"{db}.wal")) if p.exists())
    return _Space(
        snapshots=len(manifests),
        snapshot_bytes=sum(p.stat().st_size for p in files),
        manifest_bytes=sum(p.stat().st_size for p in manifests),
        chunk_files=sum(1 for p in (snaps / "chunks").glob("*/*") if p.is_file()),
        database_bytes=db_bytes,
        median_size=_median([float(s) for s in sizes]) if sizes else 0.0,
        mean_new=sum(new) / len(new) if new else 0.0,
        first_new=new[0] if new else 0,
        lsns=[int(p.stem) for p in manifests],
    )


# -- replay.at, in a child --------------------------------------------------------------------


@dataclass
class _Points:
    random: list[int]  # the sampled points, timed with snapshots
    zero: list[int]  # the points also timed from zero (each next to a timing with snapshots)


def _pick_points(n: int, k: int) -> _Points:
    rng = random.Random(SEED)
    sample = sorted(rng.sample(range(n), min(k, n)))

    def nearest(target: int) -> int:
        return min(sample, key=lambda p: abs(p - target))

    near = [nearest(n // 3), nearest(2 * n // 3)]
    return _Points(sample, sorted({*near, n - 1}))


def _schedule(points: _Points) -> list[tuple[int, bool, str]]:
    """(point, snapshots, role): a warm-up call, the random points in a shuffled order, and
    each zero point's pair (from zero and with snapshots, in alternating order) spread
    evenly among them."""
    rng = random.Random(SEED + 1)
    shuffled = rng.sample(points.random, len(points.random))
    calls: list[tuple[int, bool, str]] = [(shuffled[0], True, "warm-up")]
    every = max(1, len(shuffled) // (len(points.zero) + 1))
    pairs = [
        [(q, False, "zero"), (q, True, "paired")]
        if j % 2 == 0
        else [(q, True, "paired"), (q, False, "zero")]
        for j, q in enumerate(points.zero)
    ]
    for i, p in enumerate(shuffled):
        calls.append((p, True, "random"))
        if (i + 1) % every == 0 and pairs:
            calls += pairs.pop(0)
    for pair in pairs:
        calls += pair
    return calls


@dataclass
class _At:
    random_s: list[float]  # with snapshots at the random points
    random_from: list[int]  # the snapshot each started from
    random_lsn: list[int]
    zero_s: dict[int, float]  # from zero, by point
    paired_s: dict[int, float]  # with snapshots, next to the fold from zero
    phases: dict[str, float]  # median seconds per phase, with snapshots
    zero_phases: dict[str, float]  # the same, from zero
    close_ms: float
    peak_mb: float
    imported_s: float


def _run_at(store: Path, points: _Points, work: Path) -> _At:
    calls = _schedule(points)
    schedule, out = work / "schedule.json", work / "at.json"
    schedule.write_bytes(msgspec.json.encode([(p, snaps) for p, snaps, _ in calls]))
    log(
        f"  replay: a child times replay.at at {len(points.random)} random points with "
        f"snapshots, and at {len(points.zero)} of them from zero"
    )
    subprocess.run(
        [sys.executable, "-m", "tests.benchmarks._replay_child", "at", str(store),
         str(schedule), str(out)],
        cwd=ROOT,
        check=True,
    )  # fmt: skip
    result = msgspec.json.decode(out.read_bytes())
    timed = result["calls"][1:]  # the first is the warm-up
    random_s: list[float] = []
    random_from: list[int] = []
    random_lsn: list[int] = []
    zero_s: dict[int, float] = {}
    paired_s: dict[int, float] = {}
    snap_phases: list[dict[str, float]] = []
    zero_phases: list[dict[str, float]] = []
    for (lsn, _, role), call in zip(calls[1:], timed, strict=True):
        (zero_phases if role == "zero" else snap_phases).append(call["phases"])
        if role == "zero":
            zero_s[lsn] = call["seconds"]
        elif role == "paired":
            paired_s[lsn] = call["seconds"]
        else:
            random_s.append(call["seconds"])
            random_from.append(call["snapshot_lsn"])
            random_lsn.append(lsn)
    close = [c["close_s"] * 1e3 for c in timed]

    def phase_medians(rows: list[dict[str, float]]) -> dict[str, float]:
        keys = sorted({k for r in rows for k in r})
        return {k: _median([r.get(k, 0.0) for r in rows]) for k in keys}

    return _At(
        random_s=random_s,
        random_from=random_from,
        random_lsn=random_lsn,
        zero_s=zero_s,
        paired_s=paired_s,
        phases=phase_medians(snap_phases),
        zero_phases=phase_medians(zero_phases),
        close_ms=_median(close),
        peak_mb=result["peak_kb"] * 1024 / _MB,
        imported_s=result["imported_s"],
    )


# -- appends beside a following projector -----------------------------------------------------


@dataclass
class _AppendSide:
    name: str
    snapshot_every: int
    store: Path
    err: Path
    log: eventlog.EventLog
    events: Iterator[ev.EventBase]
    proc: subprocess.Popen[bytes]
    seconds: float = 0.0
    appended: int = 0


_FOLDED = re.compile(rb"folded to LSN (-?\d+)")


def _wait_for(side: _AppendSide, pattern: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = side.err.read_bytes()
        if pattern in text:
            return text
        if side.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(
        f"`lmg project --follow` ({side.name}) did not print {pattern!r} "
        f"(exit status {side.proc.poll()}): {side.err.read_text()[-2000:]}"
    )


def _start_side(name: str, every: int, root: Path) -> _AppendSide:
    store, err = root / f"store-{name}", root / f"project-{name}.err"
    flat = (e for chunk in mixed_chunks(seed=SEED) for e in chunk)
    lg = eventlog.open(store)  # default durability: FSYNC
    lg.append(list(islice(flat, 22)))  # the agents and templates (the first "chunk")
    with err.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "replay.cli", "project", str(store), "--follow",
             "--snapshot-every", str(every), "--report-every", "0"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )  # fmt: skip
    return _AppendSide(name, every, store, err, lg, flat, proc)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop_side(side: _AppendSide) -> int:
    """SIGCONT, SIGTERM, wait; the checkpoint it stopped at (-1 if it said nothing)."""
    proc = side.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        try:
            proc.wait(PROJECTOR_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(Exception):
        side.log.close()
    found = _FOLDED.findall(side.err.read_bytes())
    return int(found[-1]) if found else -1


@dataclass
class _AppendRep:
    rate: dict[str, float]
    folded: dict[str, int]  # checkpoint of each projector when stopped
    cpu_s: dict[str, float]  # CPU seconds of each projector by the end of the slices
    snapshots: int  # taken by the snapshotting projector during the slices
    appended: int  # per side


def _append_rep(rep: int, plan: Plan, slice_batches: int, root: Path) -> _AppendRep:
    sides: list[_AppendSide] = []
    try:
        for name, every in (("snapshots", APPEND_SNAPSHOT_EVERY), ("no snapshots", 0)):
            sides.append(_start_side(name.replace(" ", "-"), every, root))
        for side in sides:
            _wait_for(side, b"folded to LSN", PROJECTOR_START_S)
            side.proc.send_signal(signal.SIGSTOP)
        for k in range(plan.slices):
            order = sides if (rep + k) % 2 == 0 else sides[::-1]
            for side in order:
                todo = [list(islice(side.events, BATCH)) for _ in range(slice_batches)]
                append = side.log.append
                gc.collect()
                gc.freeze()
                try:
                    side.proc.send_signal(signal.SIGCONT)
                    began = time.perf_counter()
                    for batch in todo:
                        append(batch)
                    side.seconds += time.perf_counter() - began
                    side.proc.send_signal(signal.SIGSTOP)
                finally:
                    gc.unfreeze()
                side.appended += len(todo) * BATCH
        ended_ns = time.time_ns()
        cpu = {s.name: _cpu_s(s.proc.pid) for s in sides}
        folded = {s.name: _stop_side(s) for s in sides}
        taken = [s for s in Snapshots(sides[0].store).all() if s.created_ns <= ended_ns]
        return _AppendRep(
            rate={s.name: s.appended / s.seconds for s in sides},
            folded=folded,
            cpu_s=cpu,
            snapshots=len(taken),
            appended=sides[0].appended,
        )
    finally:
        for side in sides:
            _stop_side(side)
            remove_tree(side.store)


def _appends(plan: Plan, slice_batches: int, root: Path) -> list[_AppendRep]:
    reps: list[_AppendRep] = []
    for rep in range(plan.reps):
        r = _append_rep(rep, plan, slice_batches, root)
        reps.append(r)
        on, off = r.rate["snapshots"], r.rate["no-snapshots"]
        log(
            f"  {'replay':<11} rep {rep + 1}/{plan.reps}  appends beside a follower with "
            f"snapshots {on:>9,.0f} events/s, without {off:>9,.0f} events/s "
            f"({on / off:.2f}x; {r.snapshots} snapshots taken, folded to "
            f"{r.folded['snapshots']:,} and {r.folded['no-snapshots']:,} of {r.appended + 22:,})"
        )
    return reps


# -- the case ---------------------------------------------------------------------------------


def replay(
    plan: Plan, n: int, reps: int, points: int, slice_batches: int
) -> tuple[list[Row], list[str]]:
    """`n` events in the store, `reps` catch-ups per side, `points` random points."""
    gs = graph_store(n, plan.tmp_root)
    work = Path(tempfile.mkdtemp(prefix="lmg-bench-replay-", dir=plan.tmp_root))
    try:
        log(f"  replay: catch-ups of the {n:,}-event store, with and without snapshots")
        cu = _catch_ups(gs, work, reps)
        space = _space(gs.path)
        picked = _pick_points(n, points)
        at = _run_at(gs.path, picked, work)
        _clean_store(gs.path)
        log(
            f"  replay: appends beside `lmg project --follow`, --snapshot-every "
            f"{APPEND_SNAPSHOT_EVERY} or 0 ({plan.slices} slices of {slice_batches} batches "
            "of 1,000 per side per repetition)"
        )
        appends = _appends(plan, slice_batches, work)
    finally:
        _clean_store(gs.path)
        remove_tree(work)
    return _rows(
        gs=gs, cu=cu, space=space, at=at, appends=appends, plan=plan,
        slice_batches=slice_batches,
    )  # fmt: skip


def _rows(
    *,
    gs: GraphStore,
    cu: _CatchUps,
    space: _Space,
    at: _At,
    appends: list[_AppendRep],
    plan: Plan,
    slice_batches: int,
) -> tuple[list[Row], list[str]]:
    n = gs.events
    on = f"{n:,} events"
    k = len(at.random_s)
    ms = [s * 1e3 for s in at.random_s]
    zero_points = sorted(at.zero_s)
    zero_ms = [at.zero_s[p] * 1e3 for p in zero_points]
    paired_ms = [at.paired_s[p] * 1e3 for p in zero_points]
    per_point = [z / s for z, s in zip(zero_ms, paired_ms, strict=True)]
    speedup = _median(zero_ms) / _median(paired_ms)
    rebuild_rates = [(p + 1) / at.zero_s[p] for p in zero_points]
    catch_ratios = [b / a for a, b in zip(cu.snap_s, cu.none_s, strict=True)]
    append_ratios = [r.rate["snapshots"] / r.rate["no-snapshots"] for r in appends]
    at_subject = "`replay.at(store, lsn=p)`, default snapshots"
    zero_subject = "`replay.at(store, lsn=p, snapshots=False)`"
    rows = [
        _target_row(
            "replay", f"replay.at at {k} random points, {on}", f"{at_subject}, p95",
            baseline=f"{AT_P95_S * 1e3:,.0f} ms (target)", target=AT_P95_S * 1e3,
            measured=[_pct(ms, 0.95)], unit="ms",
        ),
        _target_row(
            "replay", f"replay.at at {k} random points, {on}", f"{at_subject}, p50",
            baseline=f"{AT_P95_S * 1e3:,.0f} ms (target)", target=AT_P95_S * 1e3,
            measured=[_pct(ms, 0.50)], unit="ms", minimum=None,
        ),
        Row(
            case="replay",
            what=f"replay.at vs a fold from zero to the same point, {len(zero_points)} "
            f"points, {on} (ratio of medians; spread over points)",
            subject=at_subject,
            baseline=zero_subject,
            minimum=SPEEDUP,
            ratio=speedup,
            ratio_min=min(per_point),
            ratio_max=max(per_point),
            subject_value=_median(paired_ms),
            baseline_value=_median(zero_ms),
            unit="ms",
            reps=len(per_point),
        ),
        _target_row(
            "replay", f"rebuild from zero, events folded per second, {len(zero_points)} "
            f"points, {on} (spread over points)", zero_subject,
            baseline=f"{REBUILD_RATE:,} events/s (target)", target=REBUILD_RATE,
            measured=rebuild_rates, unit="events/s", higher_is_better=True,
        ),
        Row(
            case="replay",
            what=f"projector catch-up from zero, {on}",
            subject="`Projector(store).catch_up()`, default snapshots",
            baseline="same, `snapshots=None`",
            minimum=None,
            ratio=_median(catch_ratios),
            ratio_min=min(catch_ratios),
            ratio_max=max(catch_ratios),
            subject_value=_median([n / s for s in cu.snap_s]),
            baseline_value=_median([n / s for s in cu.none_s]),
            unit="events/s",
            reps=len(catch_ratios),
        ),
        Row(
            case="replay",
            what=f"snapshot space: all snapshots / live database, {on} (lower is better: "
            "this row's ratio is the overhead)",
            subject=f"`<store>/snapshots` ({space.snapshots} snapshots, chunks + manifests)",
            baseline="`<store>/projections.duckdb` after the catch-up",
            minimum=None,
            ratio=space.snapshot_bytes / space.database_bytes,
            ratio_min=space.snapshot_bytes / space.database_bytes,
            ratio_max=space.snapshot_bytes / space.database_bytes,
            subject_value=space.snapshot_bytes / _MB,
            baseline_value=space.database_bytes / _MB,
            unit="MB",
            reps=1,
        ),
        Row(
            case="replay",
            what="durable appends of 1,000 beside a following projector, no measurable "
            f"difference (>= {APPEND_MIN_RATIO:g}x taken as met)",
            subject=f"`lmg project --follow --snapshot-every {APPEND_SNAPSHOT_EVERY}`",
            baseline="`lmg project --follow --snapshot-every 0`",
            minimum=APPEND_MIN_RATIO,
            ratio=_median(append_ratios),
            ratio_min=min(append_ratios),
            ratio_max=max(append_ratios),
            subject_value=_median([r.rate["snapshots"] for r in appends]),
            baseline_value=_median([r.rate["no-snapshots"] for r in appends]),
            unit="events/s",
            reps=len(append_ratios),
        ),
    ]  # fmt: skip
    gaps = [b - a for a, b in zip(space.lsns, space.lsns[1:], strict=False)]
    distance = [lsn - start for lsn, start in zip(at.random_lsn, at.random_from, strict=True)]

    def phases(p: dict[str, float]) -> str:
        names = {"resolve": "resolving the point (the read-only log's `next_lsn`)",
                 "workspace": "restoring the snapshot (or creating the schema)",
                 "fold": "folding forward", "reopen": "reopening read-only",
                 "event_ts": "reading the last event's `ts`"}  # fmt: skip
        return ", ".join(f"{names.get(k, k)} {v * 1e3:,.0f} ms" for k, v in p.items())

    def fmt_ms(xs: list[float]) -> str:
        return ", ".join(f"{x:,.0f}" for x in xs)

    per_point_text = "; ".join(
        f"LSN {p:,}: {z / 1e3:,.1f} s from zero ({(p + 1) / (z / 1e3):,.0f} events/s), "
        f"{s:,.0f} ms with snapshots"
        for p, z, s in zip(zero_points, zero_ms, paired_ms, strict=True)
    )
    folded_on = _median([float(r.folded["snapshots"]) for r in appends])
    folded_off = _median([float(r.folded["no-snapshots"]) for r in appends])
    appended = appends[0].appended
    notes = [
        _store_note(gs),
        f"Catch-up from zero (medians of {len(cu.snap_s)}): with the default policy "
        f"(a snapshot every {SnapshotPolicy().every_events:,} events or "
        f"{SnapshotPolicy().every_bytes >> 20} MiB of log, keep {SnapshotPolicy().keep}) "
        f"{_median(cu.snap_s):.1f} s, {_median(cu.snap_cpu):.1f} CPU-s; without "
        f"{_median(cu.none_s):.1f} s, {_median(cu.none_cpu):.1f} CPU-s (process CPU, all "
        "threads; the snapshots' SHA-256 runs on two threads).",
        f"Space: {space.snapshots} snapshots at LSNs {space.lsns[0]:,} to {space.lsns[-1]:,} "
        f"(gaps median {_median([float(g) for g in gaps]) if gaps else 0:,.0f} events), "
        f"{space.snapshot_bytes / _MB:,.0f} MB in {space.chunk_files:,} chunk files and "
        f"{space.manifest_bytes / 1e3:,.0f} kB of manifests, against a live database of "
        f"{space.database_bytes / _MB:,.0f} MB (the catch-up without snapshots left a file of "
        f"{cu.none_db_bytes / _MB:,.0f} MB). A snapshot added "
        f"{space.mean_new / _MB:,.1f} MB of new chunks on average (the first "
        f"{space.first_new / _MB:,.1f} MB, the whole file), for databases of "
        f"{space.median_size / _MB:,.0f} MB (median size a manifest describes): consecutive "
        "snapshots share the chunks DuckDB's checkpoint did not rewrite.",
        f"replay.at with snapshots at {k} random points (seeded; a child process, one warm-up "
        f"call first): {fmt_ms(sorted(ms))} ms; it folded "
        f"{_median([float(d) for d in distance]):,.0f} events past its snapshot (median, at "
        f"most {max(distance):,}). Where the time goes "
        f"(medians): {phases(at.phases)}; closing a view (deleting its file) "
        f"{at.close_ms:,.0f} ms. The child peaked at {at.peak_mb:,.0f} MB (VmHWM).",
        f"From zero, next to a call with snapshots at the same point: {per_point_text}. "
        f"Phases from zero (medians): {phases(at.zero_phases)}.",
        f"Appends: {plan.reps} repetition{'s' if plan.reps > 1 else ''}; each starts two "
        "fresh stores (default FSYNC writer in this process, the agents and templates "
        "appended first) and two `lmg "
        f"project STORE --follow` children, then {plan.slices} slices of {slice_batches} "
        f"batches of 1,000 mixed events per side ({appended:,} events per side), sides "
        "alternating, the other side's projector stopped (SIGSTOP) meanwhile. The "
        f"snapshotting projector took {_median([float(r.snapshots) for r in appends]):.0f} "
        "snapshots during the slices (median; it folds in batches of up to 20,000, so with a "
        "backlog it takes one after every batch); when stopped, the projectors had folded to "
        f"LSN {folded_on:,.0f} (snapshots) and {folded_off:,.0f} (none) of {appended + 21:,} "
        f"(medians): neither keeps up with a writer at full speed. CPU time of the projector "
        "processes by the end of the slices (startup and catch-up included, medians): "
        f"{_median([r.cpu_s['snapshots'] for r in appends]):.1f} s (snapshots), "
        f"{_median([r.cpu_s['no-snapshots'] for r in appends]):.1f} s (none); the writer "
        "shares 2 CPUs with its projector. Load average now: "
        f"{_loadavg()}.",
    ]
    return rows, notes
