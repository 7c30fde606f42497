"""Every event the log stores: the one place the schema lives.

Each event is a `msgspec.Struct` in one tagged union (tag field ``type``), encoded as
MessagePack. Each class carries an explicit, permanent tag (``prompt.added``): renaming a
class never changes the stored format. Every stored event has ``ts`` (int ns UTC), the time
the log recorded it, assigned under the append lock and never decreasing along the log; a
caller may give ``occurred_at`` (when it happened, for imports of past data) and ``actor``
(which agent or user caused it). An event's LSN is its position in the log; it is not stored.

Schema evolution rules (the stored bytes of every past version must decode forever):

1. Adding a field with a default is free: old events decode with the default, old readers
   ignore the new field. This is the only change made in place.
2. Never remove a field, rename one, change its type, or change a tag. Stop writing a field
   instead (give it a default and leave it).
3. Anything else is a new version of the event: the class keeps its name, its tag becomes
   ``"<name>@<n>"`` (``"prompt.added@2"``), and an upcaster registered with
   ``@upcaster("prompt.added", 1)`` turns the raw mapping of version 1 into version 2. Chains
   of upcasters run in order, so the newest class is the only one code has to handle.
4. ``tests/eventlog/golden/`` holds the encoded bytes of the first version of every event;
   a test decodes them on every run.
5. Every event type has an entry in `CONTENT_FIELDS`, naming the fields that hold people's
   words (texts, parameters, results, metadata values): erasure blanks exactly those, and
   keeps every other field (ids, times, kinds, edges, numbers). A new type adds its line.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Callable
from typing import Any, TypeAlias

import msgspec

__all__ = [
    "CONTENT_FIELDS",
    "AgentAssigned",
    "AgentHandoff",
    "AgentRegistered",
    "AgentUpdated",
    "EdgeAdded",
    "EdgeType",
    "ErasureApplied",
    "Event",
    "EventBase",
    "NodeAdded",
    "NodeDeleted",
    "NodeKind",
    "PromptAdded",
    "PromptMetadata",
    "ResponseAdded",
    "SessionCreated",
    "SessionForked",
    "SessionUpdated",
    "SpanRecorded",
    "TemplateCreated",
    "TemplateLinked",
    "TemplateUpdated",
    "TokenUsage",
    "ToolCompleted",
    "ToolInvoked",
    "ToolRetried",
    "VariableSpec",
    "erase_content",
    "erased_marker",
    "event_types",
    "tag_of",
    "template_semver",
    "upcast",
    "upcaster",
]

JSON: TypeAlias = Any
"""A JSON-compatible value: None, bool, int, float, str, and lists and str-keyed dicts of them."""


class NodeKind(enum.IntEnum):
    """The kinds of node an event can create; stable numbers, stored in the id index."""

    SESSION = 1
    PROMPT = 2
    RESPONSE = 3
    AGENT = 4
    TEMPLATE = 5
    TOOL_INVOCATION = 6
    EDGE = 7
    NODE = 8  # a generic node: document, context, feedback or a user kind


class EdgeType(enum.StrEnum):
    """The edge types the data model defines; `add_edge` also accepts custom upper-case names."""

    PART_OF = "PART_OF"  # prompt -> its session (implied by the prompt)
    FOLLOWS = "FOLLOWS"  # prompt -> the previous prompt of its session
    RESPONDS_TO = "RESPONDS_TO"  # response -> prompt
    INVOKES = "INVOKES"  # response -> tool invocation
    INSTANTIATES = "INSTANTIATES"  # prompt -> template
    INHERITS = "INHERITS"  # template -> parent template
    HANDLED_BY = "HANDLED_BY"  # prompt -> agent
    TRANSFERS_TO = "TRANSFERS_TO"  # response -> agent (a handoff)
    REFERENCES = "REFERENCES"  # prompt -> context, document, ...


class TokenUsage(msgspec.Struct, frozen=True, gc=False):
    """Tokens a model call consumed."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class PromptMetadata(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True, gc=False):
    """Model parameters of a prompt (the build plan's PromptMetadata)."""

    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tools_available: list[str] = []
    custom: dict[str, JSON] = {}


class VariableSpec(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True, gc=False):
    """One variable of a template: a prompt from the template must bind it when `required`.

    A bound value must be of `type_hint` (``string``, the default, takes any value and renders
    it as text; ``integer``, ``number``, ``boolean``, ``array``, ``object`` are checked; ``any``
    takes anything) and, when `pattern` is set, its text must match that regular expression
    in full. None, the value of an unbound optional variable, is never checked."""

    name: str
    type_hint: str = "string"
    required: bool = True
    default: JSON = None
    pattern: str | None = None


