"""Where ingest's time goes: cProfile of the `Exporter` path and of the OTLP route's path.

    python -m tests.benchmarks.profile_ingest                      # both paths, 7,000 spans
    python -m tests.benchmarks.profile_ingest --path otlp --spans 35000 --top 40
    python -m tests.benchmarks.profile_ingest --cpu                # `exporter`, CPU by stage

`exporter`: spans made beforehand by the SDK (`tests/benchmarks/_otel.py`), exported in
batches of 512 through `eventlog.otel.Exporter` into a store with the default FSYNC, then
flushed. `otlp`: the same spans as OTLP protobuf export requests of 512 spans, each decoded
by `_spans.decode_protobuf` and handed to an `Ingester` with ``record_first`` (what the
service's ``/v1/traces`` does, without HTTP). Prints the plain wall time of each (unprofiled),
the time by stage (decode, mapping, the store's per-request path, the frame), then the top
functions of the profile.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import eventlog
from eventlog import _handoffs, _ingest, _store, otel
from eventlog._ingest import Ingester
from eventlog._spans import decode_protobuf
from eventlog.otel import _exporter

from ._otel import BATCH, SPANS_PER_TRACE, emit_trace

_STAGES: list[tuple[str, Callable[[str], bool]]] = [
    ("fsync and write", lambda k: "fsync" in k or "pwrite" in k),
    ("frame (encode, compress)", lambda k: "_format.py" in k or "zstd" in k.lower()),
    ("store per request", lambda k: "_store.py" in k or "_resolve.py" in k or "blake2b" in k),
    ("mapping", lambda k: "_genai.py" in k or "events.py" in k),
    ("decode and bound", lambda k: "_spans.py" in k or "_exporter.py" in k or "protobuf" in k),
    ("ingester", lambda k: "_ingest.py" in k),
]


def sdk_spans(n: int) -> list[Any]:
    """`n` spans (whole traces) made by the SDK, as `ExporterIntoStore` makes them."""
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer, rng = provider.get_tracer("bench"), random.Random(2)
    for _ in range(-(-n // SPANS_PER_TRACE)):
        emit_trace(tracer, rng)
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return spans


def otlp_bodies(spans: list[Any]) -> list[bytes]:
    """The spans as OTLP/HTTP protobuf bodies of `BATCH` spans, as the SDK's exporter sends."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import (  # noqa: PLC0415
        encode_spans,
    )

    return [
        encode_spans(spans[i : i + BATCH]).SerializeToString() for i in range(0, len(spans), BATCH)
    ]


def run_exporter(spans: list[Any], path: Path) -> None:
    log = eventlog.open(path)
    exporter = otel.Exporter(log)
    for i in range(0, len(spans), BATCH):
        exporter.export(spans[i : i + BATCH])
    exporter.force_flush()
    log.close()


def run_otlp(bodies: list[bytes], path: Path) -> None:
    log = eventlog.open(path)
    ingester = Ingester(log, record_first=True)
    for body in bodies:
        ingester.add(list(decode_protobuf(body, "request", stream=False)))
    ingester.flush()
    log.close()


_TIMED: list[tuple[Any, str, str]] = [  # (owner, function, stage): nested ones indented
    (_exporter, "from_readable", "decode and bound (from_readable)"),
    (_ingest.Ingester, "_map", "mapping (map_trace)"),
    (_handoffs.Handoffs, "after", "handoffs"),
    (_ingest.Ingester, "_plan", "ingester plan (id index asked)"),
    (_ingest, "_request", "requests made (encoded for size)"),
    (_store.Store, "commit", "log commit (checks, index, frame)"),
    (_store.Store, "_write_frame", "  of which the frame (encode, zstd, write, sync)"),
]


def cpu_by_stage(spans: list[Any], reps: int) -> None:
    """Print the `exporter` path's CPU a span by stage (see the module docstring)."""
    spent: dict[str, float] = {}
    for owner, name, stage in _TIMED:
        setattr(owner, name, _timed(getattr(owner, name), stage, spent))
    best: dict[str, float] = {}
    for rep in range(reps + 1):
        spent.clear()
        on = rep == reps  # the last run, with the collector on, times the collector
        with tempfile.TemporaryDirectory() as tmp:
            gc.collect()
            if on:
                gc.callbacks.append(lambda phase, _: _collector(phase, spent))
            else:
                gc.disable()
            began = time.process_time()
            run_exporter(spans, Path(tmp) / "s")
            spent["total"] = time.process_time() - began
            gc.enable()
        if not on:
            best = {k: min(v, best.get(k, v)) for k, v in spent.items()}
    for stage in [*(stage for _, _, stage in _TIMED), "total"]:
        print(f"  {stage:52} {best.get(stage, 0.0) * 1e6 / len(spans):6.1f} us a span")
    print(f"  {'the collector, in a run with it on':52} "
          f"{spent.get('collector', 0.0) * 1e6 / len(spans):6.1f} us a span")  # fmt: skip


def _collector(phase: str, spent: dict[str, float]) -> None:
    """A `gc.callbacks` hook summing the collector's CPU time into ``spent["collector"]``."""
    now = time.process_time()
    if phase == "start":
        spent["gc started"] = now
    else:
        spent["collector"] = spent.get("collector", 0.0) + now - spent["gc started"]


def _timed(fn: Callable[..., Any], stage: str, spent: dict[str, float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[stage] = spent.get(stage, 0.0) + time.process_time() - began

    return timed


def _stages(stats: pstats.Stats) -> dict[str, float]:
    out: dict[str, float] = {}
    for (file, _, name), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = f"{file}:{name}"
        stage = next((s for s, test in _STAGES if test(key)), "other")
        out[stage] = out.get(stage, 0.0) + tottime
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=["exporter", "otlp", "both"], default="both")
    parser.add_argument("--spans", type=int, default=7_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--cpu", action="store_true", help="CPU by stage, unprofiled")
    parser.add_argument("--reps", type=int, default=5, help="runs for --cpu (the best)")
    args = parser.parse_args()
    spans = sdk_spans(args.spans)
    if args.cpu:
        cpu_by_stage(spans, args.reps)
        return
    work: dict[str, Callable[[Path], None]] = {}
    if args.path in ("exporter", "both"):
        work["exporter"] = lambda p: run_exporter(spans, p)
    if args.path in ("otlp", "both"):
        bodies = otlp_bodies(spans)
        work["otlp"] = lambda p: run_otlp(bodies, p)
    for name, run in work.items():
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            run(Path(tmp) / "plain")
            seconds = time.perf_counter() - began
            profile = cProfile.Profile()
            profile.runcall(run, Path(tmp) / "profiled")
        stats = pstats.Stats(profile)
        total = sum(_stages(stats).values())
        print(f"\n== {name}: {len(spans) / seconds:,.0f} spans/s unprofiled "
              f"({seconds * 1e6 / len(spans):.1f} us a span)")  # fmt: skip
        for stage, t in sorted(_stages(stats).items(), key=lambda kv: -kv[1]):
            print(f"  {stage:28} {t * 1e6 / len(spans):7.1f} us a span  {t / total:5.1%}")
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
