"""OTLP/HTTP traces and logs into the served stores: ``POST /v1/traces`` and
``POST /v1/stores/{name}/otlp/v1/traces``; ``POST /v1/logs`` and
``POST /v1/stores/{name}/otlp/v1/logs`` for the GenAI events some instrumentations emit
through the logs API (an ``ExportLogsServiceRequest``; its records reach the spans they name,
and are kept as ``otel.log`` nodes, as `_logs` says).

The third ingest source (docs/ingest.md): a body is an ``ExportTraceServiceRequest`` in
protobuf (``application/x-protobuf``) or JSON (``application/json``), optionally gzip or
deflate compressed, decoded by `_spans` and handed to the store's `Ingester`, the one every
source shares. What the route keeps (docs/service.md, "OTLP"):

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
import zlib
from collections.abc import Mapping
from typing import Any

import msgspec
import prometheus_client as prom
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._http import ApiError, ServedLog, Service, read_body, service_of
from ._ingest import Ingester
from ._logs import LogRecord, decode_logs_json_line, decode_logs_protobuf
from ._spans import Malformed, Span, decode_json_line, decode_protobuf
from .errors import EventLogError

__all__ = ["Receiver"]

_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_WHERE = "request"  # where a body that is no export request at all is reported
_REASONS = 5  # the first reasons a partial success names
_MESSAGE_CHARS = 1_000
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class Receiver:
    """The OTLP routes and one `Ingester` per served store, made on start-up; a periodic
    task maps traces whose root is overdue, and `close` maps every trace still buffered."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._ingesters: dict[str, Ingester] = {}
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
        ingester = self._ingesters.get(name)
        if ingester is not None:
            ingester.forget()

    def add(self, name: str, served: ServedLog) -> None:
        """Receive traces for `name` too (a store served once the service runs: a fork)."""
        limits = self._service.limits
        self._ingesters[name] = Ingester(
            served.log,
            trace_timeout=limits.otlp_trace_timeout_s,
            record_first=True,
            log_wait=limits.otlp_log_wait_s,
        )

    async def close(self) -> None:
        """Stop expiring and map every buffered trace (uvicorn has let requests finish)."""
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        for name, ingester in self._ingesters.items():
            await self._logged(name, ingester.flush)

    async def traces(self, request: Request) -> Response:
        """Into the store the token names: the first store of its list, else ``default``."""
        return await self._receive(request, self._named(request))

    async def store_traces(self, request: Request) -> Response:
        return await self._receive(request, request.path_params["name"])

    async def logs(self, request: Request) -> Response:
        """Log records into the store the token names, as `traces`."""
        return await self._receive_logs(request, self._named(request))

    async def store_logs(self, request: Request) -> Response:
        return await self._receive_logs(request, request.path_params["name"])

    def _named(self, request: Request) -> str:
        token = self._service.token(request)
        named = [s for s in token.stores if s != "*"] if token is not None else []
        return named[0] if named else "default"

    async def _receive_logs(self, request: Request, name: str) -> Response:
        kind, encoding, body = await self._body(request, name)
        limit = service_of(request).limits.max_body_bytes
        items = await asyncio.to_thread(_decode_logs, body, encoding, kind, limit)
        rejected = [i for i in items if isinstance(i, Malformed)]
        self._logs_received.labels(name).inc(len(items) - len(rejected))
        self._logs_rejected.labels(name).inc(len(rejected))
        await self._run(name, lambda: self._ingesters[name].add_logs(items))
        return _answer_logs(kind, rejected)

    async def _body(self, request: Request, name: str) -> tuple[str, str, bytes]:
        """The checked request's content type, encoding and body as sent (compressed)."""
        service = service_of(request)
        service.store(request, name, "append")  # 401, 403, 404 or 503 as every route
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind not in (_PROTOBUF, _JSON):
            raise ApiError(415, "unsupported_media_type", f"send {_PROTOBUF} or {_JSON}")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", *_WBITS):
            raise ApiError(415, "unsupported_media_type", "Content-Encoding: gzip or deflate")
        limits = service.limits
        body = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
        return kind, encoding, body

    async def _receive(self, request: Request, name: str) -> Response:
        kind, encoding, body = await self._body(request, name)
        limit = service_of(request).limits.max_body_bytes
        items = await asyncio.to_thread(_decode, body, encoding, kind, limit)
        rejected = [i for i in items if isinstance(i, Malformed)]
        self._received.labels(name).inc(len(items) - len(rejected))
        self._rejected.labels(name).inc(len(rejected))
        await self._run(name, lambda: self._ingesters[name].add(items))
        return _answer(kind, rejected)

    async def _run(self, name: str, work: Any) -> None:
        """`work` on the store's ingester, in a thread (it fsyncs); a read after it waits for
        the fold to reach what it stored, as after an append."""
        await asyncio.to_thread(work)
        served = self._service.stores[name]
        served.acknowledged = max(served.acknowledged, self._ingesters[name].last_lsn)

    async def _expire(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            for name, ingester in self._ingesters.items():
                await self._logged(name, ingester.expire)

    async def _logged(self, name: str, work: Any) -> None:
        """`_run`, with a failure of the log (closed, disk full) said on stderr: no request
        waits for this work, and appends say it to their callers too. The spans are in the
        log already; only their trace's events are missing."""
        try:
            await self._run(name, work)
        except EventLogError as exc:
            print(f"lmg serve: OTLP traces of {name} not mapped: {exc}", file=sys.stderr)


def _decode(body: bytes, encoding: str, kind: str, limit: int) -> list[Span | Malformed]:
    """The body's spans, each decoded on its own; a body that is no export request is 400."""
    data = _inflate(body, encoding, limit)
    if kind == _JSON:
        items = list(decode_json_line(data, _WHERE))
    else:
        try:
            items = list(decode_protobuf(data, _WHERE, stream=False))
        except ImportError:
            raise ApiError(
                415, "unsupported_media_type", f"{_PROTOBUF} needs the otel extra; send {_JSON}"
            ) from None
    if len(items) == 1 and isinstance(items[0], Malformed) and items[0].where == _WHERE:
        raise ApiError(400, "bad_request", items[0].reason)
    return items


def _decode_logs(body: bytes, encoding: str, kind: str, limit: int) -> list[LogRecord | Malformed]:
    """The body's log records, each decoded on its own; a body that is no export request
    is 400."""
    data = _inflate(body, encoding, limit)
    if kind == _JSON:
        items = list(decode_logs_json_line(data, _WHERE))
    else:
        try:
            items = list(decode_logs_protobuf(data, _WHERE, stream=False))
        except ImportError:
            raise ApiError(
                415, "unsupported_media_type", f"{_PROTOBUF} needs the otel extra; send {_JSON}"
            ) from None
    if len(items) == 1 and isinstance(items[0], Malformed) and items[0].where == _WHERE:
        raise ApiError(400, "bad_request", items[0].reason)
    return items


def _answer_logs(kind: str, rejected: list[Malformed]) -> Response:
    """The ``ExportLogsServiceResponse``: empty when every record was accepted."""
    message = _rejected(rejected, "log record(s)")
    if kind == _JSON:
        partial = {"rejectedLogRecords": str(len(rejected)), "errorMessage": message}
        return Response(msgspec.json.encode({"partialSuccess": partial} if rejected else {}), 200,
                        media_type=_JSON)  # fmt: skip
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: PLC0415
        ExportLogsPartialSuccess,
        ExportLogsServiceResponse,
    )

    answer = ExportLogsServiceResponse()
    if rejected:
        answer.partial_success.CopyFrom(
            ExportLogsPartialSuccess(rejected_log_records=len(rejected), error_message=message)
        )
    return Response(answer.SerializeToString(), 200, media_type=_PROTOBUF)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decompressed, refused (413) once the output passes `limit` bytes: each member
    is inflated at most to what is left of the limit, so a bomb costs no more than that."""
    if encoding == "identity":
        return body
    out: list[bytes] = []
    size, data = 0, body
    while data:
        inflater = zlib.decompressobj(_WBITS[encoding])
        try:
            chunk = inflater.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise ApiError(400, "bad_request", f"the body is not valid {encoding}: {exc}") from None
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body inflates past {limit} bytes")
        if not inflater.eof:
            raise ApiError(400, "bad_request", f"the body is cut short ({encoding})")
        out.append(chunk)
        data = inflater.unused_data if encoding == "gzip" else b""  # gzip members may follow
    return b"".join(out)


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
    if kind == _JSON:
        partial = {"rejectedSpans": str(len(rejected)), "errorMessage": message}
        return Response(msgspec.json.encode({"partialSuccess": partial} if rejected else {}), 200,
                        media_type=_JSON)  # fmt: skip
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    answer = ExportTraceServiceResponse()
    if rejected:
        answer.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=len(rejected), error_message=message)
        )
    return Response(answer.SerializeToString(), 200, media_type=_PROTOBUF)
