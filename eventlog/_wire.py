"""Events as JSON: the one codec of `lmg append`, `lmg tail` and the service's log routes.

A request is an event (``{"type": "prompt.added", "session_id": ..., "content": ...}``), a list
of events (one all-or-nothing append), or ``{"events": [...], "idempotency_key": ...,
"expect_session_lsn": ..., "expect_store_lsn": ...}``. Ids of new nodes are made if absent.
A record goes out as one JSON object: its LSN, its time as ISO 8601 (``ts_iso``), then the
event's own fields, the shape a request reads (it ignores ``lsn`` and ``ts_iso``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from . import events as ev
from ._ids import new_id
from ._limits import MAX_DEPTH
from ._reader import Record
from ._time import iso_time
from .errors import (
    AppendConflict,
    BrokenReference,
    DeletedNodeReference,
    EventLogError,
    IdempotencyKeyReused,
    InvalidEvent,
    InvalidVariable,
    LogFailed,
    MissingVariable,
    StorageFull,
    UnknownNode,
    WrongNodeKind,
)

__all__ = [
    "DETAILS",
    "ERRORS",
    "decode_json",
    "error_code",
    "error_details",
    "parse_request",
    "rebuilt",
    "record_json",
]

ERRORS: dict[str, type[EventLogError]] = {
    "unknown_node": UnknownNode,
    "wrong_node_kind": WrongNodeKind,
    "deleted_node": DeletedNodeReference,
    "missing_variable": MissingVariable,
    "invalid_variable": InvalidVariable,
    "broken_reference": BrokenReference,
    "invalid_event": InvalidEvent,
    "append_conflict": AppendConflict,
    "idempotency_key_reused": IdempotencyKeyReused,
    "storage_full": StorageFull,
    "log_failed": LogFailed,
}
"""The service's code for each error an append may meet, most specific first: the service
answers with it, the client (`eventlog.connect`) raises the same class again."""

DETAILS = (  # the fields of an error that travel beside its message (`error_details`)
    "node_id",
    "expected",
    "actual",
    "scope",
    "template_id",
    "missing",
    "variable",
    "reason",
)

_JSON = msgspec.json.Encoder()
_E = TypeVar("_E", bound=Exception)
_TYPES = ev.event_types()  # built once: every request looks its events' types up here
_ERASURE = ev.tag_of(ev.ErasureApplied)


_ANY = msgspec.json.Decoder()


def decode_json(
    data: bytes | str, decoder: msgspec.json.Decoder[Any] = _ANY, what: str = "JSON"
) -> Any:
    """JSON (of the type `decoder` reads), or `InvalidEvent` saying why not, `what` naming
    what was expected (including nesting too deep to parse)."""
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"not {what} ({exc})") from None
    except RecursionError:
        raise InvalidEvent(
            f"nested too deeply to parse (the limit is {MAX_DEPTH} levels)"
        ) from None


def parse_request(data: Any) -> tuple[list[ev.EventBase], dict[str, Any]]:
    """The events and append options of one decoded request; `InvalidEvent` if it is none.

    An object with ``"events"`` is the wrapper of a request's options unless it has a
    ``"type"``: a `span.recorded` line of `lmg tail` (whose span events are ``"events"``)
    was read as a wrapper, and refused as 'no "type"'. An `erasure.applied` is written by
    an erasure only: appended, it would claim an erasure that never ran."""
    options: dict[str, Any] = {}
    if isinstance(data, dict) and "events" in data and "type" not in data:
        options = {k: v for k, v in data.items() if k != "events"}
        data = data["events"]
    items = data if isinstance(data, list) else [data]
    types = _TYPES
    events: list[ev.EventBase] = []
    for item in items:
        if not isinstance(item, dict) or item.get("type") not in types:
            given = item.get("type") if isinstance(item, dict) else None
            raise InvalidEvent(
                "not an event: "
                + (f"unknown type {given!r}" if given else 'no "type"')
                + f"; known types: {', '.join(sorted(types))}"
            )
        if item["type"] == _ERASURE:
            raise InvalidEvent(
                f"{_ERASURE} is recorded by an erasure (lmg erase), never appended: an appended"
                " one would claim an erasure that did not run"
            )
        cls = types[item["type"]]
        fields = {**item, "id": str(new_id())} if _needs_id(cls, item) else item
        try:
            events.append(msgspec.convert(fields, cls, strict=False))
        except msgspec.ValidationError as exc:
            raise InvalidEvent(str(exc)) from None
    return events, options


def record_json(record: Record) -> bytes:
    """One JSON object (no newline): ``{"lsn": N, "ts_iso": TIME, "type": ..., ...}``."""
    body = _JSON.encode(record.event)
    head = f'{{"lsn":{record.lsn},"ts_iso":"{iso_time(record.event.ts)}",'
    return head.encode() + body[1:]


def _needs_id(cls: type[ev.EventBase], item: dict[str, Any]) -> bool:
    return "id" in cls.__struct_fields__ and "id" not in item


def error_code(exc: EventLogError) -> str:
    """The code of `exc`'s most specific class in `ERRORS` (``internal`` if none)."""
    return next((code for code, cls in ERRORS.items() if isinstance(exc, cls)), "internal")


def error_details(exc: EventLogError) -> dict[str, Any]:
    """The error's own fields (ids, LSNs, names; never a path) as JSON values."""
    fields = {name: getattr(exc, name) for name in DETAILS if hasattr(exc, name)}
    return {k: v if v is None or isinstance(v, int | list) else str(v) for k, v in fields.items()}


def rebuilt(cls: type[_E], message: str, details: Mapping[str, Any]) -> _E:
    """An instance of `cls` with `message` and the fields `error_details` gave (ids as UUIDs
    again), made without its constructor: the message is already worded."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    for name, value in details.items():
        if name not in DETAILS:
            continue  # only the fields the service sends, never an attribute of its choosing
        if name.endswith("_id") and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = uuid.UUID(value)  # noqa: PLW2901 (the value, typed again)
        setattr(exc, name, value)
    return exc
