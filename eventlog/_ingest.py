"""Spans into the log: buffered per trace, mapped once whole, appended idempotently.

Exporters send a trace's children before its parent, split a trace across batches and retry
after timeouts. `Ingester` therefore buffers spans by trace until the trace's root (the span
with no parent in this process) arrives, the last span an SDK exports, then maps the whole
trace (`_genai.map_trace`, sorted by start time) and appends its requests in one group
commit. A trace whose root never comes is mapped on `flush()` or once its first span has
waited `trace_timeout` seconds. Readers of files, where a root may come first, pass
``flush_on_root=False`` and map everything on `flush()` (or when `max_pending_spans` are
buffered, oldest trace first).

Every request carries an idempotency key made of the trace and span ids. The log keeps keys
in its id index for good (docs/format.md), so a retried batch, a file ingested twice or a
trace mapped again when a late span arrives adds nothing that is already stored. A late span
of a trace already written is mapped with that trace's earlier spans as context (the last
`remembered_traces` traces are kept for this); events already written are never changed.

A span that cannot be decoded is counted in `stats.malformed` and logged; a request the log
refuses (a tool result naming a call it never saw) keeps its `span.recorded` alone and is
counted in `stats.partial`. Neither fails the spans beside it. Thread-safe.

Log records (`_logs`) are buffered with the trace they name and mapped with it. With
`log_wait` (the service, whose logs come in requests of their own), once log records naming
traces have come, a trace whose root arrives is mapped `log_wait` seconds later rather than at
once, so the records of its calls sent after it still reach its turns.

With ``record_first=True`` (the service's OTLP route), `add` returns only once every span it
was given is durable: spans of traces still waiting for their root are appended at once as
their `span.recorded` alone, keyed ``otel:<trace>:<span>:received``, and mapped with their
trace later as usual. A crash in between keeps them; the `spans` table keeps a span's first
row, so recording it twice changes no row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import msgspec

from . import events as ev
from ._commands import prepare
from ._genai import Unit, map_trace, spans_only
from ._handoffs import Handoffs
from ._logs import LogRecord, log_units, with_logs
from ._spans import Malformed, Span
from ._store import PendingRequest
from .errors import EventLogError, IdempotencyKeyReused, InvalidEvent

if TYPE_CHECKING:
    from .log import AsyncEventLog, EventLog

__all__ = ["IngestStats", "Ingester"]

_LOG = logging.getLogger("eventlog.otel")
_GROUP = 2_000  # requests per group commit: one frame, one fsync
_REMEMBERED_KEYS = 100_000  # keys known stored, skipped without asking the log
_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode  # as `_commands.prepare` does


def _request(unit: Unit) -> PendingRequest:
    """The append request of a unit, without `prepare`'s decode and value walk.

    Every value of a unit is bounded when its span is decoded (`_spans.bound`: 64-bit ints,
    finite floats, valid UTF-8, nesting within 16 levels) or built by `_genai` from such
    values and typed fields, so the checks `prepare` runs for callers' own objects hold by
    construction; the encode below still sizes the request and refuses any value MessagePack
    cannot hold, through `prepare`'s own error.
    """
    try:
        size = len(_ENCODE(unit.events))
    except (TypeError, ValueError, OverflowError):
        prepare(unit.events, {"idempotency_key": unit.key})  # raises InvalidEvent naming it
        raise
    return PendingRequest(list(unit.events), unit.key, None, None, size)


class IngestStats(msgspec.Struct, kw_only=True):
    """What an `Ingester` has done since it was made."""

    received: int = 0  # spans decoded and accepted for mapping
    malformed: int = 0  # spans or lines that could not be decoded (logged, not stored)
    spans: int = 0  # span.recorded events newly stored
    events: int = 0  # events newly stored, spans included
    duplicates: int = 0  # requests already stored (retries, files ingested again)
    partial: int = 0  # requests stored as their span alone (see the module docstring)
    traces: int = 0  # traces mapped
    logs: int = 0  # log records decoded and accepted


class Ingester:
    """The writing half of every ingest source (`eventlog.otel.Exporter`, `lmg ingest`)."""

    def __init__(
        self,
        log: EventLog | AsyncEventLog,
        *,
        trace_timeout: float = 30.0,
        max_pending_spans: int = 100_000,
        remembered_traces: int = 1_024,
        flush_on_root: bool = True,
        record_first: bool = False,
        log_wait: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._timeout = trace_timeout
        self._max_pending = max_pending_spans
        self._remembered = remembered_traces
        self._on_root = flush_on_root
        self._record_first = record_first
        self._log_wait = log_wait
        self._logs_seen = False  # whether a log record naming a trace has come
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, tuple[float, list[Span]]] = OrderedDict()
        self._pending_spans = 0
        self._done: OrderedDict[str, list[Span]] = OrderedDict()
        self._stored: OrderedDict[str, None] = OrderedDict()  # keys known to be in the log
        self._handoffs = Handoffs(log._store)
        self._logs: dict[str, list[LogRecord]] = {}  # by trace, while pending or remembered
        self.stats = IngestStats()
        self.last_lsn = -1
        """The highest LSN this ingester's appends were answered with (-1 before any)."""

    def add(self, items: Iterable[Span | Malformed]) -> None:
        """Buffer spans; map and append every trace that is now complete or overdue (and,
        with ``record_first``, record the spans still buffered)."""
        with self._lock:
            ready: list[str] = []
            added: list[Span] = []
            for item in items:
                if isinstance(item, Malformed):
                    self.stats.malformed += 1
                    _LOG.warning("malformed span skipped (%s): %s", item.where, item.reason)
                    continue
                self.stats.received += 1
                added.append(item)
                trace = item.trace_id
                if trace not in self._pending:
                    earlier = self._done.pop(trace, [])
                    self._pending[trace] = (self._clock(), earlier)
                    self._pending_spans += len(earlier)
                    if self._on_root and any(s.is_root for s in earlier):
                        ready.append(trace)  # a late span: its trace was written already
                self._pending[trace][1].append(item)
                self._pending_spans += 1
                if item.is_root and self._on_root:
                    if self._log_wait and self._logs_seen:
                        self._due_in(trace, self._log_wait)
                    else:
                        ready.append(trace)
                if self._pending_spans > self._max_pending:  # bound memory mid-file too
                    self._write([*ready, *self._overdue()])
                    ready = []
            units = self._take([*ready, *self._overdue()])
            if self._record_first:  # in the same group commit: one fsync per call
                waiting = [s for s in added if s.trace_id in self._pending]
                units += [Unit(f"{u.key}:received", u.events) for u in spans_only(waiting)]
            self._append(units)

    def add_logs(self, items: Iterable[LogRecord | Malformed]) -> None:
        """Buffer log records with the trace they name, to be mapped with its spans and kept
        as nodes when it is written. A record naming no trace, or a trace already written,
        is kept at once (its content no longer reaches a turn stored without it)."""
        with self._lock:
            now: list[LogRecord] = []
            for item in items:
                if isinstance(item, Malformed):
                    self.stats.malformed += 1
                    _LOG.warning("malformed log record skipped (%s): %s", item.where, item.reason)
                    continue
                self.stats.logs += 1
                trace = item.trace_id
                if trace is None or (trace in self._done and trace not in self._pending):
                    now.append(item)
                    continue
                self._logs_seen = True
                self._logs.setdefault(trace, []).append(item)
                if trace not in self._pending:  # mapped with its spans, or alone if none come
                    self._pending[trace] = (self._clock(), [])
                if self._record_first:
                    now.append(item)
            self._write(self._overdue())
            self._commit(log_units(now))

    def _due_in(self, trace: str, wait: float) -> None:
        """Make a pending trace overdue `wait` seconds from now (or sooner, as it was)."""
        since, spans = self._pending[trace]
        self._pending[trace] = (min(since, self._clock() - self._timeout + wait), spans)

    def expire(self) -> None:
        """Map and append every trace whose first span has waited `trace_timeout` seconds
        (a service calls this periodically: between exports, nothing else would)."""
        with self._lock:
            self._write(self._overdue())

    def forget(self) -> None:
        """Drop the spans of the traces already written (kept to map a late span with its
        trace), and the log records of written traces: after an erasure they may hold erased
        text. A late span is then mapped with only the spans that come with it."""
        with self._lock:
            self._done.clear()
            self._logs = {t: r for t, r in self._logs.items() if t in self._pending}

    def flush(self) -> None:
        """Map and append every buffered trace, complete or not."""
        with self._lock:
            self._write(list(self._pending))

    def _overdue(self) -> list[str]:
        now = self._clock()
        overdue = [t for t, (since, _) in self._pending.items() if now - since >= self._timeout]
        over = self._pending_spans - self._max_pending
        for trace, (_, spans) in self._pending.items():
            if over <= 0:
                break
            if trace not in overdue:
                overdue.append(trace)
                over -= len(spans)
        return overdue

    def _write(self, traces: list[str]) -> None:
        self._append(self._take(traces))

    def _take(self, traces: list[str]) -> list[Unit]:
        """The units of `traces`, mapped and moved from pending to done."""
        units: list[Unit] = []
        for trace in dict.fromkeys(traces):
            entry = self._pending.pop(trace, None)
            if entry is None:
                continue
            spans = entry[1]
            self._pending_spans -= len(spans)
            self.stats.traces += bool(spans)  # not the log records of a trace with no span
            logs = self._logs.get(trace, [])
            units += self._map(with_logs(spans, logs)) if spans else []
            units += log_units(logs)
            self._done[trace] = spans
            self._done.move_to_end(trace)
            while len(self._done) > self._remembered:
                self._logs.pop(self._done.popitem(last=False)[0], None)
        return units + self._handoffs.after(units)

    def _append(self, units: list[Unit]) -> None:
        for start in range(0, len(units), _GROUP):
            self._commit(units[start : start + _GROUP])

    def _map(self, spans: list[Span]) -> list[Unit]:
        """`map_trace`, and if it fails on input nobody foresaw, the spans alone: a bug in
        the mapping of one trace never loses its spans or fails the traces beside it."""
        try:
            return map_trace(spans)
        except Exception:
            _LOG.exception("trace %s stored as spans only: its mapping failed", spans[0].trace_id)
            self.stats.partial += 1
            return spans_only(spans)

    def _commit(self, units: list[Unit]) -> None:
        """Append each unit as its own keyed request, all in one group commit; a refused
        unit is appended again as its span alone. Keys this ingester saw stored are skipped
        (an agent or a session named by every trace costs one request, not one per trace)."""
        requests, kept = [], []
        retry: list[Unit] = []
        sent: set[str] = set()
        for unit in units:
            if unit.key in self._stored or unit.key in sent:  # sent: the agent of every trace
                if unit.key in self._stored:
                    self._stored.move_to_end(unit.key)
                self.stats.duplicates += 1
                continue
            sent.add(unit.key)
            try:
                requests.append(_request(unit))
                kept.append(unit)
            except InvalidEvent as exc:
                self._refused(unit, exc, retry)
        results = self._log._store.commit(requests) if requests else []
        for unit, result in zip(kept, results, strict=True):
            if isinstance(result, IdempotencyKeyReused):
                self.stats.duplicates += 1
            elif isinstance(result, InvalidEvent):  # unknown or deleted node, bad value
                self._refused(unit, result, retry)
                continue
            elif isinstance(result, EventLogError):
                raise result  # the log itself failed (closed, disk full): the caller hears it
            elif result.duplicate:
                self.stats.duplicates += 1
            else:
                self.last_lsn = max(self.last_lsn, result.last_lsn)
                self.stats.events += len(result.events)
                self.stats.spans += sum(isinstance(e, ev.SpanRecorded) for e in result.events)
            self._remember(unit.key)
        if retry:
            self._commit(retry)

    def _remember(self, key: str) -> None:
        self._stored[key] = None
        if len(self._stored) > _REMEMBERED_KEYS:
            self._stored.popitem(last=False)

    def _refused(self, unit: Unit, exc: EventLogError, retry: list[Unit]) -> None:
        self.stats.partial += 1
        _LOG.info("stored without its GenAI events (%s): %s", unit.key, exc)
        if unit.span_only is not None:
            retry.append(Unit(unit.key, [unit.span_only]))
