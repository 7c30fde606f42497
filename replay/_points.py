"""Points in history: an LSN, or a time, resolved against a log to the last LSN they include.

A view "at" a point holds every event up to and including it. An LSN is exact. A time T
includes every event whose ``ts`` is at most T: since the appender gives every event of one
group commit the same ``ts`` and never lets ``ts`` go back, a time always falls between whole
group commits, never inside one. Before the first event a point resolves to -1 (an empty
view); a time after the last event resolves to the last event.
"""

from __future__ import annotations

import datetime as dt
from typing import TypeAlias

import msgspec

from eventlog import EventLog, InvalidEvent
from eventlog._time import to_ns

from .errors import BadPoint

__all__ = ["Point", "Time", "datetime_of", "event_ts", "resolve"]


class Time(msgspec.Struct, frozen=True):
    """Marks a value as a time where a bare int would mean an LSN: ``Time(1732190000 * 10**9)``."""

    value: dt.datetime | str | int


Point: TypeAlias = int | dt.datetime | str | Time
"""An LSN (int), or a time: a datetime, an ISO 8601 string, or `Time` (any of those, or ns)."""


def resolve(log: EventLog, point: Point | None) -> int:
    """The last LSN a view at `point` holds (-1: none). None means the log's end, now."""
    end = log.next_lsn() - 1
    if point is None:
        return end
    if isinstance(point, bool):
        raise BadPoint(f"a point is an LSN or a time, not {point!r}")
    if isinstance(point, int):
        if point < -1 or point > end:
            raise BadPoint(f"LSN {point} is not in the log, which holds LSNs 0..{end}")
        return point
    value = point.value if isinstance(point, Time) else point
    try:
        ns = to_ns(value)
    except InvalidEvent as exc:
        raise BadPoint(str(exc)) from None
    records = log.read(0, end + 1, start_time=ns + 1)  # from the first event after the time
    try:
        after = next(records, None)
    finally:
        records.close()
    return end if after is None else after.lsn - 1


def event_ts(log: EventLog, lsn: int) -> int | None:
    """The `ts` of the event at `lsn` (None for -1)."""
    if lsn < 0:
        return None
    record = next(log.read(lsn, lsn + 1), None)
    return None if record is None else record.event.ts


def datetime_of(ts: int) -> dt.datetime:
    """A UTC datetime no earlier than `ts` (ns): datetimes hold microseconds, so round up."""
    return _EPOCH + dt.timedelta(microseconds=-(-ts // 1000))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
