"""Referential checks at append, and the id index updates every stored event implies.

`Resolver.resolve` runs under the append lock for each new event: it checks every id the
event names (exists, right kind, not deleted), fills what the log derives (the session of a
response, a template's next version, a prompt rendered from its template), and stages the
index entries the event creates. `Resolver.record` stages the same entries for events
already in the log (written by another process, or met while rebuilding an index) without
checking them. Staged entries join the index only once the frame is durably written.

This runs once per appended event, so it dispatches on the event's type through a table
rather than a `match`, and keys the index by `UUID.int`. A request of many events made only
of new sessions, plain prompts and responses (what bulk loads append) takes a shorter way,
`resolve_all`'s: its new ids are checked against the index in one set operation, and each
event's references in one inline step; anything it does not vouch for goes the long way. A
group commit's run of plain requests (many agents' single appends) takes it too, all of
their events at once (`resolve_plain`), and each request its own way if it does not vouch.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Collection
from typing import Any

import re2

from . import events as ev
from ._ids import uuid_from_int
from ._index import FLAG_COMPLETED, FLAG_DELETED, Entry
from .errors import (
    DeletedNodeReference,
    InvalidEvent,
    InvalidVariable,
    MissingVariable,
    UnknownNode,
    WrongNodeKind,
)
from .events import NodeKind

__all__ = ["PLAIN_FROM", "RUN_FROM", "Resolver", "render_template", "session_of"]

_EDGE_TYPE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEMVER = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_BUMPS = ("major", "minor", "patch")
_TYPES: dict[str, Callable[[object], bool]] = {  # type_hint -> does a bound value fit it
    "string": lambda v: True,  # the default, and every older template's: rendered as text
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "any": lambda v: True,
}
_SESSION, _PROMPT, _RESPONSE = NodeKind.SESSION, NodeKind.PROMPT, NodeKind.RESPONSE
_AGENT, _TEMPLATE, _TOOL = NodeKind.AGENT, NodeKind.TEMPLATE, NodeKind.TOOL_INVOCATION

Lookup = Callable[[int], Entry | None]
LoadEvent = Callable[[int], ev.EventBase]
Absent = Callable[[Collection[int]], bool]  # True only if the index holds none of these keys
PLAIN_FROM = 16
"""Requests of this many events may take `resolve_all`'s short way (it pays from about 4 and
saves about a third from 16, measured); smaller ones, an agent's own, keep the long way."""
RUN_FROM = 4
"""A group commit's plain requests of this many events in all are checked together by the
short way (`Resolver.resolve_plain`); a check per request costs several times as much."""


