"""The event log's errors: one root, a few specific branches.

Callers catch `EventLogError` for anything the log raises, or a specific subclass. Every error
that rejects an append is raised before anything is written: the log is unchanged.
"""

from __future__ import annotations

__all__ = [
    "AppendConflict",
    "BrokenReference",
    "CorruptionError",
    "DeletedNodeReference",
    "EventLogError",
    "IdempotencyKeyReused",
    "InvalidEvent",
    "InvalidVariable",
    "LogClosed",
    "LogFailed",
    "MissingVariable",
    "ServiceError",
    "StorageFull",
    "StoreLocked",
    "TornTailTruncated",
    "UnknownNode",
    "UnsafeStore",
    "WrongNodeKind",
]


def _a(noun: str) -> str:
    noun = noun.replace("_", " ")
    return ("an " if noun[0] in "aeiou" else "a ") + noun


class EventLogError(Exception):
    """Root of every error the event log raises."""


class InvalidEvent(EventLogError, ValueError):
    """An argument or event has a wrong type or value; raised before anything is written."""


class BrokenReference(InvalidEvent):
    """An event refers to something the log does not hold in the required state."""


class UnknownNode(BrokenReference):
    """An event names a node id that no event in the log created."""

    def __init__(self, node_id: object, expected: str) -> None:
        super().__init__(f"unknown {expected} {node_id}: no such node in the log")
        self.node_id = node_id
        self.expected = expected


class WrongNodeKind(BrokenReference):
    """An event names a node of another kind than it needs (a session where a prompt is due)."""

    def __init__(self, node_id: object, expected: str, actual: str) -> None:
        super().__init__(f"node {node_id} is {_a(actual)}, not {_a(expected)}")
        self.node_id = node_id
        self.expected = expected
        self.actual = actual


class DeletedNodeReference(BrokenReference):
    """An event names a node that a `node.deleted` event has removed."""

    def __init__(self, node_id: object) -> None:
        super().__init__(f"node {node_id} was deleted")
        self.node_id = node_id


class MissingVariable(BrokenReference):
    """A prompt instantiates a template without binding one of its required variables."""

    def __init__(self, template_id: object, missing: list[str]) -> None:
        names = ", ".join(missing)
        super().__init__(f"template {template_id} requires variables not bound: {names}")
        self.template_id = template_id
        self.missing = missing


class InvalidVariable(BrokenReference):
    """A value bound to a template variable is not of its type hint or does not match its
    pattern; names the template and the variable."""

    def __init__(self, template_id: object, variable: str, reason: str) -> None:
        super().__init__(f"template {template_id}, variable {variable}: {reason}")
        self.template_id = template_id
        self.variable = variable
        self.reason = reason


class AppendConflict(EventLogError):
    """An append's expected last LSN (of a session or of the store) is stale; nothing written."""

    def __init__(self, scope: str, expected: int | None, actual: int | None) -> None:
        super().__init__(f"conflict on {scope}: expected last LSN {expected}, log has {actual}")
        self.scope = scope
        self.expected = expected
        self.actual = actual


class IdempotencyKeyReused(EventLogError):
    """An idempotency key already stored names a different request (other event types or count)."""


class StoreLocked(EventLogError):
    """The store is held in an incompatible way (another process has it open exclusively)."""


class UnsafeStore(EventLogError):
    """A store file is a symbolic link: the store is refused, nothing is written through it."""


class StorageFull(EventLogError, OSError):
    """The disk is full or the file size limit was hit; the partial frame was removed."""


class LogFailed(EventLogError):
    """An fsync or write failed in a way that leaves durability unknown; the log is fail-stopped.

    Raised by every later append on the same handle: reopen the store, which recovers from
    what is on disk, and retry with the same idempotency key if the outcome matters.
    """


class LogClosed(EventLogError):
    """The log handle was closed."""


class ServiceError(EventLogError):
    """A client of `lmg serve` (`eventlog.connect`) got no answer, or a refusal of the
    service's own (no such store, a token without the scope, a limit, shutting down): `status`
    is the HTTP status (0: no answer) and `code` the error's stable code (docs/service.md)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class CorruptionError(EventLogError):
    """Stored bytes fail their checks somewhere recovery may not repair; names the place."""

    def __init__(self, message: str, path: str, offset: int | None, lsn: int | None) -> None:
        where = f"{path}" + (f" at offset {offset}" if offset is not None else "")
        where += f" (LSN {lsn})" if lsn is not None else ""
        super().__init__(f"{message}: {where}")
        self.path = path
        self.offset = offset
        self.lsn = lsn


class TornTailTruncated(UserWarning):
    """Recovery cut a torn tail off the last segment: bytes no fsync had acknowledged."""
