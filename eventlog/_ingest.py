"""Spans into the log: buffered per trace, mapped once whole, appended idempotently.

Exporters send a trace's children before its parent, split a trace across batches and retry
after timeouts. `Ingester` therefore buffers spans by trace until the trace's root (the span
with no parent in this process) arrives, the last span an SDK exports, then maps the whole
trace (`_genai.map_trace`, sorted by start time) and appends its requests in one group
commit. A trace whose root never comes is mapped on `flush()` or once its first span has
waited `trace_timeout` seconds. Readers of files, where a root may come first, pass
``flush_on_root=False`` and map everything on `flush()` (or when `max_pending_spans` are
buffered, oldest trace first).

A trace's events are one request, keyed ``otel:trace:<trace>`` (its first), then
``otel:trace:<trace>:2`` and on for spans that come after it was written; a session it
creates is a request of its own between them (keyed ``otel:session:...``, so the id index
says where the session began, which `_handoffs` reads from). The mapping's units (a span's
events, an agent, a tool call) are a trace request's parts, stored each as its own request
keyed by the trace and span ids (``otel:<trace>:<span>``) in its place when the log refuses
the whole, as it refuses a tool result naming an unknown call: the log checks, indexes and
frames one keyed request per trace instead of about ten. The log keeps keys in its id index
for good (docs/format.md), so a retried batch, a file ingested twice or a trace mapped again
when a late span arrives adds nothing that is already stored: units this ingester stored are
left out, agents the log holds are left out (looked up by id), a trace whose first span the
log holds under its own key (stored part by part, by an older version or after a refusal) is
stored part by part again, and a trace whose next key is taken (a later run, or a trace this
ingester forgot) sends only the spans its stored requests do not hold. A late span of a
trace already written is mapped with that trace's earlier spans as context (the last
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
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from . import events as ev
from ._commands import prepare
from ._format import ENCODER
from ._genai import Unit, map_trace, spans_only
from ._handoffs import Handoffs
from ._logs import LogRecord, log_units, with_logs
from ._reader import Cursor
from ._spans import Malformed, Span
from ._store import Appended, PendingRequest, Split, key_digest
from .errors import EventLogError, IdempotencyKeyReused, InvalidEvent

if TYPE_CHECKING:
    from ._index import Entry
    from .log import AsyncEventLog, EventLog

__all__ = ["IngestStats", "Ingester"]

_LOG = logging.getLogger("eventlog.otel")
_GROUP = 2_000  # requests per group commit: one frame, one fsync
_REMEMBERED_KEYS = 100_000  # keys known stored, skipped without asking the log


def _request(unit: Unit, parts: list[Unit] | None = None, limit: int = 0) -> PendingRequest:
    """The append request of a unit, without `prepare`'s decode and value walk.

    Every value of a unit is bounded when its span is decoded (`_spans.bound`: 64-bit ints,
    finite floats, valid UTF-8, nesting within 16 levels) or built by `_genai` from such
    values and typed fields, so the checks `prepare` runs for callers' own objects hold by
    construction; the encode below still sizes the request and refuses any value MessagePack
    cannot hold, through `prepare`'s own error.

    A trace's request has its units as `parts`, stored in its place if it is refused whole
    (made only then). While the whole is within `limit` (max_request_bytes) so is each part:
    they are given the whole's size rather than each encoded again.
    """
    try:
        size = len(ENCODER.encode(unit.events))
    except (TypeError, ValueError, OverflowError):
        for part in parts or [unit]:
            prepare(part.events, {"idempotency_key": part.key})  # raises InvalidEvent naming it
        raise
    if parts is None:
        return PendingRequest(list(unit.events), unit.key, None, None, size)

    def split() -> list[PendingRequest]:
        return [
            _request(p) if size > limit else PendingRequest(list(p.events), p.key, size=size)
            for p in parts
        ]

    return PendingRequest(list(unit.events), unit.key, None, None, size, parts=split)


class _Trace(NamedTuple):
    """The units one mapping of a trace made, appended as one request (`Ingester._plan`)."""

    trace_id: str
    units: list[Unit]


def _link_key(trace: str, link: int) -> str:
    """The key of a trace's `link`-th request: ``otel:trace:<trace>``, then ``...:2``, ..."""
    return f"otel:trace:{trace}" if link == 1 else f"otel:trace:{trace}:{link}"


def _pieces(units: list[Unit]) -> list[Unit | list[Unit]]:
    """A trace's units in order, the runs between sessions grouped: each run is a request,
    each session its own."""
    out: list[Unit | list[Unit]] = []
    for u in units:
        if isinstance(u.events[0], ev.SessionCreated):
            out.append(u)
        elif out and isinstance(out[-1], list):
            out[-1].append(u)
        else:
            out.append([u])
    return out


_IS_SPAN = ev.SpanRecorded.__instancecheck__  # one C call an event (`IngestStats.spans`)


