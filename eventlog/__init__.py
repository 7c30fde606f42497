"""llm-memory-graph's write side: a durable, segmented, zstd-compressed event log for agents.

import eventlog
with eventlog.open("./data") as log:
    s = log.create_session(metadata={"user": "42"})
    p = log.add_prompt(s.id, "What is Rust?")
    log.add_response(p, "A systems language.", eventlog.TokenUsage(5, 30))
"""

from typing import TYPE_CHECKING

from ._commands import AppendOptions
from ._lazy import export_lazily
from ._reader import Cursor, Record
from ._store import Appended
from .errors import (
    AppendConflict,
    BrokenReference,
    CorruptionError,
    DeletedNodeReference,
    EventLogError,
    IdempotencyKeyReused,
    InvalidEvent,
    InvalidVariable,
    LogClosed,
    LogFailed,
    MissingVariable,
    ServiceError,
    StorageFull,
    StoreLocked,
    TornTailTruncated,
    UnknownNode,
    UnsafeStore,
    WrongNodeKind,
)
from .events import (
    EdgeType,
    ErasureApplied,
    Event,
    EventBase,
    NodeKind,
    PromptMetadata,
    TokenUsage,
    VariableSpec,
)
from .log import AsyncEventLog, EventLog, Stats, open, open_async
from .options import Durability, Options
from .verify import Problem, verify

__all__ = [
    "JOURNAL_FILE",
    "AppendConflict",
    "AppendOptions",
    "Appended",
    "AsyncEventLog",
    "AsyncRemoteLog",
    "BackupInfo",
    "BackupRun",
    "BrokenReference",
    "CorruptionError",
    "Cursor",
    "DeletedNodeReference",
    "Due",
    "Durability",
    "EdgeType",
    "Erasure",
    "ErasureApplied",
    "ErasureRunning",
    "Event",
    "EventBase",
    "EventLog",
    "EventLogError",
    "IdempotencyKeyReused",
    "Imported",
    "InvalidEvent",
    "InvalidVariable",
    "LogClosed",
    "LogFailed",
    "MissingVariable",
    "NodeKind",
    "Options",
    "Origin",
    "Problem",
    "PromptMetadata",
    "Record",
    "RemoteLog",
    "RetentionPolicy",
    "Selected",
    "Selector",
    "ServiceError",
    "Stats",
    "StorageFull",
    "StoreLocked",
    "TokenUsage",
    "TornTailTruncated",
    "UnknownNode",
    "UnsafeStore",
    "VariableSpec",
    "WrongNodeKind",
    "backup",
    "backup_info",
    "connect",
    "connect_async",
    "copy_prefix",
    "due",
    "end_erasure",
    "erase",
    "export_events",
    "import_events",
    "open",
    "open_async",
    "origin",
    "pending_erasure",
    "read_export",
    "restore",
    "resume_erasure",
    "retention",
    "select",
    "set_retention",
    "verify",
]

if TYPE_CHECKING:  # loaded on first use (below): the lifecycle, and the client (httpx2)
    from ._backup import BackupInfo, BackupRun, backup, backup_info, restore
    from ._client import AsyncRemoteLog, RemoteLog, connect, connect_async
    from ._copy import Origin, copy_prefix, origin
    from ._erase import (
        JOURNAL_FILE,
        Erasure,
        ErasureRunning,
        Selected,
        Selector,
        end_erasure,
        erase,
        pending_erasure,
        resume_erasure,
        select,
    )
    from ._export import Imported, export_events, import_events, read_export
    from ._retention import Due, RetentionPolicy, due, retention, set_retention

export_lazily(
    __name__,
    {  # the lifecycle and the client load on first use: `lmg --help` starts without them
        "._backup": ("BackupInfo", "BackupRun", "backup", "backup_info", "restore"),
        "._client": ("AsyncRemoteLog", "RemoteLog", "connect", "connect_async"),
        "._copy": ("Origin", "copy_prefix", "origin"),
        "._erase": (
            "JOURNAL_FILE",
            "Erasure",
            "ErasureRunning",
            "Selected",
            "Selector",
            "end_erasure",
            "erase",
            "pending_erasure",
            "resume_erasure",
            "select",
        ),
        "._export": ("Imported", "export_events", "import_events", "read_export"),
        "._retention": ("Due", "RetentionPolicy", "due", "retention", "set_retention"),
    },
)
