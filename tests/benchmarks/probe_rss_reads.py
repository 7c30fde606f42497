"""Peak RSS of an embedded MemoryGraph's reads, kind by kind: what raises the `rss` case's peak.

    python -m tests.benchmarks.probe_rss_reads STORE DATABASE [--env K=V ...]

STORE and DATABASE are a store and the database folded from it (`probe_cold_reads --keep`
or the `fold` case keep one). The ids are sampled once, here, on a read-only connection,
and handed to each child, so that the `rss` case's sampling queries
(`USING SAMPLE reservoir`, a scan of each table's ids) are measured apart from the reads.
Each child (``python -m tests.benchmarks.probe_rss_reads --child ...``) imports projections,
opens `MemoryGraph.open(store, database=db)` and runs one sequence of steps, printing after
each step its peak (VmHWM) and current (VmRSS) resident set, what glibc's malloc holds
(`mallinfo2`: in use, and free but kept), the resident set's anonymous and file-backed
parts, DuckDB's own count of its memory (`duckdb_memory()`, taken on the graph's connection
after the step's peak), whether pyarrow is imported, and the instance's memory limit.
Sequences: each read kind alone after open, the `rss` case's whole order with its sampling
queries, and the same without.
`--env` sets variables in the children (e.g. ``MALLOC_ARENA_MAX=1``), `--config` DuckDB
settings of every instance they connect (e.g. ``threads=1``); `--no-hint` reads without the
log's id index (`MemoryGraph.kind_of` answers None), to tell its memory apart;
`--memory-limit` sets the graph's `MEMORY_LIMIT` (a read that does not fit still reopens
under 256 MB: the last column says which limit the step ended under).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

SEQUENCES: dict[str, list[str]] = {
    "get_node": ["get_node"],
    "context_window": ["context_window"],
    "ancestors": ["ancestors"],
    "agent_stats": ["agent_stats"],
    "rss_case": ["sample", "get_node", "context_window", "ancestors", "agent_stats"],
    "rss_reads": ["get_node", "context_window", "ancestors", "agent_stats"],
    "kind_of": ["kind_of", "get_node"],
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return -1


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_mb() -> tuple[float, float]:
    """glibc malloc: (in use, free but kept) in MB; (-1, -1) without mallinfo2."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return -1.0, -1.0
    return (m.uordblks + m.hblkhd) / 1e6, m.fordblks / 1e6


def _sample(db: Path, seed: int = 7) -> dict[str, list[str]]:
    import duckdb  # noqa: PLC0415

    rng = random.Random(seed)
    con = duckdb.connect(str(db), read_only=True)
    try:

        def ids(table: str, k: int) -> list[str]:
            rows = con.execute(f"SELECT id FROM {table}").fetchall()
            return [str(r[0]) for r in rng.sample(rows, min(k, len(rows)))]

        return {
            "get_node": ids("prompts", 100) + ids("responses", 100) + ids("tool_invocations", 50),
            "context_window": ids("sessions", 50),
            "ancestors": ids("responses", 20),
        }
    finally:
        con.close()


def _with_config(extra: list[str]) -> None:
    """Give every DuckDB instance of this process the settings `extra` (K=V) at connect, put
    before the sandbox locks the configuration: how a lever on DuckDB's settings is tried
    without changing the code."""
    import duckdb  # noqa: PLC0415

    connect = duckdb.connect
    settings = dict(kv.split("=", 1) for kv in extra)

    def connecting(*args: Any, **kwargs: Any) -> Any:
        kwargs["config"] = {**settings, **(kwargs.get("config") or {})}
        return connect(*args, **kwargs)

    duckdb.connect = connecting