def render_template(text: str, values: dict[str, object]) -> str:
    """Substitute ``{{name}}`` placeholders: unknown names stay as they are, an optional
    variable bound to nothing (None) renders as empty."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        bound = values[name]
        return "" if bound is None else str(bound)

    return _PLACEHOLDER.sub(value, text)


def _int(node: uuid.UUID | None) -> int:
    return 0 if node is None else node.int


def _uuid(value: int) -> uuid.UUID | None:
    return uuid_from_int(value) if value else None


class Resolver:
    """Checks and index updates for one group commit. Not thread-safe: used under the lock.

    Entries are staged per request (`_request`), then per group (`staged`) when the request
    is accepted; the caller publishes `staged` after the frame is written.
    """

    def __init__(self, lookup: Lookup, load_event: LoadEvent, absent: Absent | None = None) -> None:
        self._lookup = lookup
        self._load_event = load_event
        self._absent = absent or (lambda keys: all(lookup(key) is None for key in keys))
        self.staged: dict[int, Entry] = {}
        self.touched: dict[int, int] = {}  # session -> last LSN of the group's events in it
        self.pending: dict[int, ev.EventBase] = {}  # events of this group, by LSN
        self._request: dict[int, Entry] = {}
        self._request_touched: dict[int, int] = {}
        self._request_pending: dict[int, ev.EventBase] = {}

    # -- the request transaction -----------------------------------------------------------

    def commit_request(self) -> None:
        self.staged.update(self._request)
        self.touched.update(self._request_touched)
        self.pending.update(self._request_pending)
        self.abort_request()

    def abort_request(self) -> None:
        self._request = {}
        self._request_touched = {}
        self._request_pending = {}

    def publish(self, entries: dict[int, Entry]) -> None:
        """Merge the group's entries into `entries`; touched sessions get their last LSN."""
        entries.update(self.staged)
        for session, lsn in self.touched.items():
            old = entries.get(session) or self._lookup(session)
            if old is not None and old.kind == _SESSION and old.lsn < lsn:
                entries[session] = Entry(old.kind, old.flags, lsn, old.aux)

    def session_lsn(self, session: int) -> int | None:
        """A session's last LSN before the current request."""
        touched = self.touched.get(session)
        if touched is not None:
            return touched
        entry = self.staged.get(session) or self._lookup(session)
        return entry.lsn if entry is not None and entry.kind == _SESSION else None

    def get(self, key: int) -> Entry | None:
        found = self._request.get(key)
        if found is None:
            found = self.staged.get(key)
            if found is None:
                found = self._lookup(key)
        return found

    def put(self, key: int, entry: Entry) -> None:
        self._request[key] = entry

    def event_at(self, lsn: int) -> ev.EventBase:
        found = self._request_pending.get(lsn) or self.pending.get(lsn)
        return found if found is not None else self._load_event(lsn)

    # -- the two entry points --------------------------------------------------------------

    def resolve(self, event: ev.EventBase, lsn: int) -> ev.EventBase:
        """Check `event` against the index, fill derived fields, stage its entries."""
        check = _CHECKS.get(type(event))
        if check is None:
            raise InvalidEvent(f"not an event: {type(event).__name__}")
        check(self, event)
        self.record(event, lsn)
        self._request_pending[lsn] = event
        return event

    def resolve_all(self, events: list[ev.EventBase], first_lsn: int) -> None:
        """`resolve` each of a request's events, at LSNs from `first_lsn`."""
        if len(events) >= PLAIN_FROM and self._resolve_plain(events, first_lsn):
            return
        pending = self._request_pending
        for lsn, event in enumerate(events, first_lsn):
            if type(event) is ev.SpanRecorded:  # what `resolve` does to it, inline: it names
                pending[lsn] = event  # no node and makes no entry (half of what ingest stores)
            else:
                self.resolve(event, lsn)

    def resolve_plain(self, events: list[ev.EventBase], first_lsn: int) -> bool:
        """`resolve_all`'s short way alone, for the events of several requests in a row (a
        group commit's): True if it resolved them all, False (nothing staged, no event
        changed) when each request must go its own way."""
        return self._resolve_plain(events, first_lsn)

    def _resolve_plain(self, events: list[ev.EventBase], first_lsn: int) -> bool:
        """What `resolve` does to each event, in one pass, for a request of only new
        sessions, prompts without template or parent, and responses: True if done. False
        (nothing staged, no event changed) whenever `resolve` might decide otherwise or
        raise, so the long way decides, and names the error."""
        try:
            new = [e.id.int for e in events]  # type: ignore[attr-defined]
        except AttributeError:  # an event without an id: not one of the three
            return False
        if not self._all_new(new):
            return False
        made: dict[int, Entry] = {}
        touched: dict[int, int] = {}
        sessions: list[tuple[ev.ResponseAdded, int]] = []  # responses' derived sessions
        get, lsn = self.get, first_lsn
        for event, key in zip(events, new, strict=True):
            kind = type(event)
            if kind is ev.PromptAdded:
                e: Any = event
                if e.template_id is not None or e.parent_prompt_id is not None or not e.content:
                    return False
                session = e.session_id.int
                found = made.get(session) or get(session)
                if found is None or found.kind != _SESSION or found.flags & FLAG_DELETED:
                    return False
                made[key] = Entry(_PROMPT, 0, lsn, session)
            elif kind is ev.ResponseAdded:
                e = event
                prompt = e.prompt_id.int
                found = made.get(prompt) or get(prompt)
                if found is None or found.kind != _PROMPT or found.flags & FLAG_DELETED:
                    return False
                session = found.aux
                if not session or (e.session_id is not None and e.session_id.int != session):
                    return False
                sessions.append((e, session))
                made[key] = Entry(_RESPONSE, 0, lsn, session)
            elif kind is ev.SessionCreated:
                session = key
                made[key] = Entry(_SESSION, 0, lsn, key)
            else:
                return False
            touched[session] = lsn
            lsn += 1
        for response, session in sessions:
            if response.session_id is None:
                response.session_id = uuid_from_int(session)
        self._request.update(made)
        self._request_touched.update(touched)
        self._request_pending.update(zip(range(first_lsn, lsn), events, strict=True))
        return True

    def _all_new(self, keys: list[int]) -> bool:
        """True if `keys` are distinct and none is known, staged or in the index: what `new`
        checks of each id, in a few set operations."""
        return (
            len(set(keys)) == len(keys)
            and self._request.keys().isdisjoint(keys)
            and self.staged.keys().isdisjoint(keys)
            and self._absent(keys)
        )

    def record(self, event: ev.EventBase, lsn: int) -> None:
        """Stage the index entries an (already valid) event implies."""
        _RECORDS[type(event)](self, event, lsn)
        field = _SESSION_FIELD.get(type(event))
        if field is not None:
            session = getattr(event, field)
            if session is not None:
                self._request_touched[session.int] = lsn

    # -- checks ----------------------------------------------------------------------------

    def node(self, node_id: uuid.UUID, *kinds: NodeKind) -> Entry:
        """The entry of a live node of one of `kinds` (any kind if none given)."""
        entry = self.get(node_id.int)
        if entry is None or entry.kind > NodeKind.NODE:
            raise UnknownNode(node_id, _expected(kinds))
        if kinds and entry.kind not in kinds:
            actual = NodeKind(entry.kind).name.lower().replace("_", " ")
            raise WrongNodeKind(node_id, _expected(kinds), actual)
        if entry.flags & FLAG_DELETED:
            raise DeletedNodeReference(node_id)
        return entry

    def new(self, node_id: uuid.UUID) -> None:
        if self.get(node_id.int) is not None:
            raise InvalidEvent(f"id {node_id} is already used by another node")

    def template(
        self, template_id: uuid.UUID, version: int | None = None
    ) -> tuple[int, ev.TemplateCreated | ev.TemplateUpdated]:
        """The number and defining event of a template's `version` (None: the current one),
        found by following each version's `previous_lsn` back from the current one."""
        found = self.event_at(self.node(template_id, _TEMPLATE).lsn)
        assert isinstance(found, ev.TemplateCreated | ev.TemplateUpdated)
        current = _version_of(found)
        if version is None:
            return current, found
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidEvent(f"template_version must be a positive int, got {version!r}")
        if version > current:
            raise InvalidEvent(f"template {template_id} has no version {version} (at {current})")
        while _version_of(found) > version:
            if not isinstance(found, ev.TemplateUpdated) or found.previous_lsn is None:
                raise InvalidEvent(
                    f"version {version} of template {template_id} predates version links "
                    "in this log: only versions after it can be named"
                )
            found = self.event_at(found.previous_lsn)
        assert isinstance(found, ev.TemplateCreated | ev.TemplateUpdated)
        return version, found

    def bind(
        self, template_id: uuid.UUID, variables: dict[str, Any], version: int | None = None
    ) -> tuple[int, str, dict[str, Any]]:
        """Version, text and full bindings (defaults applied) of a template instantiation;
        every bound value is checked against its variable's type hint and pattern."""
        version, found = self.template(template_id, version)
        missing = [v.name for v in found.variables if v.required and v.name not in variables]
        if missing:
            raise MissingVariable(template_id, missing)
        for spec in found.variables:
            if spec.name in variables:
                _check_value(template_id, spec, variables[spec.name])
        bound = {v.name: v.default for v in found.variables if not v.required}
        bound.update(variables)
        return version, found.text, bound


