"""Lean twins of event types, for readers that want columns, not objects: the fold.

Decoding an event into its public type costs most of a read: every id becomes a
`uuid.UUID`, a Python object made field by field. The log stores ids as the 16 bytes of
MessagePack ``bin`` (``uuid_format="bytes"``), which is exactly what a DuckDB ``UUID``
column is loaded from. A lean twin is the same struct, same tag, same fields and defaults,
with each id field typed ``bytes``: it decodes from the same bytes about three times faster
and its ids go into Arrow as they are (`lean_decoder`). Nothing public ever holds one:
`full_event` turns one back into the public event when a caller needs that.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any, Union

import msgspec

from . import events as ev
from ._format import ENCODER

__all__ = ["full_event", "is_lean", "lean_decoder", "lean_twin", "uuid_fields"]

_ID_TYPES: dict[Any, Any] = {
    uuid.UUID: bytes,
    uuid.UUID | None: bytes | None,
    list[uuid.UUID]: list[bytes],
}
_TWINS: dict[type[ev.EventBase], type[msgspec.Struct]] = {}
_LEAN: set[type[msgspec.Struct]] = set()
_FULL = msgspec.msgpack.Decoder(ev.Event)


def lean_twin(cls: type[ev.EventBase]) -> type[msgspec.Struct]:
    """`cls` with its id fields typed ``bytes`` (16 bytes, big-endian, as `uuid.UUID.bytes`)."""
    twin = _TWINS.get(cls)
    if twin is None:
        fields: list[tuple[str, Any, Any]] = []
        for f in msgspec.structs.fields(cls):
            default = (
                f.default
                if f.default is not msgspec.NODEFAULT
                else msgspec.field(default_factory=f.default_factory)
                if f.default_factory is not msgspec.NODEFAULT
                else msgspec.NODEFAULT
            )
            fields.append((f.name, _ID_TYPES.get(f.type, f.type), default))
        twin = msgspec.defstruct(
            f"Lean{cls.__name__}",
            [(n, t) if d is msgspec.NODEFAULT else (n, t, d) for n, t, d in fields],
            tag_field="type",
            tag=ev.tag_of(cls),
            omit_defaults=True,
            kw_only=True,
            gc=False,
            module=__name__,
        )
        _TWINS[cls] = twin
        _LEAN.add(twin)
    return twin


def is_lean(event: object) -> bool:
    return event.__class__ in _LEAN


@functools.cache
def uuid_fields(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields of a lean twin that hold one id (``bytes`` or None)."""
    full = next(c for c, t in _TWINS.items() if t is cls)
    return tuple(
        f.name for f in msgspec.structs.fields(full) if f.type in (uuid.UUID, uuid.UUID | None)
    )


@functools.cache
def lean_decoder(lean: frozenset[type[ev.EventBase]]) -> msgspec.msgpack.Decoder[Any]:
    """A decoder of one stored event: the types in `lean` as their twins, the rest as the
    public types."""
    members = tuple(lean_twin(c) if c in lean else c for c in ev.Event.__args__)
    union: Any = Union[members]  # noqa: UP007 (a union built at run time)
    return msgspec.msgpack.Decoder(union)


def full_event(event: Any) -> ev.EventBase:
    """The public event a lean twin stands for (the same event as read); others as they are."""
    full: ev.EventBase = (
        event if event.__class__ not in _LEAN else _FULL.decode(ENCODER.encode(event))
    )
    return full