class EventBase(msgspec.Struct, tag_field="type", omit_defaults=True, kw_only=True, gc=False):
    """Fields every event has. `ts` is set by the log; callers set `occurred_at` and `actor`.

    `erased_at` (ns UTC) is set only by an erasure, when it blanked the event's content
    (`erase_content`); None: the event is as it was appended."""

    ts: int = 0
    occurred_at: int | None = None
    actor: str | None = None
    erased_at: int | None = None


class SessionCreated(EventBase, tag="session.created"):
    id: uuid.UUID
    metadata: dict[str, JSON] = {}
    tags: list[str] = []


class SessionUpdated(EventBase, tag="session.updated"):
    """Metadata keys are merged (a key set to None is removed); tags, if given, replace."""

    session_id: uuid.UUID
    metadata: dict[str, JSON] = {}
    tags: list[str] | None = None


class SessionForked(EventBase, tag="session.forked"):
    """A new session continuing a parent's history up to `fork_point` (None: all of it)."""

    id: uuid.UUID
    parent_session_id: uuid.UUID
    fork_point: uuid.UUID | None = None
    metadata: dict[str, JSON] = {}
    tags: list[str] = []


class PromptAdded(EventBase, tag="prompt.added"):
    """A prompt; from a template when `template_id` is set (INSTANTIATES), with bindings."""

    id: uuid.UUID
    session_id: uuid.UUID
    content: str
    template_id: uuid.UUID | None = None
    template_version: int | None = None
    variables: dict[str, JSON] = {}
    parent_prompt_id: uuid.UUID | None = None
    metadata: PromptMetadata | None = None


class ResponseAdded(EventBase, tag="response.added"):
    """A model's response to a prompt (RESPONDS_TO). `session_id` is filled by the log."""

    id: uuid.UUID
    prompt_id: uuid.UUID
    content: str
    usage: TokenUsage = TokenUsage(0, 0)
    finish_reason: str | None = None
    latency_ms: float | None = None
    model: str | None = None
    metadata: dict[str, JSON] = {}
    session_id: uuid.UUID | None = None


class AgentRegistered(EventBase, tag="agent.registered"):
    id: uuid.UUID
    name: str
    role: str
    capabilities: list[str] = []
    model: str | None = None
    metadata: dict[str, JSON] = {}


class AgentUpdated(EventBase, tag="agent.updated"):
    """A new version of an agent: fields left None keep their previous value."""

    agent_id: uuid.UUID
    name: str | None = None
    role: str | None = None
    capabilities: list[str] | None = None
    model: str | None = None
    metadata: dict[str, JSON] | None = None


class AgentAssigned(EventBase, tag="agent.assigned"):
    """HANDLED_BY: an agent handles a prompt. `id` is the edge's id."""

    id: uuid.UUID
    prompt_id: uuid.UUID
    agent_id: uuid.UUID
    session_id: uuid.UUID | None = None


class AgentHandoff(EventBase, tag="agent.handoff"):
    """TRANSFERS_TO: after `response_id`, control passes to `to_agent_id`."""

    id: uuid.UUID
    response_id: uuid.UUID
    to_agent_id: uuid.UUID
    from_agent_id: uuid.UUID | None = None
    reason: str | None = None
    context_summary: str | None = None
    session_id: uuid.UUID | None = None


class TemplateCreated(EventBase, tag="template.created"):
    """Version 1 of a template; INHERITS from `parent_id` when set. `semver` is its semantic
    version (the log sets ``1.0.0`` when none is given; None in events older than the field)."""

    id: uuid.UUID
    name: str
    text: str
    variables: list[VariableSpec] = []
    parent_id: uuid.UUID | None = None
    description: str | None = None
    metadata: dict[str, JSON] = {}
    tags: list[str] = []
    semver: str | None = None


class TemplateUpdated(EventBase, tag="template.updated"):
    """A new version of a template; `version` is assigned by the log (previous + 1).

    `bump` names the part of the semantic version that grows (``major``, ``minor`` or
    ``patch``; None is a patch); the log sets `semver` from it and `previous_lsn`, the LSN of
    the version before, which lets a prompt name an older version. `tags`, if given, replace
    the template's tags."""

    template_id: uuid.UUID
    text: str
    variables: list[VariableSpec] = []
    name: str | None = None
    description: str | None = None
    version: int = 0
    tags: list[str] | None = None
    bump: str | None = None
    semver: str | None = None
    previous_lsn: int | None = None


