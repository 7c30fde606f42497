"""OTLP/HTTP traces and logs into the served stores: ``POST /v1/traces`` and
``POST /v1/stores/{name}/otlp/v1/traces``; ``POST /v1/logs`` and
``POST /v1/stores/{name}/otlp/v1/logs`` for the GenAI events some instrumentations emit
through the logs API (an ``ExportLogsServiceRequest``; its records reach the spans they name,
and are kept as ``otel.log`` nodes, as `_logs` says).

The third ingest source (docs/ingest.md): a body is an ``ExportTraceServiceRequest`` in
protobuf (``application/x-protobuf``) or JSON (``application/json``), optionally gzip or
deflate compressed, decoded by `_spans` and handed to the store's `Ingester`, the one every
source shares, both in the service's ingest process (`_ingest_process`: on the second core,
beside the interpreter that folds and answers reads). What the route keeps (docs/service.md,
"OTLP"):

1. **A 200 means every accepted span is durable.** The store's ingester runs with
   ``record_first``: a span whose trace is complete is stored with its trace's events; one
   still waiting for its root is stored at once as its ``span.recorded``, and its trace's
   events follow when the root arrives, after `Limits.otlp_trace_timeout_s`, or on drain.
2. **A bad span fails only itself.** The answer is an ``ExportTraceServiceResponse`` in the
   request's encoding whose ``partial_success`` counts the spans rejected and says why.
3. **Bounded before decoded.** The body is cut at `Limits.max_body_bytes` as it arrives, and
   again as it is decompressed, incrementally, so a small gzip bomb never inflates in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Mapping

import msgspec
import prometheus_client as prom
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._http import ApiError, ServedLog, Service, read_body, service_of
from ._ingest_process import JSON, PROTOBUF, WBITS, Body, IngestProcess, Store, failure
from ._spans import Malformed

__all__ = ["Receiver"]

_REASONS = 5  # the first reasons a partial success names
_MESSAGE_CHARS = 1_000


class Receiver:
    """The OTLP routes and the ingest process (`_ingest_process`) holding one `Ingester` per
    served store; a periodic task maps traces whose root is overdue, and `close` maps every
    trace still buffered."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._stores: dict[str, Store] = {}
        self._process = IngestProcess()
        self._expiry: asyncio.Task[None] | None = None
        registry = service.metrics.registry
        self._received = prom.Counter(
            "lmg_otlp_spans_received", "Spans received over OTLP and accepted", ["store"],
            registry=registry,
        )  # fmt: skip
        self._rejected = prom.Counter(
            "lmg_otlp_spans_rejected", "Spans received over OTLP and rejected as malformed",
            ["store"], registry=registry,
        )  # fmt: skip
        self._logs_received = prom.Counter(
            "lmg_otlp_log_records_received", "Log records received over OTLP and accepted",
            ["store"], registry=registry,
        )  # fmt: skip
        self._logs_rejected = prom.Counter(
            "lmg_otlp_log_records_rejected",
            "Log records received over OTLP and rejected as malformed", ["store"],
            registry=registry,
        )  # fmt: skip
        self.routes = [
            Route("/v1/traces", self.traces, methods=["POST"]),
            Route("/v1/stores/{name}/otlp/v1/traces", self.store_traces, methods=["POST"]),
            Route("/v1/logs", self.logs, methods=["POST"]),
            Route("/v1/stores/{name}/otlp/v1/logs", self.store_logs, methods=["POST"]),
        ]

    def start(self, stores: Mapping[str, ServedLog]) -> None:
        for name, served in stores.items():
            self.add(name, served)
        limits = self._service.limits
        timeout, wait = limits.otlp_trace_timeout_s, limits.otlp_log_wait_s
        self._expiry = asyncio.create_task(self._expire(min(1.0, timeout / 2, wait / 2)))
        self._service.erased.append(self.forget)

    def forget(self, name: str) -> None:
        """After an erasure on store `name`: its ingester forgets the traces it remembers."""
        store = self._stores.get(name)
        if store is not None:
            self._process.forget(store)

    def add(self, name: str, served: ServedLog) -> None:
        """Receive traces for `name` too (a store served once the service runs: a fork)."""
        limits = self._service.limits
        self._stores[name] = Store(
            name, str(served.path), limits.otlp_trace_timeout_s, limits.otlp_log_wait_s
        )

    async def close(self) -> None:
        """Stop expiring and map every buffered trace (uvicorn has let requests finish)."""
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        try:
            self._settled(await self._process.close(list(self._stores.values())))
        except ApiError as exc:  # the process died: its traces' spans are in the log
            print(f"lmg serve: OTLP traces not mapped: {exc.message}", file=sys.stderr)

    async def traces(self, request: Request) -> Response:
        """Into the store the token names: the first store of its list, else ``default``."""
        return await self._receive(request, self._named(request), logs=False)

    async def store_traces(self, request: Request) -> Response:
        return await self._receive(request, request.path_params["name"], logs=False)

    async def logs(self, request: Request) -> Response:
        """Log records into the store the token names, as `traces`."""
        return await self._receive(request, self._named(request), logs=True)

    async def store_logs(self, request: Request) -> Response:
        return await self._receive(request, request.path_params["name"], logs=True)

    def _named(self, request: Request) -> str:
        token = self._service.token(request)
        named = [s for s in token.stores if s != "*"] if token is not None else []
        return named[0] if named else "default"

    async def _receive(self, request: Request, name: str, *, logs: bool) -> Response:
        """Check the request, read its body, and have the ingest process decode and store
        it; a read after the answer waits for the fold to reach what it stored, as after an
        append."""
        service = service_of(request)
        service.store(request, name, "append")  # 401, 403, 404 or 503 as every route
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind not in (PROTOBUF, JSON):
            raise ApiError(415, "unsupported_media_type", f"send {PROTOBUF} or {JSON}")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", *WBITS):
            raise ApiError(415, "unsupported_media_type", "Content-Encoding: gzip or deflate")
        limits = service.limits
        body = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
        outcome = await self._process.receive(
            self._stores[name], Body(body, kind, encoding, limits.max_body_bytes, logs)
        )
        received, rejected = (
            (self._logs_received, self._logs_rejected) if logs else (self._received, self._rejected)
        )
        received.labels(name).inc(outcome.accepted)
        rejected.labels(name).inc(len(outcome.rejected))
        if outcome.failure is not None:
            raise failure(outcome.failure)
        self._acknowledged(name, outcome.last_lsn)
        return _answer_logs(kind, outcome.rejected) if logs else _answer(kind, outcome.rejected)

    def _acknowledged(self, name: str, lsn: int) -> None:
        served = self._service.stores[name]
        served.acknowledged = max(served.acknowledged, lsn)

    def _settled(self, results: dict[str, tuple[int, str | None]]) -> None:
        """After expiring or flushing: what was stored is acknowledged; a failure of the log
        (closed, disk full) is said on stderr: no request waits for this work, and appends
        say it to their callers too. The spans are in the log already; only their trace's
        events are missing."""
        for name, (lsn, error) in results.items():
            self._acknowledged(name, lsn)
            if error is not None:
                print(f"lmg serve: OTLP traces of {name} not mapped: {error}", file=sys.stderr)

    async def _expire(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(ApiError):  # the process died; the next request restarts it
                self._settled(await self._process.each("expire", list(self._stores.values())))


def _answer_logs(kind: str, rejected: list[Malformed]) -> Response:
    """The ``ExportLogsServiceResponse``: empty when every record was accepted."""
    message = _rejected(rejected, "log record(s)")
    if kind == JSON:
        partial = {"rejectedLogRecords": str(len(rejected)), "errorMessage": message}
        return Response(msgspec.json.encode({"partialSuccess": partial} if rejected else {}), 200,
                        media_type=JSON)  # fmt: skip
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: PLC0415
        ExportLogsPartialSuccess,
        ExportLogsServiceResponse,
    )

    answer = ExportLogsServiceResponse()
    if rejected:
        answer.partial_success.CopyFrom(
            ExportLogsPartialSuccess(rejected_log_records=len(rejected), error_message=message)
        )
    return Response(answer.SerializeToString(), 200, media_type=PROTOBUF)


def _rejected(rejected: list[Malformed], what: str) -> str:
    """The partial-success message: how many `what` were rejected, the first few reasons."""
    if not rejected:
        return ""
    reasons = "; ".join(f"{m.where}: {m.reason}" for m in rejected[:_REASONS])
    more = f"; and {len(rejected) - _REASONS} more" if len(rejected) > _REASONS else ""
    return f"{len(rejected)} malformed {what} rejected: {reasons}{more}"[:_MESSAGE_CHARS]


def _answer(kind: str, rejected: list[Malformed]) -> Response:
    """The ``ExportTraceServiceResponse``: empty when every span was accepted."""
    message = _rejected(rejected, "span(s)")
    if kind == JSON:
        partial = {"rejectedSpans": str(len(rejected)), "errorMessage": message}
        return Response(msgspec.json.encode({"partialSuccess": partial} if rejected else {}), 200,
                        media_type=JSON)  # fmt: skip
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    answer = ExportTraceServiceResponse()
    if rejected:
        answer.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=len(rejected), error_message=message)
        )
    return Response(answer.SerializeToString(), 200, media_type=PROTOBUF)
