"""llm-memory-graph's read side: the event log folded into DuckDB tables, and MemoryGraph.

from projections import MemoryGraph
with MemoryGraph.open("./data") as g:
    s = g.create_session()
    p = g.add_prompt(s.id, "What is Rust?")
    g.get_node(p)                      # a typed Prompt, folded on read
    g.sql("SELECT * FROM agent_stats").fetchall()
"""

from ._database import DATABASE_FILE
from ._fold import implicit_edge_id
from ._reads import Hop, Impact, NotFound
from ._schema import SCHEMA_VERSION, TABLE_NAMES
from .errors import (
    BadArgument,
    DatabaseBusy,
    PoisonEvent,
    ProjectionError,
    ProjectorBusy,
    SchemaMismatch,
)
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

__all__ = [
    "DATABASE_FILE",
    "SCHEMA_VERSION",
    "TABLE_NAMES",
    "Agent",
    "AsyncMemoryGraph",
    "AsyncQuery",
    "BadArgument",
    "DatabaseBusy",
    "Edge",
    "GenericNode",
    "GraphStats",
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
    "Response",
    "SchemaMismatch",
    "Session",
    "Template",
    "ToolInvocation",
    "Turn",
    "connect",
    "implicit_edge_id",
    "rebuild",
]
