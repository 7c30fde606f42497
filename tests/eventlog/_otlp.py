"""OTLP files as the Collector's file exporter writes them, for the ingest tests.

`json_line` turns SDK spans into one OTLP JSON export request (ids in hex, 64-bit ints as
strings, enums as numbers), `json_logs_line` SDK log records; `proto_stream` turns neutral
spans into the Collector's protobuf stream (each `ExportTraceServiceRequest` after its
4-byte big-endian length).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from eventlog._spans import Span

__all__ = ["json_line", "json_logs_line", "proto_stream"]

_STATUS = {"unset": 0, "ok": 1, "error": 2}
_KIND = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}


def _value(value: Any) -> dict[str, Any]:
    if value is None:
        return {}  # an empty AnyValue, as the OTLP exporters write None
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": _attributes(value)}}
    return {"stringValue": str(value)}


def _attributes(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in attributes.items()]


def json_line(spans: Sequence[Any]) -> str:
    """One OTLP JSON export request holding SDK `ReadableSpan`s (grouped by scope)."""
    scopes: dict[tuple[str, str], list[dict[str, Any]]] = {}
    resource: Mapping[str, Any] = {}
    for s in spans:
        resource = s.resource.attributes
        scope = s.instrumentation_scope
        key = (scope.name, scope.version or "") if scope else ("", "")
        raw: dict[str, Any] = {
            "traceId": f"{s.context.trace_id:032x}",
            "spanId": f"{s.context.span_id:016x}",
            "name": s.name,
            "kind": _KIND[s.kind.name.lower()],
            "startTimeUnixNano": str(s.start_time),
            "endTimeUnixNano": str(s.end_time),
            "attributes": _attributes(s.attributes or {}),
            "status": {"code": _STATUS[s.status.status_code.name.lower()]},
        }
        if s.parent is not None:
            raw["parentSpanId"] = f"{s.parent.span_id:016x}"
        if s.status.description:
            raw["status"]["message"] = s.status.description
        if s.events:
            raw["events"] = [
                {
                    "timeUnixNano": str(e.timestamp),
                    "name": e.name,
                    "attributes": _attributes(e.attributes or {}),
                }
                for e in s.events
            ]
        scopes.setdefault(key, []).append(raw)
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource)},
                "scopeSpans": [
                    {"scope": {"name": name, "version": version}, "spans": listed}
                    for (name, version), listed in scopes.items()
                ],
            }
        ]
    }
    return json.dumps(request, sort_keys=True)


def json_logs_line(records: Sequence[Any]) -> str:
    """One OTLP JSON logs export request holding SDK `ReadableLogRecord`s."""
    scopes: dict[tuple[str, str], list[dict[str, Any]]] = {}
    resource: Mapping[str, Any] = {}
    for readable in records:
        resource = readable.resource.attributes
        scope = readable.instrumentation_scope
        key = (scope.name, scope.version or "") if scope else ("", "")
        r = readable.log_record
        raw: dict[str, Any] = {
            "timeUnixNano": str(r.timestamp or 0),
            "observedTimeUnixNano": str(r.observed_timestamp or 0),
            "attributes": _attributes(r.attributes or {}),
        }
        if r.event_name:
            raw["eventName"] = r.event_name
        if r.body is not None:
            raw["body"] = _value(r.body)
        if r.trace_id:
            raw["traceId"] = f"{r.trace_id:032x}"
            raw["spanId"] = f"{r.span_id:016x}"
        if r.severity_number is not None:
            raw["severityNumber"] = r.severity_number.value
        scopes.setdefault(key, []).append(raw)
    request = {
        "resourceLogs": [
            {
                "resource": {"attributes": _attributes(resource)},
                "scopeLogs": [
                    {"scope": {"name": name, "version": version}, "logRecords": listed}
                    for (name, version), listed in scopes.items()
                ],
            }
        ]
    }
    return json.dumps(request, sort_keys=True)


def _proto_value(target: Any, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, list | tuple):
        for v in value:
            _proto_value(target.array_value.values.add(), v)
    else:
        target.string_value = str(value)


def _proto_attributes(target: Any, attributes: Mapping[str, Any]) -> None:
    for key, value in attributes.items():
        kv = target.add()
        kv.key = key
        _proto_value(kv.value, value)


def proto_stream(requests: Sequence[Sequence[Span]]) -> bytes:
    """The Collector's protobuf stream: one length-prefixed request per group of spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTraceServiceRequest,
    )

    out = b""
    for spans in requests:
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        if spans:
            _proto_attributes(rs.resource.attributes, spans[0].resource)
        ss = rs.scope_spans.add()
        ss.scope.name = "tests"
        for s in spans:
            p = ss.spans.add()
            p.trace_id = bytes.fromhex(s.trace_id)
            p.span_id = bytes.fromhex(s.span_id)
            if s.parent_span_id:
                p.parent_span_id = bytes.fromhex(s.parent_span_id)
            p.name = s.name
            p.kind = _KIND[s.kind]
            p.start_time_unix_nano = s.start_ns
            p.end_time_unix_nano = s.end_ns
            p.status.code = _STATUS[s.status]
            _proto_attributes(p.attributes, s.attributes)
        body = request.SerializeToString()
        out += struct.pack(">I", len(body)) + body
    return out
