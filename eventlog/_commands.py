"""The typed append helpers, written once: each builds events and says what to return.

Every helper here is a pure function of its arguments: it makes fresh UUIDv7 ids, builds
the events, and returns a `Command` holding them and a function from the stored result to
the helper's return value. `EventLog` and `AsyncEventLog` turn each into a method, so the
sync and async APIs cannot drift apart. Checks that need the log (does the prompt exist?)
run later, under the append lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar, Unpack, cast

import msgspec

from . import events as ev
from ._format import ENCODER
from ._ids import new_id
from ._limits import check
from ._store import Appended, PendingRequest
from ._time import TimeLike, to_ns
from .errors import InvalidEvent

__all__ = ["AppendOptions", "Command", "prepare"]

R = TypeVar("R")


class AppendOptions(TypedDict, total=False):
    """Keyword options every append helper takes."""

    idempotency_key: str
    """Retrying with the same key after an unknown outcome returns the first result."""
    expect_session_lsn: int | None
    """Optimistic concurrency: fail with AppendConflict unless this is the session's last LSN."""
    expect_store_lsn: int | None
    """Optimistic concurrency on the whole log (-1 for an empty log)."""
    actor: str
    """Which agent or user caused the events."""
    occurred_at: TimeLike
    """When it happened, if not now (imports of past data)."""


@dataclass
class Command(Generic[R]):
    request: PendingRequest
    result: Callable[[Appended], R]


_OPTION_NAMES = frozenset(AppendOptions.__annotations__)
_DECODER = msgspec.msgpack.Decoder(list[ev.Event])


def prepare(events: Sequence[ev.EventBase], opts: AppendOptions) -> PendingRequest:
    """Check a request's values, then type-check its events by a MessagePack round trip (which
    also copies them) and wrap them.

    Everything a request stores is checked and encoded here, in its caller's thread, so a bad
    value fails its own caller as `InvalidEvent` and never the group it would have joined.
    """
    if not events:
        raise InvalidEvent("an append needs at least one event")
    if opts and not _OPTION_NAMES.issuperset(opts):
        raise InvalidEvent(f"unknown append options: {sorted(set(opts) - _OPTION_NAMES)}")
    batch = _with_options(events if isinstance(events, list) else list(events), opts)
    raw, checked = _round_trip(batch)
    check(checked)
    return _request(checked, opts, len(raw))


def _request(events: list[ev.EventBase], opts: AppendOptions, size: int) -> PendingRequest:
    if not opts:  # the commonest request, on every append: nothing to check
        return PendingRequest(events, None, None, None, size)
    key = opts.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        raise InvalidEvent("idempotency_key must be a non-empty str")
    return PendingRequest(
        events,
        key,
        _int_option(opts, "expect_store_lsn"),
        _int_option(opts, "expect_session_lsn"),
        size,
    )


_PLAIN_OPTIONS = frozenset({"idempotency_key", "expect_store_lsn", "expect_session_lsn"})


def _prepare_prompts(events: list[ev.PromptAdded], opts: AppendOptions) -> PendingRequest:
    """`prepare` for prompts this module built from a session id and a text alone: when
    every one is exactly a `uuid.UUID` and a `str` and no option sets a field, their types
    are the schema's, so the events are encoded once (for the request's size, and to refuse
    a string that is not valid UTF-8) and not decoded again. Otherwise, `prepare`."""
    plain = _PLAIN_OPTIONS.issuperset(opts) and all(
        type(e.session_id) is uuid.UUID and type(e.content) is str for e in events
    )
    if not plain or not events:
        return prepare(events, opts)
    try:
        size = len(ENCODER.encode(events))
    except ValueError:  # a lone surrogate: `prepare` names the field
        return prepare(events, opts)
    return _request(cast(list[ev.EventBase], events), opts, size)


def _round_trip(batch: list[ev.EventBase]) -> tuple[bytes, list[ev.EventBase]]:
    """The request's bytes and its events decoded from them: fresh copies, type-checked."""
    try:
        raw = ENCODER.encode(batch)
        return raw, cast(list[ev.EventBase], _DECODER.decode(raw))
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        error = exc
    if isinstance(error, UnicodeEncodeError | RecursionError | OverflowError):
        check(batch, thorough=True)  # name the field of a bad string, int or nesting
    where = f" ({type(batch[0]).__name__})" if len(batch) == 1 else ""
    raise InvalidEvent(f"invalid event{where}: {error}")


