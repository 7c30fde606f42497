"""The neutral span record every ingest source decodes to, and the OTLP decoders.

A `Span` is what the mapping (`_genai`) reads, whatever carried it: OTLP JSON (what the
OpenTelemetry Collector's file exporter writes, one export request per line, ids in hex),
OTLP protobuf (an `ExportTraceServiceRequest`, alone or as the Collector's length-prefixed
stream) or the SDK's `ReadableSpan` (`eventlog.otel`). Decoding is per span: a malformed span
becomes a `Malformed` entry naming why, and never fails the spans beside it.

Values are bounded here, once, before anything is stored (docs/ingest.md, "Limits"): a string
longer than `MAX_TEXT_BYTES` is cut with a marker saying how much was dropped, a list longer
than `MAX_LIST_ITEMS` keeps its head, a mapping of more than `MAX_ATTRIBUTES` keys keeps the first
in key order, nesting deeper than `MAX_DEPTH` is stringified, and
values the log cannot store (NaN, ints past 64 bits, bytes) become strings.

Nothing here imports OpenTelemetry; `decode_protobuf` imports `opentelemetry.proto` when called.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_DEPTH",
    "MAX_LIST_ITEMS",
    "MAX_TEXT_BYTES",
    "Malformed",
    "Span",
    "SpanEvent",
    "bound",
    "bound_text",
    "decode_json_line",
    "decode_protobuf",
]

MAX_TEXT_BYTES = 256 * 1024
"""The longest string kept (UTF-8 bytes): a base64 image or a long context is cut past it."""
MAX_LIST_ITEMS = 1_000
"""The most items of one list kept (messages, finish reasons, an array attribute)."""
MAX_ATTRIBUTES = 1_000
"""The most attributes of one span, span event or resource kept (in sorted key order)."""
MAX_DEPTH = 16
"""Nesting past this depth is kept as its JSON text (bounded like any string)."""

_MARKER_ROOM = 64
_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUSES = ("unset", "ok", "error")
_INT64 = 2**63


class SpanEvent(msgspec.Struct, frozen=True, gc=False):
    """An event inside a span (a log line with a time, such as ``gen_ai.choice``)."""

    name: str
    time_ns: int
    attributes: dict[str, Any] = {}


class Span(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One span, decoded and bounded. Ids are lower-case hex (32 and 16 digits). Untracked by
    the garbage collector (it holds plain values, never a cycle): an ingester keeps many."""

    trace_id: str
    span_id: str
    name: str
    parent_span_id: str | None = None
    parent_is_remote: bool = False  # its parent lives in another process: a local root
    kind: str = "internal"
    start_ns: int = 0
    end_ns: int = 0
    status: str = "unset"
    status_message: str | None = None
    attributes: dict[str, Any] = {}
    events: tuple[SpanEvent, ...] = ()  # tuples, not lists: untracked by the collector too
    resource: dict[str, Any] = {}
    scope: str | None = None
    logs: tuple[SpanEvent, ...] = ()  # log records naming this span (`_logs.with_logs`), not stored

    @property
    def is_root(self) -> bool:
        """Whether no span of this process is its parent: the last span a trace exports."""
        return self.parent_span_id is None or self.parent_is_remote


class Malformed(msgspec.Struct, frozen=True):
    """A span (or a line) that could not be decoded, and why: reported, never stored."""

    where: str
    reason: str


# -- bounding -------------------------------------------------------------------------------


