"""The projections' benchmarks: catch-up fold, a following projector's lag, reads, memory.

Each function here runs one case and returns its rows and notes (`cases.py` wraps them).
`fold`, `reads` and `rss` share one store of mixed events (`_graph_data`), built once per
run, and one database folded from it (the `fold` case's warm-up fold, or a fold made on
first use when `fold` is not run); both live under one temp directory removed at exit.
`follow` appends to a store of its own.

Rows with a fixed baseline (a target such as 1 ms, 250 ms, 150 MB or 100,000 events/s)
report the measured value next to it and a ratio that is 1x exactly at the target: target /
measured for times and sizes, measured / target for rates, so higher is better everywhere.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import gc
import itertools
import math
import os
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.compute as pc

import eventlog
from eventlog import Record
from projections import MemoryGraph, connect, fold_records, rebuild
from projections._schema import checkpoint, ensure_schema

from ._graph_child import TICK_S
from ._graph_data import build_graph_store, build_long_store
from ._harness import Plan, Row, log, remove_tree

__all__ = [
    "FOLD_TARGET",
    "FOLLOW_RATE",
    "GraphStore",
    "fold",
    "fold_batches",
    "fold_long",
    "follow",
    "graph_store",
    "reads",
    "rss",
]

ROOT = Path(__file__).resolve().parents[2]
FOLD_TARGET = 150_000  # events/s (issue 14)
BATCH_COST_MS = 45.0  # CPU per small batch of a fold when issue 14 was filed, whatever its size
BATCH_SIZES = (1, 10, 100)  # fold_batches: events per transaction
BATCHES = 40  # fold_batches: transactions timed per size and repetition
FOLLOW_RATE = 2_000  # events/s appended while the projector follows
FOLLOW_P95_MS = 250.0
READ_POLL_S = 0.02  # the reader's pause between two looks at the checkpoint
RSS_TARGET_MB = 150.0
SEED_RSS_MB = 100.0  # the original build plan: "Memory Footprint < 100MB base, embedded mode"

T = TypeVar("T")

# -- the shared store and database ------------------------------------------------------------


@dataclass
class GraphStore:
    path: Path
    events: int
    counts: dict[str, int]
    build_s: float
    folded: Path | None = None  # a database holding the whole store, once one is made


_STORES: dict[int, GraphStore] = {}
_ROOTS: dict[str, Path] = {}


def _shared_root(tmp_root: Path | None) -> Path:
    key = str(tmp_root)
    if key not in _ROOTS:
        _ROOTS[key] = Path(tempfile.mkdtemp(prefix="lmg-bench-graph-", dir=tmp_root))
        atexit.register(remove_tree, _ROOTS[key])
    return _ROOTS[key]


def graph_store(n: int, tmp_root: Path | None) -> GraphStore:
    """The run's store of `n` mixed events, built on first use (Durability.NONE)."""
    if n not in _STORES:
        path = _shared_root(tmp_root) / f"store-{n}"
        log(f"  building a store of {n:,} mixed events")
        began = time.perf_counter()
        counts = build_graph_store(path, n)
        _STORES[n] = GraphStore(path, n, counts, time.perf_counter() - began)
    return _STORES[n]


def folded_database(gs: GraphStore) -> Path:
    """A database holding the whole store (made by `projections.rebuild` on first use)."""
    if gs.folded is None:
        db = gs.path.parent / f"folded-{gs.events}.duckdb"
        log(f"  folding the {gs.events:,}-event store for the reads")
        _fold_into(gs, db)
        gs.folded = db
    return gs.folded


