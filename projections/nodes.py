"""Typed rows: what the graph methods return, one msgspec Struct per table.

Each Struct's fields are its table's columns, by the same names, so `docs/sql.md` documents
both. The ``node_type`` tag says which kind of node a `Node` is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

import msgspec

__all__ = [
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
    "from_row",
]


class _Row(msgspec.Struct, frozen=True, kw_only=True, tag_field="node_type"):
    id: uuid.UUID
    lsn: int
    ts: int
    occurred_at: int | None = None
    actor: str | None = None
    deleted_ts: int | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_ts is not None


class Session(_Row, tag="session", kw_only=True, frozen=True):
    metadata: dict[str, Any] = {}
    tags: list[str] = []
    parent_session_id: uuid.UUID | None = None
    fork_point: uuid.UUID | None = None
    prompt_count: int = 0
    response_count: int = 0
    tool_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_activity_ts: int = 0
    last_activity_ts: int = 0
    last_prompt_id: uuid.UUID | None = None
    updated_ts: int | None = None


class Prompt(_Row, tag="prompt", kw_only=True, frozen=True):
    session_id: uuid.UUID
    content: str
    template_id: uuid.UUID | None = None
    template_version: int | None = None
    variables: dict[str, Any] | None = None
    parent_prompt_id: uuid.UUID | None = None
    previous_prompt_id: uuid.UUID | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tools_available: list[str] | None = None
    metadata: dict[str, Any] | None = None
    agent_id: uuid.UUID | None = None


class Response(_Row, tag="response", kw_only=True, frozen=True):
    prompt_id: uuid.UUID
    session_id: uuid.UUID
    content: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    finish_reason: str | None = None
    latency_ms: float | None = None
    model: str | None = None
    metadata: dict[str, Any] | None = None
    agent_id: uuid.UUID | None = None


class ToolInvocation(_Row, tag="tool_invocation", kw_only=True, frozen=True):
    response_id: uuid.UUID
    session_id: uuid.UUID | None = None
    tool_name: str
    parameters: Any = None
    status: str = "pending"  # pending, success or error
    result: Any = None
    error: str | None = None
    duration_ms: float | None = None
    completed_ts: int | None = None
    agent_id: uuid.UUID | None = None
    metadata: dict[str, Any] | None = None
    retry_count: int = 0  # attempts beyond the first (tool.retried events)


class Agent(_Row, tag="agent", kw_only=True, frozen=True):
    name: str
    role: str
    capabilities: list[str] = []
    model: str | None = None
    metadata: dict[str, Any] | None = None
    version: int = 1
    updated_ts: int | None = None


class Template(_Row, tag="template", kw_only=True, frozen=True):
    version: int
    name: str
    text: str
    variables: list[dict[str, Any]] | None = None
    parent_id: uuid.UUID | None = None
    ancestors: list[uuid.UUID] = []
    description: str | None = None
    metadata: dict[str, Any] | None = None
    is_current: bool = True
    tags: list[str] = []
    semver: str = "1.0.0"  # MAJOR.MINOR.PATCH; `version` orders the versions


class GenericNode(_Row, tag="node", kw_only=True, frozen=True):
    """A document, context, feedback or user-kind node (`add_node`)."""

    kind: str
    content: str | None = None
    data: dict[str, Any] | None = None
    session_id: uuid.UUID | None = None


class Edge(_Row, tag="edge", kw_only=True, frozen=True):
    edge_type: str
    from_id: uuid.UUID
    to_id: uuid.UUID
    properties: dict[str, Any] | None = None
    session_id: uuid.UUID | None = None


Node: TypeAlias = Session | Prompt | Response | ToolInvocation | Agent | Template | GenericNode
"""Any node `get_node` can return."""


class Turn(msgspec.Struct, frozen=True):
    """One turn of a conversation: a prompt and the responses to it, oldest first."""

    prompt: Prompt
    responses: list[Response]


_JSON_COLUMNS = frozenset({"metadata", "variables", "parameters", "result", "data", "properties"})
_decode_json = msgspec.json.decode


def from_row(cls: type[msgspec.Struct], names: Sequence[str], row: Sequence[Any]) -> Any:
    """The Struct of one table row (`names` are its columns); JSON columns are parsed."""
    fields = {
        n: (_decode_json(v) if n in _JSON_COLUMNS and v is not None else v)
        for n, v in zip(names, row, strict=True)
        if v is not None
    }
    return msgspec.convert(fields, cls)
