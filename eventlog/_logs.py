"""OpenTelemetry log records: the GenAI events some instrumentations emit through the logs API.

The older GenAI conventions emit a call's messages as log records (``gen_ai.user.message``,
``gen_ai.system.message``, ``gen_ai.assistant.message``, ``gen_ai.tool.message``,
``gen_ai.choice``), the newer ones ``gen_ai.client.inference.operation.details``, each naming
the trace and span of the call. A `LogRecord` is what every source decodes them to (OTLP
JSON, an ``ExportLogsServiceRequest`` in protobuf, the SDK's records in `eventlog.otel`).

Two things happen to a record, both keyed so that a retry adds nothing:

1. **It reaches the span it names.** `with_logs` gives that span the record as a span event
   (its body's keys merged over its attributes), so the mapping reads a chat span plus its
   log records exactly as a span carrying the same events. The span's `span.recorded` stays
   as received.
2. **It is kept.** `log_units` stores each record as a generic node of kind ``otel.log``
   (the `nodes` table): content its body as text, data the rest (trace, span, event name,
   severity, attributes, resource, scope, time).

Values are bounded as span attributes are (`_spans.bound`). Nothing here imports
OpenTelemetry; `decode_logs_protobuf` imports `opentelemetry.proto` when called.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from . import events as ev
from ._genai import Unit, _timed_id
from ._spans import (
    MAX_LIST_ITEMS,
    Malformed,
    Span,
    SpanEvent,
    _any_value,
    _attributes,
    _hex,
    _KeyValue,
    _messages,
    _proto_attributes,
    _proto_value,
    _Resource,
    _Scope,
    _scope_name,
    bound,
    bound_text,
)

__all__ = [
    "LOG_NODE_KIND",
    "LogRecord",
    "decode_logs_json_line",
    "decode_logs_protobuf",
    "is_logs_json",
    "is_logs_protobuf",
    "log_units",
    "make_record",
    "with_logs",
]

LOG_NODE_KIND = "otel.log"
"""The `kind` of the node each log record is kept as."""


class LogRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One log record, decoded and bounded. Ids are lower-case hex, None when unset."""

    trace_id: str | None = None
    span_id: str | None = None
    time_ns: int = 0  # the record's time, else its observed time
    event_name: str = ""  # the record's event name, else its ``event.name`` attribute
    severity: str | None = None
    body: Any = None
    attributes: dict[str, Any] = {}
    resource: dict[str, Any] = {}
    scope: str | None = None


def make_record(  # noqa: PLR0917 (one record's fields, as every decoder has them)
    trace_id: str,
    span_id: str,
    time_ns: int,
    event_name: str,
    severity: str | None,
    body: Any,
    attributes: dict[str, Any],
    resource: dict[str, Any],
    scope: str | None,
) -> LogRecord:
    """A bounded `LogRecord` from any source's fields (ids hex, empty or all zeros: unset)."""
    trace = _hex(trace_id, 32, "traceId") if trace_id.strip("0") else None
    span = _hex(span_id, 16, "spanId") if span_id.strip("0") else None
    name = event_name or attributes.get("event.name") or ""
    return LogRecord(
        trace_id=trace,
        span_id=span if trace is not None else None,
        time_ns=time_ns,
        event_name=bound_text(str(name)),
        severity=bound_text(severity) if severity else None,
        body=bound(body),
        attributes=attributes,
        resource=resource,
        scope=scope,
    )


# -- what the mapping reads -----------------------------------------------------------------


def _event(record: LogRecord) -> SpanEvent:
    body = record.body
    merged = dict(record.attributes)
    if isinstance(body, dict):
        merged.update(body)
    elif body is not None:
        merged["content"] = body
    return SpanEvent(record.event_name, record.time_ns, merged)


def _order(record: LogRecord) -> tuple[int, str, bytes]:
    return record.time_ns, record.event_name, _ENCODE(record)


def with_logs(spans: Sequence[Span], records: Sequence[LogRecord]) -> list[Span]:
    """`spans`, each with the records that name it as its `logs` (in time order, whatever
    order they came in); records naming no span of `spans` are left out."""
    named: dict[str, dict[bytes, LogRecord]] = {}
    for r in records:  # a record sent twice (a retry) is read once
        if r.span_id is not None:
            named.setdefault(r.span_id, {})[_ENCODE(r)] = r
    if not named:
        return list(spans)
    return [
        msgspec.structs.replace(
            s,
            logs=tuple(map(_event, sorted(named[s.span_id].values(), key=_order)))[:MAX_LIST_ITEMS],
        )
        if s.span_id in named
        else s
        for s in spans
    ]


# -- what is kept ---------------------------------------------------------------------------

_ENCODE = msgspec.msgpack.Encoder(order="sorted").encode


