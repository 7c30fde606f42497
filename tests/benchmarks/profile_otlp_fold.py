"""Where `lmg serve`'s fold of OTLP spans spends its CPU, by stage, per span.

    python -m tests.benchmarks.profile_otlp_fold                       # 20,480 spans
    python -m tests.benchmarks.profile_otlp_fold --spans 10240 --before 200000

While spans stream in and readers wait for what was acknowledged (`Owner.reach`), the
service folds about once per OTLP request. This probe does the same without HTTP or threads:
it stores OTLP/HTTP protobuf requests of 512 spans (`_otel.emit_trace`) as the service's
ingest process does (`Ingester` with ``record_first``), noting where each request's events
end in the log, then folds the log one request at a time on one connection, as the
service's fold thread does, and prints the CPU (the process's, DuckDB's threads included)
per span and per fold of each stage: reading the log, the row tier, staging, each
projection's statements, the reference check, the bookkeeping (checkpoint, history mark,
touched ids) and COMMIT. ``--before N`` first stores and folds N spans in large batches, so
the folds timed run beside a table of N spans (what a fold costs as the tables grow).

The CPU of a fold here is what the service's own process spends on it: its other costs per
request (HTTP, handing the body to the ingest process, waking the readers) are not in it.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import eventlog
from eventlog._ingest import Ingester
from eventlog._spans import decode_protobuf
from projections import _fold, _folder
from projections._database import open_database
from projections._schema import PROJECTIONS, ensure_schema
from projections._stage import Staged
from projections.memory_graph import FOLD_MEMORY_LIMIT

from ._otel import BATCH, SPANS_PER_TRACE, emit_trace


def bodies(spans: int, seed: int) -> list[bytes]:
    """OTLP/HTTP protobuf requests of `BATCH` spans, whole traces, as the SDK exports them."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import (  # noqa: PLC0415
        encode_spans,
    )
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer, rng = provider.get_tracer("bench"), random.Random(seed)
    for _ in range(-(-spans // SPANS_PER_TRACE)):
        emit_trace(tracer, rng)
    made = list(memory.get_finished_spans())[:spans]
    provider.shutdown()
    return [
        encode_spans(made[i : i + BATCH]).SerializeToString() for i in range(0, len(made), BATCH)
    ]


def store(log: eventlog.EventLog, ingester: Ingester, requests: list[bytes]) -> list[int]:
    """Each request into the log as the ingest process stores it; the log's end after each."""
    ends = []
    for body in requests:
        ingester.add(list(decode_protobuf(body, "request", stream=False)))
        ends.append(log.next_lsn())
    return ends


class Stages:
    """CPU seconds by stage, summed over the folds, from wrappers put on the fold's
    functions for the duration of `timing` (nested stages are subtracted from the outer)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._inner = [0.0]  # the CPU of nested timed calls, for the caller to subtract

    def wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            outer, self._inner = self._inner, [0.0]
            began = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.process_time() - began
                self.spent[stage] = self.spent.get(stage, 0.0) + took - self._inner[0]
                self._inner = outer
                self._inner[0] += took

        return timed

    @contextmanager
    def timing(self) -> Iterator[None]:
        patched: list[tuple[Any, str, Any]] = [
            (_folder, "commit_batch", "COMMIT and the batch's LSN check"),
            (_folder, "fold", "the checkpoint UPDATE and the rest of `fold`"),
            (_folder, "checkpoint", "checkpoint queries (3 a fold)"),
            (_fold, "record_mark", "history mark"),
            (_fold, "touched_ids", "touched ids (for the readers' caches)"),
            (_fold, "_fold_rows", "row tier (sessions, agents)"),
            (_fold, "check_references", "reference check"),
            (Staged, "__init__", "staging into Arrow"),
        ]
        patched += [(p, "bulk", f"statements: {p.name}") for p in PROJECTIONS]
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
        for owner, name, stage in patched:
            setattr(owner, name, self.wrap(getattr(owner, name), stage))
        try:
            yield
        finally:
            for owner, name, fn in saved:
                if isinstance(owner, type) or owner in (_folder, _fold):
                    setattr(owner, name, fn)
                else:  # a projection instance: drop the wrapper, its class's method shows
                    delattr(owner, name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.profile_otlp_fold")
    p.add_argument("--spans", type=int, default=20_480, help="spans folded request by request")
    p.add_argument("--before", type=int, default=0, help="spans stored and folded first")
    p.add_argument("--requests", type=int, default=1, help="requests a fold holds")
    p.add_argument("--tmpdir", type=Path, default=None)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lmg-otlp-fold-", dir=args.tmpdir))
    try:
        path = root / "store"
        timed = bodies(args.spans, seed=3)
        with eventlog.open(path) as log:
            ingester = Ingester(log, record_first=True)
            if args.before:
                store(log, ingester, bodies(args.before, seed=1))
            start = log.next_lsn()
            ends = store(log, ingester, timed)
        spans = len(timed) * BATCH
        con = open_database(  # as the service's `Owner` opens it
            root / "projections.duckdb",
            read_only=False,
            timeout=None,
            memory_limit=FOLD_MEMORY_LIMIT,
            sandbox=True,
        )
        stages = Stages()
        try:
            ensure_schema(con)
            with eventlog.open(path, readonly=True) as log:
                _folder.fold_available(con, log, stop_lsn=start)  # the spans before
                gc.collect()
                wall, cpu = time.perf_counter(), time.process_time()
                with stages.timing():
                    fold = stages.wrap(_folder.fold_available, "reading the log")
                    for end in ends[args.requests - 1 :: args.requests]:
                        fold(con, log, stop_lsn=end)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            con.close()
        folds = len(ends) // args.requests
        events = ends[folds * args.requests - 1] - start
        spans = folds * args.requests * BATCH
        print(
            f"{spans:,} spans ({events:,} events, {events / spans:.2f} a span) folded in "
            f"{folds} folds of {args.requests} request(s) each, beside {args.before:,} spans "
            "folded before"
        )
        print(
            f"  all: {cpu * 1e6 / spans:7.1f} us CPU a span  {cpu * 1e3 / folds:7.1f} ms CPU "
            f"a fold  (wall {wall * 1e3 / folds:.1f} ms a fold)"
        )
        for stage, took in sorted(stages.spent.items(), key=lambda kv: -kv[1]):
            print(
                f"  {stage:46} {took * 1e6 / spans:7.1f} us a span  {took * 1e3 / folds:7.2f} ms "
                f"a fold  {took / cpu:6.1%}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
