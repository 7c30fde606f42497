"""How long readers in other processes and an embedded MemoryGraph wait for each other.

    python -m tests.benchmarks.embedded_waits              # 20 repetitions of each
    python -m tests.benchmarks.embedded_waits --reps 50 --sessions 5000

A store of `--sessions` sessions (each with a prompt and a response) and a `MemoryGraph` open on
it in this process. Each row prints the median, p90 and max over `--reps` of one wait:

- a child's `projections.connect` (the gate, then a read-only DuckDB open, then one count),
  timed in the child, while the graph holds the database (it read just before, `idle_s` 60 s,
  so it lets go only because the child waits), and while it has let go (idle);
- `lmg sql` (the whole process) beside the holding graph, and with no graph at all;
- the graph's read: hot (it holds the database), after letting go (it reopens), while a child
  holds `projections.connect` for 200 ms and while a child holds a plain read-only DuckDB
  connection for 200 ms (minus those 200 ms: the time it took to notice the end).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from projections import MemoryGraph
from tests._processes import LMG

COUNT = "SELECT count(*) FROM prompts"
HOLD_S = 0.2

CHILD = """
import sys, time, duckdb, projections
store, how, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
for line in sys.stdin:
    began = time.perf_counter()
    if how == "connect":
        with projections.connect(store) as con:
            con.execute("SELECT count(*) FROM prompts").fetchall()
            print((time.perf_counter() - began) * 1e3, flush=True)
            time.sleep(hold)
    else:
        while True:  # it does not take turns: retry until the graph has let go
            try:
                con = duckdb.connect(store + "/projections.duckdb", read_only=True)
                break
            except duckdb.IOException:
                time.sleep(0.005)
        print((time.perf_counter() - began) * 1e3, flush=True)
        time.sleep(hold)
        con.close()
    print("done", flush=True)
"""


class Child:
    """A child that, on each line it is sent, opens the database (`connect` or a plain DuckDB
    read-only connection), says how long that took in ms, holds it `hold` s, then says done."""

    def __init__(self, store: Path, how: str, hold: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(store), how, str(hold)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def said(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1e3


def row(name: str, samples: list[float]) -> None:
    samples = sorted(samples)
    p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
    median = statistics.median(samples)
    print(f"| {name} | {median:,.1f} | {p90:,.1f} | {samples[-1]:,.1f} |")


def build(store: Path, sessions: int) -> None:
    with MemoryGraph.open(store) as graph:
        for _ in range(sessions):
            session = graph.create_session().id
            prompt = graph.add_prompt(session, "How do I rotate a segment?")
            graph.add_response(prompt, "Seal it, then open the next.")


def child_waits(graph: MemoryGraph, child: Child, reps: int, idle: bool) -> list[float]:
    out = []
    for _ in range(reps):
        graph.rows(COUNT)  # the graph holds the database now
        if idle:
            time.sleep(graph._embedded.idle_s + 0.1)
        child.go()
        out.append(float(child.said()))
        assert child.said() == "done"
    return out


def graph_waits(graph: MemoryGraph, child: Child, reps: int) -> list[float]:
    """The graph's read while the child holds the database for HOLD_S, less HOLD_S."""
    out = []
    for _ in range(reps):
        graph.rows(COUNT)
        child.go()
        child.said()  # the child is in
        out.append(timed(lambda: graph.rows(COUNT)) - HOLD_S * 1e3)
        assert child.said() == "done"
    return out


def lmg_sql(store: Path) -> None:
    subprocess.run([str(LMG), "sql", str(store), COUNT], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        build(store, args.sessions)
        print(f"{args.sessions:,} sessions, {args.reps} repetitions; waits in ms\n")
        print("| wait | median | p90 | max |\n|---|---:|---:|---:|")
        with MemoryGraph.open(store, idle_s=60.0) as graph:
            child = Child(store, "connect")
            try:
                row("child `connect`, graph holding", child_waits(graph, child, args.reps, False))
            finally:
                child.close()
            sql_holding = []
            for _ in range(args.reps):
                graph.rows(COUNT)
                sql_holding.append(timed(lambda: lmg_sql(store)))
            row("`lmg sql` process, graph holding", sql_holding)
            hot = [timed(lambda: graph.rows(COUNT)) for _ in range(args.reps)]
            row("graph read, holding (hot)", hot)
        with MemoryGraph.open(store, idle_s=0.05) as graph:
            child = Child(store, "connect")
            try:
                row("child `connect`, graph idle", child_waits(graph, child, args.reps, True))
            finally:
                child.close()
            reopen = []
            for _ in range(args.reps):
                time.sleep(0.15)
                reopen.append(timed(lambda: graph.rows(COUNT)))
            row("graph read after letting go (reopen)", reopen)
            for how, name in (("connect", "`connect`"), ("plain", "plain DuckDB read-only")):
                child = Child(store, how, HOLD_S)
                try:
                    waits = graph_waits(graph, child, args.reps)
                    row(f"graph read past a child's {name} (less its {HOLD_S:g} s)", waits)
                finally:
                    child.close()
        row(
            "`lmg sql` process, no graph", [timed(lambda: lmg_sql(store)) for _ in range(args.reps)]
        )


if __name__ == "__main__":
    main()
