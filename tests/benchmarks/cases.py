"""The benchmark cases: which sides run together, and the targets their ratios must reach."""

from __future__ import annotations

import functools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

import eventlog

from . import _erasure as er
from . import _graph as g
from . import _lifecycle as lc
from . import _replay as rp
from . import _service as sv
from . import _sides as s
from ._data import ENCODER
from ._harness import Plan, Row, Sample, Side, Target, log, remove_tree, rows_for, run_sides

__all__ = ["CASES", "Case", "CaseResult", "Scale"]


@dataclass(frozen=True)
class Scale:
    """Sizes of a run: `full` for `make bench`, `quick` for `--quick`."""

    name: str
    reps: int
    slices: int
    read_events: int
    size_events: int
    single_size_events: int
    open_events: int = 1_000_000
    graph_events: int = 1_000_000  # the store of mixed events of fold, reads and rss
    graph_reps: int = 3  # fold and reads: a repetition over 1,000,000 events takes a minute
    follow_seconds: float = 20.0
    replay_events: int = 1_000_000  # replay: the store (the graph store when they agree)
    replay_points: int = 25  # replay: random points timed with snapshots
    replay_slice_batches: int = 30  # replay: batches of 1,000 per append slice
    lifecycle_events: int = 1_000_000  # export, backup and restore: the store
    lifecycle_reps: int = 3  # each repetition exports and copies the whole store several times
    erasure_events: int = 1_000_000  # erasure: the store (a fold from zero follows each erasure)
    long_events: int = 95_000  # fold_long: events of long conversation text


FULL = Scale("full", reps=7, slices=10, read_events=200_000, size_events=200_000,
             single_size_events=4_000)  # fmt: skip
QUICK = Scale("quick", reps=3, slices=5, read_events=50_000, size_events=50_000,
              single_size_events=2_000, open_events=200_000, graph_events=50_000,
              follow_seconds=5.0, replay_events=100_000, replay_points=12,
              replay_slice_batches=20, lifecycle_events=100_000,
              erasure_events=50_000,
              long_events=20_000)  # fmt: skip


@dataclass
class CaseResult:
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    method: str  # how the sides were run, for docs/benchmarks.md
    run: Callable[[Plan, Scale], CaseResult]


def _median_extra(samples: list[Sample], key: str) -> float:
    return statistics.median(x.extra[key] for x in samples if key in x.extra)


# -- durable single appends -------------------------------------------------------------------


def _single(plan: Plan, scale: Scale) -> CaseResult:
    sides = [
        Side("log.add_prompt", "eventlog `add_prompt`, FSYNC", s.LogAddPrompt),
        Side("log.append(event)", "eventlog `append(event)`, FSYNC", s.LogAppendOne),
        Side("raw", "raw loop, fsync per event", s.RawSingle),
        Side("eventsourcing", "eventsourcing SQLite, 1 event/save", s.EsSingle),
        Side("sqlite3", "sqlite3 WAL FULL, 1 event/commit", s.SqlitePerEvent),
        Side("floor", "the disk's floor: 560 B `pwrite` over zeros + `fdatasync`", s.SyncFloor),
    ]
    samples = run_sides("single", sides, plan)
    rows = rows_for(
        "single",
        sides,
        samples,
        [
            Target("log.add_prompt", "raw", 0.85, "durable single appends, one agent"),
            Target("log.add_prompt", "sqlite3", 1.2, "durable single appends, one agent"),
            Target("log.add_prompt", "eventsourcing", 1.3, "durable single appends, one agent"),
            Target("log.append(event)", "raw", None, "same, prebuilt events"),
            Target("log.append(event)", "eventsourcing", None, "same, prebuilt events"),
            Target("log.add_prompt", "floor", None, "one sync per commit: the physical floor"),
            Target("sqlite3", "floor", None, "one sync per commit: the physical floor"),
            Target("raw", "floor", None, "one sync per commit: the physical floor"),
        ],
    )
    sqlite_of_floor = statistics.median(
        a.rate / b.rate for a, b in zip(samples["sqlite3"], samples["floor"], strict=True)
    )
    bpe = _median_extra(samples["log.add_prompt"], "bytes_per_event")
    return CaseResult(
        rows,
        [
            f"Single durable appends stored {bpe:,.0f} bytes per event on disk (one 48-byte "
            "frame header and one zstd frame per event).",
            f"eventsourcing's SQLite connections: journal_mode={s.ES_PRAGMAS.get('journal_mode')},"
            f" synchronous={s.ES_PRAGMAS.get('synchronous')} (2 = FULL; the library leaves it at"
            f" SQLite's default, which was {s.ES_PRAGMAS.get('library_default_synchronous')}).",
            f"sqlite3 made {sqlite_of_floor:.2f}x the floor's commits (the floor: a write and a "
            f"sync, nothing else): 1.2x sqlite3 would need {1.2 * sqlite_of_floor:.2f}x the "
            "floor"
            + (", more than the floor itself makes" if 1.2 * sqlite_of_floor > 1 else "")
            + " (`python -m tests.benchmarks.probe_sync_floor` tries the floor's variants, "
            "`--cpu` what each side spends beside its sync).",
        ],
    )


