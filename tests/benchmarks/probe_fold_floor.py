"""What bounds the catch-up fold: the same fold with no disk at all, and DuckDB's share.

    python -m tests.benchmarks.probe_fold_floor                  # 200,000 mixed events, 3 rounds
    python -m tests.benchmarks.probe_fold_floor --events 1000000 --rounds 1

Issue 14 asks 150,000 events/s of the catch-up fold (6.7 us an event). On the `fold` case's
store of mixed events (`_graph_data`), each round folds it from zero three ways, in rotating
order, with the projector's memory limit and checkpoint threshold, the closing checkpoint
included: into a database file (as `projections.rebuild` does), into a file attached with
DuckDB's ``RECOVERY_MODE no_wal_writes`` (commits stay in memory until the closing
checkpoint: what skipping the write-ahead log could save), and into an in-memory database
(no file, no log, no checkpoint: what any persistence setting could at best reach). Every
call the fold makes on its connection is timed (a proxy around it) and so is the closing
checkpoint: that is DuckDB's share of the wall time; the rest is the fold's Python (reading
and decoding the log, staging Arrow columns), which no setting of DuckDB's changes. Prints
each way's CPU and wall time an event, the median over rounds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

import eventlog
from projections._folder import fold_available
from projections._schema import ensure_schema

from ._graph_data import build_graph_store

_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "memory_limit": "256MB",  # the projector's
    "checkpoint_threshold": "1GB",
}


class _Timed:
    """A connection whose every call is timed (wall seconds in `spent`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self.spent = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._con, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - began

        return timed


def _file(db: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(db), config=_CONFIG)


def _no_wal(db: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:", config=_CONFIG)
    con.execute(f"ATTACH '{db}' AS folded (RECOVERY_MODE no_wal_writes)")
    con.execute("USE folded")
    return con


def _memory(db: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(":memory:", config=_CONFIG)


_WAYS: dict[str, Callable[[Path], duckdb.DuckDBPyConnection]] = {
    "file (as rebuild)": _file,
    "file, no WAL writes": _no_wal,
    "in memory": _memory,
}


def _fold(
    store: Path, db: Path, connect: Callable[[Path], duckdb.DuckDBPyConnection]
) -> dict[str, float]:
    with eventlog.open(store, readonly=True) as log:
        con = connect(db)
        timed = _Timed(con)
        ensure_schema(con)
        wall, cpu = time.perf_counter(), time.process_time()
        fold_available(timed, log)  # type: ignore[arg-type]
        folded = time.perf_counter()
        con.close()  # the closing checkpoint: DuckDB's too
        closed = time.perf_counter()
        return {
            "wall": closed - wall,
            "cpu": time.process_time() - cpu,
            "duckdb": timed.spent + closed - folded,
            "close": closed - folded,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.probe_fold_floor")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tmpdir", type=Path, default=None)
    args = p.parse_args(argv)
    n = args.events
    root = Path(tempfile.mkdtemp(prefix="lmg-fold-floor-", dir=args.tmpdir))
    try:
        store = root / "store"
        print(f"building a store of {n:,} mixed events", flush=True)
        build_graph_store(store, n)
        seen: dict[str, list[dict[str, float]]] = {way: [] for way in _WAYS}
        names = list(_WAYS)
        for r in range(args.rounds):
            for way in names[r % len(names) :] + names[: r % len(names)]:
                db = root / f"r{r}-{names.index(way)}.duckdb"
                got = _fold(store, db, _WAYS[way])
                seen[way].append(got)
                print(
                    f"  round {r + 1} {way:<20} wall {got['wall']:6.2f} s  cpu {got['cpu']:6.2f} s"
                    f"  in DuckDB {got['duckdb']:6.2f} s (closing {got['close']:.2f})",
                    flush=True,
                )
                for f in root.glob(f"r{r}-*.duckdb*"):
                    f.unlink()
        print(f"\nus an event, medians of {args.rounds} rounds (150,000 events/s is 6.7 us)")
        print(f"  {'way':<20} {'wall':>7} {'cpu':>7} {'DuckDB':>7} {'Python':>7} events/s")
        for way, runs in seen.items():
            wall = statistics.median(x["wall"] for x in runs) / n * 1e6
            cpu = statistics.median(x["cpu"] for x in runs) / n * 1e6
            duck = statistics.median(x["duckdb"] for x in runs) / n * 1e6
            print(
                f"  {way:<20} {wall:7.2f} {cpu:7.2f} {duck:7.2f} {wall - duck:7.2f}"
                f" {1e6 / wall:9,.0f}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
