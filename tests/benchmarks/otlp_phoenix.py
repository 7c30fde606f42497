"""OTLP ingest into `lmg serve` beside Arize Phoenix, and reads while spans stream in.

    make bench-phoenix                      # makes .venv-phoenix (arize-phoenix), runs this
    python -m tests.benchmarks.otlp_phoenix --phoenix .venv-phoenix/bin/phoenix --spans 35840
    python -m tests.benchmarks.otlp_phoenix --reads-only --rate 5000   # no Phoenix needed

**Ingest.** The same OTLP/HTTP protobuf export requests of GenAI spans (`_otel.emit_trace`:
7-span turns of a two-agent run, one conversation each; 512 spans a request, the
`BatchSpanProcessor`'s default) are posted to each side on 127.0.0.1 by `--senders`
concurrent exporters: `lmg serve` on a fresh store (a 200 means the spans are fsynced), and
`phoenix serve` with its default SQLite storage in a fresh working directory (its 200 means
the spans are queued for its bulk inserter, not yet stored). Reported per side: spans/s
acknowledged, spans/s until every span is visible in a query (the count of spans: our SQL
route's ``SELECT count(*) FROM spans``, Phoenix's GraphQL ``recordCount``), and the p50/p95
time from the start of an export to its last whole session's spans being visible in a query
(our SQL route on the ``spans`` table; Phoenix's REST ``GET /v1/projects/default/spans
?trace_id=``), polled every 10 ms by one prober beside the senders, one query at a time.

**Reads while ingesting.** `lmg serve` on a store holding 64 sessions of 12 turns, while one
exporter posts requests of 512 spans paced to `--rate` spans/s: `--readers` clients (1 by
default; the issue's test has 8) each time ``SELECT * FROM agent_stats`` and a 10-turn
`context_window` through the client in turn, one request at a time, idle first,
then during the ingest; p50/p95 of each, and the span rate reached. One request of 512 other
spans goes first, untimed: it starts the service's OTLP ingest process.

Phoenix runs from its own virtual environment (it pins its own versions of what we use); it
is not part of ``make test``. Nothing here asserts; it prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

import eventlog

from ._otel import BATCH, SPANS_PER_TRACE, emit_trace
from ._service import Ingest, Service, percentile, read_latency

_PROTOBUF = {"Content-Type": "application/x-protobuf"}
_POLL_S = 0.01
_VISIBLE_TIMEOUT_S = 300.0


def requests_of(spans: int, seed: int = 3) -> list[tuple[bytes, str]]:
    """OTLP/HTTP protobuf bodies of `BATCH` spans, each with the trace id (hex) of the last
    trace wholly inside it: the session whose visibility the benchmark times."""
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
    out = []
    for i in range(0, len(made), BATCH):
        batch = made[i : i + BATCH]
        counts: dict[int, int] = {}
        for s in batch:
            assert s.context is not None
            counts[s.context.trace_id] = counts.get(s.context.trace_id, 0) + 1
        whole = [t for t, c in counts.items() if c == SPANS_PER_TRACE]
        out.append((encode_spans(batch).SerializeToString(), f"{whole[-1]:032x}"))
    return out


# -- the two services --------------------------------------------------------------------------


class Ours:
    """`lmg serve STORE --port 0` (`_service.Service`) and its queries."""

    name = "lmg serve"

    def __init__(self, base: Path) -> None:
        eventlog.open(base / "store").close()
        self.service = Service(base / "store")
        self.url = self.service.url

    async def _count(self, client: httpx.AsyncClient, query: str, params: list[Any]) -> int:
        answer = await client.post(
            f"{self.url}/v1/stores/default/sql", json={"query": query, "params": params}
        )
        answer.raise_for_status()
        rows = answer.json()["rows"]
        return int(rows[0][0])

    async def trace_spans(self, client: httpx.AsyncClient, trace: str) -> int:
        return await self._count(client, "SELECT count(*) FROM spans WHERE trace_id = ?", [trace])

    async def all_spans(self, client: httpx.AsyncClient) -> int:
        return await self._count(client, "SELECT count(*) FROM spans", [])

    def stop(self) -> None:
        self.service.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Phoenix:
    """`phoenix serve` on 127.0.0.1 with its default SQLite storage in `base`."""

    name = "Phoenix"

    def __init__(self, base: Path, executable: str) -> None:
        port = _free_port()
        env = {
            **os.environ,
            "PHOENIX_WORKING_DIR": str(base / "phoenix"),
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(_free_port()),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        self.url = f"http://127.0.0.1:{port}"
        self.err = base / "phoenix.err"
        with self.err.open("wb") as sink:
            self.proc = subprocess.Popen(
                [executable, "serve"], env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 300  # it runs its migrations first
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.err.read_text(errors="replace")[-2_000:]
                self.stop()
                raise RuntimeError(f"phoenix serve did not start:\n{tail}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    async def trace_spans(self, client: httpx.AsyncClient, trace: str) -> int:
        answer = await client.get(
            f"{self.url}/v1/projects/default/spans", params={"trace_id": trace, "limit": 100}
        )
        if answer.status_code == 404:  # the project is made with the first span stored
            return 0
        answer.raise_for_status()
        return len(answer.json()["data"])

    async def all_spans(self, client: httpx.AsyncClient) -> int:
        query = "{ projects { edges { node { name recordCount } } } }"
        answer = await client.post(f"{self.url}/graphql", json={"query": query})
        answer.raise_for_status()
        edges = answer.json()["data"]["projects"]["edges"]
        return sum(int(e["node"]["recordCount"]) for e in edges)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


Side = Ours | Phoenix


# -- ingest ---------------------------------------------------------------------------------


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + _VISIBLE_TIMEOUT_S
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"spans not visible after {_VISIBLE_TIMEOUT_S} s")
        await asyncio.sleep(_POLL_S)


async def ingest(side: Side, bodies: list[tuple[bytes, str]], senders: int) -> dict[str, float]:
    """Post every body (`senders` at a time) while one prober checks, in order and one query
    at a time (so probing never floods either side), when each body's session is visible;
    then wait until every span is counted."""
    total = len(bodies) * BATCH
    visible: list[float] = []
    acked: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=senders + 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def prober() -> None:
            while (item := await acked.get()) is not None:
                trace, began = item

                async def seen(trace: str = trace) -> bool:
                    return await side.trace_spans(client, trace) >= SPANS_PER_TRACE

                await _until(seen)
                visible.append(time.perf_counter() - began)

        async def sender() -> None:
            while queue:
                body, trace = queue.pop()
                began = time.perf_counter()
                answer = await client.post(f"{side.url}/v1/traces", content=body, headers=_PROTOBUF)
                answer.raise_for_status()
                acked.put_nowait((trace, began))

        total += await side.all_spans(client)  # the warm-up's
        probing = asyncio.create_task(prober())
        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(senders)))
        acked_s = time.perf_counter() - start
        acked.put_nowait(None)
        await probing

        async def everything() -> bool:
            return await side.all_spans(client) >= total

        await _until(everything)
        whole = time.perf_counter() - start
    spans = len(bodies) * BATCH
    return {
        "acked_spans_per_s": spans / acked_s,
        "visible_spans_per_s": spans / whole,
        "visible_p50_ms": percentile(visible, 0.5) * 1e3,
        "visible_p95_ms": percentile(visible, 0.95) * 1e3,
    }


def compare(base: Path, spans: int, senders: int, phoenix: str, reps: int) -> None:
    spans = max(BATCH, spans // BATCH * BATCH)
    warm = requests_of(2 * BATCH, seed=1)
    rows: dict[str, list[dict[str, float]]] = {"lmg serve": [], "Phoenix": []}
    for rep in range(reps):
        for make in (Ours, lambda d: Phoenix(d, phoenix)):
            where = Path(tempfile.mkdtemp(dir=base))
            side = make(where)
            try:
                asyncio.run(ingest(side, warm, 1))
                result = asyncio.run(ingest(side, requests_of(spans, seed=10 + rep), senders))
            finally:
                side.stop()
                shutil.rmtree(where, ignore_errors=True)
            rows[side.name].append(result)
            print(f"rep {rep} {side.name}: {result}", flush=True)
    _table(rows, spans, senders)


def _median(results: list[dict[str, float]], key: str) -> float:
    values = sorted(r[key] for r in results)
    return values[len(values) // 2]


def _table(rows: dict[str, list[dict[str, float]]], spans: int, senders: int) -> None:
    print(f"\n{spans:,} spans a run, {spans // BATCH} requests of {BATCH}, {senders} sender(s); "
          f"medians of {len(rows['lmg serve'])} runs")  # fmt: skip
    print("| side | spans/s acknowledged | spans/s visible | visible p50 ms | visible p95 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, results in rows.items():
        print(f"| {name} | {_median(results, 'acked_spans_per_s'):,.0f} | "
              f"{_median(results, 'visible_spans_per_s'):,.0f} | "
              f"{_median(results, 'visible_p50_ms'):,.0f} | "
              f"{_median(results, 'visible_p95_ms'):,.0f} |")  # fmt: skip
    ours, theirs = rows["lmg serve"], rows["Phoenix"]
    for key in ("acked_spans_per_s", "visible_spans_per_s"):
        ratios = sorted(o[key] / t[key] for o, t in zip(ours, theirs, strict=True))
        print(f"ratio ours / Phoenix, {key}: {ratios[len(ratios) // 2]:.2f}x "
              f"({ratios[0]:.2f} to {ratios[-1]:.2f})")  # fmt: skip


# -- reads while ingesting ------------------------------------------------------------------


def reads_while_ingesting(base: Path, rate: int, seconds: float, readers: int = 1) -> None:
    bodies = [b for b, _ in requests_of(int(rate * seconds * 1.5) + BATCH)]
    warm = requests_of(BATCH, seed=1)[0][0]

    async def warm_up(url: str) -> None:
        """One request first: it starts the service's ingest process (not timed)."""
        async with httpx.AsyncClient(timeout=120) as client:
            answer = await client.post(f"{url}/v1/traces", content=warm, headers=_PROTOBUF)
            answer.raise_for_status()

    result = read_latency(base, seconds, ingest=_paced(bodies, rate), warm=warm_up, readers=readers)
    for key, value in result.items():
        print(f"{key}: {value:,.1f}")


