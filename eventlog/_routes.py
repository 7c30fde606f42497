"""The log's routes of `lmg serve`: append events, read and follow the log.

``POST /v1/stores/{name}/events`` takes what `lmg append` reads (`_wire`): an event, a list of
events, an ``{"events": [...], ...options}`` object, or JSON lines of those; all of it is one
all-or-nothing append, committed with every other request in flight (group commit).
``POST /v1/stores/{name}/events:batch`` carries several such appends, each independent of the
others, into one group commit: how a client sends the appends its callers make concurrently.

``GET /v1/stores/{name}/events`` sends records as `lmg tail` prints them: NDJSON, or
Server-Sent Events (``id:`` is the LSN, so a reconnecting client's ``Last-Event-ID`` resumes).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import _commands as c
from . import events as ev
from ._http import ApiError, ServedLog, Service, error_body, read_body, refusal, service_of
from ._reader import Record
from ._store import Appended
from ._time import to_ns
from ._wire import decode_json, parse_request, record_json
from .errors import InvalidEvent

__all__ = ["routes"]

_JSON = msgspec.json.Encoder()
_SSE = "text/event-stream"
_NDJSON = "application/x-ndjson"


async def append(request: Request) -> Response:
    """Append the body's events as one request; answer as `lmg append` does, one object:
    ``{"lsn": first LSN, "count": n, "ids": [...], "duplicate": bool}``. With the header
    ``Prefer: return=representation`` (RFC 7240), it adds ``"events"``: the records as stored
    (the log sets `ts`, a template's version, a rendered prompt), as the feed sends them."""
    service = service_of(request)
    served = service.store(request, request.path_params["name"], "append")
    limits = service.limits
    body = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
    events, options = _request(body)
    key = request.headers.get("idempotency-key")
    if key is not None:
        if options.get("idempotency_key", key) != key:
            raise InvalidEvent("the Idempotency-Key header and the body's idempotency_key differ")
        options["idempotency_key"] = key
    for name in ("expect_store_lsn", "expect_session_lsn"):
        if name in request.query_params:
            options[name] = _int(request.query_params[name], name)
    result = await served.log.append(events, **options)
    out = _acknowledged(service, served, len(body), result, _representation(request))
    return Response(_JSON.encode(out), media_type="application/json")


def _representation(request: Request) -> bool:
    return "return=representation" in request.headers.get("prefer", "")


def _acknowledged(
    service: Service, served: ServedLog, size: int, result: Appended, representation: bool
) -> dict[str, Any]:
    """Count an acknowledged append (of a body of `size` bytes) and answer it."""
    served.acknowledged = max(served.acknowledged, result.last_lsn)
    service.metrics.appended(served.name, size, map(ev.tag_of, result.events))
    ids = [str(getattr(e, "id", "")) or None for e in result.events]
    out: dict[str, Any] = {
        "lsn": result.first_lsn,
        "count": len(result.events),
        "ids": ids,
        "duplicate": result.duplicate,
    }
    if representation:
        records = enumerate(result.events, result.first_lsn)
        out["events"] = [msgspec.Raw(record_json(Record(*r))) for r in records]
    return out


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    appends: list[msgspec.Raw]


_BATCH = msgspec.json.Decoder(_Batch)
_EXPECT = {"expect_store_lsn", "expect_session_lsn"}


async def append_batch(request: Request) -> Response:
    """Several independent appends in one body, ``{"appends": [request, ...]}``, each a JSON
    document the append route takes (an event, a list, or an object with its own options),
    queued together so they join one group commit (one write, one fsync).

    Each keeps the append route's meaning alone: all-or-nothing for its own events, its own
    idempotency key and expected LSNs; a refusal of one (bad input, a conflict, a reused
    key) leaves the others as they are. The answer, 200 once the batch itself is accepted,
    lists each one's outcome in order: the append route's answer with ``"status": 200``, or
    ``{"status": ..., "error": {...}}`` with the status and error body it would have had.
    How a client coalesces its concurrent appends into one request (docs/service.md)."""
    service = service_of(request)
    served = service.store(request, request.path_params["name"], "append")
    limits = service.limits
    body = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
    if "idempotency-key" in request.headers or _EXPECT & set(request.query_params):
        raise InvalidEvent(  # one value for many appends: each carries its own instead
            "on the batch route, each append carries its own idempotency_key and expected "
            "LSNs in its body, not in a header or the query"
        )
    parts = _batch(body, limits.max_batch_appends)
    outcomes: list[dict[str, Any] | None] = [None] * len(parts)
    commands: list[tuple[int, c.Command[Appended]]] = []
    for n, raw in enumerate(parts):
        try:
            events, options = parse_request(decode_json(raw))
            commands.append((n, c.append(events, **options)))
        except Exception as exc:  # the append route's refusal of it (500 if not a log error)
            outcomes[n] = _refused(service, exc, request.url.path)
    requests = [command.request for _, command in commands]
    results = await served.log._submit_group(requests) if requests else []
    representation = _representation(request)
    for (n, _), result in zip(commands, results, strict=True):
        if isinstance(result, Appended):
            size = len(parts[n])
            outcomes[n] = {"status": 200} | _acknowledged(
                service, served, size, result, representation
            )
        else:
            outcomes[n] = _refused(service, result, request.url.path)
    return Response(_JSON.encode({"appends": outcomes}), media_type="application/json")


def _batch(body: bytes, limit: int) -> list[msgspec.Raw]:
    """The appends of a batch body, each still JSON; 413 past `limit` of them."""
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"the body is not UTF-8 (byte {exc.start})") from None
    batch: _Batch = decode_json(body, _BATCH, 'a batch: {"appends": [request, ...]}')
    parts = batch.appends
    if not parts:
        raise InvalidEvent("the batch holds no appends")
    if len(parts) > limit:
        message = f"the batch holds {len(parts)} appends; the limit is {limit}"
        raise ApiError(413, "too_many_appends", message, {"limit": limit})
    return parts