def bound_text(text: str) -> str:
    """`text` as valid UTF-8 (a lone surrogate becomes ``?``), cut to `MAX_TEXT_BYTES` with a
    marker saying how many bytes were dropped."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "replace")
        text = raw.decode("utf-8")
    if len(raw) <= MAX_TEXT_BYTES + _MARKER_ROOM:  # room for a marker: cutting twice is a no-op
        return text
    kept = raw[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
    return f"{kept}...[truncated {len(raw) - MAX_TEXT_BYTES} bytes]"


def bound(value: Any, depth: int = 0) -> Any:
    """A JSON value the log can store, within the limits above. Hot (every attribute of
    every span): exact-class checks first, and short ASCII strings pass untouched."""
    cls = value.__class__
    if cls is str:
        if len(value) <= MAX_TEXT_BYTES and value.isascii():
            return value
        return bound_text(value)
    if cls is int:
        return value if -_INT64 <= value < _INT64 else str(value)
    if value is None or cls is bool:
        return value
    if cls is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return bound_text(str(value))
    if isinstance(value, int):
        return bound(int(value), depth)
    if isinstance(value, float):
        return bound(float(value), depth)
    if depth < MAX_DEPTH and (cls is list or cls is tuple):  # before the ABC checks below
        return [bound(v, depth + 1) for v in value[:MAX_LIST_ITEMS]]
    if isinstance(value, bytes | bytearray | memoryview):
        return bound_text(base64.b64encode(bytes(value)).decode())
    if depth >= MAX_DEPTH:
        return bound_text(msgspec.json.encode(value, enc_hook=repr).decode())
    if isinstance(value, Mapping):
        items: Any = value.items()
        if len(value) > MAX_ATTRIBUTES:
            items = sorted(items, key=lambda kv: str(kv[0]))[:MAX_ATTRIBUTES]
        return {str(k): bound(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [bound(v, depth + 1) for v in value[:MAX_LIST_ITEMS]]
    return bound_text(str(value))


def bound_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """`bound` for a span's attributes: the flat values nearly every attribute holds are
    checked inline (this runs for every span received)."""
    if len(attributes) > MAX_ATTRIBUTES:
        out = bound(attributes)
        assert isinstance(out, dict)
        return out
    kept: dict[str, Any] = {}
    for key, value in (attributes if type(attributes) is dict else dict(attributes)).items():
        cls = value.__class__
        if (
            (cls is str and len(value) <= MAX_TEXT_BYTES and value.isascii())
            or (cls is int and -_INT64 <= value < _INT64)
            or cls is bool
        ):
            kept[key if key.__class__ is str else str(key)] = value
        else:
            kept[str(key)] = bound(value, 1)
    return kept


# -- OTLP JSON ------------------------------------------------------------------------------


class _KeyValue(msgspec.Struct):
    key: str
    value: dict[str, Any] = {}


class _Status(msgspec.Struct):
    code: int | str = 0
    message: str | None = None


class _Event(msgspec.Struct, rename="camel"):
    name: str = ""
    time_unix_nano: int | str = 0
    attributes: list[_KeyValue] = []


class _JsonSpan(msgspec.Struct, rename="camel"):
    trace_id: str
    span_id: str
    name: str = ""
    parent_span_id: str = ""
    flags: int = 0
    kind: int | str = 1
    start_time_unix_nano: int | str = 0
    end_time_unix_nano: int | str = 0
    attributes: list[_KeyValue] = []
    events: list[_Event] = []
    status: _Status | None = None


class _Scope(msgspec.Struct):
    name: str = ""
    version: str = ""


class _ScopeSpans(msgspec.Struct):
    scope: _Scope | None = None
    spans: list[msgspec.Raw] = []


class _Resource(msgspec.Struct):
    attributes: list[_KeyValue] = []


class _ResourceSpans(msgspec.Struct, rename="camel"):
    resource: _Resource | None = None
    scope_spans: list[_ScopeSpans] = []


class _Request(msgspec.Struct, rename="camel"):
    resource_spans: list[_ResourceSpans] = []


_REQUEST = msgspec.json.Decoder(_Request)
_SPAN = msgspec.json.Decoder(_JsonSpan)
_REMOTE_KNOWN, _REMOTE = 0x100, 0x200  # SpanFlags: the parent's is_remote bit, and its value


def _any_value(value: Mapping[str, Any]) -> Any:
    """An OTLP JSON `AnyValue` as a Python value."""
    for key, found in value.items():
        match key:
            case "stringValue" | "boolValue" | "doubleValue":
                return found
            case "intValue":
                return int(found)
            case "bytesValue":
                return found  # already base64 text in JSON
            case "arrayValue":
                return [_any_value(v) for v in found.get("values", [])]
            case "kvlistValue":
                return {
                    kv["key"]: _any_value(kv.get("value", {})) for kv in found.get("values", [])
                }
    return None


def _attributes(pairs: list[_KeyValue]) -> dict[str, Any]:
    return bound_attributes({kv.key: _any_value(kv.value) for kv in pairs})


_HEX_DIGITS = frozenset("0123456789abcdef")


def _hex(value: str, digits: int, what: str) -> str:
    text = value.lower()
    if len(text) != digits or not _HEX_DIGITS.issuperset(text):
        raise ValueError(f"{what} {value!r} is not {digits} hex digits")
    if text == "0" * digits:
        raise ValueError(f"{what} is all zeros")
    return text


def _ns(value: int | str, what: str) -> int:
    """A time as the log stores it, a signed 64-bit int of ns; beyond that the span is
    malformed (rejected alone): the log would refuse its every event, even the span's own."""
    ns = int(value)
    if not -_INT64 <= ns < _INT64:
        raise ValueError(f"{what} {value} is beyond a 64-bit time in ns")
    return ns


def _enum(value: int | str, names: tuple[str, ...], prefix: str) -> str:
    if isinstance(value, int):
        return names[value] if 0 <= value < len(names) else names[0]
    name = value.lower().removeprefix(prefix)
    return name if name in names else names[0]


