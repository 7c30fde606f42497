"""Cold reads of a folded store, statement by statement: where a first lookup's time goes.

    python -m tests.benchmarks.probe_cold_reads --events 250000 --reps 4 [--keep DIR]
        [--only NAMES] [--before READS_PY] [--other DB]
    python -m tests.benchmarks.probe_cold_reads --profile VARIANT    # DuckDB's profile
    python -m tests.benchmarks.probe_cold_reads --fold-rg 16384      # rebuild A/B
    python -m tests.benchmarks.probe_cold_reads --floor              # no projections

Builds the mixed store of the `reads` case (`_graph_data`) and folds it once (kept in
`--keep` between runs), then, per repetition and per variant in a rotating order, opens a
fresh DuckDB connection as an embedded graph does (48 MB, sandboxed unless the variant
needs a setting) and times the first lookup of each sampled argument: wall and process CPU
per call, p50 and p95. Variants are the statements a read runs and the levers tried on them;
`--before` adds the reads of another `projections/_reads.py` (loaded into this process) and
`--other` the reads of another database of the same store (one folded by other code).
`--floor` measures DuckDB's own cost of the reads' query shapes on a plain 1M-row table.
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
from projections import nodes as n
from projections import rebuild
from projections._database import open_database
from projections._reads import _CLASS_OF_TABLE, GraphReader
from projections._sandbox import SANDBOX, sandbox
from tests.benchmarks._graph_data import build_graph_store

Call = Callable[[duckdb.DuckDBPyConnection, Any], object]


LAYOUTS = {  # a copy of the folded database made with these ATTACH options
    "rg16k": "ROW_GROUP_SIZE 16384",
}  # (2,048-row groups and 16 KiB blocks were measured before: docs/benchmarks.md)


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


OTHER: list[Path] = []  # `--other DB`: another database of the same store, for "(other)"


def _layout(db: Path, name: str) -> Path:
    if name == "other":
        return OTHER[0]
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
            "tools": sample("SELECT id, lsn FROM tool_invocations", 100),
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


def _listed(ids: list[uuid.UUID]) -> str:
    return ", ".join(f"'{i}'" for i in ids)


def _edge_key(edge: Any) -> tuple[int, str, uuid.UUID]:
    return edge.lsn, edge.edge_type, edge.id


class _EdgesUnsorted(GraphReader):
    """A walk level's branches without `ORDER BY` (edges sorted in Python)."""

    def _structs(self, cls: Any, sql: str, params: Any = ()) -> list[Any]:
        if sql.endswith(" ORDER BY lsn, edge_type, id"):
            found = super()._structs(cls, sql.removesuffix(" ORDER BY lsn, edge_type, id"), params)
            return sorted(found, key=_edge_key)
        return super()._structs(cls, sql, params)


class _InLists(GraphReader):
    """A walk level as at most two scans (`near IN (...)`, `far IN (...)`), not a branch per
    frontier node."""

    sort_in_sql = True

    def _edges_at(self, frontier: Any, *, up: bool, types: Any) -> Any:
        near, far = ("from_id", "to_id") if up else ("to_id", "from_id")
        invoked = "tool_invocations" if up else "responses"
        typed = "" if types is None else " AND list_contains($1, edge_type)"
        sides = [(near, "<>", [i for i, _ in frontier])]
        fars = [i for i, table in frontier if table in (None, invoked)]
        if fars:
            sides.append((far, "=", fars))
        sql = " UNION ALL ".join(
            f"SELECT * FROM edges WHERE {column} IN ({_listed(ids)}) "
            f"AND edge_type {op} 'INVOKES' AND deleted_ts IS NULL{typed}"
            for column, op, ids in sides
        )
        if self.sort_in_sql:
            sql += " ORDER BY lsn, edge_type, id"
        edges = self._structs(n.Edge, sql, [] if types is None else [types])
        return edges if self.sort_in_sql else sorted(edges, key=_edge_key)


class _InListsUnsorted(_InLists):
    sort_in_sql = False