def _refused(service: Service, exc: BaseException, where: str) -> dict[str, Any]:
    """One append's refusal as the append route would answer it, with its status."""
    api = refusal(exc, where)
    message = service.scrub(api.message)
    return {"status": api.status} | error_body(api.code, message, api.details)


def _request(body: bytes) -> tuple[list[ev.EventBase], dict[str, Any]]:
    """One request from a JSON document, or from JSON lines (each an event, a list, or an
    object with options; options may come from one line only)."""
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"the body is not UTF-8 (byte {exc.start})") from None
    lines = [line for line in body.split(b"\n") if line.strip()]
    if not lines:
        raise InvalidEvent("the body holds no events")
    if len(lines) == 1:
        return parse_request(decode_json(lines[0]))
    try:
        return parse_request(decode_json(body))  # a document spread over lines
    except InvalidEvent:
        pass
    events: list[ev.EventBase] = []
    options: dict[str, Any] = {}
    for n, line in enumerate(lines, 1):
        try:
            more, extra = parse_request(decode_json(line))
        except InvalidEvent as exc:
            raise InvalidEvent(f"line {n}: {exc}") from None
        if extra and options:
            raise InvalidEvent(f"line {n}: options are given on one line only")
        events += more
        options |= extra
    return events, options


def _uuid(value: str, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidEvent(f"{name} must be a UUID, got {value[:40]!r}") from None


def _int(value: str, name: str) -> int:
    if not re.fullmatch(r"-?[0-9]{1,19}", value):
        raise InvalidEvent(f"{name} must be an int, got {value[:40]!r}")
    return int(value)


async def read(request: Request) -> Response:
    """Records from ``from`` (an LSN or an ISO 8601 time; default 0), or after the
    ``Last-Event-ID`` header; with ``follow=true``, new ones as they are appended."""
    service = service_of(request)
    served = service.store(request, request.path_params["name"], "read")
    params = request.query_params
    start: int = 0
    start_time: int | None = None
    origin = params.get("from")
    if origin is not None:
        if re.fullmatch(r"[0-9]{1,19}", origin):
            start = int(origin)
        else:
            start_time = to_ns(origin[:64], "from")  # checked here: a 422, not a broken stream
    resume = request.headers.get("last-event-id")
    if resume is not None:  # an LSN: a negative one broke the stream after its 200 began
        if not re.fullmatch(r"[0-9]{1,19}", resume):
            raise InvalidEvent(f"Last-Event-ID must be an LSN, got {resume[:40]!r}")
        start, start_time = int(resume) + 1, None
    follow = params.get("follow", "false").lower() in ("1", "true", "yes")
    sse = _SSE in request.headers.get("accept", "")
    media = _SSE if sse else _NDJSON
    if not follow:
        records = served.log.read(start, start_time=start_time)
        return StreamingResponse(_stream(records, sse), media_type=media)
    if len(service.stops) >= service.limits.max_follows:
        raise ApiError(429, "too_many_follows", "too many follow streams are open; retry later")
    # Counted here, in the turn that checked the limit: counted once the stream began to
    # send (an await later), 20 follows requested together all passed a limit of 2.
    stop = asyncio.Event()
    records = served.log.follow(start, start_time=start_time, stop=stop)
    return _Follow(_stream(records, sse), service, served, stop, media_type=media)


class _Follow(StreamingResponse):
    """A follow stream, counted in `Service.stops` (and the gauge) from when it is admitted
    until its response ends, however it ends: its body may never start (the client left
    first), so the body's own ``finally`` cannot give the place back."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        service: Service,
        served: ServedLog,
        stop: asyncio.Event,
        media_type: str,
    ) -> None:
        super().__init__(body, media_type=media_type)
        self._stops, self._stop = service.stops, stop
        self._gauge = service.metrics.follows.labels(served.name)
        self._stops.add(stop)
        self._gauge.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stops.discard(self._stop)
            self._gauge.dec()


async def _stream(records: AsyncIterator[Record], sse: bool) -> AsyncIterator[bytes]:
    try:
        async for record in records:
            yield _frame(record, sse)
    finally:
        close = getattr(records, "aclose", None)
        if close is not None:
            await close()


def _frame(record: Record, sse: bool) -> bytes:
    line = record_json(record)
    if not sse:
        return line + b"\n"
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (record.lsn, ev.tag_of(record.event).encode(), line)


async def position(request: Request) -> Response:
    """``{"last_lsn": N or null, "next_lsn": N}``: the log's last LSN, or of the session
    ``session_id``'s events (what ``expect_store_lsn``/``expect_session_lsn`` compare with)."""
    served = service_of(request).store(request, request.path_params["name"], "read")
    given = request.query_params.get("session_id")
    last = await served.log.last_lsn(None if given is None else _uuid(given, "session_id"))
    out = {"last_lsn": last, "next_lsn": await served.log.next_lsn()}
    return Response(_JSON.encode(out), media_type="application/json")


routes = [
    Route("/v1/stores/{name}/lsn", position),
    Route("/v1/stores/{name}/events", append, methods=["POST"]),
    Route("/v1/stores/{name}/events:batch", append_batch, methods=["POST"]),
    Route("/v1/stores/{name}/events", read, methods=["GET"]),
]
