"""`Exporter`: a standard OpenTelemetry `SpanExporter` writing into an event log."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from .. import EventLog, EventLogError
from .._ingest import Ingester, IngestStats
from .._spans import Malformed, Span, SpanEvent, bound_attributes, bound_text

__all__ = ["Exporter", "from_readable"]

_LOG = logging.getLogger("eventlog.otel")


# By an enum member's value (`_value_`, a plain attribute): hashing a member, or reading its
# `.name` or `.value`, runs Python code, twice for every span.
_KINDS = {kind._value_: kind.name.lower() for kind in SpanKind}
_STATUSES = {code._value_: code.name.lower() for code in StatusCode}
_RESOURCE: list[Any] = [None, {}]  # the last resource seen and its bounded attributes


def _resource(resource: Any) -> dict[str, Any]:
    """A resource's bounded attributes; a provider has one resource, so the last is cached."""
    if resource is not _RESOURCE[0]:
        _RESOURCE[:] = [resource, bound_attributes(resource.attributes)]
    found: dict[str, Any] = _RESOURCE[1]
    return found


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Bounded attributes of an SDK span or span event. The SDK hands out a read-only view
    of its `BoundedAttributes`, whose `copy()` is a dict copied in C; `dict(view)` would call
    its Python `__iter__` and `__getitem__` for every key (a fifth of decoding a span)."""
    if not attributes:
        return {}
    copy = getattr(attributes, "copy", None)
    plain = copy() if copy is not None else None
    return bound_attributes(plain if type(plain) is dict else attributes)


def from_readable(span: ReadableSpan) -> Span | Malformed:
    """The neutral, bounded record of an SDK span."""
    context = span.context
    if context is None:
        return Malformed(span.name, "the span has no context")
    parent = span.parent
    scope = span.instrumentation_scope
    status = span.status
    events = span.events  # a new tuple at each read
    return Span(
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_span_id=None if parent is None else f"{parent.span_id:016x}",
        parent_is_remote=parent is not None and parent.is_remote,
        name=bound_text(span.name),
        kind=_KINDS[span.kind._value_],
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        status=_STATUSES[status.status_code._value_],
        status_message=bound_text(status.description) if status.description else None,
        attributes=_attributes(span.attributes),
        events=tuple(
            SpanEvent(bound_text(e.name), e.timestamp, _attributes(e.attributes)) for e in events
        )
        if events
        else (),
        resource=_resource(span.resource),
        scope=None
        if scope is None
        else (f"{scope.name}@{scope.version}" if scope.version else scope.name),
    )


class Exporter(SpanExporter):
    """Writes every span it is given into `log`, and GenAI spans as events too.

    Spans are buffered per trace until the trace's root span ends (the last one an SDK
    exports), then the trace is mapped whole and appended in one group commit. A trace
    whose root never comes is written after `trace_timeout` seconds (checked on each export)
    and on `force_flush` and `shutdown`. The log stays open: closing it is the caller's.
    """

    def __init__(self, log: EventLog, *, trace_timeout: float = 30.0) -> None:
        self._ingester = Ingester(log, trace_timeout=trace_timeout)

    @property
    def stats(self) -> IngestStats:
        """Spans received, malformed, stored; events stored; duplicates; partial requests."""
        return self._ingester.stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._ingester.add([from_readable(s) for s in spans])
        except EventLogError as exc:  # the log failed (closed, disk full): say so, once
            _LOG.error("spans not stored: %s", exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        try:
            self._ingester.flush()
        except EventLogError as exc:
            _LOG.error("spans not stored: %s", exc)
            return False
        return True

    def shutdown(self) -> None:
        self.force_flush()
