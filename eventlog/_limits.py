"""What every stored value must be, checked per request before it may join a group commit.

A group commit encodes many callers' events as one frame, so a value that fails to encode
there would fail every request of the group. `_commands.prepare` therefore encodes each
request in its caller's thread (the round trip that type-checks it), and `check` then walks
the decoded copy for what the encoder accepts but the log refuses. A failure is its caller's
`InvalidEvent`, naming the field; the log later sets only times, versions and known ids.

The rules, documented in docs/events.md ("Limits"):

- ints are signed 64-bit (the projections store them as BIGINT);
- floats are finite: JSON has no NaN or infinity, and the projections' JSON columns and
  `lmg tail` would turn them into null, so the log would not read back what was given;
- lists and dicts nest at most `MAX_DEPTH` levels in one field, and never contain themselves;
- strings are valid UTF-8 (no lone surrogates).

The encoder finds the last two for free (a RecursionError, a UnicodeEncodeError); only then
does `check(..., thorough=True)` walk the caller's own objects to name the field.

A request of many events is checked a field at a time across the events of each type
(`_fine`: a `max`, an `isfinite` or a test for an empty value, each over a whole column in C),
since a walk of every event in Python cost as much as encoding and compressing them. Only
non-empty JSON values are walked; a column that fails sends the request to the walk, which
names the first bad field exactly as it always has.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
import msgspec.inspect as mi

from .errors import InvalidEvent

__all__ = ["COLUMNS_FROM", "INT_MAX", "INT_MIN", "MAX_DEPTH", "check"]

MAX_DEPTH = 64
"""Most levels of lists and dicts one field may nest (``{"a": [1]}`` is two)."""
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_PLAIN = frozenset({str, bool, type(None)})  # nothing to check unless `thorough`
COLUMNS_FROM = 16
"""Requests of this many events are checked a column at a time; smaller ones are walked
(the walk is cheaper up to about 8 events of two types, measured)."""


class _Bad(Exception):
    """A bad value deep in a field; collects the way to it while the walk unwinds."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.path: list[str] = []
        self.containers: list[int] = []  # ids of the enclosing lists and dicts


def check(events: Iterable[object], *, thorough: bool = False) -> None:
    """Raise `InvalidEvent` for the first value of `events` the log may not store.

    By default only fields whose type can hold an int, a float or any JSON are walked: on a
    decoded event, the others are what the schema says. `thorough` walks every field and
    checks strings too, for the caller's own objects when the encoder refused them.
    """
    if not thorough and isinstance(events, list) and len(events) >= COLUMNS_FROM and _fine(events):
        return
    for event in events:
        if not isinstance(event, msgspec.Struct):
            continue  # not an event at all: the round trip says so
        try:
            _struct(event, 0, thorough)
        except _Bad as bad:
            raise InvalidEvent(_message(type(event).__name__, bad)) from None


def _message(event: str, bad: _Bad) -> str:
    field = bad.path[-1].lstrip(".")
    if len(set(bad.containers)) < len(bad.containers):
        return f"invalid event ({event}): {field} contains itself"
    if len(bad.path) > 8:  # a deep path is noise: the field and the reason say enough
        return f"invalid event ({event}): {field}: {bad.reason}"
    return f"invalid event ({event}): {''.join(reversed(bad.path)).lstrip('.')}: {bad.reason}"