def log_units(records: Sequence[LogRecord]) -> list[Unit]:
    """Each record as an ``otel.log`` node, keyed by its trace, span and a digest of the
    record, so the same record sent again (a retry, a file ingested twice) adds nothing."""
    units: dict[str, Unit] = {}
    for r in records:
        digest = hashlib.blake2b(_ENCODE(r), digest_size=12).hexdigest()
        key = f"otel:log:{r.trace_id or '-'}:{r.span_id or '-'}:{digest}"
        data = msgspec.structs.asdict(r)
        body = data.pop("body")
        node = ev.NodeAdded(
            id=_timed_id(r.time_ns, key),
            kind=LOG_NODE_KIND,
            content=body if isinstance(body, str) else None,
            data={**data, "body": body} if not isinstance(body, str) else data,
            occurred_at=r.time_ns or None,
        )
        units.setdefault(key, Unit(key, [node]))
    return list(units.values())


# -- OTLP JSON ------------------------------------------------------------------------------


class _JsonRecord(msgspec.Struct, rename="camel"):
    time_unix_nano: int | str = 0
    observed_time_unix_nano: int | str = 0
    severity_text: str = ""
    body: dict[str, Any] | None = None
    attributes: list[_KeyValue] = []
    trace_id: str = ""
    span_id: str = ""
    event_name: str = ""


class _ScopeLogs(msgspec.Struct, rename="camel"):
    scope: _Scope | None = None
    log_records: list[msgspec.Raw] = []


class _ResourceLogs(msgspec.Struct, rename="camel"):
    resource: _Resource | None = None
    scope_logs: list[_ScopeLogs] = []


class _LogsRequest(msgspec.Struct, rename="camel"):
    resource_logs: list[_ResourceLogs] = []


_REQUEST = msgspec.json.Decoder(_LogsRequest)
_RECORD = msgspec.json.Decoder(_JsonRecord)


def is_logs_json(line: bytes | str) -> bool:
    """Whether an OTLP JSON line is a logs export request rather than a traces one."""
    head = line[:200] if isinstance(line, str) else line[:200].decode("utf-8", "replace")
    return '"resourceLogs"' in head or '"resource_logs"' in head


def decode_logs_json_line(
    line: bytes | str, where: str = "line"
) -> Iterator[LogRecord | Malformed]:
    """The records of one OTLP JSON logs export request, each decoded on its own."""
    try:
        request = _REQUEST.decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:  # nested past msgspec's depth
        yield Malformed(where, f"not an OTLP JSON logs export request: {exc}")
        return
    for rl in request.resource_logs:
        resource = _attributes(rl.resource.attributes) if rl.resource else {}
        for sl in rl.scope_logs:
            scope = _scope_name(sl.scope)
            for i, raw in enumerate(sl.log_records):
                try:
                    r = _RECORD.decode(raw)
                    yield make_record(
                        r.trace_id,
                        r.span_id,
                        int(r.time_unix_nano) or int(r.observed_time_unix_nano),
                        r.event_name,
                        r.severity_text or None,
                        _any_value(r.body) if r.body else None,
                        _attributes(r.attributes),
                        resource,
                        scope,
                    )
                except (msgspec.DecodeError, ValueError, TypeError) as exc:
                    yield Malformed(f"{where}, log record {i}", str(exc))


# -- OTLP protobuf --------------------------------------------------------------------------


def _records(data: Any, where: str) -> Iterator[LogRecord | Malformed]:
    for rl in data.resource_logs:
        resource = _proto_attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            scope = _scope_name(_Scope(sl.scope.name, sl.scope.version))
            for i, r in enumerate(sl.log_records):
                try:
                    yield make_record(
                        r.trace_id.hex(),
                        r.span_id.hex(),
                        r.time_unix_nano or r.observed_time_unix_nano,
                        r.event_name,
                        r.severity_text or None,
                        _proto_value(r.body) if r.HasField("body") else None,
                        _proto_attributes(r.attributes),
                        resource,
                        scope,
                    )
                except (ValueError, TypeError) as exc:
                    yield Malformed(f"{where}, log record {i}", str(exc))


def is_logs_protobuf(data: bytes) -> bool:
    """Whether a protobuf file holds logs export requests rather than traces ones. Both put
    their resources in field 1, so the first message is read as a traces request: a span
    always has a 16-byte trace id, a log record read as a span never (its field 1 is a
    fixed64 time, which the traces schema skips as unknown)."""
    from google.protobuf.message import DecodeError  # noqa: PLC0415 (optional dependency)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(_messages(data)[0])
    except DecodeError:
        return True
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return bool(spans) and all(len(s.trace_id) != 16 for s in spans)


def decode_logs_protobuf(
    data: bytes, where: str = "file", *, stream: bool = True
) -> Iterator[LogRecord | Malformed]:
    """The records of an OTLP protobuf logs file (one ``ExportLogsServiceRequest``, or the
    Collector's length-prefixed stream of them; with `stream` False, exactly one)."""
    from google.protobuf.message import DecodeError  # noqa: PLC0415 (optional dependency)
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: PLC0415
        ExportLogsServiceRequest,
    )

    for n, message in enumerate(_messages(data) if stream else [data]):
        at = f"{where}, message {n}" if stream else where
        request = ExportLogsServiceRequest()
        try:
            request.ParseFromString(message)
        except DecodeError as exc:
            yield Malformed(at, f"not an OTLP protobuf logs export request: {exc}")
            continue
        yield from _records(request, at)