def _expected(kinds: tuple[NodeKind, ...]) -> str:
    return " or ".join(k.name.lower().replace("_", " ") for k in kinds) if kinds else "node"


def _same_session(given: uuid.UUID | None, derived: int) -> uuid.UUID | None:
    """The session the log derives, which a caller-given session_id must match."""
    if given is not None and given.int == derived:
        return given
    session = _uuid(derived)
    if given is not None and given != session:
        raise InvalidEvent(f"session_id {given} does not match the node's session {session}")
    return session


def _check_variables(variables: list[ev.VariableSpec]) -> None:
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise InvalidEvent(f"template variables must have distinct names, got {names}")
    bad = [n for n in names if not _IDENTIFIER.fullmatch(n)]
    if bad:
        raise InvalidEvent(f"template variable names must be identifiers, got {bad}")
    for v in variables:
        if v.type_hint not in _TYPES:
            known = ", ".join(_TYPES)
            raise InvalidEvent(
                f"variable {v.name}: type_hint {v.type_hint!r} is not one of {known}"
            )
        if v.pattern is not None:
            try:
                _pattern(v.pattern)
            except re2.error as exc:
                reason = exc.args[0].decode() if exc.args else "invalid"
                raise InvalidEvent(
                    f"variable {v.name}: pattern is not a regular expression RE2 accepts: {reason}"
                ) from None