def _with_options(events: list[ev.EventBase], opts: AppendOptions) -> list[ev.EventBase]:
    """The events with `actor` and `occurred_at` set, as copies: the caller's stay as given,
    and the encode in `prepare` sees every value the request will store."""
    actor, occurred = opts.get("actor"), opts.get("occurred_at")
    if actor is None and occurred is None:
        return events
    if actor is not None and not isinstance(actor, str):
        raise InvalidEvent("actor must be a str")
    changes: dict[str, Any] = {} if actor is None else {"actor": actor}
    if occurred is not None:
        changes["occurred_at"] = to_ns(occurred, "occurred_at")
    try:
        return [msgspec.structs.replace(event, **changes) for event in events]
    except TypeError as exc:  # not a Struct: the round trip would say so less clearly
        raise InvalidEvent(f"invalid event: {exc}") from None


def _int_option(opts: AppendOptions, name: str) -> int | None:
    value = opts.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise InvalidEvent(f"{name} must be an int")
    return value


def _one(event: ev.EventBase, opts: AppendOptions) -> PendingRequest:
    return prepare([event], opts)


def _first(result: Appended) -> Any:
    return result.events[0]


def _id(result: Appended) -> uuid.UUID:
    return result.events[0].id  # type: ignore[attr-defined, no-any-return]


def _lsn(result: Appended) -> int:
    return result.first_lsn


def _ids(result: Appended) -> list[uuid.UUID]:
    return [e.id for e in result.events]  # type: ignore[attr-defined]


# -- the helpers, in the order of the Rust crate llm-memory-graph's API -----------------------


def append(
    events: ev.EventBase | Iterable[ev.EventBase], **opts: Unpack[AppendOptions]
) -> Command[Appended]:
    """Append events as one all-or-nothing request; returns them as stored, with their LSNs."""
    batch = [events] if isinstance(events, ev.EventBase) else _list(events, "events")
    return Command(prepare(batch, opts), lambda r: r)


def create_session(
    metadata: dict[str, Any] | None = None, tags: Sequence[str] = (), **opts: Unpack[AppendOptions]
) -> Command[ev.SessionCreated]:
    """Start a session; returns the stored event (its `id`, `ts`, metadata and tags)."""
    event = ev.SessionCreated(id=new_id(), metadata=metadata or {}, tags=_list(tags, "tags"))
    return Command(_one(event, opts), _first)


def create_sessions_batch(
    count: int, metadata: dict[str, Any] | None = None, **opts: Unpack[AppendOptions]
) -> Command[list[ev.SessionCreated]]:
    """Start `count` sessions in one request."""
    if not isinstance(count, int) or count < 1:
        raise InvalidEvent("count must be a positive int")
    events = [ev.SessionCreated(id=new_id(), metadata=metadata or {}) for _ in range(count)]
    return Command(prepare(events, opts), lambda r: list(r.events))  # type: ignore[arg-type]