def _fold_into(gs: GraphStore, db: Path, cpu: list[float] | None = None) -> float:
    """`projections.rebuild` of the whole store into `db`; seconds taken (GC on, the
    setup heap frozen as the harness does). Appends the process's CPU seconds to `cpu`."""
    with _frozen_heap():
        began, cpu_began = time.perf_counter(), time.process_time()
        lsn = rebuild(gs.path, database=db, snapshots=None)  # the fold alone
        seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    if lsn != gs.events - 1:
        raise RuntimeError(f"the fold stopped at LSN {lsn} of {gs.events - 1}")
    if cpu is not None:
        cpu.append(cpu_seconds)
    return seconds


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _drop_database(db: Path) -> None:
    for suffix in ("", ".wal", ".lock", ".gate"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def _pct(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sequence."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


def _target_row(
    case: str,
    what: str,
    subject: str,
    *,
    baseline: str,
    target: float,
    measured: list[float],
    unit: str,
    minimum: float | None = 1.0,
    higher_is_better: bool = False,
) -> Row:
    """A row against a fixed target: ratio target / measured (times, sizes) or measured /
    target (rates), per repetition; 1x is exactly on target."""
    ratios = [
        (m / target if higher_is_better else target / m) if m > 0 else math.inf for m in measured
    ]
    return Row(
        case=case,
        what=what,
        subject=subject,
        baseline=baseline,
        minimum=minimum,
        ratio=_median(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
        subject_value=_median(measured),
        baseline_value=target,
        unit=unit,
        reps=len(measured),
    )


def _store_note(gs: GraphStore) -> str:
    c = gs.counts
    segments = len(list(gs.path.glob("*.seg")))
    size = sum(p.stat().st_size for p in gs.path.iterdir() if p.is_file())
    return (
        f"The store: {gs.events:,} events in {segments} segments ({size / 1e6:,.0f} MB), built "
        f"in {gs.build_s:.0f} s: {c.get('session.created', 0):,} sessions, "
        f"{c.get('prompt.added', 0):,} prompts, {c.get('agent.assigned', 0):,} assignments, "
        f"{c.get('response.added', 0):,} responses, {c.get('tool.invoked', 0):,} tool calls "
        f"and as many completions, {c.get('agent.handoff', 0):,} handoffs, "
        f"{c.get('agent.registered', 0)} agents, {c.get('template.created', 0)} templates."
    )


# -- fold -------------------------------------------------------------------------------------


def _export(db: Path) -> dict[str, pa.Table]:
    """Every projection table of a folded database, as Arrow (untimed)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' ORDER BY table_name"
            ).fetchall()
            if not name.startswith("lmg_")  # meta and checkpoints: ensure_schema writes them
        ]
        return {name: con.sql(f'SELECT * FROM "{name}"').to_arrow_table() for name in names}
    finally:
        con.close()


def _arrow_load(tables: dict[str, pa.Table], db: Path, cpu: list[float]) -> float:
    """The baseline: a fresh file, the projections' DDL, every table inserted from Arrow in
    one transaction; seconds from connect to close (CPU seconds appended to `cpu`)."""
    with _frozen_heap():
        began, cpu_began = time.perf_counter(), time.process_time()
        con = duckdb.connect(str(db))
        try:
            ensure_schema(con)
            con.execute("BEGIN")
            for name, table in tables.items():
                con.register("lmg_bench_rows", table)
                con.execute(f'INSERT INTO "{name}" SELECT * FROM lmg_bench_rows')
                con.unregister("lmg_bench_rows")
            con.execute("COMMIT")
        finally:
            con.close()
        cpu.append(time.process_time() - cpu_began)
        return time.perf_counter() - began


def _alternate(
    gs: GraphStore, tables: dict[str, pa.Table], work: Path, reps: int, case: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    """`reps` folds of the whole store and as many Arrow loads of `tables`, in alternating
    order: seconds of each, then CPU seconds of each."""
    fold_s: list[float] = []
    load_s: list[float] = []
    fold_cpu: list[float] = []
    load_cpu: list[float] = []
    n = gs.events
    for rep in range(reps):
        fold_db, load_db = work / f"fold-{rep}.duckdb", work / f"load-{rep}.duckdb"
        for side in ("fold", "load") if rep % 2 == 0 else ("load", "fold"):
            if side == "fold":
                fold_s.append(_fold_into(gs, fold_db, fold_cpu))
            else:
                load_s.append(_arrow_load(tables, load_db, load_cpu))
        _drop_database(fold_db)
        _drop_database(load_db)
        log(
            f"  {case:<11} rep {rep + 1}/{reps}  fold {n / fold_s[-1]:>10,.0f} events/s"
            f"  ({fold_s[-1]:.2f} s)   Arrow load {n / load_s[-1]:>10,.0f} events/s "
            f"({load_s[-1]:.2f} s)"
        )
    return fold_s, load_s, fold_cpu, load_cpu


def fold(plan: Plan, n: int, reps: int) -> tuple[list[Row], list[str]]:
    gs = graph_store(n, plan.tmp_root)
    work = Path(tempfile.mkdtemp(prefix="lmg-bench-fold-", dir=plan.tmp_root))
    try:
        warm = work / "warm.duckdb"
        log("  fold: warm-up fold (its tables are the baseline's rows)")
        warm_s = _fold_into(gs, warm)
        tables = _export(warm)
        db_mb = warm.stat().st_size / 1e6
        if gs.folded is None:  # keep it for the reads and rss cases
            kept = gs.path.parent / f"folded-{n}.duckdb"
            for suffix in ("", ".wal"):
                if Path(f"{warm}{suffix}").exists():
                    shutil.move(f"{warm}{suffix}", f"{kept}{suffix}")
            gs.folded = kept
        _drop_database(warm)
        fold_s, load_s, fold_cpu, load_cpu = _alternate(gs, tables, work, reps, "fold")
    finally:
        remove_tree(work)
    rows_written = sum(t.num_rows for t in tables.values())
    fold_rates = [n / s for s in fold_s]
    ratios = [b / a for a, b in zip(fold_s, load_s, strict=True)]
    subject = "`projections.rebuild(store, database=fresh, snapshots=None)`"
    what = f"catch-up fold of {n:,} mixed events"
    rows = [
        Row(
            case="fold",
            what=what,
            subject=subject,
            baseline="Arrow INSERT of the same final tables",
            minimum=0.5,
            ratio=_median(ratios),
            ratio_min=min(ratios),
            ratio_max=max(ratios),
            subject_value=_median(fold_rates),
            baseline_value=_median(n / s for s in load_s),
            unit="events/s",
            reps=reps,
        ),
        _target_row(
            "fold",
            what,
            subject,
            baseline=f"{FOLD_TARGET:,} events/s (target)",
            target=FOLD_TARGET,
            measured=fold_rates,
            unit="events/s",
            higher_is_better=True,
        ),
    ]
    by_table = ", ".join(f"{k} {t.num_rows:,}" for k, t in tables.items() if t.num_rows)
    notes = [
        _store_note(gs),
        f"The fold wrote {rows_written:,} rows ({rows_written / n:.2f} per event: {by_table}) "
        f"into a {db_mb:,.0f} MB database; the Arrow baseline inserted the same rows at "
        f"{_median(rows_written / s for s in load_s):,.0f} rows/s (median). The warm-up fold "
        f"took {warm_s:.1f} s ({n / warm_s:,.0f} events/s).",
        f"CPU time of the process (all threads), medians: the fold {_median(fold_cpu):.1f} s "
        f"for {_median(fold_s):.1f} s of wall time ({n / _median(fold_cpu):,.0f} events per "
        f"CPU-second), the Arrow load {_median(load_cpu):.2f} s for {_median(load_s):.2f} s "
        f"({n / _median(load_cpu):,.0f} events per CPU-second). Load average now: "
        f"{_loadavg()}.",
    ]
    return rows, notes


def fold_batches(plan: Plan, n: int, reps: int) -> tuple[list[Row], list[str]]:
    """The fixed cost of a fold's transaction: batches of 1, 10 and 100 events, as a
    following projector and `lmg serve` fold what just landed, on a database that holds
    all but the last events of the store."""
    gs = graph_store(n, plan.tmp_root)
    tail = BATCHES * max(BATCH_SIZES)
    work = Path(tempfile.mkdtemp(prefix="lmg-bench-batches-", dir=plan.tmp_root))
    try:
        base = work / "base.duckdb"
        log(f"  fold_batches: folding the first {n - tail:,} events")
        with eventlog.open(gs.path, readonly=True) as elog:
            con = duckdb.connect(str(base), config={"checkpoint_threshold": "1GB"})
            try:
                ensure_schema(con)
                fold_records(con, elog.read(0, n - tail))
            finally:
                con.close()
            records = list(elog.read(n - tail))
        cpu_ms: dict[int, list[float]] = {k: [] for k in BATCH_SIZES}
        wall_ms: dict[int, list[float]] = {k: [] for k in BATCH_SIZES}
        for _ in range(reps):
            for k in BATCH_SIZES:
                wall, cpu = _fold_in_batches(base, work / f"b{k}.duckdb", records[: BATCHES * k], k)
                wall_ms[k].append(wall / BATCHES * 1e3)
                cpu_ms[k].append(cpu / BATCHES * 1e3)
    finally:
        remove_tree(work)
    rows = [
        _target_row(
            "fold_batches",
            f"fold of batches of {k} mixed events, {n:,} folded before",
            f"`fold_records(..., batch_events={k})`, CPU ms per transaction",
            baseline=f"{BATCH_COST_MS:g} ms CPU per transaction (issue 14)",
            target=BATCH_COST_MS,
            measured=cpu_ms[k],
            unit="ms",
            minimum=None,
        )
        for k in BATCH_SIZES
    ]
    notes = [
        f"{BATCHES} transactions per size and repetition, after the first {n - tail:,} events "
        "were folded in batches of 20,000; the records read beforehand. Wall ms per "
        "transaction (median): "
        + ", ".join(f"{k} events {_median(wall_ms[k]):.1f}" for k in BATCH_SIZES)
        + f". Load average now: {_loadavg()}."
    ]
    return rows, notes


def _fold_in_batches(base: Path, db: Path, records: list[Record], k: int) -> tuple[float, float]:
    """Wall and CPU seconds to fold `records` into a copy of `base` in batches of `k`."""
    shutil.copy(base, db)
    con = duckdb.connect(str(db), config={"checkpoint_threshold": "1GB"})
    try:
        with _frozen_heap():
            began, cpu_began = time.perf_counter(), time.process_time()
            fold_records(con, iter(records), batch_events=k)
            return time.perf_counter() - began, time.process_time() - cpu_began
    finally:
        con.close()
        _drop_database(db)


def fold_long(plan: Plan, n: int, reps: int) -> tuple[list[Row], list[str]]:
    """The catch-up fold of long conversation text against an Arrow load of just its
    prompt and response rows (the rows that carry the text)."""
    path = _shared_root(plan.tmp_root) / f"long-{n}"
    log(f"  building a store of {n:,} events of long conversation text")
    began = time.perf_counter()
    counts = build_long_store(path, n)
    gs = GraphStore(path, n, counts, time.perf_counter() - began)
    work = Path(tempfile.mkdtemp(prefix="lmg-bench-fold-long-", dir=plan.tmp_root))
    try:
        warm = work / "warm.duckdb"
        log("  fold_long: warm-up fold")
        warm_s = _fold_into(gs, warm)
        tables = {k: t for k, t in _export(warm).items() if k in ("prompts", "responses")}
        _drop_database(warm)
        fold_s, load_s, fold_cpu, load_cpu = _alternate(gs, tables, work, reps, "fold_long")
    finally:
        remove_tree(path)
        remove_tree(work)
    rows_loaded = sum(t.num_rows for t in tables.values())
    chars = sum(pc.sum(pc.utf8_length(t["content"])).as_py() for t in tables.values())
    ratios = [b / a for a, b in zip(fold_s, load_s, strict=True)]
    rows = [
        Row(
            case="fold_long",
            what=f"catch-up fold of {n:,} events of long conversation text",
            subject="`projections.rebuild(store, database=fresh, snapshots=None)`",
            baseline="Arrow INSERT of its final prompts and responses",
            minimum=None,
            ratio=_median(ratios),
            ratio_min=min(ratios),
            ratio_max=max(ratios),
            subject_value=_median(n / s for s in fold_s),
            baseline_value=_median(n / s for s in load_s),
            unit="events/s",
            reps=reps,
        )
    ]
    notes = [
        f"The store: {n:,} events, {counts.get('session.created', 0):,} sessions, "
        f"{counts.get('prompt.added', 0):,} prompts and {counts.get('response.added', 0):,} "
        f"responses of {chars / max(rows_loaded, 1):,.0f} characters on average, built in "
        f"{gs.build_s:.0f} s. The warm-up fold took {warm_s:.1f} s ({n / warm_s:,.0f} "
        "events/s).",
        f"CPU time of the process (all threads), medians: the fold {_median(fold_cpu):.1f} s "
        f"for {_median(fold_s):.1f} s of wall time, the Arrow load {_median(load_cpu):.2f} s "
        f"for {_median(load_s):.2f} s. Load average now: {_loadavg()}.",
    ]
    return rows, notes


# -- follow -----------------------------------------------------------------------------------


def _child(*args: str) -> subprocess.Popen[bytes]:
    # The children's errors go to the run's stderr.
    return subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks._graph_child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )


def _expect(proc: subprocess.Popen[bytes], word: bytes, timeout: float) -> None:
    """Wait for a child to print `word` on a line of its own."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if line.strip() == word:
                return
            if not line:
                break
        if proc.poll() is not None:
            break
    raise RuntimeError(f"child {proc.args!r} did not say {word!r} (exit status {proc.poll()})")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class _Poll:
    asked_ns: int  # before `connect`
    open_ns: int  # connection in hand: the state it sees
    done_ns: int  # block left (gate released)
    checkpoint: int


def _poll(store: Path, polls: list[_Poll], failures: list[str]) -> int:
    asked = time.monotonic_ns()
    try:
        with connect(store, wait_s=10.0) as con:
            opened = time.monotonic_ns()
            cp = checkpoint(con)
    except Exception as exc:  # DatabaseBusy after wait_s, or a half-written file
        failures.append(f"{type(exc).__name__}: {exc}")
        return -1
    polls.append(_Poll(asked, opened, time.monotonic_ns(), cp))
    return cp


def _lags_ms(
    requests: list[tuple[int, int, int, int]], seen: list[tuple[int, int]]
) -> tuple[list[float], int, int]:
    """Per event appended: (the first time its LSN was seen folded) - (the time its append
    returned), in ms; `seen` is (time, checkpoint) in time order. Also how many were never
    seen, and how many were seen before their append returned (counted as 0 ms)."""
    times = [t for t, _ in seen]
    marks = list(itertools.accumulate((cp for _, cp in seen), max))
    lags: list[float] = []
    missing = early = 0
    for first, count, _asked, returned in requests:
        i = bisect.bisect_left(marks, first)
        for lsn in range(first, first + count):
            while i < len(marks) and marks[i] < lsn:
                i += 1
            if i == len(marks):
                missing += 1
                continue
            lag = (times[i] - returned) / 1e6
            early += lag < 0
            lags.append(max(0.0, lag))
    return lags, missing, early


def follow(plan: Plan, seconds: float) -> tuple[list[Row], list[str]]:
    work = Path(tempfile.mkdtemp(prefix="lmg-bench-follow-", dir=plan.tmp_root))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        store = work / "store"
        backlog = build_graph_store(store, 20_000, seed=3)  # something to catch up on first
        projector_out, appender_out = work / "projector.json", work / "appender.json"
        projector = _child("project", str(store), str(projector_out))
        procs.append(projector)
        _expect(projector, b"ready", timeout=300)
        log(f"  follow: projector caught up; appending {FOLLOW_RATE:,} events/s for {seconds:g} s")
        appender = _child("append", str(store), str(appender_out), str(FOLLOW_RATE), str(seconds))
        procs.append(appender)
        _expect(appender, b"started", timeout=120)
        polls: list[_Poll] = []
        failures: list[str] = []
        while appender.poll() is None:
            _poll(store, polls, failures)
            time.sleep(READ_POLL_S)
        if appender.returncode != 0:
            raise RuntimeError(f"the appender failed (exit status {appender.returncode})")
        appended = msgspec.json.decode(appender_out.read_bytes())
        requests = [(int(a), int(b), int(c), int(d)) for a, b, c, d in appended["requests"]]
        last = requests[-1][0] + requests[-1][1] - 1
        drain_deadline = time.monotonic() + 60
        while time.monotonic() < drain_deadline:  # the reader keeps looking until all is in
            if _poll(store, polls, failures) >= last:
                break
            time.sleep(READ_POLL_S)
        _stop(projector)
        if projector.returncode != 0:
            raise RuntimeError(f"the projector failed (exit status {projector.returncode})")
        folded = msgspec.json.decode(projector_out.read_bytes())
    finally:
        for proc in procs:
            _stop(proc)
        remove_tree(work)
    commits: list[list[Any]] = folded["commits"]
    committed, missing_c, early_c = _lags_ms(requests, [(c[0], c[1]) for c in commits])
    visible, missing_v, _ = _lags_ms(requests, [(p.open_ns, p.checkpoint) for p in polls])
    append_ms = [(r[3] - r[2]) / 1e6 for r in requests]
    if not committed:
        raise RuntimeError("the projector reported no commit of the appended events")
    waits = [(p.open_ns - p.asked_ns) / 1e6 for p in polls]
    holds = [(p.done_ns - p.open_ns) / 1e6 for p in polls]
    own_lag = [c[3] for c in commits if c[3] is not None]
    events = sum(r[1] for r in requests)
    rate = events / appended["elapsed_s"]
    what = f"follow lag at {FOLLOW_RATE:,} events/s for {seconds:g} s"
    subject = "lag to commit (`on_progress`)"
    target = f"{FOLLOW_P95_MS:g} ms (target)"
    reader = f"lag to a reader polling `connect` every {READ_POLL_S * 1e3:.0f} ms"
    rows = [
        _target_row(
            "follow",
            f"{what}, {label}",
            f"{label} {who}",
            baseline=target,
            target=FOLLOW_P95_MS,
            measured=[_pct(lags, q)],
            unit="ms",
            minimum=minimum,
        )
        for label, who, lags, q, minimum in (
            ("p95", subject, committed, 0.95, 1.0),
            ("p50", subject, committed, 0.50, None),
            ("p99", subject, committed, 0.99, None),
            ("p95", reader, visible, 0.95, None),
        )
    ]

    def dist(xs: list[float]) -> str:
        if not xs:
            return "none"
        return (f"p50 {_pct(xs, 0.5):,.1f}, p95 {_pct(xs, 0.95):,.1f}, p99 "
                f"{_pct(xs, 0.99):,.1f}, max {max(xs):,.1f} ms")  # fmt: skip

    after = [c for c in commits if c[1] >= requests[0][0]]
    notes = [
        f"Appended {events:,} events in {len(requests):,} requests of "
        f"{requests[0][1]} (one per {TICK_S * 1e3:.0f} ms, FSYNC) at {rate:,.0f} events/s "
        f"achieved ({appended['late']} requests more than a tick late), after a backlog of "
        f"{sum(backlog.values()):,} events the projector caught up on first. An append took "
        f"{dist(append_ms)}.",
        f"Lag from the append's return to the commit of its event (`on_progress`, reported "
        f"after each batch's COMMIT, before the projector closes the file): "
        f"{dist(committed)}; to the first look of the polling reader that saw it: "
        f"{dist(visible)}"
        + (
            f"; {early_c:,} events were committed before their append returned (0 ms)"
            if early_c
            else ""
        )
        + (f"; {missing_c} events never reported committed" if missing_c else "")
        + (f"; {missing_v} never seen by the reader" if missing_v else "")
        + ".",
        f"The projector committed {len(after):,} times while following "
        f"({events / max(1, len(after)):,.1f} events per commit); its own `Progress.lag_ms` "
        f"(now - `ts` of the last event folded): {dist(own_lag)}, its `lag_events` at most "
        f"{max((c[4] for c in after), default=0):,}; it waited "
        f"{folded['waited_ms_total']:,.0f} ms in all for readers (and to open the file).",
        f"The reader ({len(polls):,} looks, pausing {READ_POLL_S * 1e3:.0f} ms between them): "
        f"its wait for `connect` (gate + DuckDB open) {dist(waits)}; connection held "
        f"{dist(holds)}"
        + (f"; {len(failures)} looks failed: {failures[0]}" if failures else "")
        + ".",
    ]
    return rows, notes


# -- reads ------------------------------------------------------------------------------------

NODE_IDS = 1_000
SESSIONS = 200
RESPONSES = 100
WARM_PASSES = 3
STATS_RUNS = 15
PASS_BUDGET_S = 4.0  # a pass of slow calls stops after this long ...
AT_LEAST = 20  # ... once it has made this many calls


def _time_each(fn: Callable[[T], object], args: Sequence[T]) -> list[float]:
    """Microseconds per call of `fn(arg)`, one call per arg, in order; stops early (after
    `AT_LEAST` calls) once the calls have taken `PASS_BUDGET_S`."""
    out: list[float] = []
    clock = time.perf_counter_ns
    budget_ns = PASS_BUDGET_S * 1e9
    spent = 0
    for arg in args:
        began = clock()
        fn(arg)
        took = clock() - began
        out.append(took / 1e3)
        spent += took
        if spent > budget_ns and len(out) >= AT_LEAST:
            break
    return out


def _sample_ids(g: MemoryGraph, rng: random.Random) -> dict[str, list[uuid.UUID]]:
    def ids(table: str) -> list[uuid.UUID]:
        return [row[0] for row in g.rows(f"SELECT id FROM {table} ORDER BY lsn")]

    def sample(table: str, k: int) -> list[uuid.UUID]:
        all_ids = ids(table)
        return rng.sample(all_ids, min(k, len(all_ids)))

    small = ids("agents") + ids("templates")
    nodes = (
        sample("prompts", 350)
        + sample("responses", 350)
        + sample("tool_invocations", 150)
        + sample("sessions", NODE_IDS - 850 - len(small))
        + small
    )
    rng.shuffle(nodes)
    return {
        "nodes": nodes,
        "sessions": sample("sessions", SESSIONS),
        "responses": sample("responses", RESPONSES),
    }


def reads(plan: Plan, n: int, reps: int) -> tuple[list[Row], list[str]]:
    gs = graph_store(n, plan.tmp_root)
    db = folded_database(gs)
    rng = random.Random(20240501)
    with MemoryGraph.open(gs.path, database=db) as g:
        picked = _sample_ids(g, rng)
        missing = sum(g.get_node(i) is None for i in picked["nodes"][:50])  # a sanity check
        hops = _median(len(g.ancestors(r, depth=5)) for r in picked["responses"][:10])
    if missing:
        raise RuntimeError(f"{missing} sampled ids are not nodes of the folded database")
    nodes, sessions, responses = picked["nodes"], picked["sessions"], picked["responses"]
    keys = ("node", "window", "ancestors", "stats")
    cold: dict[str, list[float]] = {k: [] for k in keys}  # p95 per repetition
    warm: dict[str, list[float]] = {k: [] for k in keys}
    warm_p50: dict[str, list[float]] = {k: [] for k in keys}
    open_ms: list[float] = []
    calls_made: dict[str, int] = {}
    for rep in range(reps):
        began = time.perf_counter()
        graph = MemoryGraph.open(gs.path, database=db)
        open_ms.append((time.perf_counter() - began) * 1e3)
        with graph as g, _frozen_heap():

            def window(s: uuid.UUID, g: MemoryGraph = g) -> object:
                return g.context_window(s, 10)

            def lineage(r: uuid.UUID, g: MemoryGraph = g) -> object:
                return g.ancestors(r, depth=5)

            def stats(_: int, g: MemoryGraph = g) -> object:
                return g.rows("SELECT * FROM agent_stats")

            calls: dict[str, tuple[Callable[[Any], object], Sequence[Any]]] = {
                "node": (g.get_node, nodes),
                "window": (window, sessions),
                "ancestors": (lineage, responses),
                "stats": (stats, [0]),
            }
            used: dict[str, list[Any]] = {}
            for key, (fn, args) in calls.items():  # first lookups in a fresh graph
                times = _time_each(fn, args)
                used[key] = list(args[: len(times)])  # the warm passes repeat these
                cold[key].append(_pct(times, 0.95))
                calls_made[key] = max(calls_made.get(key, 0), len(times))
            seen: dict[str, list[float]] = {k: [] for k in keys}
            repeat = {"stats": STATS_RUNS // WARM_PASSES}
            for _ in range(WARM_PASSES):
                for key, (fn, _args) in calls.items():
                    order = rng.sample(used[key], len(used[key])) * repeat.get(key, 1)
                    seen[key] += _time_each(fn, order)
            for key in keys:
                warm[key].append(_pct(seen[key], 0.95))
                warm_p50[key].append(_pct(seen[key], 0.50))
        log(
            f"  {'reads':<11} rep {rep + 1}/{reps}  p95 warm (cold) µs: get_node "
            f"{warm['node'][-1]:,.0f} ({cold['node'][-1]:,.0f}), context_window "
            f"{warm['window'][-1]:,.0f} ({cold['window'][-1]:,.0f}), ancestors "
            f"{warm['ancestors'][-1]:,.0f} ({cold['ancestors'][-1]:,.0f}), agent_stats "
            f"{warm['stats'][-1]:,.0f} ({cold['stats'][-1]:,.0f})"
        )
    on = f", {n:,} events"
    node = f"get_node, {calls_made['node']:,} ids of every kind{on}"
    win = f"context window, {calls_made['window']} sessions{on}"
    anc = f"lineage depth 5, {calls_made['ancestors']} responses{on}"
    agg = f"agent_stats over all events{on}"
    g_, w_, a_ = "`get_node`", "`context_window(s, 10)`", "`ancestors(r, depth=5)`"
    s_ = "`SELECT * FROM agent_stats`"
    table: list[tuple[str, str, str, float, list[float], float | None]] = [
        (node, f"{g_} p95, warm", "1 ms (target)", 1, warm["node"], 1.0),
        (node, f"{g_} p95, cold (first lookups)", "1 ms (target)", 1, cold["node"], None),
        (win, f"{w_} p95, warm", "2 ms (target)", 2, warm["window"], 1.0),
        (win, f"{w_} p95, warm", "1 ms (build plan read latency)", 1, warm["window"], None),
        (win, f"{w_} p95, cold", "2 ms (target)", 2, cold["window"], None),
        (anc, f"{a_} p95, warm", "5 ms (target)", 5, warm["ancestors"], 1.0),
        (anc, f"{a_} p95, warm", "15 ms (build plan lineage p95)", 15, warm["ancestors"], None),
        (anc, f"{a_} p95, cold", "5 ms (target)", 5, cold["ancestors"], None),
        (agg, f"{s_} p95, warm", "50 ms (target)", 50, warm["stats"], 1.0),
        (agg, f"{s_} p50, warm", "50 ms (target)", 50, warm_p50["stats"], None),
        (agg, f"{s_}, cold (first query)", "50 ms (target)", 50, cold["stats"], None),
    ]  # fmt: skip
    rows = [
        _target_row(
            "reads",
            what,
            subject,
            baseline=baseline,
            target=target_ms * 1e3,
            measured=measured,
            unit="µs",
            minimum=minimum,
        )
        for what, subject, baseline, target_ms, measured, minimum in table
    ]
    notes = [
        f"Each repetition opens a fresh embedded `MemoryGraph.open(store, database=folded)` "
        f"(median {_median(open_ms):,.0f} ms; nothing left to fold) and times, per call: the "
        "first lookups (cold: empty caches, DuckDB's buffers empty, the file in the OS page "
        f"cache), then {WARM_PASSES} shuffled passes over the same arguments (warm), and "
        f"`agent_stats` once cold and {STATS_RUNS} times warm. Medians over repetitions of "
        "each repetition's percentile. A pass of calls stops early, after at least "
        f"{AT_LEAST} calls, once it has taken {PASS_BUDGET_S:g} s (the row says how many "
        "arguments were used).",
        f"p50 warm: get_node {_median(warm_p50['node']):,.0f} µs, context_window "
        f"{_median(warm_p50['window']):,.0f} µs, ancestors "
        f"{_median(warm_p50['ancestors']):,.0f} µs (build plan: 5 ms), agent_stats "
        f"{_median(warm_p50['stats']) / 1e3:,.1f} ms. An ancestors walk of depth 5 returned "
        f"{hops:.0f} hops (median). The build plan's 'graph traversal < 50 ms p95' (trace a full "
        f"prompt lineage) compares with ancestors: {_median(warm['ancestors']) / 1e3:,.1f} ms "
        f"warm, {_median(cold['ancestors']) / 1e3:,.1f} ms cold.",
    ]
    return rows, notes


# -- rss --------------------------------------------------------------------------------------


def _rss_child(store: Path, db: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks._graph_child", "rss", str(store), str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        check=True,
    )
    result: dict[str, Any] = msgspec.json.decode(proc.stdout.strip().splitlines()[-1])
    return result


def rss(plan: Plan, n: int) -> tuple[list[Row], list[str]]:
    gs = graph_store(n, plan.tmp_root)
    db = folded_database(gs)
    work = Path(tempfile.mkdtemp(prefix="lmg-bench-rss-", dir=plan.tmp_root))
    try:
        log("  rss: a child opens the folded database and reads")
        folded = _rss_child(gs.path, db)
        log(f"  rss: a child folds the {n:,}-event backlog from zero, then reads")
        fresh = work / "fresh.duckdb"
        zero = _rss_child(gs.path, fresh)
        fresh_mb = fresh.stat().st_size / 1e6
    finally:
        remove_tree(work)
    for result in (folded, zero):
        if result["checkpoint"] != n - 1:
            raise RuntimeError(f"the child's graph stood at LSN {result['checkpoint']}")
    mb = 1024 / 1e6  # KiB to MB

    def peak(r: dict[str, Any]) -> float:
        return float(r["max_kb"]) * mb

    what = f"peak RSS, embedded MemoryGraph, {n:,} events"
    already, from_zero = "database already folded, then reads", "folding the backlog on open"
    target = f"{RSS_TARGET_MB:g} MB (target)"
    seed = f"{SEED_RSS_MB:g} MB (build plan embedded base memory)"
    table: list[tuple[str, str, float, float, float | None]] = [
        (already, target, RSS_TARGET_MB, peak(folded), 1.0),
        (from_zero + ", then reads", target, RSS_TARGET_MB, peak(zero), 1.0),
        (already, seed, SEED_RSS_MB, peak(folded), None),
    ]
    rows = [
        _target_row(
            "rss",
            what,
            subject,
            baseline=baseline,
            target=limit,
            measured=[mb_peak],
            unit="MB",
            minimum=minimum,
        )
        for subject, baseline, limit, mb_peak, minimum in table
    ]
    notes = [
        f"Peak RSS (VmHWM of /proc/self/status) of a child process: "
        f"{folded['start_kb'] * mb:,.0f} MB at start, {folded['imported_kb'] * mb:,.0f} MB "
        "after importing projections (duckdb, msgspec, eventlog; pyarrow loads with the first "
        "fold, so not in this child); opening the folded "
        f"database took {folded['open_s'] * 1e3:,.0f} ms and brought the peak to "
        f"{folded['open_kb'] * mb:,.0f} MB; {folded['reads']} reads (250 get_node, 50 "
        "context_window, 20 ancestors, 5 agent_stats) took "
        f"{folded['reads_s']:.2f} s and ended at a peak of {peak(folded):,.0f} MB "
        f"(resident {folded['end_kb'] * mb:,.0f} MB at the end). Not `ru_maxrss`: a child "
        "inherits its parent's high-water mark through the exec, and read "
        f"{folded['ru_maxrss_kb'] * mb:,.0f} MB here.",
        f"Folding from zero inside `MemoryGraph.open` took {zero['open_s']:.1f} s "
        f"({n / zero['open_s']:,.0f} events/s, one connection held throughout) and peaked at "
        f"{zero['open_kb'] * mb:,.0f} MB before the reads; the database it wrote is "
        f"{fresh_mb:,.0f} MB. DuckDB's memory_limit was {folded['memory_limit']} "
        f"(`MemoryGraph.open`'s default); os.cpu_count() {os.cpu_count()}.",
    ]
    return rows, notes