def _check_value(template_id: uuid.UUID, spec: ev.VariableSpec, value: object) -> None:
    """A bound value fits its variable: of its type hint (an unknown hint, possible only in
    templates older than the check, takes anything) and, as text, matching its pattern."""
    if value is None:
        return
    fits = _TYPES.get(spec.type_hint)
    if fits is not None and not fits(value):
        raise InvalidVariable(template_id, spec.name, f"{value!r} is not of type {spec.type_hint}")
    if spec.pattern is not None and _pattern(spec.pattern).fullmatch(str(value)) is None:
        raise InvalidVariable(
            template_id, spec.name, f"{str(value)!r} does not match pattern {spec.pattern!r}"
        )


_RE2 = re2.Options()
_RE2.log_errors = False  # a bad pattern is our one-line InvalidEvent, not a log line on stderr


@functools.lru_cache(maxsize=256)
def _pattern(pattern: str) -> Any:
    """A variable's pattern, compiled by RE2: matching takes time linear in the value, so no
    pattern (``(a+)+$``) can make an append, or a `render`, backtrack for minutes. RE2 has
    no backreferences or lookaround; a pattern using them is refused when stored."""
    return re2.compile(pattern, _RE2)


def _version_of(event: ev.EventBase) -> int:
    return event.version if isinstance(event, ev.TemplateUpdated) else 1


def bumped(semver: str, part: str) -> str:
    """`semver` with its `part` (major, minor or patch) raised and the parts after it zeroed."""
    major, minor, patch = (int(x) for x in semver.split("."))
    if part == "major":
        return f"{major + 1}.0.0"
    return f"{major}.{minor + 1}.0" if part == "minor" else f"{major}.{minor}.{patch + 1}"


# -- per-type checks: raise if the event may not be stored; fill derived fields -------------


def _check_new_session(r: Resolver, e: ev.SessionCreated) -> None:
    r.new(e.id)


def _check_session_updated(r: Resolver, e: ev.SessionUpdated) -> None:
    r.node(e.session_id, _SESSION)


def _check_session_forked(r: Resolver, e: ev.SessionForked) -> None:
    r.new(e.id)
    r.node(e.parent_session_id, _SESSION)
    if e.fork_point is not None and r.node(e.fork_point).aux != e.parent_session_id.int:
        raise InvalidEvent(f"fork point {e.fork_point} is not a node of the parent session")


def _check_prompt(r: Resolver, e: ev.PromptAdded) -> None:
    r.new(e.id)
    r.node(e.session_id, _SESSION)
    if (
        e.parent_prompt_id is not None
        and r.node(e.parent_prompt_id, _PROMPT).aux != e.session_id.int
    ):
        raise InvalidEvent("parent_prompt_id is a prompt of another session")
    if e.template_id is not None:
        version, text, bound = r.bind(e.template_id, e.variables, e.template_version)
        e.template_version, e.variables = version, bound
        if not e.content:
            e.content = render_template(text, bound)
    elif not e.content:
        raise InvalidEvent("a prompt needs content or a template")


def _check_response(r: Resolver, e: ev.ResponseAdded) -> None:
    r.new(e.id)
    e.session_id = _same_session(e.session_id, r.node(e.prompt_id, _PROMPT).aux)


def _check_agent(r: Resolver, e: ev.AgentRegistered) -> None:
    r.new(e.id)


def _check_agent_updated(r: Resolver, e: ev.AgentUpdated) -> None:
    r.node(e.agent_id, _AGENT)


def _check_assigned(r: Resolver, e: ev.AgentAssigned) -> None:
    r.new(e.id)
    prompt = r.node(e.prompt_id, _PROMPT)
    r.node(e.agent_id, _AGENT)
    e.session_id = _same_session(e.session_id, prompt.aux)


def _check_handoff(r: Resolver, e: ev.AgentHandoff) -> None:
    r.new(e.id)
    response = r.node(e.response_id, _RESPONSE)
    r.node(e.to_agent_id, _AGENT)
    if e.from_agent_id is not None:
        r.node(e.from_agent_id, _AGENT)
    e.session_id = _same_session(e.session_id, response.aux)


def _check_template(r: Resolver, e: ev.TemplateCreated) -> None:
    r.new(e.id)
    _check_variables(e.variables)
    if e.parent_id is not None:
        r.node(e.parent_id, _TEMPLATE)
    if e.semver is None:
        e.semver = "1.0.0"
    elif not _SEMVER.fullmatch(e.semver):
        raise InvalidEvent(f"semver must be MAJOR.MINOR.PATCH (like 1.0.0), got {e.semver!r}")


