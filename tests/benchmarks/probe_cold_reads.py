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


LAYOUTS = {  # a copy of the folded database made with these ATTACH options
    "rg16k": "ROW_GROUP_SIZE 16384",
    "rg2k": "ROW_GROUP_SIZE 2048",
    "bs16k": "BLOCK_SIZE 16384",
}


def _store(root: Path, n: int) -> tuple[Path, Path]:
    path, db = root / f"store-{n}", root / f"folded-{n}.duckdb"
    if not db.exists():
        print(f"building and folding {n:,} events in {root}", flush=True)
        build_graph_store(path, n)
        rebuild(path, database=db, snapshots=None)
    for name, options in LAYOUTS.items():
        copy = _layout(db, name)
        if not copy.exists():
            con = duckdb.connect()
            con.execute(f"ATTACH '{db}' AS src (READ_ONLY)")
            con.execute(f"ATTACH '{copy}' AS dst ({options})")
            con.execute("COPY FROM DATABASE src TO dst")
            con.close()
    return path, db


def _layout(db: Path, name: str) -> Path:
    return db if name == "default" else db.with_name(f"{db.stem}-{name}.duckdb")


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


def _kinds(store: Path) -> tuple[Callable[[uuid.UUID], Any], Callable[[uuid.UUID], Any]]:
    """The log's hint, as a graph holds it (its first call, untimed, builds the last
    segment's id index), and the hint as it was before that: the sealed segments' only."""
    log = eventlog.open(store, durability=eventlog.Durability.NONE)
    log.kind_of(uuid.uuid4())
    store_ = log._store
    assert store_._active is not None
    active = store_._active.first_lsn

    def sealed_only(node_id: uuid.UUID) -> eventlog.NodeKind | None:
        found = store_._lookup_sealed(node_id.int, active)
        return None if found is None else eventlog.NodeKind(found.kind)

    return log.kind_of, sealed_only


def _variants(
    kind_of: Callable[[uuid.UUID], Any], sealed_only: Callable[[uuid.UUID], Any]
) -> dict[str, tuple[str, Call, dict[str, Any]]]:
    """name -> (which ids, call, extra config)."""

    def reader(con: duckdb.DuckDBPyConnection) -> GraphReader:
        return GraphReader(con, kind_of=kind_of)

    class Bare(GraphReader):
        def _rows(self, sql: str, params: Any = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
            cursor = self.con.execute(sql, list(params)) if params else self.con.execute(sql)
            return [d[0] for d in cursor.description or ()], cursor.fetchall()

    def bare(con: duckdb.DuckDBPyConnection) -> GraphReader:
        return Bare(con, kind_of=kind_of)

    def sql(text: str) -> Call:
        return lambda con, row: con.execute(text.format(id=row[0], lsn=row[1])).fetchall()

    return {
        "select 1": ("prompts", lambda con, row: con.execute("SELECT 1").fetchall(), {}),
        "get_node prompt (as is)": ("prompts", lambda c, r: reader(c).get_node(r[0]), {}),
        "get_node response (as is)": ("responses", lambda c, r: reader(c).get_node(r[0]), {}),
        "get_node prompt (hint: sealed only)": (
            "prompts",
            lambda c, r: GraphReader(c, kind_of=sealed_only).get_node(r[0]),
            {},
        ),
        "ancestors depth 5 (no hint)": (
            "walks",
            lambda c, r: GraphReader(c).ancestors(r[0], depth=5),
            {},
        ),
        "prompt: * by id, params []": (
            "prompts",
            lambda con, row: con.execute(
                f"SELECT * FROM prompts WHERE id = '{row[0]}'", []
            ).fetchall(),
            {},
        ),
        "get_node prompt (no params)": ("prompts", lambda c, r: bare(c).get_node(r[0]), {}),
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
        **{
            f"{what} ({layout})": (which, call, {"layout": layout})
            for layout in LAYOUTS
            for what, which, call in (
                ("get_node prompt", "prompts", lambda c, r: reader(c).get_node(r[0])),
                ("context_window", "sessions", lambda c, r: reader(c).context_window(r[0], 10)),
                ("ancestors depth 5", "walks", lambda c, r: reader(c).ancestors(r[0], depth=5)),
            )
        },
    }


def _open(db: Path, extra: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    extra = dict(extra)
    db = _layout(db, extra.pop("layout", "default"))
    if not extra:
        return open_database(db, read_only=True, timeout=5, memory_limit="48MB", sandbox=True)
    return duckdb.connect(str(db), read_only=True, config={"memory_limit": "48MB", **extra})


def _profile(db: Path, ids: list[Any], table: str) -> None:
    """DuckDB's own account of `SELECT * FROM table WHERE id = ...` on a fresh connection:
    its detailed profile (phases and operators), summed over the first lookups."""
    import json  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    out = Path(tempfile.mkdtemp()) / "profile.json"
    con = duckdb.connect(str(db), read_only=True, config={"memory_limit": "48MB"})
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute("SET profiling_mode = 'detailed'")
    con.execute(f"SET profiling_output = '{out}'")
    totals: dict[str, float] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                name = f"{prefix}{key}"
                totals[name] = totals.get(name, 0.0) + float(value)
        for child in node.get("children", []):
            walk(child, prefix + f"{child.get('operator_name', child.get('name', '?'))}.")

    for row in ids:
        con.execute(f"SELECT * FROM {table} WHERE id = '{row[0]}'").fetchall()
        walk(json.loads(out.read_text()), "")
    con.close()
    for key, value in sorted(totals.items(), key=lambda kv: -kv[1]):
        if value:
            print(f"{key:<60} {value / len(ids):12.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=250_000)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--keep", type=Path, default=Path("/tmp/lmg-probe-cold"))
    parser.add_argument("--only", default="")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    args.keep.mkdir(parents=True, exist_ok=True)
    store, db = _store(args.keep, args.events)
    rng = random.Random(5)
    ids = _ids(db, rng)
    if args.profile:
        _profile(db, ids["prompts"][:40], "prompts")
        return
    variants = _variants(*_kinds(store))
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
