"""Cold reads of a folded store, statement by statement: where a first lookup's time goes.

    python -m tests.benchmarks.probe_cold_reads --events 250000 --reps 4 [--keep DIR]

Builds the mixed store of the `reads` case (`_graph_data`) and folds it once (kept in
`--keep` between runs), then, per repetition and per variant in a rotating order, opens a
fresh DuckDB connection as an embedded graph does (48 MB, sandboxed unless the variant
needs a setting) and times the first lookup of each sampled argument: wall and process CPU
per call, p50 and p95. Variants are the statements a read runs and the levers tried on them.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

import eventlog
from projections import rebuild
from projections._database import open_database
from projections._reads import GraphReader
from tests.benchmarks._graph_data import build_graph_store

Call = Callable[[duckdb.DuckDBPyConnection, Any], object]


def _store(root: Path, n: int) -> tuple[Path, Path]:
    path, db = root / f"store-{n}", root / f"folded-{n}.duckdb"
    if not db.exists():
        print(f"building and folding {n:,} events in {root}", flush=True)
        build_graph_store(path, n)
        rebuild(path, database=db, snapshots=None)
    return path, db


def _ids(db: Path, rng: random.Random) -> dict[str, list[Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:

        def sample(sql: str, k: int) -> list[Any]:
            rows = con.execute(sql).fetchall()
            return rng.sample(rows, min(k, len(rows)))

        return {
            "prompts": sample("SELECT id, lsn FROM prompts", 150),
            "responses": sample("SELECT id, lsn FROM responses", 150),
            "sessions": sample("SELECT id, lsn FROM sessions", 100),
            "walks": sample("SELECT id, lsn FROM responses", 60),
        }
    finally:
        con.close()


def _kinds(store: Path) -> Callable[[uuid.UUID], eventlog.NodeKind | None]:
    """The log's hint, as a graph holds it (its first call, untimed, builds the last
    segment's id index)."""
    log = eventlog.open(store, durability=eventlog.Durability.NONE)
    log.kind_of(uuid.uuid4())
    return log.kind_of


def _variants(kind_of: Callable[[uuid.UUID], Any]) -> dict[str, tuple[str, Call, dict[str, Any]]]:
    """name -> (which ids, call, extra config)."""

    def reader(con: duckdb.DuckDBPyConnection) -> GraphReader:
        return GraphReader(con, kind_of=kind_of)

    def sql(text: str) -> Call:
        return lambda con, row: con.execute(text.format(id=row[0], lsn=row[1])).fetchall()

    return {
        "select 1": ("prompts", lambda con, row: con.execute("SELECT 1").fetchall(), {}),
        "get_node prompt (as is)": ("prompts", lambda c, r: reader(c).get_node(r[0]), {}),
        "get_node response (as is)": ("responses", lambda c, r: reader(c).get_node(r[0]), {}),
        "prompt: id only": ("prompts", sql("SELECT id FROM prompts WHERE id = '{id}'"), {}),
        "prompt: * by id": ("prompts", sql("SELECT * FROM prompts WHERE id = '{id}'"), {}),
        "prompt: * by lsn": ("prompts", sql("SELECT * FROM prompts WHERE lsn = {lsn}"), {}),
        "prompt: * by id and lsn": (
            "prompts",
            sql("SELECT * FROM prompts WHERE lsn = {lsn} AND id = '{id}'"),
            {},
        ),
        "prompt: * but content": (
            "prompts",
            sql("SELECT * EXCLUDE (content) FROM prompts WHERE id = '{id}'"),
            {},
        ),
        "prompt: content only": (
            "prompts",
            sql("SELECT content FROM prompts WHERE id = '{id}'"),
            {},
        ),
        "prompt: * by id, threads=1": (
            "prompts",
            sql("SELECT * FROM prompts WHERE id = '{id}'"),
            {"threads": 1},
        ),
        "context_window (as is)": (
            "sessions",
            lambda c, r: reader(c).context_window(r[0], 10),
            {},
        ),
        "ancestors depth 5 (as is)": (
            "walks",
            lambda c, r: reader(c).ancestors(r[0], depth=5),
            {},
        ),
    }


def _open(db: Path, extra: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    if not extra:
        return open_database(db, read_only=True, timeout=5, memory_limit="48MB", sandbox=True)
    return duckdb.connect(str(db), read_only=True, config={"memory_limit": "48MB", **extra})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=250_000)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--keep", type=Path, default=Path("/tmp/lmg-probe-cold"))
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    args.keep.mkdir(parents=True, exist_ok=True)
    store, db = _store(args.keep, args.events)
    rng = random.Random(5)
    ids = _ids(db, rng)
    variants = _variants(_kinds(store))
    if args.only:
        variants = {k: v for k, v in variants.items() if any(w in k for w in args.only.split(","))}
    wall: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    print(f"load before: {os.getloadavg()}", flush=True)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            which, call, extra = variants[name]
            con = _open(db, extra)
            try:
                times, cpus = [], []
                for row in ids[which]:
                    w0, c0 = time.perf_counter_ns(), time.process_time_ns()
                    call(con, row)
                    cpus.append((time.process_time_ns() - c0) / 1e6)
                    times.append((time.perf_counter_ns() - w0) / 1e6)
            finally:
                con.close()
            q = statistics.quantiles(times, n=20)
            wall[name].append((statistics.median(times), q[18]))
            cpu[name].append(statistics.median(cpus))
    print(f"load after: {os.getloadavg()}")
    print(f"{'variant':<30} {'p50 ms':>8} {'p95 ms':>8} {'CPU ms':>8}  (medians over {args.reps})")
    for name in names:
        p50 = statistics.median(w[0] for w in wall[name])
        p95 = statistics.median(w[1] for w in wall[name])
        print(f"{name:<30} {p50:8.2f} {p95:8.2f} {statistics.median(cpu[name]):8.2f}")


if __name__ == "__main__":
    main()