SINGLE = Case(
    "single",
    "Durable single appends, one agent",
    "One store (or file, or database) per side, fresh each repetition. eventlog: "
    "`log.add_prompt(session_id, text)` with the default `Durability.FSYNC` (a frame written "
    "and fsynced per call); `log.append(event)` of prebuilt `PromptAdded` events is shown too. "
    "Raw loop: for each prebuilt event, msgspec encode, zstd level 3, one `os.write` of a "
    "4-byte length and the compressed body, `os.fsync`. eventsourcing: an `Application` with "
    "`PERSISTENCE_MODULE=eventsourcing.sqlite`, `SQLITE_DBNAME`, `SQLITE_LOCK_TIMEOUT=10`, its "
    "connections set to `synchronous=FULL` (read back), one `Aggregate` per session with a "
    "`PromptAdded` event carrying a UUID and the text, `app.save(agg)` after every event. "
    "sqlite3: as in `concurrent` below (WAL, synchronous=FULL, one INSERT and one commit per "
    "event). The floor: no encoding at all, a prebuilt 560-byte record (a single append's "
    "frame) `pwrite` at successive offsets of a file zero-filled and fsynced beforehand, then "
    "`fdatasync`: one sync per commit over blocks already written, the least any durable "
    "append can cost here.",
    _single,
)


# -- durable appends from concurrent agents ---------------------------------------------------


def _concurrent(plan: Plan, scale: Scale) -> CaseResult:
    sides = [
        Side("asyncio x64", "eventlog async, 64 tasks", s.LogAsyncAgents, unit=64, warmup=1280),
        Side("threads x16", "eventlog sync, 16 threads", s.LogThreads, unit=16, warmup=800),
        Side("sqlite3", "sqlite3 WAL FULL, 1 event/commit", s.SqlitePerEvent),
    ]
    samples = run_sides("concurrent", sides, plan)
    rows = rows_for(
        "concurrent",
        sides,
        samples,
        [
            Target("asyncio x64", "sqlite3", 8.0, "durable appends, 64 asyncio agents"),
            Target("threads x16", "sqlite3", 2.5, "durable appends, 16 threads"),
        ],
    )
    a = _median_extra(samples["asyncio x64"], "events_per_frame")
    t = _median_extra(samples["threads x16"], "events_per_frame")
    return CaseResult(
        rows,
        [
            f"Group commit: {a:.1f} events per frame (one write + one fsync) with 64 asyncio "
            f"tasks, {t:.1f} with 16 threads (medians over repetitions)."
        ],
    )


CONCURRENT = Case(
    "concurrent",
    "Durable appends from concurrent agents",
    "eventlog asyncio: `await eventlog.open_async(dir)`, 64 tasks on one event loop, each "
    "awaiting `log.add_prompt(its_session, text)` in a loop (default FSYNC; the log's committer "
    "thread writes and fsyncs one frame per group). eventlog threads: 16 threads sharing one "
    "`EventLog` from `eventlog.open(dir)`, each calling `add_prompt` in a loop (leader/follower "
    "group commit); the threads persist across slices and start each slice on a barrier. "
    "sqlite3 baseline, run the natural way: one connection, `PRAGMA journal_mode=WAL`, "
    "`PRAGMA synchronous=FULL`, table `events(lsn INTEGER PRIMARY KEY, body BLOB)`, and for "
    "each event in turn an `INSERT` of its MessagePack followed by `commit()`: one transaction, "
    "one WAL fsync per event, from a single thread.",
    _concurrent,
)


# -- bulk appends -----------------------------------------------------------------------------


def _bulk(plan: Plan, scale: Scale) -> CaseResult:
    b = s.BATCH
    sides = [
        Side("log.append(1000)", "eventlog `append(1,000 events)`", s.LogAppendBatches, unit=b),
        Side("add_prompts_batch", "eventlog `add_prompts_batch(1,000)`", s.LogPromptsBatch, unit=b),
        Side("raw", "raw loop, fsync per batch", s.RawBatches, unit=b),
        Side("eventsourcing", "eventsourcing SQLite, 1,000 events/save", s.EsBulk, unit=b),
    ]
    samples = run_sides("bulk", sides, plan)
    rows = rows_for(
        "bulk",
        sides,
        samples,
        [
            Target("log.append(1000)", "raw", 0.8, "bulk appends, batches of 1,000"),
            Target("log.append(1000)", "eventsourcing", 4.0, "bulk appends, batches of 1,000"),
            Target("add_prompts_batch", "raw", None, "same, the log building the events"),
            Target("add_prompts_batch", "eventsourcing", None, "same, the log building the events"),
        ],
    )
    return CaseResult(rows)


BULK = Case(
    "bulk",
    "Bulk appends in batches of 1,000",
    "Events alternate prompt and response (the response referring to the prompt before it), "
    "over 64 sessions created first; they are built before timing with `ts` and the "
    "response's `session_id` already set, so every side encodes the same bytes. eventlog: "
    "`log.append(batch)` of 1,000 prebuilt events per call, default FSYNC (one frame, one "
    "fsync per batch); `add_prompts_batch` of 1,000 (session, text) pairs is shown too (the log "
    "builds the events). Raw loop: each batch encoded as one MessagePack array, zstd level 3, "
    "one `os.write`, and one `os.fsync` per batch (the same durability the log gives it). "
    "eventsourcing: one `Aggregate` given 1,000 new events (UUID + text) and then one "
    "`app.save(agg)`, SQLite WAL, synchronous=FULL.",
    _bulk,
)


