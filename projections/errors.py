"""The projections' errors: one root, each subclass raised in one situation."""

from __future__ import annotations

from eventlog import LogClosed

__all__ = [
    "BadArgument",
    "DatabaseBusy",
    "FoldFailed",
    "GraphClosed",
    "PoisonEvent",
    "ProjectionError",
    "ProjectorBusy",
    "SchemaMismatch",
    "SqlFailed",
    "SqlRefused",
]


class ProjectionError(Exception):
    """Root of every error the projections raise (DuckDB's own errors are translated)."""


class BadArgument(ProjectionError, ValueError, TypeError):
    """A read was called with a value of the wrong type or out of range (nothing was read).

    It is also a ValueError and a TypeError, so code written for either keeps working."""


class GraphClosed(ProjectionError, LogClosed):
    """A read of a graph after `close`, embedded or through `MemoryGraph.connect`. Also a
    `LogClosed`, which the graph's appends raise after `close`."""


class ProjectorBusy(ProjectionError):
    """Another process or handle already folds into this database: one folder per database."""


class DatabaseBusy(ProjectionError):
    """The database stayed held by another process for longer than the caller would wait."""


class FoldFailed(ProjectionError):
    """DuckDB could not fold or commit a batch (a full disk, a read-only file, no memory left):
    nothing of the batch is applied, and the next fold, once the cause is gone, retries it."""


class SchemaMismatch(ProjectionError):
    """The database was built by another schema version: rebuild it (`lmg project --rebuild`)."""


class SqlRefused(ProjectionError):
    """The caller's SQL tried something the read-only SQL sandbox refuses (a write, a file,
    an extension, a setting; docs/sql.md): nothing of it ran."""


class SqlFailed(ProjectionError):
    """DuckDB could not run the caller's SQL (a syntax error, an unknown table or column, a
    value it could not cast, a parameter it cannot bind, an interrupt): DuckDB's first line,
    without a path of the host; or parameters refused (docs/sql.md#parameters), one line
    naming the parameter and its type. Its cause (`__cause__`) is DuckDB's own error, or
    none: from `RemoteGraph`, and for a refused parameter."""


class PoisonEvent(ProjectionError):
    """An event the fold cannot apply: everything before it is folded, the checkpoint stays."""

    def __init__(self, lsn: int, event_type: str, reason: str) -> None:
        super().__init__(f"cannot fold event {lsn} ({event_type}): {reason}")
        self.lsn = lsn
        self.event_type = event_type
        self.reason = reason
