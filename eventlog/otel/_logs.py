"""`LogExporter`: a standard OpenTelemetry `LogRecordExporter` writing into an event log."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from .._logs import LogRecord, make_record
from .._spans import Malformed, bound_attributes
from ..errors import EventLogError
from ._exporter import Exporter, _resource

__all__ = ["LogExporter", "from_readable_log"]

_LOG = logging.getLogger("eventlog.otel")


def from_readable_log(readable: ReadableLogRecord) -> LogRecord | Malformed:
    """The neutral, bounded record of an SDK log record."""
    r = readable.log_record
    scope = readable.instrumentation_scope
    try:
        return make_record(
            f"{r.trace_id or 0:032x}",
            f"{r.span_id or 0:016x}",
            r.timestamp or r.observed_timestamp or 0,
            r.event_name or "",
            r.severity_text,
            r.body,
            bound_attributes(r.attributes or {}),
            _resource(readable.resource),
            None if scope is None else f"{scope.name}@{scope.version}".removesuffix("@None"),
        )
    except (ValueError, TypeError) as exc:
        return Malformed(r.event_name or "log record", str(exc))


class LogExporter(LogRecordExporter):
    """Hands every log record it is given to the span `exporter`'s ingester: records
    naming a span reach that span's mapping (the GenAI events of the logs API), and every
    record is kept as an ``otel.log`` node. Use it with a `SimpleLogRecordProcessor`: records
    are then buffered here before their span ends, which is what makes them reach their turn
    (buffering costs a lock; the write happens with the trace)."""

    def __init__(self, exporter: Exporter) -> None:
        self._ingester = exporter._ingester

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            self._ingester.add_logs(from_readable_log(r) for r in batch)
        except EventLogError as exc:
            _LOG.error("log records not stored: %s", exc)
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # records wait for their trace, which the span exporter writes

    def shutdown(self) -> None:
        """Write what is still buffered (shut the tracer provider down first, so that no
        trace is mapped before its root)."""
        try:
            self._ingester.flush()
        except EventLogError as exc:
            _LOG.error("log records not stored: %s", exc)
