"""SQL parameters: what `params` may be, checked in one place for every entry point.

`sql(query, params)` and `rows(query, params)` of an embedded graph or view, `RemoteGraph`,
`AsyncRemoteGraph` and ``POST .../sql`` of `lmg serve` take the same parameters, bind the
same values and refuse the same others (docs/sql.md#parameters):

1. `params` is None, a list or a tuple of values (``?``, ``$1``), or a dict of str names to
   values (``$name``). Anything else (a str, a set, a generator) is refused.
2. A value is one of `TYPES`, or a list, tuple or dict of str keys of such values, at most
   `MAX_DEPTH` deep; an enum stands for its value, and a value of a subclass of one of them
   (an `IntEnum`, a `bytearray`, a pandas `Timestamp`) for the value of its base type, which
   is what DuckDB binds either way. Anything else is refused.
3. A refusal is one `SqlFailed` line naming the parameter and its type, raised before the
   query is checked or run, so embedded and remote callers meet the same one.

Over HTTP, a value JSON cannot carry as itself (bytes, UUID, a time, Decimal, NaN) travels
as JSON text or a number, with its type in ``"types"``, which has the shape of ``"params"``:
null (or, in a dict, no key) where the JSON value is meant, a tag of `_DECODE` where it is
encoded, a list or dict where a list or dict holds one. The service rebuilds the Python value
and binds it as an embedded graph binds it: the same DuckDB type and value.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import enum
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

from .errors import SqlFailed

__all__ = ["MAX_DEPTH", "TYPES", "Params", "checked", "from_wire", "to_wire", "values_within"]

Params = list[Any] | tuple[Any, ...] | dict[str, Any] | None

MAX_DEPTH = 16
"""How deeply lists and dicts of parameters may nest (a STRUCT of lists of ...)."""

_DOCS = "(docs/sql.md#parameters)"


def _iso(value: dt.date | dt.time) -> str:
    return value.isoformat()


def _float(value: float) -> str | None:
    """JSON's text for a float it has no number for; a NaN keeps its sign ("-nan")."""
    if math.isfinite(value):
        return None
    return "-nan" if math.isnan(value) and math.copysign(1.0, value) < 0 else repr(value)


