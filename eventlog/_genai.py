"""The mapping from OpenTelemetry spans to events, written once for every ingest source.

`map_trace(spans)` is a pure function of one trace's spans (in any order, duplicates allowed):
it sorts them by start time and returns `Unit`s, each one append request with an idempotency
key derived from the trace and span ids. Every span becomes a `span.recorded` event; GenAI
spans also become sessions, prompts, responses, agents, assignments and tool calls (handoffs
span traces, so `_handoffs` derives them from the turns of a whole session).
Node ids are derived from trace and span ids (or from a conversation, agent or tool call id),
so mapping the same spans again yields the same events, and a retried batch adds nothing.

Conventions read, and which wins where they disagree (docs/ingest.md has the whole table):
the current OTel GenAI conventions first, then OpenInference, then OpenLLMetry's
``traceloop.*``, then the legacy GenAI names (``gen_ai.system``, ``gen_ai.prompt.N.*``,
``gen_ai.usage.prompt_tokens``, the ``gen_ai.*.message`` span events).
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from . import events as ev
from ._ids import uuid_from_int
from ._spans import MAX_LIST_ITEMS, Span, bound, bound_text

__all__ = ["NOT_CAPTURED", "NO_NEW_INPUT", "Unit", "map_trace", "operation_of", "spans_only"]


class Unit(msgspec.Struct, frozen=True, gc=False):
    """One append request: its idempotency key and events. `span_only` is the fallback kept
    when the request cannot be stored whole (a tool result whose call is unknown); `span` is
    the id of the span it came from (None for a session or an agent, which many traces name,
    and for what is not a span's: a handoff, a log record).

    This and the mapping's other records are structs, not named tuples or dataclasses: made
    in C (a named tuple's ``__new__`` is Python), and untracked by the collector (they hold
    no cycle), which a trace's dozens of them would otherwise wake."""

    key: str
    events: list[ev.EventBase]
    span_only: ev.SpanRecorded | None = None
    span: str | None = None


class ToolCall(msgspec.Struct, frozen=True, gc=False):
    id: str | None
    name: str
    arguments: Any


class Message(msgspec.Struct, frozen=True, gc=False):
    role: str
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    finish_reason: str | None = None


# -- ids ------------------------------------------------------------------------------------


_BLAKE2B = hashlib.blake2b(digest_size=16)  # copied for each digest: cheaper than made anew


def _digest(text: str) -> int:
    hasher = _BLAKE2B.copy()
    hasher.update(text.encode())
    return int.from_bytes(hasher.digest())


def _timed_id(start_ns: int, name: str) -> uuid.UUID:
    """A UUIDv7 whose time is `start_ns` and whose other bits hash `name`: deterministic, and
    time-ordered like the ids the log makes. Its 74 bits after the time, version and variant
    are the digest's last 74 bits: bits 62-73 shifted past the variant, bits 0-61 in place."""
    digest = _digest(name)
    ms = (start_ns // 1_000_000 if start_ns > 0 else 0) & _LOW48
    return uuid_from_int(ms << 80 | _V7 | (digest & _MID12) << 2 | digest & _LOW62)


_LOW48 = (1 << 48) - 1
_LOW62 = (1 << 62) - 1
_MID12 = 0xFFF << 62
_V7 = 0x7 << 76 | 0b10 << 62  # the version and variant bits


@functools.lru_cache(maxsize=4096)
def _named_id(name: str) -> uuid.UUID:
    """A UUIDv8 hashing `name`, for what has no time of its own (a conversation, an agent):
    the same few names recur in every trace, so they are remembered."""
    value = _digest(name)
    value = value & ~(0xF << 76) | 0x8 << 76
    return uuid_from_int(value & ~(0b11 << 62) | 0b10 << 62)


def _call_id(call: str) -> uuid.UUID:
    """The invocation id of a model's tool call: from the call id alone (providers make them
    unique), so a result in a later trace or session finds its call."""
    return _named_id(f"tool:{call}")


# -- reading attributes ---------------------------------------------------------------------


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _given(*values: Any) -> Any:
    """The first of `values` that is not None: unlike ``or``, it keeps 0 (a temperature of 0
    is a deterministic call's, not an absent one)."""
    return next((v for v in values if v is not None), None)


def _int(value: Any) -> int | None:
    """A count: an int, or a float or string that spells one within 64 bits (a larger one,
    an infinity or NaN is none: the log stores 64-bit integers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float | str):
        try:
            value = int(float(value))
        except (ValueError, OverflowError):
            return None
    return value if isinstance(value, int) and -_INT64 <= value < _INT64 else None


_INT64 = 1 << 63


def _float(value: Any) -> float | None:
    """A number, or a string that spells a finite one (some instrumentations stringify
    their request parameters)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _json(value: Any) -> Any:
    """A JSON attribute (instrumentations store JSON as text) parsed; text that is not JSON
    (or was cut by the limits) stays text. Its strings are no longer than the bounded text
    they came from; what is stored of its other values goes through `bound`."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            return value
    return value


def _invocation(attrs: Mapping[str, Any]) -> dict[str, Any]:
    params = _json(attrs.get("llm.invocation_parameters"))
    return params if isinstance(params, dict) else {}


_OPENINFERENCE = {
    "LLM": "chat",
    "EMBEDDING": "embeddings",
    "TOOL": "execute_tool",
    "AGENT": "invoke_agent",
    "CHAIN": "invoke_workflow",
    "RETRIEVER": "retrieval",
}
_TRACELOOP = {"workflow": "invoke_workflow", "agent": "invoke_agent", "tool": "execute_tool"}
_LEGACY_REQUEST = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}


def operation_of(span: Span) -> str | None:
    """The GenAI operation of a span (``chat``, ``execute_tool``, ...), None if not GenAI."""
    a = span.attributes
    op = a.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op
    kind = a.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in _OPENINFERENCE:
        return _OPENINFERENCE[kind.upper()]
    kind = a.get("traceloop.span.kind")
    if isinstance(kind, str) and kind in _TRACELOOP:
        return _TRACELOOP[kind]
    request = a.get("llm.request.type")
    if isinstance(request, str) and request in _LEGACY_REQUEST:
        return _LEGACY_REQUEST[request]
    if ("gen_ai.system" in a or "gen_ai.provider.name" in a) and (
        "gen_ai.request.model" in a or "gen_ai.response.model" in a
    ):
        return "chat"
    return None


# -- a span's attributes, read once ---------------------------------------------------------

_CONVERSATION = (
    "gen_ai.conversation.id",
    "session.id",
    "traceloop.association.properties.session_id",
    "traceloop.association.properties.conversation_id",
)
_FIELDS: dict[str, tuple[str, ...]] = {
    # a field of `_Read.first`: the attributes it is read from, the first non-empty one wins
    # (in docs/ingest.md's order: GenAI current, OpenInference, `traceloop.*`, GenAI legacy)
    "conversation": _CONVERSATION,
    "agent_name": ("gen_ai.agent.name", "agent.name"),
    "agent_id": ("gen_ai.agent.id",),
    "agent_description": ("gen_ai.agent.description",),
    "agent_model": ("gen_ai.request.model", "llm.model_name"),
    "entity_name": ("traceloop.entity.name",),
    "call": ("gen_ai.tool.call.id", "tool_call.id"),
    "provider": ("gen_ai.provider.name", "llm.provider", "llm.system", "gen_ai.system"),
    "request_model": ("gen_ai.request.model", "llm.model_name", "llm.request.model"),
    "response_model": (
        "gen_ai.response.model",
        "llm.model_name",
        "llm.response.model",
        "gen_ai.request.model",
    ),
    "temperature": ("gen_ai.request.temperature",),
    "max_tokens": ("gen_ai.request.max_tokens",),
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "llm.token_count.prompt",
        "gen_ai.usage.prompt_tokens",
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "llm.token_count.completion",
        "gen_ai.usage.completion_tokens",
    ),
    "response_id": ("gen_ai.response.id",),
    "user_id": ("gen_ai.user.id", "user.id"),
    "workflow": ("traceloop.workflow.name",),
    "tool_name": ("gen_ai.tool.name", "tool.name", "traceloop.entity.name"),
    "tool_arguments": (
        "gen_ai.tool.call.arguments",
        "tool_call.function.arguments",
        "input.value",
        "traceloop.entity.input",
    ),
    "tool_result": ("gen_ai.tool.call.result", "output.value", "traceloop.entity.output"),
    "input": ("input.value", "traceloop.entity.input"),
    "output": ("output.value", "traceloop.entity.output"),
}
_SLOTS: dict[str, tuple[tuple[str, int], ...]] = {}
for _field, _names in _FIELDS.items():
    for _rank, _name in enumerate(_names):
        _SLOTS[_name] = (*_SLOTS.get(_name, ()), (_field, _rank))
_FAMILIES = (
    "llm.input_messages.",
    "llm.output_messages.",
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "gen_ai.request.functions.",
    "llm.request.functions.",
    "llm.tools.",
    "gen_ai.usage.",
    "llm.token_count.",
)
"""Attributes read as a group (``prefix.N.rest``, or every count of a kind), by prefix."""
_USAGE_MAIN = frozenset(
    {
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.prompt",
        "llm.token_count.completion",
        "llm.token_count.total",
    }
)
"""Token counts that are `TokenUsage`'s own fields; the others go to the metadata."""


class _Read(msgspec.Struct, gc=False):
    """What the mapping reads of one span: its operation, and (`first`, `family`) its
    attributes walked once, when first asked. Untracked by the collector: it holds a span
    and plain dicts, never a cycle."""

    span: Span
    op: str | None
    fields: dict[str, Any] | None = None  # by `_FIELDS` name, once read
    families: dict[str, dict[str, Any]] | None = None  # by `_FAMILIES` prefix, once read

    def first(self) -> dict[str, Any]:
        """For each `_FIELDS` field present, the value of the first of its attributes
        present and non-empty."""
        if self.fields is None:
            self.fields, self.families = _walk(self.span.attributes)
        return self.fields

    def family(self, prefix: str) -> dict[str, Any]:
        """The attributes under `prefix` (one of `_FAMILIES`), the prefix removed, in the
        span's order."""
        if self.families is None:
            self.fields, self.families = _walk(self.span.attributes)
        return self.families.get(prefix, _EMPTY)


def _walk(attributes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A span's attributes walked once, dispatching on the key, for every convention at once
    (rather than each field looking up each of its names in turn): `_Read`'s two dicts."""
    fields: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    families: dict[str, dict[str, Any]] = {}
    slots_of = _SLOTS.get
    for key, value in attributes.items():
        slots = slots_of(key)
        if slots is not None:
            if value is None or value == "" or (key in _USAGE_MAIN and _int(value) is None):
                continue  # absent, as is a token count that is no number
            for field, rank in slots:
                if field not in ranks or rank < ranks[field]:
                    fields[field] = value
                    ranks[field] = rank
        elif key.startswith(_FAMILIES):
            prefix = next(p for p in _FAMILIES if key.startswith(p))
            families.setdefault(prefix, {})[key[len(prefix) :]] = value
    return fields, families


_EMPTY: dict[str, Any] = {}


_CHAT_OPS = frozenset({"chat", "text_completion", "generate_content"})
_AGENT_OPS = frozenset({"invoke_agent", "create_agent"})


# -- messages, in every convention ----------------------------------------------------------

_INDEX = re.compile(r"^(\d+)\.(.+)$")


def _indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``prefix.N.rest`` attributes grouped by N (in order) as ``{rest: value}``."""
    groups: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if key.startswith(prefix):
            m = _INDEX.match(key[len(prefix) :])
            if m and int(m.group(1)) < MAX_LIST_ITEMS:
                groups.setdefault(int(m.group(1)), {})[m.group(2)] = value
    return [groups[i] for i in sorted(groups)]


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return bound_text(msgspec.json.encode(content).decode())


_MEDIA_PARTS = frozenset({"blob", "uri", "file", "image", "audio", "video"})


def _part_message(raw: Any, role: str | None = None) -> Message | None:
    """A message of the current conventions: ``{"role", "parts": [...], "finish_reason"}``."""
    if not isinstance(raw, dict):
        return None
    texts: list[str] = []
    calls: list[ToolCall] = []
    answered: str | None = None
    parts = raw.get("parts")
    if not isinstance(parts, list):  # an older shape: {"role", "content", "tool_calls"}
        return _plain_message(raw, role)
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            texts.append(_text_of(part.get("content")))
        elif kind == "tool_call":
            calls.append(
                ToolCall(_str(part.get("id")), str(part.get("name", "")), part.get("arguments"))
            )
        elif kind == "tool_call_response":
            answered = _str(part.get("id"))
            texts.append(_text_of(part.get("response", part.get("result"))))
        elif kind in _MEDIA_PARTS:  # an image, audio or file: named, its bytes left out
            modality = part.get("modality")
            named = modality if isinstance(modality, str) and 0 < len(modality) <= 32 else kind
            texts.append(f"[{named}]")
    return Message(
        str(raw.get("role") or role or "user"),
        "\n".join(t for t in texts if t),
        tuple(calls),
        answered,
        _str(raw.get("finish_reason")),
    )


def _plain_message(raw: Mapping[str, Any], role: str | None = None) -> Message:
    """``{"role", "content", "tool_calls", "tool_call_id"}``: OpenAI's shape, used by the
    legacy span events and many JSON attributes."""
    calls: list[ToolCall] = []
    for call in raw.get("tool_calls") or ():
        if isinstance(call, dict):
            inner = call.get("function")
            fn: dict[str, Any] = inner if isinstance(inner, dict) else call
            calls.append(
                ToolCall(_str(call.get("id")), str(fn.get("name", "")), fn.get("arguments"))
            )
    return Message(
        str(raw.get("role") or role or "user"),
        _text_of(raw.get("content")),
        tuple(calls),
        _str(raw.get("tool_call_id") or (raw.get("id") if raw.get("role") == "tool" else None)),
        _str(raw.get("finish_reason")),
    )


def _openinference_message(flat: Mapping[str, Any]) -> Message:
    texts = [_text_of(flat.get("message.content"))] if flat.get("message.content") else []
    for c in _indexed(flat, "message.contents."):  # in order: text, or a medium's name
        if c.get("message_content.text"):
            texts.append(_text_of(c.get("message_content.text")))
        elif (kind := c.get("message_content.type")) in _MEDIA_PARTS:
            texts.append(f"[{kind}]")
    calls = tuple(
        ToolCall(
            _str(c.get("tool_call.id")),
            str(c.get("tool_call.function.name", "")),
            _json(c.get("tool_call.function.arguments")),
        )
        for c in _indexed(flat, "message.tool_calls.")
    )
    return Message(
        str(flat.get("message.role") or "user"),
        "\n".join(texts),
        calls,
        _str(flat.get("message.tool_call_id")),
        _str(flat.get("message.finish_reason")),
    )


def _legacy_message(flat: Mapping[str, Any]) -> Message:
    calls = tuple(
        ToolCall(_str(c.get("id")), str(c.get("name", "")), _json(c.get("arguments")))
        for c in _indexed(flat, "tool_calls.")
    )
    return Message(
        str(flat.get("role") or "user"),
        _text_of(flat.get("content")),
        calls,
        _str(flat.get("tool_call_id")),
        _str(flat.get("finish_reason")),
    )


def _from_events(span: Span, output: bool) -> list[Message]:
    """Messages from span events: ``gen_ai.{system,user,assistant,tool}.message`` (input),
    ``gen_ai.choice`` (output), ``gen_ai.content.prompt``/``completion`` (older still); the
    log records naming the span (`_logs`) are read as its events."""
    found: list[Message] = []
    for e in (*span.events, *span.logs):
        a = e.attributes
        if output and e.name == "gen_ai.choice":
            message = _json(a.get("message"))
            raw = message if isinstance(message, dict) else {"content": message}
            if "tool_calls" not in raw and "tool_calls" in a:  # OpenLLMetry's events put them
                raw = {**raw, "tool_calls": _json(a["tool_calls"])}  # beside the message
            found.append(
                _plain_message({**raw, "finish_reason": a.get("finish_reason")}, "assistant")
            )
        elif not output and e.name.startswith("gen_ai.") and e.name.endswith(".message"):
            role = e.name.removeprefix("gen_ai.").removesuffix(".message")
            raw = {k: _json(v) for k, v in a.items()}
            found.append(_plain_message({"role": role, **raw}, role))
        elif e.name == ("gen_ai.content.completion" if output else "gen_ai.content.prompt"):
            listed = _json(a.get("gen_ai.completion" if output else "gen_ai.prompt"))
            for raw in listed if isinstance(listed, list) else ():
                if isinstance(raw, dict):
                    found.append(_plain_message(raw, "assistant" if output else None))
        elif "gen_ai.input.messages" in a or "gen_ai.output.messages" in a:
            found += _current(a, output)
    return found if output else _answering(found)


def _answering(inputs: list[Message]) -> list[Message]:
    """Tool messages without a call id (OpenLLMetry's ``gen_ai.tool.message`` events carry
    none) given the id of the call they answer: the call of the assistant message before
    them at their position (a model's calls are answered in order)."""
    out: list[Message] = []
    calls: list[ToolCall] = []
    for m in inputs:
        if m.role == "assistant":
            calls = list(m.tool_calls)
        elif m.role == "tool" and m.tool_call_id is None and calls:
            m = msgspec.structs.replace(m, tool_call_id=calls.pop(0).id)  # noqa: PLW2901
        out.append(m)
    return out


def _current(attrs: Mapping[str, Any], output: bool) -> list[Message]:
    listed = _json(attrs.get("gen_ai.output.messages" if output else "gen_ai.input.messages"))
    if isinstance(listed, list):
        return [m for raw in listed if (m := _part_message(raw)) is not None]
    if isinstance(listed, str) and listed:  # empty: absent, as for every attribute
        return [Message("assistant" if output else "user", listed)]
    return []


def messages(read: _Read, output: bool) -> list[Message]:
    """A span's input or output messages, from the first convention that has them."""
    span = read.span
    if found := _current(span.attributes, output):
        return found
    family = read.family("llm.output_messages." if output else "llm.input_messages.")
    if found := [_openinference_message(m) for m in _indexed(family, "")]:
        return found
    family = read.family("gen_ai.completion." if output else "gen_ai.prompt.")
    if found := [_legacy_message(m) for m in _indexed(family, "")]:
        return found
    if found := _from_events(span, output):
        return found
    value = read.first().get("output" if output else "input")
    return [Message("assistant" if output else "user", _text_of(_json(value)))] if value else []


def _system(span: Span) -> str | None:
    listed = _json(span.attributes.get("gen_ai.system_instructions"))
    if isinstance(listed, list):
        return "\n".join(_text_of(p.get("content")) for p in listed if isinstance(p, dict)) or None
    return _str(listed) or None


# -- the trace walk -------------------------------------------------------------------------


class _Agent(msgspec.Struct, gc=False):
    id: uuid.UUID
    key: str
    name: str
    role: str
    model: str | None


class _Turn(msgspec.Struct, gc=False):
    start_ns: int
    response_id: uuid.UUID
    calls: dict[str, str]  # tool call id -> tool name


_NEW_LIST: Any = msgspec.field(default_factory=list)
_NEW_DICT: Any = msgspec.field(default_factory=dict)
_NEW_SET: Any = msgspec.field(default_factory=set)


class _Session(msgspec.Struct, gc=False):
    id: uuid.UUID
    turns: list[_Turn] = _NEW_LIST


class _Walk(msgspec.Struct, gc=False):
    """What mapping one trace has learned so far (in start order)."""

    by_id: dict[str, _Read]  # the trace's spans in start order, each read once
    units: list[Unit] = _NEW_LIST
    sessions: dict[str, _Session] = _NEW_DICT
    agents: dict[str, _Agent] = _NEW_DICT
    tool_span_calls: set[str] = _NEW_SET  # call ids an execute_tool span has
    invoked: dict[str, uuid.UUID] = _NEW_DICT  # call id -> invocation id
    registered: set[str] = _NEW_SET  # agents this trace registered
    chat_lineage: set[str] | None = None  # the chat spans and their ancestors (when asked)
    conversations: dict[str, Any] = _NEW_DICT  # by span: `_nearest`'s answers
    agent_of: dict[str, _Agent | None] = _NEW_DICT  # by span: `_nearest`'s answers

    def ancestors(self, read: _Read) -> list[_Read]:
        """`read`, then its parents up to the trace's root (as far as received). At most as
        many steps as the trace has spans: parents that loop back are read again, which no
        search for the first span with something changes."""
        out = [read]
        by_id = self.by_id
        parent_id = read.span.parent_span_id
        for _ in range(len(by_id) - 1):
            parent = None if parent_id is None else by_id.get(parent_id)
            if parent is None:
                break
            out.append(parent)
            parent_id = parent.span.parent_span_id
        return out

    def below_chat(self, read: _Read) -> bool:
        """Whether a chat span of the trace is `read` or has it as an ancestor."""
        if self.chat_lineage is None:
            self.chat_lineage = set()
            for chat in self.by_id.values():
                if chat.op in _CHAT_OPS:
                    for up in self.ancestors(chat):
                        if up.span.span_id in self.chat_lineage:
                            break  # and so are its ancestors
                        self.chat_lineage.add(up.span.span_id)
        return read.span.span_id in self.chat_lineage


def _nearest(
    walk: _Walk, read: _Read, known: dict[str, Any], own: Callable[[_Walk, _Read], Any]
) -> Any:
    """The first `own` that is not None of the span and its ancestors, or None; each span's
    answer is remembered in `known`, so a walk stops at the first ancestor that has one (its
    parent, usually: a parent starts first, so it is mapped first). What stops a walk that
    loops back is the same whether it stops at a remembered span or goes on from it."""
    up: _Read | None = read
    found = None
    for _ in range(len(walk.by_id)):
        if up is None:
            break
        at = up.span.span_id
        if at in known:
            found = known[at]
            break
        if (found := own(walk, up)) is not None:
            break
        parent = up.span.parent_span_id
        up = None if parent is None else walk.by_id.get(parent)
    known[read.span.span_id] = found
    return found


def _conversation(walk: _Walk, read: _Read, trace_default: str | None) -> str:
    found = _nearest(walk, read, walk.conversations, _own_conversation)
    if found is not None:
        return f"conversation:{found}"
    return trace_default or f"trace:{read.span.trace_id}"


def _own_conversation(walk: _Walk, read: _Read) -> Any:
    return read.first().get("conversation")


def _agent_of(walk: _Walk, read: _Read) -> _Agent | None:
    """The agent of the span itself or of its nearest agent ancestor."""
    found: _Agent | None = _nearest(walk, read, walk.agent_of, _agent)
    return found


def _agent(walk: _Walk, read: _Read) -> _Agent | None:
    """The agent a span names, if any (made the first time the trace names it)."""
    first = read.first()
    name = first.get("agent_name")
    if name is None and read.op in _AGENT_OPS:
        name = first.get("entity_name") or _spelled(read.span.name) or first.get("agent_id")
    if name is None or name == "":
        return None  # an agent span that names no agent: its turns have none
    key = str(first.get("agent_id") or name)
    if key not in walk.agents:
        walk.agents[key] = _Agent(
            _named_id(f"agent:{key}"),
            key,
            str(name),
            str(first.get("agent_description") or "agent"),
            _str(first.get("agent_model")),
        )
    return walk.agents[key]


def _spelled(span_name: str) -> str:
    """The agent an agent span's name names: ``invoke_agent {name}`` by the conventions,
    bare ``invoke_agent`` when the agent has no name, anything else as given."""
    if span_name == "invoke_agent":
        return ""
    return span_name.removeprefix("invoke_agent ").strip()


def _recorded(span: Span, actor: str | None) -> ev.SpanRecorded:
    return ev.SpanRecorded(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=span.name,
        kind=span.kind,
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        status=span.status,
        status_message=span.status_message,
        attributes=span.attributes,
        events=[
            {"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in span.events
        ]
        if span.events
        else [],
        resource=span.resource,
        scope=span.scope,
        occurred_at=span.start_ns,
        actor=actor,
    )


def map_trace(spans: Sequence[Span]) -> list[Unit]:
    """The append requests one trace's spans make, in order: a deterministic function of the
    set of spans, whatever order or batches they came in (duplicates are dropped)."""
    reads: dict[str, _Read] = {}
    for span in sorted(spans, key=_START_ORDER):
        if span.span_id not in reads:
            reads[span.span_id] = _Read(span, operation_of(span))
    walk = _Walk(reads)
    trace_default = None
    for read in reads.values():
        if read.op == "execute_tool" and (call := read.first().get("call")) is not None:
            walk.tool_span_calls.add(str(call))
        if trace_default is None and (c := read.first().get("conversation")):
            trace_default = f"conversation:{c}"
    for read in reads.values():
        _map_span(walk, read, trace_default)
    return walk.units


_START_ORDER = operator.attrgetter("start_ns", "span_id", "end_ns")


def spans_only(spans: Sequence[Span]) -> list[Unit]:
    """Each span's `span.recorded` alone, under the key `map_trace` gives it."""
    unique = {s.span_id: s for s in sorted(spans, key=operator.attrgetter("start_ns", "span_id"))}
    return [
        Unit(f"otel:{s.trace_id}:{s.span_id}", [_recorded(s, None)], span=s.span_id)
        for s in unique.values()
    ]


def _session(walk: _Walk, read: _Read, trace_default: str | None) -> _Session:
    span = read.span
    key = _conversation(walk, read, trace_default)
    if key not in walk.sessions:
        session = _Session(_named_id(f"session:{key}"))
        walk.sessions[key] = session
        meta: dict[str, Any] = {"source": "opentelemetry"}
        kind, _, value = key.partition(":")
        meta["conversation_id" if kind == "conversation" else "trace_id"] = value
        for up in walk.ancestors(read):  # the nearest span that names each wins
            for name in ("user_id", "workflow"):
                if name not in meta and (found := up.first().get(name)) is not None:
                    meta[name] = found
        if (service := span.resource.get("service.name")) is not None:
            meta["service"] = service
        created = ev.SessionCreated(
            id=session.id, metadata=meta, tags=["otel"], occurred_at=span.start_ns
        )
        walk.units.append(Unit(f"otel:session:{key}", [created]))
    return walk.sessions[key]


def _register(walk: _Walk, agent: _Agent, span: Span) -> None:
    key = f"otel:agent:{agent.key}"
    if key not in walk.registered:
        walk.registered.add(key)
        walk.units.append(
            Unit(
                key,
                [
                    ev.AgentRegistered(
                        id=agent.id,
                        name=agent.name,
                        role=agent.role,
                        model=agent.model,
                        metadata={"source": "opentelemetry"},
                        occurred_at=span.start_ns,
                    )
                ],
            )
        )


def _map_span(walk: _Walk, read: _Read, trace_default: str | None) -> None:
    span, op = read.span, read.op
    agent = _agent_of(walk, read) if op is not None else None
    actor = agent.name if agent is not None else None
    recorded = _recorded(span, actor)
    key = f"otel:{span.trace_id}:{span.span_id}"
    is_turn = op in _CHAT_OPS or (op in _AGENT_OPS and _is_agent_turn(walk, read))
    if not is_turn and op != "execute_tool":
        walk.units.append(Unit(key, [recorded], span=span.span_id))
        return
    if agent is not None:
        _register(walk, agent, span)
    events: list[ev.EventBase] = [recorded]
    session = _session(walk, read, trace_default)
    if is_turn:
        extra = _turn(walk, read, session, agent, events)
    else:
        extra = _tool(walk, read, session, events)
    walk.units.append(Unit(key, events, recorded if len(events) > 1 else None, span.span_id))
    walk.units.extend(extra)


def _is_agent_turn(walk: _Walk, read: _Read) -> bool:
    """An agent span that carries its own input and output and has no chat span inside: an
    agent not instrumented by a library (`eventlog.otel.agent`), or OpenInference's AGENT.
    The chat spans are looked for first: an instrumented agent has them, and reading its
    messages would try every convention in turn."""
    if walk.below_chat(read):
        return False
    return bool(messages(read, False) or messages(read, True))


def _schema_name(schema: Any) -> Any:
    """A tool's name in a JSON schema: OpenAI's ``{"function": {"name"}}`` or ``{"name"}``."""
    if not isinstance(schema, dict):
        return None
    inner = schema.get("function")
    return (inner if isinstance(inner, dict) else schema).get("name")


def _new_input(inputs: list[Message]) -> list[Message]:
    """The messages after the last assistant message: what this call added to the history."""
    last = max((i for i, m in enumerate(inputs) if m.role == "assistant"), default=-1)
    return inputs[last + 1 :]


def _message_json(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": bound(c.arguments)} for c in m.tool_calls
        ]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _turn(
    walk: _Walk, read: _Read, session: _Session, agent: _Agent | None, events: list[ev.EventBase]
) -> list[Unit]:
    span, first = read.span, read.first()
    a = span.attributes
    params = _invocation(a)
    inputs, outputs = messages(read, False), messages(read, True)
    new = _new_input(inputs)
    tid, sid = span.trace_id, span.span_id
    prompt_id = _timed_id(span.start_ns, f"{tid}:{sid}:prompt")
    response_id = _timed_id(span.end_ns, f"{tid}:{sid}:response")
    actor = agent.name if agent else None
    provider = _str(first.get("provider"))
    request_model = _str(first.get("request_model"))
    custom: dict[str, Any] = {
        "trace_id": tid,
        "span_id": sid,
        "messages": [_message_json(m) for m in inputs],
    }
    if provider:
        custom["provider"] = provider
    if (system := _system(span)) is not None:
        custom["system"] = system
    defined = _json(a.get("gen_ai.tool.definitions"))
    tools = []
    if "0.name" in (family := read.family("gen_ai.request.functions.")):
        tools += [t.get("name") for t in _indexed(family, "")]
    if "0.name" in (family := read.family("llm.request.functions.")):  # OpenLLMetry, older
        tools += [t.get("name") for t in _indexed(family, "")]
    tools += [
        t.get("name") or (t.get("function") or {}).get("name")
        for t in (defined if isinstance(defined, list) else [])
        if isinstance(t, dict)
    ]
    if "0.tool.json_schema" in (family := read.family("llm.tools.")):
        schemas = [_json(t.get("tool.json_schema")) for t in _indexed(family, "")]
        tools += [_schema_name(s) for s in schemas]
    events.append(
        ev.PromptAdded(
            id=prompt_id,
            session_id=session.id,
            content=bound_text("\n".join(m.text for m in new if m.text)) or _uncaptured(inputs),
            metadata=ev.PromptMetadata(
                model=request_model,
                temperature=_float(_given(first.get("temperature"), params.get("temperature"))),
                max_tokens=_int(
                    _given(
                        first.get("max_tokens"),
                        params.get("max_tokens"),
                        params.get("max_completion_tokens"),
                    )
                ),
                tools_available=[str(t) for t in tools if t],
                custom=custom,
            ),
            occurred_at=span.start_ns,
            actor=actor,
        )
    )
    if agent is not None:
        events.append(
            ev.AgentAssigned(
                id=_timed_id(span.start_ns, f"{tid}:{sid}:assigned"),
                prompt_id=prompt_id,
                agent_id=agent.id,
                occurred_at=span.start_ns,
                actor=actor,
            )
        )
    events.append(_response(read, prompt_id, response_id, outputs, actor))
    turn = _Turn(span.start_ns, response_id, {})
    units: list[Unit] = []
    for i, call in enumerate(c for m in outputs for c in m.tool_calls):
        tool_id = _call_id(call.id) if call.id else _timed_id(span.end_ns, f"{tid}:{sid}:tool:{i}")
        invoked = ev.ToolInvoked(
            id=tool_id,
            response_id=response_id,
            tool_name=call.name or "tool",
            parameters=bound(_json(call.arguments)),
            occurred_at=span.end_ns,
            actor=actor,
        )
        units.append(Unit(f"otel:{tid}:{sid}:tool:{i}", [invoked], span=sid))
        if call.id:
            turn.calls[call.id] = invoked.tool_name
            walk.invoked[call.id] = tool_id
    session.turns.append(turn)
    return units + [
        Unit(
            f"otel:{tid}:{sid}:result:{m.tool_call_id}",
            [
                ev.ToolCompleted(
                    tool_id=_call_id(m.tool_call_id),
                    result=bound(_json(m.text)) if m.text else None,  # None: not captured
                    occurred_at=span.start_ns,
                    actor=actor,
                )
            ],
            span=sid,
        )
        for m in new
        if m.tool_call_id and m.tool_call_id not in walk.tool_span_calls
    ]


NOT_CAPTURED = "[input not captured]"
"""A prompt's content when its span carries no input messages: content capture is off (the
default of most instrumentations). The log needs a prompt's text; this one says why there is
none, and the turn keeps its usage, model, latency and agent."""
NO_NEW_INPUT = "[no new input]"
"""A prompt's content when the input ends with the assistant's own message (a call that
continues it): the full list is still in ``metadata.custom["messages"]``."""


def _uncaptured(inputs: list[Message]) -> str:
    return NO_NEW_INPUT if any(m.text for m in inputs) else NOT_CAPTURED


def _response(
    read: _Read,
    prompt_id: uuid.UUID,
    response_id: uuid.UUID,
    outputs: list[Message],
    actor: str | None,
) -> ev.ResponseAdded:
    span, first = read.span, read.first()
    a = span.attributes
    reasons = a.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, str):
        reasons = [reasons]
    finish = (
        (reasons[0] if isinstance(reasons, list | tuple) and reasons else None)
        or next((m.finish_reason for m in outputs if m.finish_reason), None)
        or _str(a.get("llm.finish_reason"))
        or None  # an empty one is none: a failed call's is then `error`
    )
    usage = ev.TokenUsage(
        _int(first.get("input_tokens")) or 0, _int(first.get("output_tokens")) or 0
    )
    # The counts beside the main ones (read apart: `_USAGE_MAIN` are `_FIELDS`), by name;
    # GenAI's win over OpenInference's of the same name, as every current GenAI name does.
    details = dict(read.family("gen_ai.usage."))
    for name, count in read.family("llm.token_count.").items():
        if name != "total":
            details.setdefault(name, count)
    meta: dict[str, Any] = {"trace_id": span.trace_id, "span_id": span.span_id}
    if details:
        meta["usage"] = details
    if (rid := first.get("response_id")) is not None:
        meta["response_id"] = rid
    calls = [_message_json(m) for m in outputs if m.tool_calls]
    if calls:
        meta["tool_calls"] = [c for m in calls for c in m["tool_calls"]]
    if span.status == "error":
        meta["error"] = span.status_message or "error"
    return ev.ResponseAdded(
        id=response_id,
        prompt_id=prompt_id,
        content=bound_text("\n".join(m.text for m in outputs if m.text)),
        usage=usage,
        finish_reason=_finish_reason(finish, span),
        latency_ms=max(span.end_ns - span.start_ns, 0) / 1e6,
        model=_str(first.get("response_model")),
        metadata=meta,
        occurred_at=span.end_ns,
        actor=actor,
    )


_FINISH_REASONS = {
    "tool_calls": "tool_call",
    "tool_use": "tool_call",
    "function_call": "tool_call",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
}
"""Providers' spellings of the GenAI conventions' finish reasons (``stop``, ``length``,
``content_filter``, ``tool_call``, ``error``); others are kept as given."""


def _finish_reason(given: Any, span: Span) -> str | None:
    if given is None:
        return "error" if span.status == "error" else None
    text = str(given)
    return _FINISH_REASONS.get(text, text)


def _asked(walk: _Walk, before: list[_Turn], name: str) -> str | None:
    """For a tool span without a call id (OpenInference's LangChain tools): the first call of
    that tool the latest turn before it asked for that no tool span has answered yet."""
    for turn in reversed(before[-1:]):
        for call, tool in turn.calls.items():
            if tool == name and call not in walk.tool_span_calls:
                return call
    return None


def _unwrap(result: Any) -> Any:
    """A LangChain ToolMessage as OpenInference records it (``{"type": "tool", "data":
    {"content": ...}}``): its content."""
    if isinstance(result, dict) and result.get("type") == "tool":
        data = result.get("data")
        if isinstance(data, dict) and "content" in data:
            return _json(data["content"])
    return result


def _tool(walk: _Walk, read: _Read, session: _Session, events: list[ev.EventBase]) -> list[Unit]:
    """An ``execute_tool`` span: completes the invocation its call id names, or is itself an
    invocation of the session's latest response before it."""
    span, first = read.span, read.first()
    call = _str(first.get("call"))
    name = _str(first.get("tool_name")) or span.name
    arguments = _json(first.get("tool_arguments"))
    result = _unwrap(_json(first.get("tool_result")))
    actor = events[0].actor
    before = [t for t in session.turns if t.start_ns <= span.start_ns]
    call = call or _asked(walk, before, name)
    if call:
        walk.tool_span_calls.add(call)
    tool_id = walk.invoked.get(call) if call else None
    if tool_id is None:
        if before:
            tool_id = (
                _call_id(call)
                if call
                else _timed_id(span.start_ns, f"{span.trace_id}:{span.span_id}:tool")
            )
            events.append(
                ev.ToolInvoked(
                    id=tool_id,
                    response_id=before[-1].response_id,
                    tool_name=name,
                    parameters=bound(arguments),
                    occurred_at=span.start_ns,
                    actor=actor,
                )
            )
        elif call:
            tool_id = _call_id(call)  # invoked in an earlier trace
        else:
            return []
    error = (span.status_message or "error") if span.status == "error" else None
    events.append(
        ev.ToolCompleted(
            tool_id=tool_id,
            result=None if error else bound(result),
            error=error,
            duration_ms=max(span.end_ns - span.start_ns, 0) / 1e6,
            occurred_at=span.end_ns,
            actor=actor,
        )
    )
    return []