def _bulk_long(plan: Plan, scale: Scale) -> CaseResult:
    b = s.BATCH
    sides = [
        Side("log.append(1000)", "eventlog `append(1,000 events)`", s.LogAppendLongBatches, b),
        Side("raw", "raw loop, fsync per batch", s.RawLongBatches, unit=b),
        Side("eventsourcing", "eventsourcing SQLite, 1,000 events/save", s.EsLongBulk, unit=b),
    ]
    samples = run_sides("bulk_long", sides, plan)
    what = "bulk appends, batches of 1,000, long text"
    rows = rows_for(
        "bulk_long",
        sides,
        samples,
        [
            Target("log.append(1000)", "raw", 0.8, what),
            Target("log.append(1000)", "eventsourcing", 4.0, what),
        ],
    )
    return CaseResult(rows)


BULK_LONG = Case(
    "bulk_long",
    "Bulk appends in batches of 1,000, long conversation text",
    "As `bulk`, on the events of `fold_long` (`tests/benchmarks/_graph_data.py`, "
    "`long_chunks`): sessions, then turns of a prompt and its response of 700 to 1,300 "
    "characters each with a few non-ASCII words, in order, 1,000 to a call; no sessions "
    "created first (each conversation brings its own). The raw loop encodes the same events "
    "(their `ts` still 0 and responses without `session_id`, which the log fills in: a few "
    "bytes of 1 KB). eventsourcing: `bulk`'s aggregate given 1,000 of the same texts per save.",
    _bulk_long,
)


# -- sequential read --------------------------------------------------------------------------


def _read(plan: Plan, scale: Scale) -> CaseResult:
    n = scale.read_events
    root = Path(tempfile.mkdtemp(prefix="lmg-bench-readstore-", dir=plan.tmp_root))
    try:
        log(f"  read: building a store of {n:,} events")
        store = s.build_store(root / "store", n)
        sides = [
            Side("log.read()", "eventlog `read()`", lambda _p, _n: s.LogRead(store), s.BATCH),
            Side("raw", "raw read+decompress+decode", lambda _p, _n: s.RawRead(store), s.BATCH),
        ]
        samples = run_sides("read", sides, plan)
        rows = rows_for(
            "read",
            sides,
            samples,
            [Target("log.read()", "raw", 0.7, f"sequential read with decode, {n:,} events")],
        )
        segs = len(list(store.glob("*.seg")))
    finally:
        remove_tree(root)
    return CaseResult(
        rows, [f"The store read held {n:,} events in {segs} segments, in the page cache."]
    )


READ = Case(
    "read",
    "Sequential read with decode",
    "A store of prompt/response events appended in batches of 1,000 is built once (untimed; "
    "frames of 1,000 events, about 16 MiB segments). eventlog: `eventlog.open(dir, "
    "readonly=True)` then `for record in log.read()` (frame header and CRC32C checks, zstd, "
    "typed decode, one `Record(lsn, event)` per event). Raw loop over the same segment files, "
    "one thread: read a segment whole, then per frame unpack the 48-byte header, "
    "zstd-decompress the body (both halves of a split body, one after the other) and decode "
    "it with msgspec into `list[Request]` of the typed event union, touching every event; no "
    "checksum (CRC32C costs well under 1%). Each side keeps one sequential pass going across "
    "its slices (a new pass starts at the end of the store); both read from the page cache.",
    _read,
)


# -- bytes on disk ----------------------------------------------------------------------------


def _size(plan: Plan, scale: Scale) -> CaseResult:
    n, n1 = scale.size_events, scale.single_size_events
    root = Path(tempfile.mkdtemp(prefix="lmg-bench-size-", dir=plan.tmp_root))
    try:
        log(f"  size: storing {n:,} events in the log and in sqlite3")
        store = s.build_store(root / "store", n)
        with eventlog.open(store, readonly=True) as lg:
            stats = lg.stats()
        events = s._conversations(n - 64)
        total = n
        log_all, log_seg = s.store_bytes(store) / total, s.segment_bytes(store) / total
        created, _ = s._sessions(64)
        everything = [*created, *events]
        (root / "mp").mkdir()
        (root / "js").mkdir()
        sq_mp = s.sqlite_bytes(root / "mp", everything, ENCODER.encode) / total
        json_enc = msgspec.json.Encoder()
        as_json = lambda e: json_enc.encode(e).decode()  # noqa: E731
        sq_js = s.sqlite_bytes(root / "js", everything, as_json) / total
        msgpack_mean = sum(len(ENCODER.encode(e)) for e in events) / len(events)
        one = root / "single"
        with eventlog.open(one, durability=eventlog.Durability.NONE) as lg:
            lg.append(created)
            before = s.segment_bytes(one)
            for e in events[:n1]:
                lg.append(e)
        single = (s.segment_bytes(one) - before) / n1
    finally:
        remove_tree(root)

    def row(what: str, sides: tuple[str, str], sizes: tuple[float, float], m: float | None) -> Row:
        (subject, baseline), (mine, theirs) = sides, sizes
        r = theirs / mine
        return Row("size", what, subject, baseline, m, r, r, r, mine, theirs, "bytes/event", 1)

    bulk, single_frames = "eventlog, batches of 1,000", "eventlog, one frame per event"
    blob, text = "sqlite3, MessagePack blob per row", "sqlite3, JSON text per row"
    rows = [
        row("bytes on disk, bulk appends", (bulk, blob), (log_all, sq_mp), 2.0),
        row("bytes on disk, bulk appends", (bulk, text), (log_all, sq_js), None),
        row("bytes on disk, single durable appends", (single_frames, blob), (single, sq_mp), None),
    ]
    return CaseResult(
        rows,
        [
            f"{total:,} events (64 sessions, then prompts and responses alternating): "
            f"{msgpack_mean:,.0f} bytes of MessagePack per prompt/response event on average; "
            f"the log's zstd ratio was {stats.compression_ratio:.2f} (raw MessagePack / frames).",
            f"eventlog bulk: {log_all:,.0f} bytes/event counting every file of the store "
            f"(segments, .idx and .ids of sealed segments), {log_seg:,.0f} for segments alone. "
            f"sqlite3: {sq_mp:,.0f} bytes/event as MessagePack blobs, {sq_js:,.0f} as JSON text "
            "(database file after a WAL checkpoint; no index beyond the rowid).",
            f"Single appends ({n1:,} events appended one per call): {single:,.0f} bytes/event.",
        ],
    )