_ENCODE: dict[type, tuple[str, Callable[[Any], Any]]] = {
    bytes: ("blob", lambda v: base64.b64encode(v).decode()),
    uuid.UUID: ("uuid", str),
    dt.datetime: ("timestamp", _iso),
    dt.date: ("date", _iso),
    dt.time: ("time", _iso),
    dt.timedelta: ("interval", lambda v: v // dt.timedelta(microseconds=1)),
    decimal.Decimal: ("decimal", str),
}
"""The value types JSON cannot carry as themselves: their tag and their JSON form."""

_FRACTION_OFFSET = re.compile(r"([+-])00:00:00\.(\d{6})$")


def _timestamp(text: str) -> dt.datetime:
    """`datetime.fromisoformat`, but for Python 3.11's, which reads an offset of under a
    second (``+00:00:00.000001``) as UTC."""
    value = dt.datetime.fromisoformat(text)
    under_a_second = _FRACTION_OFFSET.search(text)
    if under_a_second is None or value.tzinfo is None:
        return value
    sign, micros = under_a_second.groups()
    offset = dt.timedelta(microseconds=int(micros))
    return value.replace(tzinfo=dt.timezone(-offset if sign == "-" else offset))


_DECODE: dict[str, Callable[[Any], Any]] = {
    "blob": lambda v: base64.b64decode(v, validate=True),
    "uuid": uuid.UUID,
    "timestamp": _timestamp,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "interval": lambda v: dt.timedelta(microseconds=v),
    "decimal": decimal.Decimal,
    "float": float,
}
"""What the service rebuilds from each tag's JSON form."""

TYPES: tuple[type, ...] = (type(None), bool, int, float, str, *_ENCODE)
"""The types of a parameter's value (or of a value in a list or dict of them)."""

_NAMES = ", ".join(t.__name__ for t in TYPES).replace("NoneType", "None")


def checked(params: object) -> list[Any] | dict[str, Any] | None:
    """`params` as DuckDB takes them (a tuple as a list, every value `_plain`), or
    `SqlFailed` naming the first parameter this module's rules refuse, and its type."""
    if params is None:
        return None
    if isinstance(params, (list, tuple)):
        return [_plain(value, _child("", k), 0) for k, value in enumerate(params)]
    if isinstance(params, dict):
        for name in params:
            if not isinstance(name, str):
                raise SqlFailed(f"SQL parameter names are str, not {type(name).__name__} {_DOCS}")
        return {name: _plain(value, _child("", name), 0) for name, value in params.items()}
    raise SqlFailed(
        f"SQL parameters are a list, a tuple or a dict of names to values,"
        f" not {type(params).__name__} {_DOCS}"
    )


def _plain(value: Any, path: str, depth: int) -> Any:
    """`value` as exactly one of `TYPES`, or a list or dict of such values: an enum as its
    value, a subclass of one of them (an `IntEnum`, a `bytearray`, a pandas `Timestamp`) as
    the value of its base type, which is what DuckDB binds either way; `SqlFailed` if none."""
    kind = type(value)
    if kind is str and not value.isascii():
        _utf8(value, path)
    if kind in TYPES:
        return _zoned(value, path) if kind in (dt.datetime, dt.time) else value
    if kind in (list, tuple) or kind is dict:
        if depth >= MAX_DEPTH:
            raise SqlFailed(f"SQL parameter {path} nests deeper than {MAX_DEPTH} {_DOCS}")
        if kind is dict:
            return {key: _plain(item, _keyed(path, key), depth + 1) for key, item in value.items()}
        return [_plain(item, _child(path, k), depth + 1) for k, item in enumerate(value)]
    based = _based(value)
    if based is _NONE:
        raise SqlFailed(
            f"SQL parameter {path} is of type {kind.__name__}: a parameter is one of"
            f" {_NAMES}, or a list or dict of them {_DOCS}"
        )
    return _plain(based, path, depth)


_TIME_OFFSET = dt.timedelta(hours=15, minutes=59, seconds=59)
"""The largest UTC offset of DuckDB's TIME WITH TIME ZONE."""


def _zoned(value: dt.datetime | dt.time, path: str) -> dt.datetime | dt.time:
    """`value` without its tzinfo if that gives no UTC offset (a `time` in a `ZoneInfo`):
    naive, as Python says, and as it travels (`isoformat`); DuckDB's bind of it raised a
    bare AttributeError. A time whose offset DuckDB cannot hold is refused: it was bound,
    then failed as DuckDB's INTERNAL Error wherever it was read (client side, remotely), or
    (an offset with microseconds) refused embedded but bound, rounded, over HTTP."""
    offset = value.utcoffset()
    if offset is None:
        return value if value.tzinfo is None else value.replace(tzinfo=None)
    if type(value) is dt.time and (abs(offset) > _TIME_OFFSET or offset.microseconds):
        raise SqlFailed(
            f"SQL parameter {path} is a time whose UTC offset is past 15:59:59 or has a"
            f" fraction of a second, which DuckDB's TIME WITH TIME ZONE cannot hold {_DOCS}"
        )
    return value


_NONE = object()  # what `_based` answers for a value of no type it knows


def _based(value: Any) -> Any:
    """The value of `value`'s base type among `TYPES` (or its list or dict), `_NONE` if it
    has none. An enum is its value; bool comes before int, datetime before date."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    for base, plain in _BASES:
        if isinstance(value, base):
            return plain(value)
    return _NONE


def _datetime(v: dt.datetime) -> dt.datetime:
    return dt.datetime(
        v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.tzinfo, fold=v.fold
    )


_BASES: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (bool, bool),
    (int, int),
    (float, float),
    (str, str.__str__),
    (uuid.UUID, lambda v: uuid.UUID(int=v.int)),
    (dt.datetime, _datetime),
    (dt.date, lambda v: dt.date(v.year, v.month, v.day)),
    (dt.time, lambda v: dt.time(v.hour, v.minute, v.second, v.microsecond, v.tzinfo, fold=v.fold)),
    (dt.timedelta, lambda v: dt.timedelta(v.days, v.seconds, v.microseconds)),
    (decimal.Decimal, decimal.Decimal),
    (list, list),
    (tuple, list),
    (dict, dict),
)
"""Each base type, and how a value of a subclass of it becomes one of it."""


def _keyed(path: str, key: object) -> str:
    """`_child` of a dict's key, which must be a str."""
    if not isinstance(key, str):
        raise SqlFailed(f"SQL parameter {path} has a key of type {type(key).__name__} {_DOCS}")
    return _child(path, key)


def to_wire(params: object) -> tuple[Any, Any]:
    """`params` checked, as JSON values, and their ``"types"`` (None if all are plain JSON)."""
    given = checked(params)
    return (None, None) if given is None else _encode(given)


def _encode(value: Any) -> tuple[Any, Any]:
    """`value` (checked) as a JSON value and its type: None where it is plain JSON."""
    kind = type(value)
    if kind is float:
        text = _float(value)
        return (value, None) if text is None else (text, "float")
    if kind in _ENCODE:
        tag, encode = _ENCODE[kind]
        return encode(value), tag
    if kind in (list, tuple):
        values, types = zip(*map(_encode, value), strict=True) if value else ((), ())
        return list(values), (list(types) if any(t is not None for t in types) else None)
    if kind is dict:
        encoded = {key: _encode(item) for key, item in value.items()}
        tags = {key: tag for key, (_, tag) in encoded.items() if tag is not None}
        return {key: json for key, (json, _) in encoded.items()}, tags or None
    return value, None


def from_wire(params: Any, types: Any) -> list[Any] | dict[str, Any] | None:
    """The Python values of a request's ``"params"`` and ``"types"``, checked as `checked`
    checks an embedded caller's (`SqlFailed` for a type that does not fit its value)."""
    if types is not None and not isinstance(types, (list, dict)):
        raise SqlFailed(f"SQL parameter types do not have the shape of the parameters {_DOCS}")
    return checked(_decode(params, types, "", 0))


def values_within(params: Any, most: int) -> bool:
    """Does the JSON of ``"params"`` hold at most `most` values (each item of a list or dict
    counts, and each list or dict), and make STRUCTs of at most `most` fields in all?
    DuckDB gives each dict of a list (at any depth of one parameter) the fields of every
    dict there: 8,000 dicts of one key each, all different, are 64 million fields, bound
    in 55 s. Counted without rebuilding them, and no further than `most`: a service refuses
    more before it spends time on them (DuckDB's bind of them cannot be interrupted)."""
    if not isinstance(params, list | dict):
        return True  # not parameters at all: `from_wire` says so
    if len(params) > most:
        return False
    items = params.items() if isinstance(params, dict) else enumerate(params)
    todo: list[tuple[Any, tuple[Any, ...]]] = [(value, (key,)) for key, value in items]
    count, fields = len(params), 0
    dicts: dict[tuple[Any, ...], tuple[int, set[str]]] = {}  # where: how many, their keys
    while todo and count <= most and fields <= most:
        value, where = todo.pop()
        if not isinstance(value, list | dict):
            continue
        count += len(value)
        if count > most:
            break
        if isinstance(value, list):
            inside = (*where, None)  # the items of a list make one column
            todo.extend((item, inside) for item in value)
            continue
        seen, keys = dicts.setdefault(where, (0, set()))
        fields -= seen * len(keys)
        keys.update(value)
        dicts[where] = (seen + 1, keys)
        fields += (seen + 1) * len(keys)
        todo.extend((item, (*where, key)) for key, item in value.items())
    return count <= most and fields <= most


def _decode(value: Any, tag: Any, path: str, depth: int) -> Any:
    if tag is None:
        return value
    if depth > MAX_DEPTH:
        raise SqlFailed(f"SQL parameter {path} nests deeper than {MAX_DEPTH} {_DOCS}")
    if isinstance(tag, str):
        if tag not in _DECODE:
            raise SqlFailed(f"SQL parameter {path} has an unknown type {tag[:40]!r} {_DOCS}")
        try:
            return _decode_one(value, tag)
        except (TypeError, ValueError, ArithmeticError, binascii.Error):
            said = f"SQL parameter {path} is not the JSON of type {tag!r} {_DOCS}"
            raise SqlFailed(said) from None
    if isinstance(value, list) and isinstance(tag, list) and len(tag) == len(value):
        return [_decode(v, tag[k], _child(path, k), depth + 1) for k, v in enumerate(value)]
    if isinstance(value, dict) and isinstance(tag, dict) and tag.keys() <= value.keys():
        return {
            key: _decode(v, tag.get(key), _child(path, key), depth + 1) for key, v in value.items()
        }
    where = f"SQL parameter {path}" if path else "SQL parameters"
    raise SqlFailed(f"{where}: the types do not have the shape of the values {_DOCS}")


def _utf8(text: str, path: str) -> None:
    """Refuse a str DuckDB cannot take (and JSON cannot carry): one with a lone surrogate."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise SqlFailed(
            f"SQL parameter {path} is a str that is not UTF-8 (a lone surrogate at {exc.start})"
            f" {_DOCS}"
        ) from None


def _child(path: str, key: int | str) -> str:
    """The name of an item of `path`: ``1``, ``$name`` at the top, then ``1[0]``, ``$x['a']``
    (a name cut at 40 characters)."""
    if isinstance(key, str) and len(key) > 40:
        key = key[:40] + "..."
    if not path:
        return str(key + 1) if isinstance(key, int) else f"${key}"
    return f"{path}[{key!r}]"


def _decode_one(value: Any, tag: str) -> Any:
    """One tagged value: its JSON form must be the one `_encode` makes for the tag."""
    wanted = int if tag == "interval" else str
    if type(value) is not wanted:
        raise TypeError(tag)
    decoded = _DECODE[tag](value)
    if tag == "float" and math.isfinite(decoded):
        raise ValueError(tag)  # a finite float is a JSON number
    return decoded