def _child(
    store: Path,
    db: Path,
    sequence: str,
    ids_file: Path,
    config: list[str],
    *,
    hint: bool,
    limit: str | None,
) -> None:
    if config:
        _with_config(config)
    if limit is not None:  # the graph's read limit (it still grows to 256 MB what does not fit)
        import projections.memory_graph  # noqa: PLC0415

        projections.memory_graph.MEMORY_LIMIT = limit
    if not hint:  # reads without the log's id index: what the index's memory is
        from projections import MemoryGraph  # noqa: PLC0415

        MemoryGraph.kind_of = lambda self, node_id: None  # type: ignore[method-assign]
    ids = {k: [uuid.UUID(v) for v in vs] for k, vs in json.loads(ids_file.read_text()).items()}
    steps: list[dict[str, Any]] = []

    def mark(step: str, g: Any, began: float) -> None:
        took = time.perf_counter() - began
        hwm, rss = _status_kb("VmHWM"), _status_kb("VmRSS")
        used, kept = _malloc_mb()
        row: dict[str, Any] = {
            "step": step,
            "s": round(took, 3),
            "hwm_mb": round(hwm * 1024 / 1e6, 1),
            "rss_mb": round(rss * 1024 / 1e6, 1),
            "anon_mb": round(_status_kb("RssAnon") * 1024 / 1e6, 1),
            "file_mb": round(_status_kb("RssFile") * 1024 / 1e6, 1),
            "malloc_used_mb": round(used, 1),
            "malloc_free_kept_mb": round(kept, 1),
            "pyarrow": "pyarrow" in sys.modules,
        }
        if g is not None:
            mem = g.rows(
                "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0"
            )
            row["duckdb_mb"] = {tag: round(b / 1e6, 1) for tag, b in mem}
            row["limit"] = g._run(  # the instance's own setting (user SQL may not read it)
                lambda r: r.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
            )
        steps.append(row)

    mark("start", None, time.perf_counter())
    began = time.perf_counter()
    from projections import MemoryGraph  # noqa: PLC0415

    mark("import", None, began)
    began = time.perf_counter()
    with MemoryGraph.open(store, database=db) as g:
        mark("open", g, began)
        for step in SEQUENCES[sequence]:
            began = time.perf_counter()
            if step == "sample":
                for table, k in (
                    ("prompts", 100),
                    ("responses", 100),
                    ("tool_invocations", 50),
                    ("sessions", 50),
                    ("responses", 20),
                ):
                    g.rows(
                        f"SELECT id FROM {table} USING SAMPLE reservoir({k} ROWS) REPEATABLE (7)"
                    )
            elif step == "kind_of":  # the log's id index alone, as `get_node` asks it
                for node in ids["get_node"]:
                    g.kind_of(node)
            elif step == "get_node":
                for node in ids["get_node"]:
                    g.get_node(node)
            elif step == "context_window":
                for session in ids["context_window"]:
                    g.context_window(session, 10)
            elif step == "ancestors":
                for response in ids["ancestors"]:
                    g.ancestors(response, depth=5)
            else:
                for _ in range(5):
                    g.rows("SELECT * FROM agent_stats")
            mark(step, g, began)
    print(json.dumps(steps), flush=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.probe_rss_reads")
    p.add_argument("store", type=Path)
    p.add_argument("database", type=Path)
    p.add_argument("--child", choices=sorted(SEQUENCES))
    p.add_argument("--ids", type=Path)
    p.add_argument("--only", nargs="*", choices=sorted(SEQUENCES))
    p.add_argument("--env", action="append", default=[], help="K=V for the children")
    p.add_argument("--config", action="append", default=[], help="K=V: a DuckDB setting")
    p.add_argument("--no-hint", action="store_true", help="reads without the log's kind hint")
    p.add_argument("--memory-limit", help="the graph's MEMORY_LIMIT (default 48MB)")
    args = p.parse_args(argv)
    if args.child:
        _child(
            args.store,
            args.database,
            args.child,
            args.ids,
            args.config,
            hint=not args.no_hint,
            limit=args.memory_limit,
        )
        return 0
    ids_file = args.database.with_name(args.database.name + ".ids.json")
    if not ids_file.exists():
        ids_file.write_text(json.dumps(_sample(args.database)))
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in args.env)
    print(
        f"load {os.getloadavg()[0]:.1f}; env {args.env}; config {args.config};"
        f" hint {not args.no_hint}; memory limit {args.memory_limit or 'default'}",
        flush=True,
    )
    for sequence in args.only or SEQUENCES:
        out = subprocess.run(
            [sys.executable, "-m", "tests.benchmarks.probe_rss_reads", str(args.store)]
            + [str(args.database), "--child", sequence, "--ids", str(ids_file)]
            + [f"--config={kv}" for kv in args.config]
            + (["--no-hint"] if args.no_hint else [])
            + ([f"--memory-limit={args.memory_limit}"] if args.memory_limit else []),
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        print(f"== {sequence}")
        for row in json.loads(out.splitlines()[-1]):
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
