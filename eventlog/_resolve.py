"""Referential checks at append, and the id index updates every stored event implies.

`Resolver.resolve` runs under the append lock for each new event: it checks every id the
event names (exists, right kind, not deleted), fills what the log derives (the session of a
response, a template's next version, a prompt rendered from its template), and stages the
index entries the event creates. `Resolver.record` applies the same entries for events
already in the log (written by another process, or found while rebuilding an index) without
checking them. Staged entries join the index only when the frame is durably written.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from . import events as ev
from ._index import FLAG_COMPLETED, FLAG_DELETED, Entry
from .errors import (
    DeletedNodeReference,
    InvalidEvent,
    MissingVariable,
    UnknownNode,
    WrongNodeKind,
)
from .events import NodeKind

__all__ = ["Resolver", "render_template", "session_of"]

_NO_SESSION = bytes(16)
_EDGE_TYPE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

Lookup = Callable[[bytes], Entry | None]
LoadEvent = Callable[[int], ev.EventBase]


def render_template(text: str, values: dict[str, object]) -> str:
    """Substitute ``{{name}}`` placeholders; unknown names are left as they are."""
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), text)


class Resolver:
    """Checks and index updates for one group commit. Not thread-safe: used under the lock."""

    def __init__(self, lookup: Lookup, load_event: LoadEvent) -> None:
        self._lookup = lookup
        self._load_event = load_event
        self.staged: dict[bytes, Entry] = {}
        self.pending: dict[int, ev.EventBase] = {}  # events of this group, by LSN
        self._request: dict[bytes, Entry] = {}
        self._request_pending: dict[int, ev.EventBase] = {}

    # -- the request transaction --------------------------------------------------------------

    def commit_request(self) -> None:
        self.staged.update(self._request)
        self.pending.update(self._request_pending)
        self.abort_request()

    def abort_request(self) -> None:
        self._request = {}
        self._request_pending = {}

    def get(self, key: bytes) -> Entry | None:
        return self._request.get(key) or self.staged.get(key) or self._lookup(key)

    def put(self, key: bytes, entry: Entry) -> None:
        self._request[key] = entry

    def event_at(self, lsn: int) -> ev.EventBase:
        found = self._request_pending.get(lsn) or self.pending.get(lsn)
        return found if found is not None else self._load_event(lsn)

    # -- checks -------------------------------------------------------------------------------

    def _node(self, node_id: uuid.UUID, *kinds: NodeKind) -> Entry:
        entry = self.get(node_id.bytes)
        expected = " or ".join(k.name.lower() for k in kinds) if kinds else "node"
        if entry is None or entry.kind > NodeKind.NODE:
            raise UnknownNode(node_id, expected)
        if kinds and entry.kind not in kinds:
            raise WrongNodeKind(node_id, expected, NodeKind(entry.kind).name.lower())
        if entry.flags & FLAG_DELETED:
            raise DeletedNodeReference(node_id)
        return entry

    def _new(self, node_id: uuid.UUID) -> None:
        if self.get(node_id.bytes) is not None:
            raise InvalidEvent(f"id {node_id} is already used by another node")

    @staticmethod
    def _same_session(event_session: uuid.UUID | None, derived: bytes) -> uuid.UUID | None:
        session = uuid.UUID(bytes=derived) if derived != _NO_SESSION else None
        if event_session is not None and event_session != session:
            raise InvalidEvent(f"session_id {event_session} does not match the node's {session}")
        return session

    def _template(
        self, template_id: uuid.UUID
    ) -> tuple[int, ev.TemplateCreated | ev.TemplateUpdated]:
        entry = self._node(template_id, NodeKind.TEMPLATE)
        latest = self.event_at(entry.lsn)
        assert isinstance(latest, ev.TemplateCreated | ev.TemplateUpdated)
        version = latest.version if isinstance(latest, ev.TemplateUpdated) else 1
        return version, latest

    def _bind(
        self, template_id: uuid.UUID, variables: dict[str, object]
    ) -> tuple[int, str, dict[str, object]]:
        """Version, text and full bindings (defaults applied) of a template instantiation."""
        version, latest = self._template(template_id)
        missing = [v.name for v in latest.variables if v.required and v.name not in variables]
        if missing:
            raise MissingVariable(template_id, missing)
        bound = {v.name: v.default for v in latest.variables if not v.required}
        bound.update(variables)
        return version, latest.text, bound

    def resolve(self, event: ev.EventBase, lsn: int) -> ev.EventBase:
        """Check `event` against the index, fill derived fields, stage its entries."""
        match event:
            case ev.SessionCreated() | ev.AgentRegistered() | ev.NodeAdded():
                self._new(event.id)
                if isinstance(event, ev.NodeAdded):
                    if not event.kind:
                        raise InvalidEvent("a node needs a kind (document, context, ...)")
                    if event.session_id is not None:
                        self._node(event.session_id, NodeKind.SESSION)
            case ev.SessionForked():
                self._new(event.id)
                self._node(event.parent_session_id, NodeKind.SESSION)
                if event.fork_point is not None:
                    point = self._node(event.fork_point)
                    if point.aux != event.parent_session_id.bytes:
                        raise InvalidEvent(
                            f"fork point {event.fork_point} is not in the parent session"
                        )
            case ev.SessionUpdated():
                self._node(event.session_id, NodeKind.SESSION)
            case ev.PromptAdded():
                self._new(event.id)
                self._node(event.session_id, NodeKind.SESSION)
                if event.parent_prompt_id is not None:
                    parent = self._node(event.parent_prompt_id, NodeKind.PROMPT)
                    if parent.aux != event.session_id.bytes:
                        raise InvalidEvent("parent_prompt_id is a prompt of another session")
                if event.template_id is not None:
                    version, text, bound = self._bind(event.template_id, event.variables)
                    if event.template_version not in (None, version):
                        raise InvalidEvent(
                            f"template {event.template_id} is at version {version}, "
                            f"not {event.template_version}"
                        )
                    event.template_version = version
                    event.variables = bound
                    if not event.content:
                        event.content = render_template(text, bound)
                elif not event.content:
                    raise InvalidEvent("a prompt needs content or a template")
            case ev.ResponseAdded():
                self._new(event.id)
                prompt = self._node(event.prompt_id, NodeKind.PROMPT)
                event.session_id = self._same_session(event.session_id, prompt.aux)
            case ev.AgentUpdated():
                self._node(event.agent_id, NodeKind.AGENT)
            case ev.AgentAssigned():
                self._new(event.id)
                prompt = self._node(event.prompt_id, NodeKind.PROMPT)
                self._node(event.agent_id, NodeKind.AGENT)
                event.session_id = self._same_session(event.session_id, prompt.aux)
            case ev.AgentHandoff():
                self._new(event.id)
                response = self._node(event.response_id, NodeKind.RESPONSE)
                self._node(event.to_agent_id, NodeKind.AGENT)
                if event.from_agent_id is not None:
                    self._node(event.from_agent_id, NodeKind.AGENT)
                event.session_id = self._same_session(event.session_id, response.aux)
            case ev.TemplateCreated():
                self._new(event.id)
                _check_variables(event.variables)
                if event.parent_id is not None:
                    self._node(event.parent_id, NodeKind.TEMPLATE)
            case ev.TemplateUpdated():
                version, _latest = self._template(event.template_id)
                _check_variables(event.variables)
                event.version = version + 1
            case ev.TemplateLinked():
                self._new(event.id)
                prompt = self._node(event.prompt_id, NodeKind.PROMPT)
                version, _text, bound = self._bind(event.template_id, event.variables)
                event.template_version, event.variables = version, bound
                event.session_id = self._same_session(event.session_id, prompt.aux)
            case ev.ToolInvoked():
                self._new(event.id)
                if not event.tool_name:
                    raise InvalidEvent("a tool invocation needs a tool_name")
                response = self._node(event.response_id, NodeKind.RESPONSE)
                event.session_id = self._same_session(event.session_id, response.aux)
            case ev.ToolCompleted():
                tool = self._node(event.tool_id, NodeKind.TOOL_INVOCATION)
                if tool.flags & FLAG_COMPLETED:
                    raise InvalidEvent(f"tool invocation {event.tool_id} is already completed")
                event.session_id = self._same_session(event.session_id, tool.aux)
            case ev.EdgeAdded():
                self._new(event.id)
                if not _EDGE_TYPE.match(event.edge_type):
                    raise InvalidEvent(
                        f"edge type {event.edge_type!r} must be upper case letters, digits, _"
                    )
                source = self._node(event.from_id)
                target = self._node(event.to_id)
                derived = source.aux if source.aux != _NO_SESSION else target.aux
                event.session_id = self._same_session(event.session_id, derived)
            case ev.NodeDeleted():
                node = self._node(event.node_id)
                event.session_id = self._same_session(event.session_id, node.aux)
            case _:
                raise InvalidEvent(f"not an event: {type(event).__name__}")
        self.record(event, lsn)
        self._request_pending[lsn] = event
        return event

    # -- index entries ------------------------------------------------------------------------

    def record(self, event: ev.EventBase, lsn: int) -> None:
        """Stage the index entries an (already valid) event implies."""
        match event:
            case ev.SessionCreated() | ev.SessionForked():
                self.put(event.id.bytes, Entry(NodeKind.SESSION, 0, lsn, event.id.bytes))
            case ev.PromptAdded():
                self.put(event.id.bytes, Entry(NodeKind.PROMPT, 0, lsn, event.session_id.bytes))
            case ev.ResponseAdded():
                self._put_node(event.id, NodeKind.RESPONSE, lsn, event.session_id)
            case ev.AgentRegistered():
                self._put_node(event.id, NodeKind.AGENT, lsn, None)
            case ev.AgentUpdated():
                self._put_node(event.agent_id, NodeKind.AGENT, lsn, None)
            case ev.AgentAssigned() | ev.AgentHandoff() | ev.TemplateLinked() | ev.EdgeAdded():
                self._put_node(event.id, NodeKind.EDGE, lsn, event.session_id)
            case ev.TemplateCreated():
                self._put_node(event.id, NodeKind.TEMPLATE, lsn, None)
            case ev.TemplateUpdated():
                self._put_node(event.template_id, NodeKind.TEMPLATE, lsn, None)
            case ev.ToolInvoked():
                self._put_node(event.id, NodeKind.TOOL_INVOCATION, lsn, event.session_id)
            case ev.ToolCompleted():
                key = event.tool_id.bytes
                self.put(
                    key,
                    Entry(NodeKind.TOOL_INVOCATION, FLAG_COMPLETED, lsn, _aux(event.session_id)),
                )
            case ev.NodeAdded():
                self._put_node(event.id, NodeKind.NODE, lsn, event.session_id)
            case ev.NodeDeleted():
                old = self.get(event.node_id.bytes)
                if old is not None:
                    self.put(
                        event.node_id.bytes, old._replace(flags=old.flags | FLAG_DELETED, lsn=lsn)
                    )
            case _:
                pass
        self._touch(session_of(event), lsn)

    def _touch(self, session: uuid.UUID | None, lsn: int) -> None:
        if session is None:
            return
        old = self.get(session.bytes)
        if old is not None and old.kind == NodeKind.SESSION:
            self.put(session.bytes, old._replace(lsn=max(old.lsn, lsn)))

    def _put_node(
        self, node_id: uuid.UUID, kind: NodeKind, lsn: int, session: uuid.UUID | None
    ) -> None:
        self.put(node_id.bytes, Entry(kind, 0, lsn, _aux(session)))


def _aux(session: uuid.UUID | None) -> bytes:
    return _NO_SESSION if session is None else session.bytes


def session_of(event: ev.EventBase) -> uuid.UUID | None:
    """The session an event belongs to, if any (the session it creates counts)."""
    match event:
        case ev.SessionCreated() | ev.SessionForked():
            return event.id
        case ev.SessionUpdated():
            return event.session_id
        case _:
            session = getattr(event, "session_id", None)
            return session if isinstance(session, uuid.UUID) else None


def _check_variables(variables: list[ev.VariableSpec]) -> None:
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise InvalidEvent(f"template variables must have distinct names, got {names}")
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
    if bad:
        raise InvalidEvent(f"template variable names must be identifiers, got {bad}")