SIZE = Case(
    "size",
    "Bytes on disk per event",
    "Deterministic, so measured once per run. The same events go into an eventlog store "
    "appended in batches of 1,000 and into sqlite3 (WAL, FULL) tables "
    "`events(lsn INTEGER PRIMARY KEY, body BLOB|TEXT)`, one event per row, inserted 1,000 "
    "per transaction and checkpointed before measuring the file. The ratio is sqlite3 bytes "
    "per event / eventlog bytes per event (higher is better for the log). eventlog's bytes "
    "count every file of the store, index files included. Single appends: "
    "the first events appended one per call, one frame each (durability does not change the "
    "bytes written).",
    _size,
)

# -- opening a large store --------------------------------------------------------------------


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _open_store(path: Path, **options: object) -> None:
    eventlog.open(path, **options).close()  # type: ignore[arg-type]


def _first_append(path: Path) -> float:
    with eventlog.open(path) as log:
        session = next(r.event for r in log.read(0, 1))
        return _timed(lambda: log.add_prompt(session.id, "after reopening"))  # type: ignore[attr-defined]


def _open(plan: Plan, scale: Scale) -> CaseResult:
    n = scale.open_events
    root = Path(tempfile.mkdtemp(prefix="lmg-bench-openstore-", dir=plan.tmp_root))
    try:
        log(f"  open: building a store of {n:,} events")
        store = s.build_store(root / "store", n)
        segments = len(list(store.glob("*.seg")))
        _open_store(store)  # warm the page cache, as an agent restarting on a live host
        opens = [_timed(lambda: _open_store(store)) for _ in range(plan.reps)]
        readonly = [_timed(lambda: _open_store(store, readonly=True)) for _ in range(plan.reps)]
        firsts = [_first_append(store) for _ in range(plan.reps)]
        with eventlog.open(store, readonly=True) as reader:
            scan = _timed(lambda: sum(1 for _ in reader.read()))
    finally:
        remove_tree(root)
    med = statistics.median

    def row(
        what: str, subject: str, times: list[float], baseline: str, base: float, *,
        minimum: float | None,
    ) -> Row:  # fmt: skip
        ratios = [base / t for t in times]
        return Row("open", what, subject, baseline, minimum, med(ratios), min(ratios),
                   max(ratios), med(times) * 1000, base * 1000, "ms", len(times))  # fmt: skip

    what = f"open a store of {n:,} events"
    return CaseResult(
        [
            row(what, "`eventlog.open(dir)` (appender)", opens, "one second", 1.0, minimum=2.0),
            row(
                what,
                "`eventlog.open(dir)` (appender)",
                opens,
                "reading every event",
                scan,
                minimum=None,
            ),
            row(
                what,
                "`eventlog.open(dir, readonly=True)`",
                readonly,
                "one second",
                1.0,
                minimum=None,
            ),
            row(what, "first append after open", firsts, "one second", 1.0, minimum=None),
        ],
        [
            f"The store opened held {n:,} events in {segments} segments; reading them all "
            f"took {scan:.2f} s. Opening reads each sealed segment's small .idx summary and "
            "checks the last segment's frames; the first append also indexes the last "
            "segment's ids (from the .tail file its last clean close left, then the frames "
            "after it; the whole segment without one).",
        ],
    )


OPEN = Case(
    "open",
    "Opening a large store",
    "A store is built once (untimed, as for `read`), and opened once to warm the page cache. "
    "Then, each repetition: `eventlog.open(dir)` and `close()` (recovery: temp files, the chain "
    "of segments from their .idx summaries, every frame of the last segment checked); the same "
    "read-only; and the first `add_prompt` after an open. Ratios are one second over the time "
    "taken (the target, 'well under a second', is 2x: at most 0.5 s), and a full read of the "
    "store over the open time (how much of the log an open does not read).",
    _open,
)


# -- start-up of the CLI ----------------------------------------------------------------------

_STARTUP_TARGET_S = 0.3  # "lmg --help and lmg tail should start in under 0.3 s"