def _check_template_updated(r: Resolver, e: ev.TemplateUpdated) -> None:
    version, latest = r.template(e.template_id)
    _check_variables(e.variables)
    if e.bump is None:
        e.bump = "patch"
    elif e.bump not in _BUMPS:
        raise InvalidEvent(f"bump must be one of {', '.join(_BUMPS)}, got {e.bump!r}")
    e.version = version + 1
    e.semver = bumped(ev.template_semver(latest), e.bump)
    e.previous_lsn = r.node(e.template_id).lsn


def _check_linked(r: Resolver, e: ev.TemplateLinked) -> None:
    r.new(e.id)
    prompt = r.node(e.prompt_id, _PROMPT)
    e.template_version, _text, e.variables = r.bind(
        e.template_id, e.variables, e.template_version or None
    )
    e.session_id = _same_session(e.session_id, prompt.aux)


def _check_tool(r: Resolver, e: ev.ToolInvoked) -> None:
    r.new(e.id)
    if not e.tool_name:
        raise InvalidEvent("a tool invocation needs a tool_name")
    e.session_id = _same_session(e.session_id, r.node(e.response_id, _RESPONSE).aux)


def _check_tool_completed(r: Resolver, e: ev.ToolCompleted) -> None:
    tool = r.node(e.tool_id, _TOOL)
    if tool.flags & FLAG_COMPLETED:
        raise InvalidEvent(f"tool invocation {e.tool_id} is already completed")
    e.session_id = _same_session(e.session_id, tool.aux)


def _check_tool_retried(r: Resolver, e: ev.ToolRetried) -> None:
    tool = r.node(e.tool_id, _TOOL)
    if tool.flags & FLAG_COMPLETED:
        last = r.event_at(tool.lsn)
        if isinstance(last, ev.ToolCompleted) and last.error is None:
            raise InvalidEvent(f"tool invocation {e.tool_id} succeeded: it cannot be retried")
    e.session_id = _same_session(e.session_id, tool.aux)


def _check_edge(r: Resolver, e: ev.EdgeAdded) -> None:
    r.new(e.id)
    if not _EDGE_TYPE.match(e.edge_type):
        raise InvalidEvent(f"edge type {e.edge_type!r} must be upper-case letters, digits and _")
    source, target = r.node(e.from_id), r.node(e.to_id)
    e.session_id = _same_session(e.session_id, source.aux or target.aux)


def _check_node(r: Resolver, e: ev.NodeAdded) -> None:
    r.new(e.id)
    if not e.kind:
        raise InvalidEvent("a node needs a kind (document, context, feedback, ...)")
    if e.session_id is not None:
        r.node(e.session_id, _SESSION)


def _check_deleted(r: Resolver, e: ev.NodeDeleted) -> None:
    e.session_id = _same_session(e.session_id, r.node(e.node_id).aux)


# -- per-type entries: what the index learns from a stored event -----------------------------


def _entry(kind: NodeKind, lsn: int, session: uuid.UUID | None, flags: int = 0) -> Entry:
    return Entry(kind, flags, lsn, _int(session))


def _record_session(r: Resolver, e: ev.SessionCreated | ev.SessionForked, lsn: int) -> None:
    r.put(e.id.int, Entry(_SESSION, 0, lsn, e.id.int))


def _record_prompt(r: Resolver, e: ev.PromptAdded, lsn: int) -> None:
    r.put(e.id.int, Entry(_PROMPT, 0, lsn, e.session_id.int))


def _record_response(r: Resolver, e: ev.ResponseAdded, lsn: int) -> None:
    r.put(e.id.int, _entry(_RESPONSE, lsn, e.session_id))


def _record_agent(r: Resolver, e: ev.AgentRegistered, lsn: int) -> None:
    r.put(e.id.int, _entry(_AGENT, lsn, None))


def _record_agent_updated(r: Resolver, e: ev.AgentUpdated, lsn: int) -> None:
    r.put(e.agent_id.int, _entry(_AGENT, lsn, None))


def _record_edge(
    r: Resolver, e: ev.AgentAssigned | ev.AgentHandoff | ev.TemplateLinked | ev.EdgeAdded, lsn: int
) -> None:
    r.put(e.id.int, _entry(NodeKind.EDGE, lsn, e.session_id))


def _record_template(r: Resolver, e: ev.TemplateCreated, lsn: int) -> None:
    r.put(e.id.int, _entry(_TEMPLATE, lsn, None))


