"""The sides of the `serve` case: durable appends over HTTP to `lmg serve`, beside the same
appends in-process (`AsyncEventLog`, the ceiling) and sqlite3 (the floor); and the latency of
reads while appends stream.

Every side times each call as well as the whole slice, so the case reports latency (p50,
p99) beside throughput. The service is a child process (`lmg serve STORE --port 0`), fresh
with its store for every repetition; its access log goes to a file, as it would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx2

import eventlog
from eventlog import AsyncRemoteLog
from projections import AsyncMemoryGraph, AsyncRemoteGraph

from ._data import ENCODER
from ._harness import timer
from ._sides import _prompts, _sessions, _Texts, sqlite_open

__all__ = ["HttpAgents", "Ingest", "LogAgentsTimed", "Service", "SqliteTimed", "read_latency"]

LMG = Path(sys.executable).with_name("lmg")
AGENTS = 64
_URL = re.compile(r"lmg serve: (http://127\.0\.0\.1:\d+)")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def latencies(values: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 0.5) * 1e3, "p99_ms": percentile(values, 0.99) * 1e3}


class Service:
    """`lmg serve STORE --port 0` as a child, its stderr (the access log) in a file."""

    def __init__(self, store: Path) -> None:
        self.err = store.parent / f"{store.name}.serve.err"
        with self.err.open("wb") as sink:
            self.proc = subprocess.Popen(
                [str(LMG), "serve", str(store), "--port", "0"], stderr=sink
            )
        deadline = time.monotonic() + 60
        while (found := _URL.search(self.err.read_text())) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lmg serve did not start:\n{self.err.read_text()}")
            time.sleep(0.02)
        self.url = found.group(1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def _seeded(path: Path) -> list[uuid.UUID]:
    created, sessions = _sessions(AGENTS)
    with eventlog.open(path) as log:
        log.append(created)
    return sessions


class HttpAgents:
    """64 asyncio tasks, each awaiting `add_prompt` in a loop through one
    `eventlog.connect_async` client (its pool of connections) to `lmg serve`.

    Besides latency it reports the CPU each process spent per append during the slices (the
    service's from /proc, the client's: this process), the appends per group commit and per
    HTTP request (the client coalesces the appends its tasks make concurrently; the
    service's metrics): on a loaded machine the rate follows CPU per append, which the load
    changes far less."""

    def __init__(self, path: Path, total: int) -> None:
        self.sessions = _seeded(path / "log")
        self.service = Service(path / "log")
        self.texts = _Texts()
        self.loop = asyncio.new_event_loop()
        self.log: AsyncRemoteLog = self.loop.run_until_complete(
            eventlog.connect_async(self.service.url)
        )
        self.seconds: list[float] = []
        self.cpu = [0.0, 0.0]  # seconds: the service's, the client's
        self.appended = 0

    def run(self, n: int) -> float:
        service, client = _cpu_s(self.service.proc.pid), time.process_time()
        seconds = self.loop.run_until_complete(_agents(self.log, self.sessions, self.texts,
                                                       n, self.seconds))  # fmt: skip
        self.cpu[0] += _cpu_s(self.service.proc.pid) - service
        self.cpu[1] += time.process_time() - client
        self.appended += n
        return seconds

    def close(self) -> dict[str, float]:
        metrics = httpx2.get(f"{self.service.url}/metrics").text
        self.loop.run_until_complete(self.log.close())
        self.loop.close()
        self.service.stop()
        requests = sum(
            _metric(metrics, "lmg_request_seconds_count", f'route="/v1/stores/{{name}}/{route}"')
            for route in ("events", "events:batch")
        )
        return latencies(self.seconds) | {
            "service_cpu_ms": self.cpu[0] / max(1, self.appended) * 1e3,
            "client_cpu_ms": self.cpu[1] / max(1, self.appended) * 1e3,
            "group": _metric(metrics, "lmg_commit_group_requests_sum")
            / max(1.0, _metric(metrics, "lmg_commit_group_requests_count")),
            "per_request": self.appended / max(1.0, requests),
        }


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds of process `pid` (Linux's /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    """`_cpu_s` of process `pid` and its children (the service and its ingest process)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        kids = [int(k) for k in children.read_text().split()]
    except OSError:
        kids = []
    return _cpu_s(pid) + sum(_cpu_s(k) for k in kids)


def _metric(text: str, name: str, having: str = "") -> float:
    """The sum of the samples of `name` whose labels include the text `having`."""
    found = re.findall(rf"^{name}{{(.*)}} (\S+)$", text, re.MULTILINE)
    return sum(float(value) for labels, value in found if having in labels)


class LogAgentsTimed:
    """The ceiling: the same 64 tasks on an in-process `AsyncEventLog` (default FSYNC)."""

    def __init__(self, path: Path, total: int) -> None:
        self.sessions = _seeded(path / "log")
        self.texts = _Texts()
        self.loop = asyncio.new_event_loop()
        self.log = self.loop.run_until_complete(eventlog.open_async(path / "log"))
        self.seconds: list[float] = []

    def run(self, n: int) -> float:
        return self.loop.run_until_complete(_agents(self.log, self.sessions, self.texts,
                                                    n, self.seconds))  # fmt: skip

    def close(self) -> dict[str, float]:
        self.loop.run_until_complete(self.log.close())
        self.loop.close()
        return latencies(self.seconds)


async def _agents(
    log: Any, sessions: list[uuid.UUID], texts: _Texts, n: int, seconds: list[float]
) -> float:
    per = n // AGENTS
    taken = texts.take(per * AGENTS)
    clock = time.perf_counter

    async def agent(k: int) -> None:
        for text in taken[k * per : (k + 1) * per]:
            began = clock()
            await log.add_prompt(sessions[k], text)
            seconds.append(clock() - began)

    with timer() as t:
        await asyncio.gather(*(agent(k) for k in range(AGENTS)))
    return t[0]


class SqliteTimed:
    """The floor: sqlite3 WAL synchronous=FULL, INSERT + COMMIT per event, one thread."""

    def __init__(self, path: Path, total: int) -> None:
        self.events = iter(_prompts(1, total))
        self.conn = sqlite_open(path / "events.db")
        self.seconds: list[float] = []

    def run(self, n: int) -> float:
        events, conn, clock = [next(self.events) for _ in range(n)], self.conn, time.perf_counter
        sql, encode = "INSERT INTO events (body) VALUES (?)", ENCODER.encode
        with timer() as t:
            for event in events:
                began = clock()
                conn.execute(sql, (encode(event),))
                conn.commit()
                self.seconds.append(clock() - began)
        return t[0]

    def close(self) -> dict[str, float]:
        self.conn.close()
        return latencies(self.seconds)


Ingest = Callable[[str, asyncio.Event], Coroutine[Any, Any, int]]
"""Posts to the service at this URL until the event is set; returns the spans it sent."""


def read_latency(
    base: Path,
    seconds: float,
    appenders: int = 16,
    ingest: Ingest | None = None,
    warm: Callable[[str], Coroutine[Any, Any, None]] | None = None,
    *,
    readers: int = 1,
) -> dict[str, float]:
    """p50/p95 of `agent_stats` and a 10-turn `context_window` through the client: first on
    an idle service, then while `appenders` tasks append prompts and responses without pause
    (`readers` clients, each one request at a time); and the append rate meanwhile. With
    `ingest`, the second phase runs while it posts OTLP traces instead (``ingesting``, and
    its span rate); `warm` runs against the service before either phase (the OTLP ingest
    process starts with the first request: the phases time a service already running it)."""
    store = base / "reads"
    sessions = _seeded(store)
    with eventlog.open(store) as log:  # agents, and turns for the context windows
        agents = [log.add_agent(f"agent {i}", "answers") for i in range(8)]
        for k, s in enumerate(sessions):
            for i in range(12):
                prompt = log.add_prompt(s, f"question {i}")
                log.assign_agent_to_prompt(prompt, agents[(k + i) % len(agents)])
                log.add_response(prompt, f"answer {i}", eventlog.TokenUsage(3, 5))
    service = Service(store)
    try:
        if warm is not None:
            asyncio.run(warm(service.url))
        return asyncio.run(
            _reads(service.url, sessions, seconds, appenders, ingest, service.proc.pid, readers)
        )
    finally:
        service.stop()


async def _reads(  # noqa: PLR0917 (one call site)
    url: str,
    sessions: list[uuid.UUID],
    seconds: float,
    appenders: int,
    ingest: Ingest | None,
    pid: int,
    readers: int,
) -> dict[str, float]:
    out: dict[str, float] = {}
    busy = "appending" if ingest is None else "ingesting"
    async with await AsyncMemoryGraph.connect(url) as g:
        for phase in ("idle", busy):
            stop = asyncio.Event()
            appended = [0]
            writers = [
                asyncio.create_task(_append(g, sessions[k], stop, appended))
                for k in range(appenders if phase == "appending" else 0)
            ]
            posting = asyncio.create_task(ingest(url, stop)) if ingest and phase == busy else None
            lags: list[tuple[float, float]] = []
            cpu = _tree_cpu_s(pid), _cpu_s(pid)
            sampling = asyncio.create_task(_lag(url, stop, lags)) if posting else None
            timed = asyncio.create_task(asyncio.sleep(seconds))  # the phase with no reader
            read = await asyncio.gather(
                *(_reader(g, sessions[k:], seconds) for k in range(readers))
            )
            await timed
            stats = [t for r in read for t in r[0]]
            windows = [t for r in read for t in r[1]]
            stop.set()
            await asyncio.gather(*writers)
            main = _cpu_s(pid) - cpu[1]
            child = _tree_cpu_s(pid) - cpu[0] - main
            out[f"{phase} service cpu cores"] = main / seconds
            out[f"{phase} ingest process cpu cores"] = child / seconds
            if sampling is not None:
                await sampling
                for i, unit in ((0, "events"), (1, "s")):
                    out[f"fold lag p50 {unit}"] = percentile([x[i] for x in lags], 0.5)
                    out[f"fold lag p95 {unit}"] = percentile([x[i] for x in lags], 0.95)
            for name, values in (("agent_stats", stats), ("context_window", windows)):
                out[f"{phase} {name} p50_ms"] = percentile(values, 0.5) * 1e3
                out[f"{phase} {name} p95_ms"] = percentile(values, 0.95) * 1e3
            if phase == "appending":
                out["appends_per_s"] = appended[0] / seconds
            if posting is not None:
                spans = await posting
                out["spans_per_s"] = spans / seconds
                out["service cpu us per span"] = main / max(1, spans) * 1e6
                out["ingest process cpu us per span"] = child / max(1, spans) * 1e6
    return out


async def _lag(url: str, stop: asyncio.Event, lags: list[tuple[float, float]]) -> None:
    """Sample the fold's lag (events, seconds) from ``/metrics`` every 0.1 s until `stop`."""
    async with httpx2.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            text = (await client.get(f"{url}/metrics")).text
            lags.append(
                (_metric(text, "lmg_fold_lag_events"), _metric(text, "lmg_fold_lag_seconds"))
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


async def _append(g: AsyncRemoteGraph, session: uuid.UUID, stop: asyncio.Event,
                  appended: list[int]) -> None:  # fmt: skip
    while not stop.is_set():
        prompt = await g.add_prompt(session, "streamed question")
        await g.add_response(prompt, "streamed answer", eventlog.TokenUsage(3, 5))
        appended[0] += 2


async def _reader(
    g: AsyncRemoteGraph, sessions: list[uuid.UUID], seconds: float
) -> tuple[list[float], list[float]]:
    stats: list[float] = []
    windows: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    k = 0
    while clock() < deadline:
        began = clock()
        await g.sql("SELECT * FROM agent_stats")
        stats.append(clock() - began)
        began = clock()
        await g.context_window(sessions[k % len(sessions)], turns=10)
        windows.append(clock() - began)
        k += 1
    return stats, windows