class TemplateLinked(EventBase, tag="template.linked"):
    """INSTANTIATES: a prompt was made from a template version. `id` is the edge's id."""

    id: uuid.UUID
    prompt_id: uuid.UUID
    template_id: uuid.UUID
    template_version: int = 0
    variables: dict[str, JSON] = {}
    session_id: uuid.UUID | None = None


class ToolInvoked(EventBase, tag="tool.invoked"):
    """INVOKES: a response called a tool."""

    id: uuid.UUID
    response_id: uuid.UUID
    tool_name: str
    parameters: JSON = None
    session_id: uuid.UUID | None = None
    metadata: dict[str, JSON] = {}


class ToolCompleted(EventBase, tag="tool.completed"):
    """A tool invocation finished: `error` None means success."""

    tool_id: uuid.UUID
    result: JSON = None
    error: str | None = None
    duration_ms: float | None = None
    session_id: uuid.UUID | None = None


class ToolRetried(EventBase, tag="tool.retried"):
    """A tool invocation is tried again: it is pending once more, one attempt more. Allowed
    while it is pending or after a failed completion, never after a success. `error` says why
    the last attempt failed; `parameters`, if not None, are the new attempt's."""

    tool_id: uuid.UUID
    error: str | None = None
    parameters: JSON = None
    session_id: uuid.UUID | None = None


class EdgeAdded(EventBase, tag="edge.added"):
    """A typed edge with properties; `edge_type` is an EdgeType or a custom upper-case name."""

    id: uuid.UUID
    from_id: uuid.UUID
    to_id: uuid.UUID
    edge_type: str
    properties: dict[str, JSON] = {}
    session_id: uuid.UUID | None = None


class NodeAdded(EventBase, tag="node.added"):
    """A generic node: `kind` is document, context, feedback or a user kind."""

    id: uuid.UUID
    kind: str
    content: str | None = None
    data: dict[str, JSON] = {}
    session_id: uuid.UUID | None = None


class NodeDeleted(EventBase, tag="node.deleted"):
    """A tombstone: the node stays in history, and no later event may refer to it."""

    node_id: uuid.UUID
    reason: str | None = None
    session_id: uuid.UUID | None = None


class SpanRecorded(EventBase, tag="span.recorded"):
    """An OpenTelemetry span as received, GenAI or not (`eventlog.otel`): kept whole so the
    HTTP and database spans around an agent's calls stay queryable. Ids are lower-case hex;
    times are int ns UTC; `status` is ``unset``, ``ok`` or ``error``."""

    trace_id: str
    span_id: str
    name: str
    parent_span_id: str | None = None
    kind: str = "internal"
    start_ns: int = 0
    end_ns: int = 0
    status: str = "unset"
    status_message: str | None = None
    attributes: dict[str, JSON] = {}
    events: list[dict[str, JSON]] = []
    resource: dict[str, JSON] = {}
    scope: str | None = None


class ErasureApplied(EventBase, tag="erasure.applied"):
    """An erasure blanked the content of `events` events between `first_lsn` and `last_lsn`
    (inclusive), setting their `erased_at` to `marked_at`. The selector is recorded, never
    the content: which sessions, nodes and actors, the cut-off time `before` (ns), and the
    metadata keys it matched (their values are content, so they are left out). `actor` is
    who erased."""

    erasure_id: uuid.UUID
    marked_at: int
    events: int
    first_lsn: int | None = None
    last_lsn: int | None = None
    sessions: list[uuid.UUID] = []
    nodes: list[uuid.UUID] = []
    actors: list[str] = []
    metadata_keys: list[str] = []
    before: int | None = None


Event: TypeAlias = (
    SessionCreated
    | SessionUpdated
    | SessionForked
    | PromptAdded
    | ResponseAdded
    | AgentRegistered
    | AgentUpdated
    | AgentAssigned
    | AgentHandoff
    | TemplateCreated
    | TemplateUpdated
    | TemplateLinked
    | ToolInvoked
    | ToolCompleted
    | ToolRetried
    | EdgeAdded
    | NodeAdded
    | NodeDeleted
    | SpanRecorded
    | ErasureApplied
)
"""The union of every current event type."""


