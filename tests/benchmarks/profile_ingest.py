"""Where ingest's time goes: cProfile of the `Exporter` path and of the OTLP route's path.

    python -m tests.benchmarks.profile_ingest                      # both paths, 7,000 spans
    python -m tests.benchmarks.profile_ingest --path otlp --spans 35000 --top 40
    python -m tests.benchmarks.profile_ingest --cpu                # `exporter`, CPU by stage
    python -m tests.benchmarks.profile_ingest --cpu --sdk          # and the SDK's own, beside

`exporter`: spans made beforehand by the SDK (`tests/benchmarks/_otel.py`), exported in
batches of 512 through `eventlog.otel.Exporter` into a store with the default FSYNC, then
flushed. `otlp`: the same spans as OTLP protobuf export requests of 512 spans, each decoded
by `_spans.decode_protobuf` and handed to an `Ingester` with ``record_first`` (what the
service's ``/v1/traces`` does, without HTTP). Prints the plain wall time of each (unprofiled),
the time by stage (decode, mapping, the store's per-request path, the frame), then the top
functions of the profile. ``--cpu`` times each stage by `time.process_time` instead (no
profiler), the best of ``--reps`` runs with the collector off, then the collector's time by
generation in a run with it on (the spans made beforehand frozen first, `gc.freeze`, as the
benchmark's harness does: else every full collection walks them); with ``--sdk`` it also
times the benchmark's SDK side (`SdkInMemory`: create the same traces, each span exported to
memory as it ends) and counts the Python calls a span of each side (one cProfile run each).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
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


def run_exporter(spans: list[Any], path: Path, profile: cProfile.Profile | None = None) -> float:
    """Export `spans` into a new store at `path`; the CPU seconds of the exports and the
    flush (the benchmark's timed part: opening and closing the log are left out, and are
    all `profile` does not see)."""
    log = eventlog.open(path)
    exporter = otel.Exporter(log)
    if profile is not None:
        profile.enable()
    began = time.process_time()
    for i in range(0, len(spans), BATCH):
        exporter.export(spans[i : i + BATCH])
    exporter.force_flush()
    took = time.process_time() - began
    if profile is not None:
        profile.disable()
    log.close()
    return took


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


def cpu_by_stage(spans: list[Any], reps: int) -> dict[str, float]:
    """Print the `exporter` path's CPU a span by stage (see the module docstring); return
    the best total and the collector's, in us a span."""
    spent: dict[str, float] = {}
    for owner, name, stage in _TIMED:
        setattr(owner, name, _timed(getattr(owner, name), stage, spent))
    best: dict[str, float] = {}
    for rep in range(reps + 1):
        spent.clear()
        on = rep == reps  # the last run, with the collector on, times the collector
        with tempfile.TemporaryDirectory() as tmp:
            gc.collect()
            if on:  # the spans made beforehand frozen, as the benchmark's harness does
                gc.freeze()
                gc.callbacks.append(lambda phase, info: _collector(phase, info, spent))
            else:
                gc.disable()
            spent["total"] = run_exporter(spans, Path(tmp) / "s")
            gc.enable()
            if on:
                gc.callbacks.pop()
                gc.unfreeze()
        if not on:
            best = {k: min(v, best.get(k, v)) for k, v in spent.items()}
    for owner, name, _ in _TIMED:  # unwrapped again: `--sdk` counts calls after this
        setattr(owner, name, getattr(owner, name).__wrapped__)
    for stage in [*(stage for _, _, stage in _TIMED), "total"]:
        print(f"  {stage:52} {best.get(stage, 0.0) * 1e6 / len(spans):6.1f} us a span")
    print(f"  {'the collector, in a run with it on':52} "
          f"{spent.get('collector', 0.0) * 1e6 / len(spans):6.1f} us a span")  # fmt: skip
    for generation in range(3):
        count = spent.get(f"collections {generation}", 0)
        took = spent.get(f"collector {generation}", 0.0) * 1e6 / len(spans)
        print(f"    generation {generation}: {count:5.0f} collections, {took:6.1f} us a span")
    return {"total": best["total"] * 1e6 / len(spans), "collector": spent.get("collector", 0.0)}


def _collector(phase: str, info: dict[str, int], spent: dict[str, float]) -> None:
    """A `gc.callbacks` hook summing the collector's CPU time into ``spent["collector"]``,
    and by generation."""
    now = time.process_time()
    if phase == "start":
        spent["gc started"] = now
        return
    took = now - spent["gc started"]
    generation = info["generation"]
    spent["collector"] = spent.get("collector", 0.0) + took
    spent[f"collector {generation}"] = spent.get(f"collector {generation}", 0.0) + took
    spent[f"collections {generation}"] = spent.get(f"collections {generation}", 0) + 1


def sdk_cpu(n: int, reps: int) -> float:
    """The benchmark's SDK side (`SdkInMemory`) over `n` spans: its CPU a span (us), the best
    of `reps` runs, the collector on (as the benchmark runs it)."""
    from ._otel import SdkInMemory  # noqa: PLC0415

    side = SdkInMemory(Path("."), n)
    best = float("inf")
    for _ in range(reps):
        gc.collect()
        gc.freeze()  # as the benchmark's harness does
        began = time.process_time()
        side.run(n)
        best = min(best, time.process_time() - began)
        gc.unfreeze()
    side.close()
    return best * 1e6 / n


def calls_a_span(spans: list[Any]) -> tuple[float, float]:
    """Python function calls a span (cProfile's count, C functions included) of the
    `exporter` path and of the SDK side, for the same number of spans."""
    from ._otel import SdkInMemory  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        profile = cProfile.Profile()
        run_exporter(spans, Path(tmp) / "s", profile)
    ours = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    side = SdkInMemory(Path("."), len(spans))
    profile = cProfile.Profile()
    profile.runcall(side.run, len(spans))
    side.close()
    theirs = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    return ours / len(spans), theirs / len(spans)


def _timed(fn: Callable[..., Any], stage: str, spent: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(fn)
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
    parser.add_argument("--sdk", action="store_true", help="with --cpu: the SDK side beside")
    args = parser.parse_args()
    spans = sdk_spans(args.spans)
    if args.cpu:
        ours = cpu_by_stage(spans, args.reps)
        if args.sdk:
            sdk = sdk_cpu(len(spans), args.reps)
            with_collector = ours["total"] + ours["collector"] * 1e6 / len(spans)
            print(f"  {'the SDK side (create, export to memory), collector on':52} "
                  f"{sdk:6.1f} us a span")  # fmt: skip
            print(f"  ratio, SDK / exporter (collector's time added): {sdk / with_collector:.2f}x")
            ours_calls, sdk_calls = calls_a_span(spans)
            print(f"  calls a span (cProfile): exporter {ours_calls:.0f}, SDK {sdk_calls:.0f}")
        return
    work: dict[str, Callable[[Path], object]] = {}
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
            profile.runcall(run, Path(tmp) / "profiled")  # opening and closing the log too
        stats = pstats.Stats(profile)
        total = sum(_stages(stats).values())
        print(f"\n== {name}: {len(spans) / seconds:,.0f} spans/s unprofiled "
              f"({seconds * 1e6 / len(spans):.1f} us a span)")  # fmt: skip
        for stage, t in sorted(_stages(stats).items(), key=lambda kv: -kv[1]):
            print(f"  {stage:28} {t * 1e6 / len(spans):7.1f} us a span  {t / total:5.1%}")
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
