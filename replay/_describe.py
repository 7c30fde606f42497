"""A diff as text a person reads: names instead of ids, times instead of nanoseconds, long
strings elided with their length said, long rows wrapped one field a line.

`Diff.text()` and `lmg diff` print this; `--format json` and the `Diff` itself keep every
value whole. Nothing here is cut silently: an elided string ends with "…" and its length.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ._points import datetime_of

if TYPE_CHECKING:
    from .diff import Diff

__all__ = ["describe"]

_SHOWN = 60  # characters of a long value shown before "… (N chars)"
_LINE = 100  # a row longer than this is written one field a line
_BOOKKEEPING = frozenset({"lsn", "ts", "occurred_at", "updated_ts"})  # said by the events
_JSON = msgspec.json.Encoder()


def describe(d: Diff, keys: Mapping[str, tuple[str, ...]], rows: int) -> Iterator[str]:
    """The lines of `d`: its events, then each changed table, `rows` of each kind at most."""
    names = {str(k): v for k, v in d.names.items()}
    yield f"from LSN {d.start} to LSN {d.stop}: {_plural(len(d.events), 'event')}"
    for record in d.events[:rows]:
        fields = msgspec.to_builtins(record.event)
        kind = fields.pop("type")
        fields.pop("ts", None)
        yield from _entry(f"  {record.lsn}  {kind}", _fields(fields, names, skip=()))
    yield from _more(len(d.events) - rows, "event")
    for name in d.changed_tables():
        table, key = d.tables[name], keys[name]
        yield (
            f"{name}: {len(table.added)} added, {len(table.removed)} removed, "
            f"{len(table.changed)} changed"
        )
        for sign, listed in (("+", table.added), ("-", table.removed)):
            for row in listed[:rows]:
                label, skip = _label(row, key, names)
                yield from _entry(f"  {sign} {label}", _fields(row, names, skip))
            yield from _more(len(listed) - rows, "row")
        for change in table.changed[:rows]:
            label, _ = _label(change.after, key, names)
            moved = [
                f"{c} {_value(c, change.before.get(c), names)} -> "
                f"{_value(c, change.after[c], names)}"
                for c in change.columns
            ]
            yield from _entry(f"  ~ {label}:", moved)
        yield from _more(len(table.changed) - rows, "changed row")
    if not d.changed_tables():
        yield "no table changed"


def _entry(head: str, fields: list[str]) -> Iterator[str]:
    line = f"{head}  {'  '.join(fields)}" if fields else head
    if len(line) <= _LINE:
        yield line
        return
    yield head
    for field in fields:
        yield f"      {field}"


def _more(count: int, noun: str) -> Iterator[str]:
    if count > 0:
        yield f"  ... {_plural(count, 'more ' + noun)}"


def _label(
    row: dict[str, Any], key: tuple[str, ...], names: dict[str, str]
) -> tuple[str, tuple[str, ...]]:
    """What a row is called, and the columns that the label already says."""
    if isinstance(row.get("name"), str):
        version = f" v{row['version']}" if "version" in key else ""
        return f"{row['name']}{version}", (*key, "name", "version")
    return " ".join(_value(k, row[k], names) for k in key), key


def _fields(row: dict[str, Any], names: dict[str, str], skip: tuple[str, ...]) -> list[str]:
    shown = []
    for column, value in row.items():
        if value is None or column in skip or column in _BOOKKEEPING:
            continue
        text = _value(column, value, names)
        named = column.endswith("_id") and text == names.get(str(value))
        shown.append(f"{column.removesuffix('_id') if named else column}={text}")
    return shown


def _value(column: str, value: Any, names: dict[str, str]) -> str:
    if value is None:
        return "null"
    if isinstance(value, uuid.UUID) or (column == "id" or column.endswith("_id")):
        return names.get(str(value), str(value))
    if isinstance(value, int) and (column == "ts" or column.endswith("_ts")):
        return datetime_of(value).isoformat().replace("+00:00", "Z")
    text = _json_text(value, names) if isinstance(value, str) else _JSON.encode(value).decode()
    if len(text) > _SHOWN + 20:
        length = len(value) if isinstance(value, str) else len(text)
        return f"{text[:_SHOWN]}… ({length} chars)"
    return text


def _json_text(value: str, names: dict[str, str]) -> str:
    """A JSON column (metadata, properties) compactly, its `..._id` members by name; any
    other string quoted."""
    if value[:1] in ("{", "["):
        try:
            data = msgspec.json.decode(value)
        except msgspec.DecodeError:
            pass
        else:
            if isinstance(data, dict):
                data = {
                    k: names.get(v, v) if k.endswith("_id") and isinstance(v, str) else v
                    for k, v in data.items()
                }
            return _JSON.encode(data).decode()
    return _JSON.encode(value).decode()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