def _startup(plan: Plan, scale: Scale) -> CaseResult:
    lmg = str(Path(sys.executable).with_name("lmg"))
    root = Path(tempfile.mkdtemp(prefix="lmg-bench-startup-", dir=plan.tmp_root))
    try:
        with eventlog.open(root / "store") as lg:
            session = lg.create_session()
            for n in range(10):
                lg.add_prompt(session.id, f"prompt {n}")
        commands = {
            "`python -c pass`": [sys.executable, "-c", "pass"],
            "`lmg --help`": [lmg, "--help"],
            "`lmg tail STORE`": [lmg, "tail", str(root / "store")],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for rep in range(max(plan.reps, 5) * 3):  # interleaved, in a rotating order
            names = list(commands)
            for name in names[rep % 3 :] + names[: rep % 3]:
                times[name].append(_timed(functools.partial(_run_quietly, commands[name])))
    finally:
        remove_tree(root)
    med = statistics.median
    python = times["`python -c pass`"]

    def row(subject: str, baseline: str, base: list[float], minimum: float | None) -> Row:
        mine = times[subject]
        ratios = [b / t for b, t in zip(base, mine, strict=True)]
        return Row("startup", "start-up of the CLI", subject, baseline, minimum, med(ratios),
                   min(ratios), max(ratios), med(mine) * 1000, med(base) * 1000, "ms",
                   len(ratios))  # fmt: skip

    target = [_STARTUP_TARGET_S] * len(python)
    return CaseResult(
        [
            row("`lmg --help`", "the 0.3 s target", target, 1.0),
            row("`lmg --help`", "`python -c pass`", python, None),
            row("`lmg tail STORE`", "the 0.3 s target", target, 1.0),
            row("`lmg tail STORE`", "`python -c pass`", python, None),
        ],
        [
            f"Start-up medians: `python -c pass` {med(python) * 1000:.0f} ms, `lmg --help` "
            f"{med(times['`lmg --help`']) * 1000:.0f} ms, `lmg tail` of 11 events "
            f"{med(times['`lmg tail STORE`']) * 1000:.0f} ms (neither imports DuckDB or "
            "pyarrow: tests/test_cli.py checks it)."
        ],
    )


def _run_quietly(command: list[str]) -> None:
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


STARTUP = Case(
    "startup",
    "Start-up of the CLI",
    "A store of 11 events is made first. Then each repetition runs, as child processes of the "
    "benchmark and in a rotating order, `python -c pass` (the interpreter's own start-up, the "
    "floor), `lmg --help` and `lmg tail STORE` (the installed entry point next to the "
    "interpreter), output to /dev/null, timed from spawn to exit with `perf_counter`. Rows "
    "give the median time, as a ratio to the 0.3 s target (>= 1 meets it) and to "
    "`python -c pass` (the share of start-up that is the interpreter's). 15 repetitions "
    "(3 x `--reps`, at least 15): one run takes a tenth of a second.",
    _startup,
)


# -- the projections ---------------------------------------------------------------------------


FOLD = Case(
    "fold",
    "Catch-up fold into DuckDB",
    "A store of mixed events (`tests/benchmarks/_graph_data.py`: agents and templates, then "
    "sessions of 8 turns of prompt, agent assignment and response with usage and latency, "
    "some prompts from templates or naming a parent prompt, tool calls with their "
    "completions in 30% of turns, handoffs in 5%) is built once per run with "
    "`Durability.NONE` and shared with `reads` and `rss`. One warm-up fold, then each "
    "repetition times `projections.rebuild(store, database=fresh_file)` (a `Projector`: "
    "open the log read-only, create the schema, fold in batches, one transaction each, "
    "closing and reopening the file every `hold_s` = 0.5 s so that readers get in) and the "
    "baseline, in alternating order: the final tables of the warm-up fold, exported to "
    "Arrow beforehand (`SELECT * FROM t` for every projection table), loaded into a fresh "
    "file with the same DDL (`ensure_schema`) by `INSERT INTO t SELECT * FROM arrow_table` "
    "for every table in one transaction. Both are timed from connect to close and reported "
    "in events of the store per second (the CPU time of the process, all threads, is noted "
    "too: on a shared machine it tells waiting from working). The warm-up fold's database "
    "is kept for `reads` and "
    "`rss`. At most 3 repetitions (`Scale.graph_reps`), not 7: a fold of a million events "
    "takes a minute or two.",
    lambda plan, scale: CaseResult(
        *g.fold(plan, scale.graph_events, min(plan.reps, scale.graph_reps))
    ),
)

FOLD_BATCHES = Case(
    "fold_batches",
    "The fixed cost of a fold's transaction",
    "On the store of `fold`, the first events less 4,000 are folded into a file on one "
    "connection (checkpoint threshold 1 GB, as a folder sets it). Each repetition then "
    "folds the next events into a fresh copy of that file with `fold_records`, 40 "
    "transactions of 1, of 10 and of 100 events (the records read beforehand), as a "
    "following projector or `lmg serve` folds what just landed, and reports the CPU time of "
    "the process per transaction against the 45 ms measured when issue 14 was filed "
    "(ratio above 1: cheaper). At most 3 repetitions.",
    lambda plan, scale: CaseResult(
        *g.fold_batches(plan, scale.graph_events, min(plan.reps, scale.graph_reps))
    ),
)

FOLD_LONG = Case(
    "fold_long",
    "Catch-up fold of long conversation text",
    "A store of conversations as an export of real chats holds them "
    "(`tests/benchmarks/_graph_data.py`, `long_chunks`: sessions of 3 to 15 turns of a prompt "
    "and its response, each text 700 to 1,300 characters of generated English with a few "
    "non-ASCII words), built once per run with `Durability.NONE`. One warm-up fold, then "
    "each repetition times `projections.rebuild(store, database=fresh_file)` as `fold` does "
    "and, in alternating order, an Arrow load of just the final `prompts` and `responses` "
    "of the warm-up fold (the rows that carry the text) into a fresh file with the same "
    "DDL, in one transaction. Rates are events of the store per second. At most 3 "
    "repetitions (`Scale.graph_reps`).",
    lambda plan, scale: CaseResult(
        *g.fold_long(plan, scale.long_events, min(plan.reps, scale.graph_reps))
    ),
)

FOLLOW = Case(
    "follow",
    "Lag of a following projector",
    "Three processes on a store of its own: a projector child running what `lmg project "
    "STORE --follow` runs (`Projector(store)`, `catch_up()` of a 20,000-event backlog, then "
    "`follow(stop, on_progress=...)`, recording the time and checkpoint of every commit), "
    f"an appender child appending {g.FOLLOW_RATE:,} events/s of the same mixed events "
    "(one request of 20 events every 10 ms, default FSYNC durability, events built before "
    "timing, times of each request's call and return recorded), and the benchmark itself "
    "as a reader, opening `projections.connect(store)` every 20 ms (a pause of 20 ms "
    "between looks) to read the checkpoint and timing its own wait. An event's lag is the "
    "first commit (or reader look) whose checkpoint covers its LSN minus the time its "
    "append returned (0 if folded before the append returned). After the appender stops, "
    "the reader keeps looking until it sees the last event, then the projector is sent "
    "SIGTERM. All times are `time.monotonic_ns()`, one clock for every process. Run once "
    "(20 s, quick 5 s), so there is no spread.",
    lambda plan, scale: CaseResult(*g.follow(plan, scale.follow_seconds)),
)

READS = Case(
    "reads",
    "Reads of an embedded MemoryGraph",
    "The store of `fold` (quick: 50,000 events) and its folded database, opened as an "
    "embedded `MemoryGraph.open(store, database=folded_db)`. Arguments are sampled once "
    "(seeded): 1,000 node ids (350 prompts, 350 responses, 150 tool calls, sessions, every "
    "agent and template), 200 sessions, 100 responses. Each repetition opens a fresh graph "
    "and times every call with `perf_counter_ns`: first the cold pass (the first lookup of "
    "each argument: the graph's caches and DuckDB's buffers empty, the file in the page "
    "cache), then 3 shuffled warm passes; `SELECT * FROM agent_stats` (through `g.rows`) "
    "once cold and 15 times warm; a pass stops early (after at least 20 calls) once it has "
    "taken 4 s. At most 3 repetitions (`Scale.graph_reps`). A row gives the median over "
    "repetitions of each repetition's p95 (or p50) next to the target, in microseconds; "
    "the build plan's targets "
    "(context window read < 1 ms p95, lineage depth 5 p95 15 ms) are shown as info rows.",
    lambda plan, scale: CaseResult(
        *g.reads(plan, scale.graph_events, min(plan.reps, scale.graph_reps))
    ),
)

RSS = Case(
    "rss",
    "Resident memory of an embedded MemoryGraph",
    "A child process (`python -m tests.benchmarks._graph_child rss`) imports projections, "
    "opens `MemoryGraph.open(store, database=db)` on the store of `fold`, does 325 reads "
    "(250 `get_node`, 50 `context_window`, 20 `ancestors`, 5 `agent_stats`, ids sampled "
    "with SQL) and prints its peak resident set: VmHWM from /proc/self/status, in MB of "
    "10^6 bytes (`ru_maxrss` would do in a process of its own, but a child inherits its "
    "parent's high-water mark through the exec). Twice: on the database `fold` folded, "
    "and on a fresh database file, so that opening folds the whole backlog in-process. "
    "Deterministic enough to run once.",
    lambda plan, scale: CaseResult(*g.rss(plan, scale.graph_events)),
)

REPLAY = Case(
    "replay",
    "Snapshots and time travel (`replay.at`)",
    "On the store of `fold` (the same builder; quick: 100,000 events, a store of its own), "
    "first the projector's catch-up from zero, timed both ways in alternating order: "
    "`Projector(store, rebuild=True).catch_up()` into the store's own database with the "
    "default `SnapshotPolicy` (a snapshot every 20,000 events or 16 MiB of log, keep 64: "
    "it writes `<store>/snapshots`, emptied first each time), and the same with "
    "`snapshots=None` into another file; the last catch-up with snapshots is kept. Space: "
    "every file under `<store>/snapshots` (chunks and manifests) against "
    "`<store>/projections.duckdb` after that catch-up. Then a child process "
    "(`python -m tests.benchmarks._replay_child`) times `replay.at(store, lsn=p)` from the "
    "call to the view in hand (closing it is timed apart), after one warm-up call, at "
    "random points (seeded, uniform over the store; 25, quick 12) in a shuffled order; and "
    "at 3 points (the sampled points nearest 1/3 and 2/3 of the store, and its last LSN) "
    "`replay.at(store, lsn=p, snapshots=False)`, a fold from zero to p, each next to a call "
    "with snapshots at the same point (alternating which goes first), spread among the "
    "random ones. The speed-up row is the ratio of the medians over those 3 points (its "
    "spread: per point); the rebuild rate is (p + 1) / seconds from zero, per point. The "
    "child also times each call's phases by wrapping the functions `replay.at` calls. "
    "Last, appends: two fresh stores, each with a writer in this process (`log.append` of "
    "prebuilt batches of 1,000 mixed events, default FSYNC) and a projector child running "
    f"`lmg project STORE --follow --snapshot-every {rp.APPEND_SNAPSHOT_EVERY}` on one and "
    "`--snapshot-every 0` on the other; after both have caught up, the sides take turns in "
    "slices (30 batches, quick 20; the order rotates), and the projector of the side whose "
    "turn it is not is stopped with SIGSTOP (SIGCONT when its turn comes), so each writer "
    "shares the machine with its own projector only. A side's rate is its events over its "
    "timed slices; the ratio is taken per repetition (fresh stores each) and the target "
    "of 'no measurable difference' is read as >= 0.9x. Catch-ups: at most 3 repetitions "
    "(`Scale.graph_reps`); `replay.at` runs once per point, so the p95 and p50 rows have "
    "no spread.",
    lambda plan, scale: CaseResult(
        *rp.replay(
            plan,
            scale.replay_events,
            min(plan.reps, scale.graph_reps),
            scale.replay_points,
            scale.replay_slice_batches,
        )
    ),
)


LIFECYCLE = Case(
    "lifecycle",
    "Export, backup and restore",
    "A store of mixed prompts and responses in 64 sessions (as for `open`) is built once, "
    "and its projections folded once (untimed). Each repetition times, whole: a full read "
    "of the log (`log.read()` on a read-only handle, the baseline of exports); "
    "`eventlog.export_events` of everything into memory, and of one session; "
    "`projections.export_parquet` of every table into a new directory; `shutil.copytree` "
    "of the log's files, each then fsynced (the baseline of backup and restore); "
    "`eventlog.backup` into a new directory, then again into the same one (incremental); "
    "`eventlog.restore` into a new store. Ratios are the baseline's time over the "
    "subject's (above 1: faster than the baseline). At most 3 repetitions "
    "(`Scale.lifecycle_reps`).",
    lambda plan, scale: CaseResult(
        *lc.lifecycle(plan, scale.lifecycle_events, min(plan.reps, scale.lifecycle_reps))
    ),
)


# -- ingest: OpenTelemetry spans into a store (docs/ingest.md) -------------------------------


def _ingest(plan: Plan, scale: Scale) -> CaseResult:
    from . import _otel as o  # noqa: PLC0415 (the otel extra)

    sides = [
        Side("exporter", "`otel.Exporter` into a store, FSYNC", o.ExporterIntoStore, unit=o.UNIT),
        Side("sdk", "OTel SDK, create + export to memory", o.SdkInMemory, unit=o.UNIT),
    ]
    samples = run_sides("ingest", sides, plan)
    rows = rows_for(
        "ingest",
        sides,
        samples,
        [Target("exporter", "sdk", 1.0, "ingest adds less per span than the SDK costs")],
        unit="spans/s",
    )
    rate = statistics.median(x.rate for x in samples["exporter"])
    per_span = _median_extra(samples["exporter"], "events_per_span")
    return CaseResult(
        rows,
        [
            f"Ingest through `Exporter`: {rate:,.0f} spans/s and {rate * per_span:,.0f} "
            f"events/s ({per_span:.2f} events per span, `span.recorded` included); the "
            "issue's target is 20,000 spans/s on two cores."
        ],
    )


INGEST = Case(
    "ingest",
    "Ingest of GenAI traces through `eventlog.otel.Exporter`",
    "A trace is one turn of a two-agent run in the current GenAI conventions "
    "(`tests/benchmarks/_otel.py`: a workflow root with a conversation id, two `invoke_agent` "
    "spans, two chat spans with JSON messages and token counts, an `execute_tool` span and an "
    "HTTP client span under it; 7 spans). SDK side: `emit_trace` creates the spans of n / 7 "
    "traces with a `TracerProvider` whose `SimpleSpanProcessor` exports each span as it ends "
    "to an `InMemorySpanExporter` (cleared between slices, untimed). Exporter side: the same "
    "kind of traces, made by the SDK before timing, exported in batches of 512 spans (the "
    "`BatchSpanProcessor` default) through `otel.Exporter(log)` on a store opened with the "
    "default FSYNC, then `force_flush`; each trace is mapped when its root span arrives and "
    "its requests are appended in one group commit per export.",
    _ingest,
)


def _instrument(plan: Plan, scale: Scale) -> CaseResult:
    from . import _otel as o  # noqa: PLC0415 (the otel and test-otel extras)

    sides = [
        Side("instrumented", "`instrument(log, 'openai-v2')`", o.ChatInstrumented, unit=10),
        Side("plain", "uninstrumented", o.ChatPlain, unit=10),
    ]
    samples = run_sides("instrument", sides, plan)
    rows = rows_for(
        "instrument",
        sides,
        samples,
        [Target("instrumented", "plain", None, "instrument()'s cost on one fake chat call")],
        unit="calls/s",
    )
    return CaseResult(rows)


INSTRUMENT = Case(
    "instrument",
    "The cost `instrument()` adds to one chat completion",
    "`openai.OpenAI(http_client=httpx2.Client(transport=httpx2.MockTransport(...)))` answering "
    "a fixed chat completion in process (no socket), `client.chat.completions.create(model, "
    "one user message)` in a loop. Instrumented side: `eventlog.otel.instrument(log, "
    "'openai-v2')` (content capture on, a `BatchSpanProcessor` exporting into a durable store "
    "in its thread) for the duration of its slice only, then `shutdown()` (untimed), because "
    "an instrumentation patches the `openai` classes for every client in the process.",
    _instrument,
)


# -- the service: appends over HTTP, reads while appending ------------------------------------


def _serve(plan: Plan, scale: Scale) -> CaseResult:
    sides = [
        Side("http x64", "`lmg serve`, 64 async HTTP clients", sv.HttpAgents, unit=64,
             warmup=1280),
        Side("asyncio x64", "eventlog async in-process, 64 tasks", sv.LogAgentsTimed, unit=64,
             warmup=1280),
        Side("sqlite3", "sqlite3 WAL FULL, 1 event/commit", sv.SqliteTimed),
    ]  # fmt: skip
    samples = run_sides("serve", sides, plan)
    rows = rows_for(
        "serve",
        sides,
        samples,
        [
            Target("http x64", "sqlite3", None, "durable appends over HTTP, 64 clients (floor)"),
            Target("http x64", "asyncio x64", None, "the HTTP tax (ceiling: in-process)"),
        ],
    )
    notes = [
        f"Latency of one durable append, p50 / p99 (medians over repetitions): {side.label} "
        f"{_median_extra(samples[side.name], 'p50_ms'):.1f} / "
        f"{_median_extra(samples[side.name], 'p99_ms'):.1f} ms."
        for side in sides
    ]
    http = samples["http x64"]
    notes.append(
        f"CPU per durable append over HTTP (medians): {_median_extra(http, 'service_cpu_ms'):.2f}"
        f" ms in `lmg serve`, {_median_extra(http, 'client_cpu_ms'):.2f} ms in the client's "
        f"process; {_median_extra(http, 'group'):.1f} appends per group commit, "
        f"{_median_extra(http, 'per_request'):.1f} per HTTP request."
    )
    base = Path(tempfile.mkdtemp(prefix="lmg-bench-serve-reads-", dir=plan.tmp_root))
    try:
        reads = sv.read_latency(base, scale.follow_seconds / 2)
    finally:
        remove_tree(base)
    for name in ("agent_stats", "context_window"):
        notes.append(
            f"`{name}` through the client, p50 / p95: "
            f"{reads[f'idle {name} p50_ms']:.1f} / {reads[f'idle {name} p95_ms']:.1f} ms on an "
            f"idle service, {reads[f'appending {name} p50_ms']:.1f} / "
            f"{reads[f'appending {name} p95_ms']:.1f} ms while 16 clients append "
            f"({reads['appends_per_s']:,.0f} events/s meanwhile)."
        )
    return CaseResult(rows, notes)


SERVE = Case(
    "serve",
    "The service: durable appends over HTTP, reads while appending",
    "`lmg serve STORE --port 0` as a child process on a fresh store each repetition (its "
    "access log to a file), 64 sessions created first. HTTP: 64 asyncio tasks in this process, "
    "each awaiting `add_prompt(its_session, text)` in a loop through one "
    "`eventlog.connect_async(url)` client (aiohttp, a pool of keep-alive connections), which "
    "coalesces the appends made while its requests are in flight into one request to the "
    "batch route (at most two in flight); the service appends each append with the default "
    "FSYNC, group-committing those in flight. "
    "In-process ceiling: the same 64 tasks on `eventlog.open_async(dir)`. Floor: sqlite3 as in "
    "`concurrent` (WAL, synchronous=FULL, INSERT + COMMIT per event, one thread). Every call is "
    "timed for the latency percentiles. Then reads: a store of 64 sessions of 12 turns (8 "
    "agents) served by a fresh service; one client alternates `sql('SELECT * FROM "
    "agent_stats')` and `context_window(session, turns=10)` (`AsyncMemoryGraph.connect`) for "
    "half of `follow_seconds` (10 s; quick 2.5 s), first on the idle service, then while 16 "
    "other tasks append a prompt and a response each without pause. The client, the service "
    "and the appenders share the machine's cores.",
    _serve,
)


ERASURE = Case(
    "erasure",
    "Erasing one user's data",
    "A store of mixed prompts and responses in 64 sessions (as for `open`; 200,000 events, "
    "quick 50,000) is built once, and its projections folded once with the default "
    "snapshots (untimed). Each repetition copies the store (untimed), then times: a full "
    "read of the log (the baseline), `eventlog.select` of the first session (the dry run), "
    "`projections.erase` of it (the session's events are spread over every segment, so "
    "every segment is rewritten), and `projections.rebuild`, the fold from zero the next "
    "use pays. At most 3 repetitions.",
    lambda plan, scale: CaseResult(*er.erasure(plan, scale.erasure_events, min(plan.reps, 3))),
)


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        SINGLE, CONCURRENT, BULK, BULK_LONG, READ, SIZE, OPEN, STARTUP, FOLD, FOLD_BATCHES,
        FOLD_LONG, FOLLOW, READS, RSS, REPLAY, LIFECYCLE, INGEST, INSTRUMENT, SERVE, ERASURE,
    )
}  # fmt: skip