def update_session(
    session_id: uuid.UUID,
    metadata: dict[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[int]:
    """Merge metadata into a session (a None value removes a key); replace its tags if given."""
    tag_list = None if tags is None else _list(tags, "tags")
    return Command(
        _one(
            ev.SessionUpdated(session_id=session_id, metadata=metadata or {}, tags=tag_list), opts
        ),
        _lsn,
    )


def fork_session(
    session_id: uuid.UUID,
    fork_point: uuid.UUID | None = None,
    metadata: dict[str, Any] | None = None,
    tags: Sequence[str] = (),
    **opts: Unpack[AppendOptions],
) -> Command[ev.SessionForked]:
    """A new session continuing `session_id` up to `fork_point` (a node of it; None: all)."""
    event = ev.SessionForked(
        id=new_id(),
        parent_session_id=session_id,
        fork_point=fork_point,
        metadata=metadata or {},
        tags=_list(tags, "tags"),
    )
    return Command(_one(event, opts), _first)


def add_prompt(
    session_id: uuid.UUID,
    content: str = "",
    *,
    template_id: uuid.UUID | None = None,
    variables: dict[str, Any] | None = None,
    parent_prompt_id: uuid.UUID | None = None,
    metadata: ev.PromptMetadata | None = None,
    template_version: int | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[uuid.UUID]:
    """Add a prompt to a session. With `template_id`, the template's required variables must be
    bound (and fit their type hints and patterns), and empty `content` is rendered from the
    template's `template_version` (None: its current version)."""
    event = ev.PromptAdded(
        id=new_id(),
        session_id=session_id,
        content=content,
        template_id=template_id,
        template_version=template_version,
        variables=variables or {},
        parent_prompt_id=parent_prompt_id,
        metadata=metadata,
    )
    if template_id is None and not variables and parent_prompt_id is None and metadata is None:
        return Command(_prepare_prompts([event], opts), _id)
    return Command(_one(event, opts), _id)


def add_prompts_batch(
    prompts: Iterable[tuple[uuid.UUID, str]], **opts: Unpack[AppendOptions]
) -> Command[list[uuid.UUID]]:
    """Add many prompts in one all-or-nothing request."""
    events = [ev.PromptAdded(id=new_id(), session_id=s, content=c) for s, c in _pairs(prompts, 2)]
    return Command(_prepare_prompts(events, opts), _ids)


def add_response(
    prompt_id: uuid.UUID,
    content: str,
    usage: ev.TokenUsage | None = None,
    *,
    finish_reason: str | None = None,
    latency_ms: float | None = None,
    model: str | None = None,
    metadata: dict[str, Any] | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[uuid.UUID]:
    """Add a model's response to a prompt (RESPONDS_TO); its session is the prompt's."""
    event = ev.ResponseAdded(
        id=new_id(),
        prompt_id=prompt_id,
        content=content,
        usage=usage or ev.TokenUsage(0, 0),
        finish_reason=finish_reason,
        latency_ms=latency_ms,
        model=model,
        metadata=metadata or {},
    )
    return Command(_one(event, opts), _id)


def add_responses_batch(
    responses: Iterable[tuple[uuid.UUID, str, ev.TokenUsage]], **opts: Unpack[AppendOptions]
) -> Command[list[uuid.UUID]]:
    """Add many responses in one all-or-nothing request."""
    events = [
        ev.ResponseAdded(id=new_id(), prompt_id=p, content=c, usage=u)
        for p, c, u in _pairs(responses, 3)
    ]
    return Command(prepare(events, opts), _ids)


def add_conversations_batch(
    conversations: Iterable[tuple[tuple[uuid.UUID, str], tuple[str, ev.TokenUsage] | None]],
    **opts: Unpack[AppendOptions],
) -> Command[list[tuple[uuid.UUID, uuid.UUID | None]]]:
    """Add prompts, each with an optional response, in one all-or-nothing request."""
    events: list[ev.EventBase] = []
    for question, answer in _pairs(conversations, 2):
        session_id, prompt = _pairs([question], 2)[0]
        prompt_event = ev.PromptAdded(id=new_id(), session_id=session_id, content=prompt)
        events.append(prompt_event)
        if answer is not None:
            content, usage = _pairs([answer], 2)[0]
            events.append(
                ev.ResponseAdded(
                    id=new_id(), prompt_id=prompt_event.id, content=content, usage=usage
                )
            )
    return Command(prepare(events, opts), _conversation_ids)


def _conversation_ids(result: Appended) -> list[tuple[uuid.UUID, uuid.UUID | None]]:
    """(prompt id, response id or None) pairs, read from the stored events: an idempotent
    retry must return the ids first stored, not the ones this call made."""
    pairs: list[tuple[uuid.UUID, uuid.UUID | None]] = []
    for event in result.events:
        if isinstance(event, ev.ResponseAdded):
            pairs[-1] = (pairs[-1][0], event.id)
        elif isinstance(event, ev.PromptAdded):
            pairs.append((event.id, None))
    return pairs


def add_agent(
    name: str,
    role: str,
    capabilities: Sequence[str] = (),
    *,
    model: str | None = None,
    metadata: dict[str, Any] | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[uuid.UUID]:
    """Register an agent."""
    event = ev.AgentRegistered(
        id=new_id(),
        name=name,
        role=role,
        capabilities=_list(capabilities, "capabilities"),
        model=model,
        metadata=metadata or {},
    )
    return Command(_one(event, opts), _id)


def update_agent(
    agent_id: uuid.UUID,
    *,
    name: str | None = None,
    role: str | None = None,
    capabilities: Sequence[str] | None = None,
    model: str | None = None,
    metadata: dict[str, Any] | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[int]:
    """A new version of an agent; fields left None keep their value. Returns the LSN."""
    event = ev.AgentUpdated(
        agent_id=agent_id,
        name=name,
        role=role,
        model=model,
        metadata=metadata,
        capabilities=None if capabilities is None else _list(capabilities, "capabilities"),
    )
    return Command(_one(event, opts), _lsn)


def assign_agent_to_prompt(
    prompt_id: uuid.UUID, agent_id: uuid.UUID, **opts: Unpack[AppendOptions]
) -> Command[uuid.UUID]:
    """HANDLED_BY: the agent handles the prompt. Returns the edge's id."""
    return Command(
        _one(ev.AgentAssigned(id=new_id(), prompt_id=prompt_id, agent_id=agent_id), opts), _id
    )


def transfer_to_agent(
    response_id: uuid.UUID,
    to_agent_id: uuid.UUID,
    *,
    from_agent_id: uuid.UUID | None = None,
    reason: str | None = None,
    context_summary: str | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[uuid.UUID]:
    """TRANSFERS_TO: hand off after a response to another agent. Returns the edge's id."""
    event = ev.AgentHandoff(
        id=new_id(),
        response_id=response_id,
        to_agent_id=to_agent_id,
        from_agent_id=from_agent_id,
        reason=reason,
        context_summary=context_summary,
    )
    return Command(_one(event, opts), _id)


def create_template(
    name: str,
    text: str,
    variables: Sequence[ev.VariableSpec] = (),
    *,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    tags: Sequence[str] = (),
    semver: str | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[uuid.UUID]:
    """Create version 1 of a prompt template with ``{{name}}`` placeholders; its semantic
    version is `semver` (None: 1.0.0)."""
    event = ev.TemplateCreated(
        id=new_id(),
        name=name,
        text=text,
        variables=_list(variables, "variables"),
        description=description,
        metadata=metadata or {},
        tags=_list(tags, "tags"),
        semver=semver,
    )
    return Command(_one(event, opts), _id)


def create_template_from_parent(
    parent_id: uuid.UUID,
    name: str,
    text: str,
    variables: Sequence[ev.VariableSpec] = (),
    *,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    tags: Sequence[str] = (),
    semver: str | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[uuid.UUID]:
    """Create a template that INHERITS from `parent_id`."""
    event = ev.TemplateCreated(
        id=new_id(),
        name=name,
        text=text,
        variables=_list(variables, "variables"),
        parent_id=parent_id,
        description=description,
        metadata=metadata or {},
        tags=_list(tags, "tags"),
        semver=semver,
    )
    return Command(_one(event, opts), _id)


def update_template(
    template_id: uuid.UUID,
    text: str,
    variables: Sequence[ev.VariableSpec] = (),
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Sequence[str] | None = None,
    bump: str = "patch",
    **opts: Unpack[AppendOptions],
) -> Command[int]:
    """Store a new version of a template; returns the version number the log assigned. Its
    semantic version raises the `bump` part (major, minor or patch) of the previous one;
    `tags`, if given, replace the template's."""
    event = ev.TemplateUpdated(
        template_id=template_id,
        text=text,
        variables=_list(variables, "variables"),
        name=name,
        description=description,
        tags=None if tags is None else _list(tags, "tags"),
        bump=bump,
    )
    return Command(_one(event, opts), lambda r: r.events[0].version)  # type: ignore[attr-defined]


def link_prompt_to_template(
    prompt_id: uuid.UUID,
    template_id: uuid.UUID,
    variables: dict[str, Any] | None = None,
    template_version: int | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[uuid.UUID]:
    """INSTANTIATES: record that a prompt was made from a template's `template_version`
    (None: the current one). Returns the edge's id."""
    event = ev.TemplateLinked(
        id=new_id(),
        prompt_id=prompt_id,
        template_id=template_id,
        template_version=template_version or 0,
        variables=variables or {},
    )
    return Command(_one(event, opts), _id)


def add_tool_invocation(
    response_id: uuid.UUID,
    tool_name: str,
    parameters: Any = None,
    *,
    metadata: dict[str, Any] | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[uuid.UUID]:
    """INVOKES: a response called a tool; complete it later with `complete_tool_invocation`."""
    event = ev.ToolInvoked(
        id=new_id(),
        response_id=response_id,
        tool_name=tool_name,
        parameters=parameters,
        metadata=metadata or {},
    )
    return Command(_one(event, opts), _id)


def retry_tool_invocation(
    tool_id: uuid.UUID,
    *,
    error: str | None = None,
    parameters: Any = None,
    **opts: Unpack[AppendOptions],
) -> Command[int]:
    """Try a pending or failed tool call again (`error`: why the last attempt failed; new
    `parameters` if not None). It is pending again, one attempt more. Returns the LSN."""
    event = ev.ToolRetried(tool_id=tool_id, error=error, parameters=parameters)
    return Command(_one(event, opts), _lsn)


def complete_tool_invocation(
    tool_id: uuid.UUID,
    *,
    result: Any = None,
    error: str | None = None,
    duration_ms: float | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[int]:
    """Record a tool call's outcome: `result`, or `error` for a failure. Returns the LSN."""
    event = ev.ToolCompleted(tool_id=tool_id, result=result, error=error, duration_ms=duration_ms)
    return Command(_one(event, opts), _lsn)


def add_edge(
    from_id: uuid.UUID,
    to_id: uuid.UUID,
    edge_type: ev.EdgeType | str,
    properties: dict[str, Any] | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[uuid.UUID]:
    """A typed edge between two existing nodes, with properties. Returns the edge's id."""
    event = ev.EdgeAdded(
        id=new_id(),
        from_id=from_id,
        to_id=to_id,
        edge_type=str(edge_type),
        properties=properties or {},
    )
    return Command(_one(event, opts), _id)


def add_node(
    kind: str,
    content: str | None = None,
    *,
    data: dict[str, Any] | None = None,
    session_id: uuid.UUID | None = None,
    **opts: Unpack[AppendOptions],
) -> Command[uuid.UUID]:
    """A generic node: kind document, context, feedback, or your own."""
    event = ev.NodeAdded(
        id=new_id(), kind=kind, content=content, data=data or {}, session_id=session_id
    )
    return Command(_one(event, opts), _id)


def delete_node(
    node_id: uuid.UUID, *, reason: str | None = None, **opts: Unpack[AppendOptions]
) -> Command[int]:
    """Tombstone a node: history keeps it, later events may not refer to it. Returns the LSN."""
    return Command(_one(ev.NodeDeleted(node_id=node_id, reason=reason), opts), _lsn)


def delete_nodes_batch(
    node_ids: Iterable[uuid.UUID], **opts: Unpack[AppendOptions]
) -> Command[int]:
    """Tombstone many nodes in one all-or-nothing request. Returns the last LSN."""
    events = [ev.NodeDeleted(node_id=n) for n in _list(node_ids, "node_ids")]
    return Command(prepare(events, opts), lambda r: r.last_lsn)


def _list(items: Iterable[Any], name: str) -> list[Any]:
    if isinstance(items, str | bytes):  # list("abc") would be three tags
        raise InvalidEvent(f"{name} must be a list, not a string: {items!r}"[:300])
    try:
        return list(items)
    except TypeError:
        raise InvalidEvent(f"{name} must be iterable, got {items!r}"[:300]) from None


def _pairs(items: Iterable[Any], width: int) -> list[Any]:
    out = _list(items, "a batch")
    for item in out:
        if not isinstance(item, tuple | list) or len(item) != width:
            raise InvalidEvent(f"each batch item must be a tuple of {width}, got {item!r}")
    return out
