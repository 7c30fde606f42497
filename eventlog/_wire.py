"""Events as JSON: the one codec of `lmg append`, `lmg tail` and the service's log routes.

A request is an event (``{"type": "prompt.added", "session_id": ..., "content": ...}``), a list
of events (one all-or-nothing append), or ``{"events": [...], "idempotency_key": ...,
"expect_session_lsn": ..., "expect_store_lsn": ...}``. Ids of new nodes are made if absent.
A record goes out as one JSON object: its LSN, its time as ISO 8601 (``ts_iso``), then the
event's own fields, the shape a request reads (it ignores ``lsn`` and ``ts_iso``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from . import events as ev
from ._ids import new_id
from ._limits import MAX_DEPTH
from ._reader import Record
from ._time import iso_time
from .errors import InvalidEvent

__all__ = ["decode_json", "parse_request", "record_json"]

_JSON = msgspec.json.Encoder()


def decode_json(data: bytes | str) -> Any:
    """JSON, or `InvalidEvent` saying why not (including nesting too deep to parse)."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"not JSON ({exc})") from None
    except RecursionError:
        raise InvalidEvent(
            f"nested too deeply to parse (the limit is {MAX_DEPTH} levels)"
        ) from None


def parse_request(data: Any) -> tuple[list[ev.EventBase], dict[str, Any]]:
    """The events and append options of one decoded request; `InvalidEvent` if it is none."""
    options: dict[str, Any] = {}
    if isinstance(data, dict) and "events" in data:
        options = {k: v for k, v in data.items() if k != "events"}
        data = data["events"]
    items = data if isinstance(data, list) else [data]
    types = ev.event_types()
    events: list[ev.EventBase] = []
    for item in items:
        if not isinstance(item, dict) or item.get("type") not in types:
            given = item.get("type") if isinstance(item, dict) else None
            raise InvalidEvent(
                "not an event: "
                + (f"unknown type {given!r}" if given else 'no "type"')
                + f"; known types: {', '.join(sorted(types))}"
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
