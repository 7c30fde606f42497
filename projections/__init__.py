"""llm-memory-graph's read side: the event log folded into DuckDB tables, and MemoryGraph.

from projections import MemoryGraph
with MemoryGraph.open("./data") as g:
    s = g.create_session()
    p = g.add_prompt(s.id, "What is Rust?")
    g.get_node(p)                      # a typed Prompt, folded on read
    g.sql("SELECT * FROM agent_stats").fetchall()
"""

from typing import TYPE_CHECKING

from eventlog._lazy import export_lazily

if TYPE_CHECKING:  # the names as mypy sees them; at run time, imported on first use
    from ._backup import backup, restore
    from ._database import DATABASE_FILE
    from ._erasure import erase, resume_erasure
    from ._export import SESSION_FORMAT, export_parquet, export_sessions, session_document
    from ._fold import Batch, implicit_edge_id
    from ._folder import BATCH_BYTES, BATCH_EVENTS, fold_available, fold_records
    from ._history import HistoryChanged
    from ._reads import Hop, Impact, NotFound
    from ._remote import AsyncRemoteGraph, AsyncRemoteQuery, Forked, RemoteGraph, RemoteQuery
    from ._sandbox import SANDBOX, sandbox
    from ._schema import (
        SCHEMA_VERSION,
        TABLE_KEYS,
        TABLE_NAMES,
        SchemaRepaired,
        checkpoint,
        ensure_schema,
    )
    from .errors import (
        BadArgument,
        DatabaseBusy,
        FoldFailed,
        GraphClosed,
        PoisonEvent,
        ProjectionError,
        ProjectorBusy,
        SchemaMismatch,
        SqlFailed,
        SqlRefused,
    )
    from .graph_view import GraphReads, GraphView
    from .memory_graph import AsyncMemoryGraph, AsyncQuery, GraphStats, MemoryGraph
    from .nodes import (
        Agent,
        Edge,
        GenericNode,
        Node,
        Prompt,
        Response,
        Session,
        Template,
        ToolInvocation,
        Turn,
    )
    from .projector import Progress, Projector, connect, rebuild
    from .query import Query
    from .snapshots import SnapshotInfo, SnapshotPolicy, Snapshots, SnapshotSkipped

__all__ = [
    "BATCH_BYTES",
    "BATCH_EVENTS",
    "DATABASE_FILE",
    "SANDBOX",
    "SCHEMA_VERSION",
    "SESSION_FORMAT",
    "TABLE_KEYS",
    "TABLE_NAMES",
    "Agent",
    "AsyncMemoryGraph",
    "AsyncQuery",
    "AsyncRemoteGraph",
    "AsyncRemoteQuery",
    "BadArgument",
    "Batch",
    "DatabaseBusy",
    "Edge",
    "FoldFailed",
    "Forked",
    "GenericNode",
    "GraphClosed",
    "GraphReads",
    "GraphStats",
    "GraphView",
    "HistoryChanged",
    "Hop",
    "Impact",
    "MemoryGraph",
    "Node",
    "NotFound",
    "PoisonEvent",
    "Progress",
    "ProjectionError",
    "Projector",
    "ProjectorBusy",
    "Prompt",
    "Query",
    "RemoteGraph",
    "RemoteQuery",
    "Response",
    "SchemaMismatch",
    "SchemaRepaired",
    "Session",
    "SnapshotInfo",
    "SnapshotPolicy",
    "SnapshotSkipped",
    "Snapshots",
    "SqlFailed",
    "SqlRefused",
    "Template",
    "ToolInvocation",
    "Turn",
    "backup",
    "checkpoint",
    "connect",
    "ensure_schema",
    "erase",
    "export_parquet",
    "export_sessions",
    "fold_available",
    "fold_records",
    "implicit_edge_id",
    "rebuild",
    "restore",
    "resume_erasure",
    "sandbox",
    "session_document",
]

export_lazily(
    __name__,
    {
        "._backup": ("backup", "restore"),
        "._database": ("DATABASE_FILE",),
        "._erasure": ("erase", "resume_erasure"),
        "._export": ("SESSION_FORMAT", "export_parquet", "export_sessions", "session_document"),
        "._fold": ("Batch", "implicit_edge_id"),
        "._folder": ("BATCH_BYTES", "BATCH_EVENTS", "fold_available", "fold_records"),
        "._history": ("HistoryChanged",),
        "._reads": ("Hop", "Impact", "NotFound"),
        "._sandbox": ("SANDBOX", "sandbox"),
        "._schema": (
            "SCHEMA_VERSION",
            "TABLE_KEYS",
            "TABLE_NAMES",
            "SchemaRepaired",
            "checkpoint",
            "ensure_schema",
        ),
        ".errors": (
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
        ),
        ".graph_view": ("GraphReads", "GraphView"),
        ".memory_graph": ("AsyncMemoryGraph", "AsyncQuery", "GraphStats", "MemoryGraph"),
        ".nodes": (
            "Agent",
            "Edge",
            "GenericNode",
            "Node",
            "Prompt",
            "Response",
            "Session",
            "Template",
            "ToolInvocation",
            "Turn",
        ),
        ".projector": ("Progress", "Projector", "connect", "rebuild"),
        ".query": ("Query",),
        "._remote": (
            "AsyncRemoteGraph",
            "AsyncRemoteQuery",
            "Forked",
            "RemoteGraph",
            "RemoteQuery",
        ),
        ".snapshots": ("SnapshotInfo", "SnapshotPolicy", "Snapshots", "SnapshotSkipped"),
    },
)