@functools.cache
def _plan(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields of `cls` whose values need a walk: those that may hold numbers or JSON."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return tuple(f.name for f in info.fields if _may_need(f.type))


_Column = Callable[[list[Any]], bool]  # are all these values of one field storable?


def _fine(events: list[object]) -> bool:
    """True if `check` would pass decoded `events`, tested a column at a time: one pass in
    C per field and event type, instead of a walk of every event in Python. False sends the
    request to the walk, which names the field (so a False here is never wrong, only slow)."""
    classes = set(map(type, events))
    try:
        for cls in classes:
            if not issubclass(cls, msgspec.Struct):
                continue
            same = events if len(classes) == 1 else [e for e in events if type(e) is cls]
            if not _fine_as(cls, same):
                return False
    except TypeError:  # a value of another type than its field's: for the walk to judge
        return False
    return True


def _fine_as(cls: type[msgspec.Struct], values: Sequence[object]) -> bool:
    return all(column(list(map(get, values))) for get, column in _columns(cls))


@functools.cache
def _columns(cls: type[msgspec.Struct]) -> tuple[tuple[Callable[[Any], Any], _Column], ...]:
    """A getter and a column test for each field of `cls` in `_plan`."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    types = {f.name: f.type for f in info.fields}
    return tuple((operator.attrgetter(name), _column(types[name])) for name in _plan(cls))


def _column(t: mi.Type) -> _Column:
    match t:
        case (
            mi.UnionType(types=(inner, mi.NoneType())) | mi.UnionType(types=(mi.NoneType(), inner))
        ) if isinstance(inner, mi.IntType | mi.FloatType | mi.StructType):
            return _column(inner)  # None is always fine: each test skips it
        case mi.IntType():
            return _ints
        case mi.FloatType():
            return _floats
        case mi.StructType(cls=sub):
            return lambda values: _fine_as(sub, [v for v in values if v is not None])
        case _:
            return _json


def _ints(values: list[Any]) -> bool:
    present = [v for v in values if v is not None] if None in values else values
    return not present or (min(present) >= INT_MIN and max(present) <= INT_MAX)


def _floats(values: list[Any]) -> bool:
    return all(map(math.isfinite, filter(None, values)))  # filter drops None (and 0.0)


def _json(values: list[Any]) -> bool:
    """Walk the values that are not empty (an empty value, 0 or None is always fine)."""
    try:
        for value in filter(None, values):
            _value(value, 0, False)
    except _Bad:
        return False
    return True


def _may_need(t: mi.Type) -> bool:
    match t:
        case mi.IntType() | mi.FloatType() | mi.AnyType() | mi.StructType():
            return True
        case mi.UnionType(types=types):
            return any(map(_may_need, types))
        case mi.ListType(item_type=item):
            return _may_need(item)
        case mi.DictType(key_type=key, value_type=value):
            return _may_need(key) or _may_need(value)
        case _:
            return False


def _struct(value: msgspec.Struct, depth: int, thorough: bool) -> None:
    for name in value.__struct_fields__ if thorough else _plan(type(value)):
        try:
            _value(getattr(value, name), depth, thorough)
        except _Bad as bad:
            bad.path.append(f".{name}")
            raise


def _value(value: Any, depth: int, thorough: bool) -> None:
    """Check one value; containers count towards the depth, structs do not (their shape is
    the schema's)."""
    kind = type(value)
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise _Bad(f"{value} is out of range (a signed 64-bit int)")
    elif kind is float:
        if not math.isfinite(value):
            raise _Bad(f"{value} is not a finite number (JSON has no NaN or infinity)")
    elif kind is dict or kind is list or kind is tuple:
        _container(value, depth + 1, thorough)
    elif kind is str:
        if thorough:
            _string(value)
    elif isinstance(value, msgspec.Struct):
        _struct(value, depth, thorough)
    # None, bool, UUID; anything else is for the encoder to accept or refuse


def _string(value: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise _Bad(f"not valid UTF-8 ({exc.reason}: {value[exc.start]!r})") from None


def _container(
    value: dict[Any, Any] | list[Any] | tuple[Any, ...], depth: int, thorough: bool
) -> None:
    if depth > MAX_DEPTH:
        raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
    key: Any = None
    try:
        if isinstance(value, dict):
            for key, item in value.items():
                if thorough or type(key) is not str:
                    _value(key, depth, thorough)
                if thorough or type(item) not in _PLAIN:
                    _value(item, depth, thorough)
        else:
            for key, item in enumerate(value):  # noqa: B007 - the except clause reads key
                if thorough or type(item) not in _PLAIN:
                    _value(item, depth, thorough)
    except _Bad as bad:
        bad.path.append(f"[{repr(key)[:40]}]")
        bad.containers.append(id(value))
        raise