def _record_template_updated(r: Resolver, e: ev.TemplateUpdated, lsn: int) -> None:
    r.put(e.template_id.int, _entry(_TEMPLATE, lsn, None))


def _record_tool(r: Resolver, e: ev.ToolInvoked, lsn: int) -> None:
    r.put(e.id.int, _entry(_TOOL, lsn, e.session_id))


def _record_tool_completed(r: Resolver, e: ev.ToolCompleted, lsn: int) -> None:
    r.put(e.tool_id.int, _entry(_TOOL, lsn, e.session_id, FLAG_COMPLETED))


def _record_tool_retried(r: Resolver, e: ev.ToolRetried, lsn: int) -> None:
    r.put(e.tool_id.int, _entry(_TOOL, lsn, e.session_id))  # pending again: not completed


def _record_node(r: Resolver, e: ev.NodeAdded, lsn: int) -> None:
    r.put(e.id.int, _entry(NodeKind.NODE, lsn, e.session_id))


def _record_deleted(r: Resolver, e: ev.NodeDeleted, lsn: int) -> None:
    old = r.get(e.node_id.int)
    if old is not None:
        r.put(e.node_id.int, Entry(old.kind, old.flags | FLAG_DELETED, lsn, old.aux))


def _record_nothing(r: Resolver, e: ev.EventBase, lsn: int) -> None:
    """Session updates change no entry but the session's last LSN (done by `record`);
    an erasure's record changes none at all."""


def _check_nothing(r: Resolver, e: ev.EventBase) -> None:
    """A span names no node, and an erasure's record refers to nothing the index must hold
    (erased nodes may be gone): nothing to check."""


_Handler = Callable[[Resolver, Any], None]
_Recorder = Callable[[Resolver, Any, int], None]
_CHECKS: dict[type[ev.EventBase], _Handler] = {
    ev.SessionCreated: _check_new_session,
    ev.SessionUpdated: _check_session_updated,
    ev.SessionForked: _check_session_forked,
    ev.PromptAdded: _check_prompt,
    ev.ResponseAdded: _check_response,
    ev.AgentRegistered: _check_agent,
    ev.AgentUpdated: _check_agent_updated,
    ev.AgentAssigned: _check_assigned,
    ev.AgentHandoff: _check_handoff,
    ev.TemplateCreated: _check_template,
    ev.TemplateUpdated: _check_template_updated,
    ev.TemplateLinked: _check_linked,
    ev.ToolInvoked: _check_tool,
    ev.ToolCompleted: _check_tool_completed,
    ev.ToolRetried: _check_tool_retried,
    ev.EdgeAdded: _check_edge,
    ev.NodeAdded: _check_node,
    ev.NodeDeleted: _check_deleted,
    ev.SpanRecorded: _check_nothing,
    ev.ErasureApplied: _check_nothing,
}
_RECORDS: dict[type[ev.EventBase], _Recorder] = {
    ev.SessionCreated: _record_session,
    ev.SessionUpdated: _record_nothing,
    ev.SessionForked: _record_session,
    ev.PromptAdded: _record_prompt,
    ev.ResponseAdded: _record_response,
    ev.AgentRegistered: _record_agent,
    ev.AgentUpdated: _record_agent_updated,
    ev.AgentAssigned: _record_edge,
    ev.AgentHandoff: _record_edge,
    ev.TemplateCreated: _record_template,
    ev.TemplateUpdated: _record_template_updated,
    ev.TemplateLinked: _record_edge,
    ev.ToolInvoked: _record_tool,
    ev.ToolCompleted: _record_tool_completed,
    ev.ToolRetried: _record_tool_retried,
    ev.EdgeAdded: _record_edge,
    ev.NodeAdded: _record_node,
    ev.NodeDeleted: _record_deleted,
    ev.SpanRecorded: _record_nothing,
    ev.ErasureApplied: _record_nothing,
}
assert set(_CHECKS) == set(_RECORDS) == set(ev.event_types().values()), (
    "every event type needs both"
)

_SESSION_FIELD: dict[type[ev.EventBase], str] = {
    ev.SessionCreated: "id",
    ev.SessionForked: "id",
    **{t: "session_id" for t in _CHECKS if "session_id" in t.__struct_fields__},
}


def session_of(event: ev.EventBase) -> uuid.UUID | None:
    """The session an event belongs to, if any (the session it creates counts)."""
    field = _SESSION_FIELD.get(type(event))
    found: uuid.UUID | None = None if field is None else getattr(event, field)
    return found