def _paced(bodies: list[bytes], rate: int) -> Ingest:
    """An exporter posting `bodies` to ``/v1/traces`` at `rate` spans/s until stopped; it
    returns the spans acknowledged."""

    async def run(url: str, stop: asyncio.Event) -> int:
        sent = 0
        every = BATCH / rate
        async with httpx.AsyncClient(timeout=120) as client:
            start = time.perf_counter()
            for i, body in enumerate(bodies):
                if stop.is_set():
                    break
                delay = start + i * every - time.perf_counter()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        break
                answer = await client.post(f"{url}/v1/traces", content=body, headers=_PROTOBUF)
                answer.raise_for_status()
                sent += BATCH
        return sent

    return run


def _uptime() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phoenix", default=".venv-phoenix/bin/phoenix")
    parser.add_argument("--spans", type=int, default=35_840, help="spans a run (70 requests)")
    parser.add_argument("--senders", type=int, default=1, help="concurrent exporters")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rate", type=int, default=5_000, help="spans/s while reading")
    parser.add_argument("--seconds", type=float, default=10.0, help="reading, each phase")
    parser.add_argument(
        "--readers", type=int, default=1, help="clients reading at once (0: the CPU of ingest)"
    )
    parser.add_argument("--reads-only", action="store_true")
    parser.add_argument("--ingest-only", action="store_true")
    parser.add_argument("--tmpdir", type=Path, default=None)
    args = parser.parse_args()
    print(_uptime())
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        base = Path(tmp)
        if not args.reads_only:
            if not Path(args.phoenix).exists():
                sys.exit(f"no Phoenix at {args.phoenix}: run `make bench-phoenix` to make it")
            compare(base, args.spans, args.senders, args.phoenix, args.reps)
        if not args.ingest_only:
            reads_while_ingesting(base, args.rate, args.seconds, args.readers)
    print(_uptime())


if __name__ == "__main__":
    main()