def event_types() -> dict[str, type[EventBase]]:
    """Every current event class by its tag."""
    return {tag_of(cls): cls for cls in Event.__args__}


CONTENT_FIELDS: dict[str, tuple[str, ...]] = {
    "session.created": ("metadata", "tags"),
    "session.updated": ("metadata", "tags"),
    "session.forked": ("metadata", "tags"),
    "prompt.added": ("content", "variables", "metadata.custom"),
    "response.added": ("content", "metadata"),
    "agent.registered": ("metadata",),
    "agent.updated": ("metadata",),
    "agent.assigned": (),
    "agent.handoff": ("reason", "context_summary"),
    "template.created": ("text", "description", "metadata"),
    "template.updated": ("text", "description"),
    "template.linked": ("variables",),
    "tool.invoked": ("parameters", "metadata"),
    "tool.completed": ("result", "error"),
    "tool.retried": ("error", "parameters"),
    "edge.added": ("properties",),
    "node.added": ("content", "data"),
    "node.deleted": ("reason",),
    "span.recorded": ("attributes", "events", "status_message"),
    "erasure.applied": (),
}
"""Per event tag, the fields erasure blanks (``a.b``: field `b` of the struct in field `a`).

Blanking keeps a field's shape where it has one: a text (or any other JSON value) becomes the
marker (`erased_marker`), a mapping becomes empty (its keys go too: a key can be content), a
list becomes empty, and None stays None (an absent error stays a success). Names, roles, tool
names, models, kinds, ids, times and numbers are structure and stay."""
assert set(CONTENT_FIELDS) == {c.__struct_config__.tag for c in Event.__args__}, "one line a type"


def erased_marker(erased_at: int) -> str:
    """The text that replaces erased content: ``[erased 2026-12-03T10:00:00Z]``."""
    when = dt.datetime.fromtimestamp(erased_at // 1_000_000_000, dt.UTC)
    return f"[erased {when.strftime('%Y-%m-%dT%H:%M:%SZ')}]"


def _blank(value: Any, marker: str) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return {}
    if isinstance(value, list):
        return []
    return marker


def _blanked(struct: Any, path: list[str], marker: str) -> Any:
    name, rest = path[0], path[1:]
    value = getattr(struct, name)
    new = _blank(value, marker) if not rest or value is None else _blanked(value, rest, marker)
    return msgspec.structs.replace(struct, **{name: new})


def erase_content(event: EventBase, erased_at: int) -> EventBase:
    """A copy of `event` with its `CONTENT_FIELDS` blanked and `erased_at` set. An event
    already erased comes back as it is: erasing twice changes nothing."""
    if event.erased_at is not None:
        return event
    marker = erased_marker(erased_at)
    for field in CONTENT_FIELDS[tag_of(event)]:
        event = _blanked(event, field.split("."), marker)
    return msgspec.structs.replace(event, erased_at=erased_at)


def template_semver(event: TemplateCreated | TemplateUpdated) -> str:
    """The semantic version of a template version. Events older than the field carry None:
    a template then starts at 1.0.0, and every update before the field was a patch."""
    if event.semver is not None:
        return event.semver
    return "1.0.0" if isinstance(event, TemplateCreated) else f"1.0.{max(event.version - 1, 0)}"


def tag_of(event: EventBase | type[EventBase]) -> str:
    """The permanent tag of an event or event class (``"prompt.added"``)."""
    cls = event if isinstance(event, type) else type(event)
    return str(cls.__struct_config__.tag)


Upcaster: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def _split_tag(tag: str) -> tuple[str, int]:
    name, _, version = tag.partition("@")
    return name, int(version) if version else 1


def upcaster(name: str, version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function turning the raw mapping of `name` at `version` into `version + 1`.

    The function returns the new mapping, including its new ``type`` tag.
    """

    def register(fn: Upcaster) -> Upcaster:
        if (name, version) in _UPCASTERS:
            raise ValueError(f"an upcaster for {name}@{version} is already registered")
        _UPCASTERS[(name, version)] = fn
        return fn

    return register


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    """Apply registered upcasters until the mapping is of the newest version of its type."""
    tag = raw.get("type")
    if not isinstance(tag, str):
        return raw
    key = _split_tag(tag)
    while key in _UPCASTERS:
        raw = _UPCASTERS[key](dict(raw))
        key = (key[0], key[1] + 1)
    return raw