def _from_json(raw: _JsonSpan, resource: dict[str, Any], scope: str | None) -> Span:
    status = raw.status or _Status()
    kind = _enum(raw.kind, _KINDS, "span_kind_")
    return Span(
        trace_id=_hex(raw.trace_id, 32, "traceId"),
        span_id=_hex(raw.span_id, 16, "spanId"),
        parent_span_id=_hex(raw.parent_span_id, 16, "parentSpanId") if raw.parent_span_id else None,
        parent_is_remote=raw.flags & (_REMOTE_KNOWN | _REMOTE) == _REMOTE_KNOWN | _REMOTE,
        name=bound_text(raw.name),
        kind="internal" if kind == "unspecified" else kind,
        start_ns=_ns(raw.start_time_unix_nano, "startTimeUnixNano"),
        end_ns=_ns(raw.end_time_unix_nano, "endTimeUnixNano"),
        status=_enum(status.code, _STATUSES, "status_code_"),
        status_message=bound_text(status.message) if status.message else None,
        attributes=_attributes(raw.attributes),
        events=tuple(
            SpanEvent(
                bound_text(e.name), _ns(e.time_unix_nano, "timeUnixNano"), _attributes(e.attributes)
            )
            for e in raw.events[:MAX_LIST_ITEMS]
        ),
        resource=resource,
        scope=scope,
    )


def _scope_name(scope: _Scope | None) -> str | None:
    if scope is None or not scope.name:
        return None
    return f"{scope.name}@{scope.version}" if scope.version else scope.name


def decode_json_line(line: bytes | str, where: str = "line") -> Iterator[Span | Malformed]:
    """The spans of one OTLP JSON export request, each decoded on its own."""
    try:
        request = _REQUEST.decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:  # nested past msgspec's depth
        yield Malformed(where, f"not an OTLP JSON export request: {exc}")
        return
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes) if rs.resource else {}
        for ss in rs.scope_spans:
            scope = _scope_name(ss.scope)
            for i, raw in enumerate(ss.spans):
                try:
                    yield _from_json(_SPAN.decode(raw), resource, scope)
                except (msgspec.DecodeError, ValueError, TypeError) as exc:
                    yield Malformed(f"{where}, span {i}", str(exc))


# -- OTLP protobuf --------------------------------------------------------------------------


def _proto_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":  # nearly every attribute: no getattr by name
        return value.string_value
    if which is None:
        return None
    found = getattr(value, which)
    if which == "array_value":
        return [_proto_value(v) for v in found.values]
    if which == "kvlist_value":
        return {kv.key: _proto_value(kv.value) for kv in found.values}
    return found


def _proto_attributes(pairs: Any) -> dict[str, Any]:
    return bound_attributes({kv.key: _proto_value(kv.value) for kv in pairs}) if pairs else {}


def _from_proto(raw: Any, resource: dict[str, Any], scope: str | None) -> Span:
    """As `_from_json`, read straight from the protobuf message (ids are bytes here)."""
    parent = raw.parent_span_id
    status = raw.status
    kind = _enum(raw.kind, _KINDS, "span_kind_")
    return Span(
        trace_id=_hex(raw.trace_id.hex(), 32, "traceId"),
        span_id=_hex(raw.span_id.hex(), 16, "spanId"),
        parent_span_id=_hex(parent.hex(), 16, "parentSpanId") if parent else None,
        parent_is_remote=raw.flags & (_REMOTE_KNOWN | _REMOTE) == _REMOTE_KNOWN | _REMOTE,
        name=bound_text(raw.name),
        kind="internal" if kind == "unspecified" else kind,
        start_ns=_ns(raw.start_time_unix_nano, "startTimeUnixNano"),
        end_ns=_ns(raw.end_time_unix_nano, "endTimeUnixNano"),
        status=_enum(status.code, _STATUSES, "status_code_"),
        status_message=bound_text(status.message) if status.message else None,
        attributes=_proto_attributes(raw.attributes),
        events=tuple(
            SpanEvent(
                bound_text(e.name),
                _ns(e.time_unix_nano, "timeUnixNano"),
                _proto_attributes(e.attributes),
            )
            for e in raw.events[:MAX_LIST_ITEMS]
        ),
        resource=resource,
        scope=scope,
    )


def _messages(data: bytes) -> list[bytes]:
    """The export requests of a protobuf file: the Collector's stream of 4-byte big-endian
    length-prefixed messages when the lengths add up exactly, else one message."""
    out, offset = [], 0
    while offset + 4 <= len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        if size == 0 or offset + 4 + size > len(data):
            return [data]
        out.append(data[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return out if offset == len(data) and out else [data]


def decode_protobuf(
    data: bytes, where: str = "file", *, stream: bool = True
) -> Iterator[Span | Malformed]:
    """The spans of an OTLP protobuf file (needs the `opentelemetry-proto` package). With
    `stream` False, `data` is exactly one export request (an OTLP/HTTP body), never read as
    the Collector's length-prefixed stream."""
    from google.protobuf.message import DecodeError  # noqa: PLC0415 (optional dependency)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTraceServiceRequest,
    )

    for n, message in enumerate(_messages(data) if stream else [data]):
        at = f"{where}, message {n}" if stream else where
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(message)
        except DecodeError as exc:
            yield Malformed(at, f"not an OTLP protobuf export request: {exc}")
            continue
        for rs in request.resource_spans:
            resource = _proto_attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                scope = _scope_name(_Scope(ss.scope.name, ss.scope.version))
                for i, raw in enumerate(ss.spans):
                    try:
                        yield _from_proto(raw, resource, scope)
                    except (ValueError, TypeError) as exc:
                        yield Malformed(f"{at}, span {i}", str(exc))
