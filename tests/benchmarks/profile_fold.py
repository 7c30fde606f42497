"""Where a fold's time goes: ``python -m tests.benchmarks.profile_fold``.

    python -m tests.benchmarks.profile_fold                    # 200,000 mixed events
    python -m tests.benchmarks.profile_fold --events 50000 --small-batch 500 --top 30

On a store of mixed events (`_graph_data`), prints:

1. wall and CPU seconds (the process's, all threads) of `projections.rebuild` (a `Projector`,
   which closes and reopens the database every `hold_s`; the opens are counted) beside
   `fold_available` on one connection held throughout: the cost of reopening;
2. the top functions by own time of a cProfile of the one-connection fold. DuckDB's methods
   are pybind11 functions, which cProfile does not see: their time is the own time of the
   Python function that called them (`commit_batch` holds the COMMITs, a projection's
   `bulk` or `write` its SQL);
3. the cost per transaction of folding in small batches, as a following projector does
   (each wake-up folds what landed since the last: a few hundred events at 2,000 events/s);
4. what `MemoryGraph.open` costs on the folded database, with nothing left to fold.

Figures are of one run; on a shared machine compare CPU seconds rather than wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import itertools
import pstats
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb

import eventlog
import projections.projector as projector_module
from projections import MemoryGraph, rebuild
from projections._folder import fold_available, fold_records
from projections._schema import ensure_schema

from ._graph_data import build_graph_store


@contextlib.contextmanager
def _counting_opens() -> Iterator[list[int]]:
    """Counts the projector's `open_database` calls (a profiling shim, restored after)."""
    count = [0]
    name = "open_database"  # what projector.py calls to open the file
    original = getattr(projector_module, name)

    def counted(*args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        count[0] += 1
        return original(*args, **kwargs)  # type: ignore[no-any-return]

    setattr(projector_module, name, counted)
    try:
        yield count
    finally:
        setattr(projector_module, name, original)


def _clock(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _fresh(db: Path) -> Path:
    for suffix in ("", ".wal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return db


def _one_connection(store: Path, db: Path) -> None:
    with eventlog.open(store, readonly=True) as log:
        con = duckdb.connect(str(_fresh(db)))
        try:
            ensure_schema(con)
            fold_available(con, log)
        finally:
            con.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.profile_fold")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--small-batch", type=int, default=500, help="events per transaction in 3")
    p.add_argument("--top", type=int, default=20, help="functions to list by own time")
    p.add_argument("--tmpdir", type=Path, default=None)
    args = p.parse_args(argv)
    n = args.events
    root = Path(tempfile.mkdtemp(prefix="lmg-profile-fold-", dir=args.tmpdir))
    try:
        store = root / "store"
        print(f"building a store of {n:,} mixed events", flush=True)
        build_graph_store(store, n)

        print("\n1. rebuild (Projector) against one connection")
        for label, run in (
            ("rebuild (Projector)", lambda: rebuild(store, database=_fresh(root / "r.duckdb"))),
            ("fold_available, 1 connection", lambda: _one_connection(store, root / "o.duckdb")),
        ):
            with _counting_opens() as opens:
                wall, cpu = _clock(run)
            print(
                f"   {label:<30} wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
                f"{n / wall:>9,.0f} events/s  {n / cpu:>9,.0f} events/cpu-s  "
                f"database opens {opens[0]}"
            )

        print(f"\n2. cProfile of fold_available on one connection (top {args.top} by own time)")
        profile = cProfile.Profile()
        profile.enable()
        _one_connection(store, root / "p.duckdb")
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)

        k = args.small_batch
        print(f"3. folding in transactions of {k} events (as a following projector does)")
        with eventlog.open(store, readonly=True) as log:
            con = duckdb.connect(str(_fresh(root / "s.duckdb")))
            try:
                ensure_schema(con)
                records = log.read()
                head = min(n // 2, 100_000)
                fold_records(con, itertools.islice(records, head))
                tail = list(itertools.islice(records, 20 * k))
                wall, cpu = _clock(lambda: fold_records(con, iter(tail), batch_events=k))
            finally:
                con.close()
        batches = max(1, len(tail) // k)
        print(
            f"   after {head:,} events folded: {batches} transactions of {k} took "
            f"{wall / batches * 1e3:,.1f} ms each (cpu {cpu / batches * 1e3:,.1f} ms), "
            f"{len(tail) / wall:,.0f} events/s"
        )

        print("\n4. MemoryGraph.open on the folded database (nothing to fold)")
        db = root / "r.duckdb"
        for _ in range(3):
            wall, cpu = _clock(lambda: MemoryGraph.open(store, database=db).close())
            print(f"   open + close: wall {wall * 1e3:7.1f} ms  cpu {cpu * 1e3:7.1f} ms")
        profile = cProfile.Profile()
        profile.enable()
        MemoryGraph.open(store, database=db).close()
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(12)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