def _named(unit: Unit) -> int | None:
    """The node id (`UUID.int`) an agent's unit registers, else None."""
    first = unit.events[0]
    return first.id.int if isinstance(first, ev.AgentRegistered) else None


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
        # of each remembered trace: its requests stored so far, and the spans they hold
        self._links: dict[str, tuple[int, set[str | None]]] = {}  # (kept beyond `_stored`)
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
                    if earlier and self._on_root and any(s.is_root for s in earlier):
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
            taken = self._take([*ready, *self._overdue()])
            if self._record_first:  # in the same group commit: one fsync per call
                waiting = [s for s in added if s.trace_id in self._pending]
                taken += [Unit(f"{u.key}:received", u.events) for u in spans_only(waiting)]
            self._append(taken)

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

    def _take(self, traces: list[str]) -> list[Unit | _Trace]:
        """The units of `traces`, mapped and moved from pending to done."""
        items: list[Unit | _Trace] = []
        mapped: list[Unit] = []
        for trace in dict.fromkeys(traces):
            entry = self._pending.pop(trace, None)
            if entry is None:
                continue
            spans = entry[1]
            self._pending_spans -= len(spans)
            self.stats.traces += bool(spans)  # not the log records of a trace with no span
            logs = self._logs.get(trace)
            units = self._map(with_logs(spans, logs) if logs else spans) if spans else []
            mapped += units
            items.append(_Trace(trace, units))
            if logs:
                items += log_units(logs)
            self._done[trace] = spans
            self._done.move_to_end(trace)
            while len(self._done) > self._remembered:
                forgotten = self._done.popitem(last=False)[0]
                self._logs.pop(forgotten, None)
                self._links.pop(forgotten, None)
        return items + self._handoffs.after(mapped)

    def _append(self, items: Sequence[Unit | _Trace]) -> None:
        for start in range(0, len(items), _GROUP):
            self._commit(items[start : start + _GROUP])

    def _map(self, spans: list[Span]) -> list[Unit]:
        """`map_trace`, and if it fails on input nobody foresaw, the spans alone: a bug in
        the mapping of one trace never loses its spans or fails the traces beside it."""
        try:
            return map_trace(spans)
        except Exception:
            _LOG.exception("trace %s stored as spans only: its mapping failed", spans[0].trace_id)
            self.stats.partial += 1
            return spans_only(spans)

    def _commit(self, items: Sequence[Unit | _Trace]) -> None:
        """Append a group in one group commit: each trace's new units as one request
        (`_plan`), every other unit as its own keyed request. A trace's request refused whole
        is stored unit by unit in its place; a refused unit is appended again as its span
        alone. Keys this ingester saw stored are skipped (an agent or a session named by
        every trace costs one request, not one per trace)."""
        units, parts = self._plan(items)
        limit = self._log._store.options.max_request_bytes
        requests, kept = [], []
        retry: list[Unit] = []
        for unit in units:
            if unit.key in parts:
                try:
                    requests.append(_request(unit, parts[unit.key], limit))
                    kept.append(unit)
                    continue
                except InvalidEvent:  # a part MessagePack cannot hold: each on its own
                    queue = parts.pop(unit.key)
            else:
                queue = [unit]
            for one in queue:
                try:
                    requests.append(_request(one))
                    kept.append(one)
                except InvalidEvent as exc:
                    self._refused(one, exc, retry)
        results = self._log._store.commit(requests) if requests else []
        for unit, result in zip(kept, results, strict=True):
            if isinstance(result, Split):
                for part, outcome in zip(parts[unit.key], result.parts, strict=True):
                    self._stored_as(part, outcome, retry)
                continue
            if self._stored_as(unit, result, retry) and unit.key in parts:
                trace, _, link = unit.key.removeprefix("otel:trace:").partition(":")
                written = self._links.get(trace, (0, set()))[1]
                members = parts[unit.key]
                self._remember(*[part.key for part in members])
                written.update([part.span for part in members])
                written.discard(None)  # an agent's or a session's unit: no span
                self._links[trace] = (int(link or 1), written)
        if retry:
            self._commit(retry)

    def _stored_as(self, unit: Unit, result: Appended | EventLogError, retry: list[Unit]) -> bool:
        """Count what one request became; False if it was refused."""
        if isinstance(result, IdempotencyKeyReused):
            self.stats.duplicates += 1
        elif isinstance(result, InvalidEvent):  # unknown or deleted node, bad value
            self._refused(unit, result, retry)
            return False
        elif isinstance(result, EventLogError):
            raise result  # the log itself failed (closed, disk full): the caller hears it
        elif result.duplicate:
            self.stats.duplicates += 1
        else:
            self.last_lsn = max(self.last_lsn, result.last_lsn)
            self.stats.events += len(result.events)
            self.stats.spans += sum(map(_IS_SPAN, result.events))
        self._remember(unit.key)
        return True

    def _plan(self, items: Sequence[Unit | _Trace]) -> tuple[list[Unit], dict[str, list[Unit]]]:
        """The group's requests, in order, and the units each trace's request is made of.

        Units whose keys this ingester saw stored (or sent earlier in the group) are left
        out. A trace's other units become one request keyed by the trace and its link (its
        first request ``otel:trace:<trace>``, then ``:2`` and on), except a session it
        creates, which is its own request between the units before it and those after (its
        key then tells `_handoffs` where the session began). Looked up first, in one pass: an
        agent the log holds is left out; a trace whose first span the log holds under that
        span's own key (written before traces were one request, or unit by unit after a
        refusal) is sent unit by unit as then; and a trace whose link is taken (another
        process, or one this ingester forgot, stored part of it) sends only the spans none
        of its stored links holds.
        """
        fresh = self._fresh(items)
        traces = [
            (i, item) for i, item in enumerate(items) if isinstance(item, _Trace) and fresh[i]
        ]
        asked: list[int] = []
        digests: dict[str, int] = {}  # of the keys asked, each digested once
        for i, whole in traces:
            link = self._links.get(whole.trace_id, (0, set()))[0] + 1
            first = next((u for u in fresh[i] if u.span), None)
            keys = [_link_key(whole.trace_id, link)]
            if first is not None and link == 1:  # its first span's own key, stored before
                keys.append(first.key)
            for key in keys:
                digests[key] = key_digest(key)
                asked.append(digests[key])
            asked += [n for u in fresh[i] if u.span is None and (n := _named(u)) is not None]
        found = dict(zip(asked, self._log._store.entries(asked), strict=True)) if asked else {}

        def held(key: str) -> Entry | None:
            digest = digests.get(key)
            return found.get(key_digest(key) if digest is None else digest)

        planned: list[Unit] = []
        parts: dict[str, list[Unit]] = {}
        for i, item in enumerate(items):
            if not isinstance(item, _Trace) or not fresh[i]:
                planned += fresh[i]
                continue
            trace = item.trace_id
            members = []
            for u in fresh[i]:
                named = _named(u) if u.span is None else None  # a span's unit names no agent
                if named is not None and found.get(named) is not None:
                    self._remember(u.key)  # registered by another process or trace
                    self.stats.duplicates += 1
                else:
                    members.append(u)
            link, written = self._links.get(trace, (0, set()))
            link += 1
            if written:  # a late span: the spans of this trace's stored requests are left out
                members = [u for u in members if u.span not in written]
            first = next((u for u in members if u.span), None)
            if first is not None and link == 1 and held(first.key):
                planned += members  # stored unit by unit before: so again
                continue
            if held(_link_key(trace, link)) is not None:
                link, stored = self._stored_spans(trace, link)
                members = [u for u in members if u.span not in stored]
            for piece in _pieces(members):
                if isinstance(piece, Unit):
                    planned.append(piece)
                    continue
                unit = Unit(_link_key(trace, link), [e for u in piece for e in u.events])
                planned.append(unit)
                parts[unit.key] = piece
                link += 1
        return planned, parts

    def _fresh(self, items: Sequence[Unit | _Trace]) -> list[list[Unit]]:
        """Each item's units whose keys were neither stored nor sent earlier in the group
        (sent: the agent of every trace); the others are counted as duplicates."""
        stored, sent, duplicates = self._stored, set(), 0
        fresh: list[list[Unit]] = []
        for item in items:
            kept = []
            for unit in item.units if isinstance(item, _Trace) else [item]:
                key = unit.key
                if key in stored:
                    stored.move_to_end(key)
                    duplicates += 1
                elif key in sent:
                    duplicates += 1
                else:
                    sent.add(key)
                    kept.append(unit)
            fresh.append(kept)
        self.stats.duplicates += duplicates
        return fresh

    def _stored_spans(self, trace: str, link: int) -> tuple[int, set[str | None]]:
        """The first free link of a trace from `link` on, and the spans its stored links
        from `link` on hold (read back from the log: only after a restart or a forgotten
        trace, when part of it was stored and more of it comes)."""
        store = self._log._store
        spans: set[str | None] = set()
        while (entry := store.entries([key_digest(_link_key(trace, link))])[0]) is not None:
            count = entry.aux >> 64  # a key's entry: its request's event count, then a digest
            cursor = Cursor(store, start=entry.lsn, stop=entry.lsn + count)
            try:
                spans.update(
                    r.event.span_id
                    for r in cursor.records()
                    if isinstance(r.event, ev.SpanRecorded)
                )
            finally:
                cursor.close()
            link += 1
        return link, spans

    def _remember(self, *keys: str) -> None:
        stored = self._stored
        for key in keys:
            stored[key] = None
        while len(stored) > _REMEMBERED_KEYS:
            stored.popitem(last=False)

    def _refused(self, unit: Unit, exc: EventLogError, retry: list[Unit]) -> None:
        self.stats.partial += 1
        _LOG.info("stored without its GenAI events (%s): %s", unit.key, exc)
        if unit.span_only is not None:
            retry.append(Unit(unit.key, [unit.span_only], span=unit.span))
