"""Times at the API edge: datetimes, ISO 8601 strings and int nanoseconds, all to int ns UTC."""

from __future__ import annotations

import datetime as dt

from .errors import InvalidEvent

__all__ = ["TimeLike", "iso_time", "to_ns"]

TimeLike = dt.datetime | str | int


def to_ns(value: TimeLike, name: str = "time") -> int:
    """Nanoseconds since the epoch, UTC. Naive datetimes and ISO strings are read as UTC."""
    if isinstance(value, bool):
        raise InvalidEvent(f"{name} must be a datetime, an ISO 8601 string or int ns, not bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value
        try:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            shown = text if len(text) <= 64 else text[:64] + "..."  # an error is one short line
            raise InvalidEvent(f"{name} {shown!r} is not an ISO 8601 time") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    raise InvalidEvent(
        f"{name} must be a datetime, an ISO 8601 string or int ns, not {type(value).__name__}"
    )


def iso_time(ns: int) -> str:
    """`ns` as an ISO 8601 UTC time with all nine digits (``2026-11-20T10:00:00.123456789Z``).

    Printed beside raw ``ts`` values for people; `to_ns` reads it back (to the microsecond)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    day = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{day}.{fraction:09d}Z"