class _NodesIn(GraphReader):
    """`_nodes_of` with one `id IN (...)` per table instead of a branch per id."""

    def _nodes_of(self, wanted: dict[uuid.UUID, str | None]) -> dict[uuid.UUID, Any]:
        found: dict[uuid.UUID, Any] = {}
        by_table: dict[str, list[uuid.UUID]] = {}
        for node_id, table in wanted.items():
            cached = self._nodes.get(node_id)
            if cached is not None:
                found[node_id] = cached
            elif table is None:
                if (node := self.get_node(node_id, include_deleted=True)) is not None:
                    found[node_id] = node
            else:
                by_table.setdefault(table, []).append(node_id)
        for table, ids in by_table.items():
            cur = " AND is_current" if table == "templates" else ""
            listed = ", ".join(f"'{i}'" for i in ids)
            sql = f"SELECT * FROM {table} WHERE id IN ({listed}){cur}"
            for node in self._structs(_CLASS_OF_TABLE[table], sql):
                self._nodes.put(node.id, node)
                found[node.id] = node
        return found


class _Walk2(_InListsUnsorted, _NodesIn):
    pass


class _TurnsUnsorted(GraphReader):
    """The window's last statement without `ORDER BY lsn` (rows sorted in Python)."""

    def _rows(self, sql: str, params: Any = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        if sql.endswith(" ORDER BY lsn"):
            names, rows = super()._rows(sql.removesuffix(" ORDER BY lsn"), params)
            at = names.index("lsn")
            return names, sorted(rows, key=lambda row: row[at])
        return super()._rows(sql, params)


class _TurnsCounted(GraphReader):
    """No Top-N statement when the session's `prompt_count` says every live prompt fits."""

    _count: int | None = None

    def context_window(self, session_id: uuid.UUID, turns: int = 10) -> Any:
        session = self.get_session(session_id)
        self._count = session.prompt_count
        return super().context_window(session_id, turns)

    def _turns(self, session_id: uuid.UUID, last: int | None, upto: int | None) -> Any:
        if last is not None and self._count is not None and self._count <= last:
            return super()._turns(session_id, None, upto)[-last:]
        return super()._turns(session_id, last, upto)


class _TurnsBoth(_TurnsCounted, _TurnsUnsorted):
    pass


BEFORE: list[type[GraphReader]] = []  # `--before FILE`: a `_reads.py` of other code


def _reader_from(path: Path) -> type[GraphReader]:
    """`GraphReader` of another version of `projections/_reads.py` (its relative imports
    resolve in this `projections`), to compare code in one process."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("projections._reads_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GraphReader  # type: ignore[no-any-return]


def _variants(
    kind_of: Callable[[uuid.UUID], Any], sealed_only: Callable[[uuid.UUID], Any]
) -> dict[str, tuple[str, Call, dict[str, Any]]]:
    """name -> (which ids, call, extra config)."""

    def before(method: str, *args: Any) -> Call:
        return lambda c, r: getattr(BEFORE[0](c, kind_of=kind_of), method)(r[0], *args)

    olds: dict[str, tuple[str, Call, dict[str, Any]]] = {}
    if BEFORE:
        olds = {
            "get_node prompt (before)": ("prompts", before("get_node"), {}),
            "get_node response (before)": ("responses", before("get_node"), {}),
            "context_window (before)": ("sessions", before("context_window", 10), {}),
            "ancestors depth 5 (before)": ("walks", before("ancestors", 5), {}),
        }
        if OTHER:
            olds |= {
                f"{name.removesuffix(')')}, other)": (which, call, {"layout": "other"})
                for name, (which, call, _) in olds.items()
            }

    def with_(cls: type[GraphReader], method: str, *args: Any) -> Call:
        return lambda c, r: getattr(cls(c, kind_of=kind_of), method)(r[0], *args)

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
        "get_node tool call (as is)": ("tools", lambda c, r: reader(c).get_node(r[0]), {}),
        "get_node session (as is)": ("sessions", lambda c, r: reader(c).get_node(r[0]), {}),
        "window: unsorted": ("sessions", with_(_TurnsUnsorted, "context_window", 10), {}),
        "window: counted": ("sessions", with_(_TurnsCounted, "context_window", 10), {}),
        "window: counted+unsorted": ("sessions", with_(_TurnsBoth, "context_window", 10), {}),
        "walk: unsorted": ("walks", with_(_EdgesUnsorted, "ancestors", 5), {}),
        "walk: IN lists": ("walks", with_(_InLists, "ancestors", 5), {}),
        "walk: IN unsorted": ("walks", with_(_InListsUnsorted, "ancestors", 5), {}),
        "walk: nodes IN": ("walks", with_(_NodesIn, "ancestors", 5), {}),
        "walk: IN unsorted+nodes IN": ("walks", with_(_Walk2, "ancestors", 5), {}),
        "ancestors depth 5 (as is)": (
            "walks",
            lambda c, r: reader(c).ancestors(r[0], depth=5),
            {},
        ),
        **olds,
        **{
            f"{what} ({layout})": (which, call, {"layout": layout})
            for layout in [*LAYOUTS, *(["other"] if OTHER else [])]
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


class _Done:
    """A statement's result, fetched, as the reads use it (`fetchall`, `description`)."""

    def __init__(self, rows: list[Any], description: Any) -> None:
        self.rows, self.description = rows, description

    def fetchall(self) -> list[Any]:
        return self.rows


class _Profiled:
    """A connection that runs each statement with DuckDB's detailed profile on and adds its
    numbers, by the path of each operator, to `totals`; `statements` counts them."""

    def __init__(self, con: duckdb.DuckDBPyConnection, out: Path) -> None:
        self.con, self.out = con, out
        self.totals: dict[str, float] = {}
        self.statements = 0
        con.execute("PRAGMA enable_profiling = 'json'")
        con.execute("SET profiling_mode = 'detailed'")
        con.execute(f"SET profiling_output = '{out}'")

    def execute(self, sql: str, params: Any = None) -> _Done:
        import json  # noqa: PLC0415

        cursor = self.con.execute(sql, params) if params else self.con.execute(sql)
        done = _Done(cursor.fetchall(), cursor.description)
        self.statements += 1
        self._add(json.loads(self.out.read_text()), "")
        return done

    def _add(self, node: Any, prefix: str) -> None:
        """Every number in the profile, by its path (operators by name)."""
        if isinstance(node, dict):
            here = f"{prefix}{node['name']}." if "name" in node and "timing" in node else prefix
            for key, value in node.items():
                self._add(value, here if key in ("operator", "children") else f"{here}{key}.")
        elif isinstance(node, list):
            for item in node:
                self._add(item, prefix)
        elif isinstance(node, int | float) and not isinstance(node, bool):
            self.totals[prefix] = self.totals.get(prefix, 0.0) + float(node)


def _profile(db: Path, ids: list[Any], call: Call) -> None:
    """DuckDB's own account of a read's statements on a fresh connection: its detailed
    profile (phases and operators, seconds), summed over the first lookups, per call."""
    import tempfile  # noqa: PLC0415

    out = Path(tempfile.mkdtemp()) / "profile.json"
    con = duckdb.connect(str(db), read_only=True, config={"memory_limit": "48MB"})
    profiled = _Profiled(con, out)
    c0 = time.process_time()
    for row in ids:
        call(profiled, row)  # type: ignore[arg-type]
    cpu = (time.process_time() - c0) / len(ids)
    con.close()
    print(f"{profiled.statements / len(ids):.1f} statements per call, {cpu * 1e3:.2f} ms CPU")
    for key, value in sorted(profiled.totals.items(), key=lambda kv: -kv[1])[:60]:
        if value:
            print(f"{key:<70} {value / len(ids) * 1e3:10.3f}")


class _Attaching:
    """`duckdb` for `projections._database` with every read-write file attached with
    `ROW_GROUP_SIZE rows` (the setting is the writing connection's, not the file's)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __getattr__(self, name: str) -> Any:
        return getattr(duckdb, name)

    def connect(self, path: str, read_only: bool = False, config: Any = None) -> Any:
        config = dict(config or {})
        if read_only:
            return duckdb.connect(path, read_only=True, config=config)
        locked = {k: config.pop(k) for k in list(config) if k in SANDBOX}
        con = duckdb.connect(config={**config, "temp_directory": f"{path}.tmp"})
        name = Path(path).stem.replace('"', '""')
        con.execute(f"ATTACH '{path}' AS \"{name}\" (ROW_GROUP_SIZE {self.rows})")
        con.execute(f'USE "{name}"')
        if locked:
            sandbox(con)
        return con


def _fold_rg(store: Path, root: Path, reps: int, rows: int) -> None:
    """`projections.rebuild` of the store into a fresh file, the default row groups against
    `rows`-row groups, alternated: wall and CPU seconds, file size, row groups of prompts."""
    import projections._database as database  # noqa: PLC0415

    results: dict[str, list[tuple[float, float, int, int]]] = {"default": [], f"{rows}": []}
    for rep in range(reps):
        for name in list(results)[rep % 2 :] + list(results)[: rep % 2]:
            db = root / f"fold-rg-{name}.duckdb"
            for leftover in (db, Path(f"{db}.wal")):
                leftover.unlink(missing_ok=True)
            setattr(database, "duckdb", _Attaching(rows) if name != "default" else duckdb)  # noqa: B010
            try:
                w0, c0 = time.perf_counter(), time.process_time()
                rebuild(store, database=db, snapshots=None)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            finally:
                setattr(database, "duckdb", duckdb)  # noqa: B010
            con = duckdb.connect(str(db), read_only=True)
            groups = con.execute(
                "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('prompts')"
            ).fetchall()[0][0]
            con.close()
            results[name].append((wall, cpu, db.stat().st_size, groups))
            print(
                f"rep {rep + 1} {name:>8}: {wall:6.1f} s, {cpu:6.1f} CPU-s, "
                f"{db.stat().st_size / 1e6:6.1f} MB, prompts in {groups} row groups "
                f"(load {os.getloadavg()[0]:.1f})",
                flush=True,
            )


def _floor(root: Path, reps: int) -> None:
    """DuckDB's floor for the reads' query shapes on this machine, without our tables: a
    file of 1,000,000 rows (a time-ordered UUIDv7 `id`, as ours, and a BIGINT), each variant
    on a fresh connection as the reads open theirs (48 MB), CPU per statement over 300
    first lookups: `SELECT 1`, one row by `id`, and a UNION ALL of 5 such lookups."""
    db = root / "floor-1m.duckdb"
    if not db.exists():
        con = duckdb.connect(str(db))
        con.execute("CREATE TABLE t (id UUID NOT NULL, v BIGINT NOT NULL)")
        con.execute(  # in time order, as the fold inserts rows
            "INSERT INTO t SELECT id, row_number() OVER (ORDER BY id) FROM "
            "(SELECT uuidv7() AS id FROM range(1000000)) ORDER BY id"
        )
        con.close()
    con = duckdb.connect(str(db), read_only=True)
    sample = [
        r[0] for r in random.Random(7).sample(con.execute("SELECT id FROM t").fetchall(), 300)
    ]
    con.close()
    shapes: dict[str, Callable[[uuid.UUID], str]] = {
        "SELECT 1": lambda i: "SELECT 1",
        "one row by id": lambda i: f"SELECT * FROM t WHERE id = '{i}'",
        "5 rows by id, UNION ALL": lambda i: " UNION ALL ".join(
            [f"SELECT * FROM t WHERE id = '{i}'"] * 5
        ),
    }
    cpu: dict[str, list[float]] = {k: [] for k in shapes}
    for rep in range(reps):
        for name in list(shapes)[rep % 3 :] + list(shapes)[: rep % 3]:
            con = duckdb.connect(str(db), read_only=True, config={"memory_limit": "48MB"})
            times = []
            for i in sample:
                c0 = time.process_time_ns()
                con.execute(shapes[name](i)).fetchall()
                times.append((time.process_time_ns() - c0) / 1e6)
            con.close()
            cpu[name].append(statistics.median(times))
    print(f"DuckDB {duckdb.__version__}, load {os.getloadavg()[0]:.1f}; CPU ms per statement:")
    for name, values in cpu.items():
        print(f"{name:<28} {statistics.median(values):6.2f}  {[round(v, 2) for v in values]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=250_000)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--keep", type=Path, default=Path("/tmp/lmg-probe-cold"))
    parser.add_argument("--only", default="")
    parser.add_argument("--profile", default="", help="a variant: its statements' profile")
    parser.add_argument("--fold-rg", type=int, default=0, help="fold A/B with these row groups")
    parser.add_argument("--other", type=Path, help="another database of the store: (other)")
    parser.add_argument("--before", type=Path, help="another `_reads.py`: (before)")
    parser.add_argument("--floor", action="store_true", help="DuckDB's floor, no projections")
    args = parser.parse_args()
    args.keep.mkdir(parents=True, exist_ok=True)
    if args.floor:
        _floor(args.keep, args.reps)
        return
    store, db = _store(args.keep, args.events)
    OTHER.extend([args.other] if args.other else [])
    BEFORE.extend([_reader_from(args.before)] if args.before else [])
    if args.fold_rg:
        _fold_rg(store, args.keep, args.reps, args.fold_rg)
        return
    rng = random.Random(5)
    ids = _ids(db, rng)
    variants = _variants(*_kinds(store))
    if args.profile:
        which, call, extra = variants[args.profile]
        _profile(_layout(db, extra.get("layout", "default")), ids[which][:40], call)
        return
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
