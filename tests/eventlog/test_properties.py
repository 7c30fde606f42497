"""Property: any valid sequence of appends reads back exactly as the appends returned it.

Hypothesis draws a sequence of operations, each valid for the graph built so far (sessions,
prompts, responses, agents, templates with variables, tools, edges, generic nodes, deletes,
batches, forks), with random append options, idempotent retries, a few requests that must be
rejected (among them values beyond the log's limits: ints beyond 64 bits, NaN and infinity,
lone surrogates, nesting past 64 levels, loops, huge strings), and reopenings of the store.
Every operation goes through the public helpers; a spy on the log's committer records what
each append returned, as encoded bytes, at the moment it returned. Segments are tiny, so
sequences cross rotations. Afterwards the store is reopened and read whole: each event must
equal, byte for byte, what its append returned, and LSNs must be dense from 0.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import eventlog
from eventlog import events as ev
from eventlog._store import PendingRequest, Store
from eventlog.log import _GroupCommit

_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode
MAX_REQUEST = 64 * 1024
OPTIONS: dict[str, Any] = {
    "segment_bytes": 4096,
    "index_interval_bytes": 512,
    "durability": eventlog.Durability.NONE,  # what is tested here is the bytes, not fsync
    "max_request_bytes": MAX_REQUEST,  # so a huge string is cheap to draw
}

# -- values --------------------------------------------------------------------------------------

texts = st.text(max_size=40)
names = st.text(min_size=1, max_size=12)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
json_maps = st.dictionaries(texts, json_values, max_size=3)
usages = st.builds(ev.TokenUsage, st.integers(0, 10**6), st.integers(0, 10**6))
prompt_metadata = st.none() | st.builds(
    ev.PromptMetadata,
    model=st.none() | names,
    temperature=st.none() | st.floats(0, 2),
    max_tokens=st.none() | st.integers(1, 10**5),
    tools_available=st.lists(names, max_size=2),
    custom=json_maps,
)
edge_types = st.sampled_from(list(ev.EdgeType)) | st.from_regex(
    r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True
)


@st.composite
def variable_lists(draw: st.DrawFn) -> list[ev.VariableSpec]:
    """Template variables: distinct identifiers, some optional with a default."""
    chosen = draw(st.lists(identifiers, max_size=3, unique=True))
    return [
        ev.VariableSpec(name=n, required=draw(st.booleans()), default=draw(json_values))
        for n in chosen
    ]


# -- values the log must refuse (docs/events.md, "Limits") --------------------------------------

bad_ints = st.integers(2**63, 2**80) | st.integers(-(2**80), -(2**63) - 1)
surrogates = st.builds(
    lambda before, lone, after: before + lone + after,
    texts,
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    texts,
)
bad_scalars = bad_ints | st.sampled_from([math.nan, math.inf, -math.inf]) | surrogates
huge_texts = st.integers(MAX_REQUEST + 1, 2 * MAX_REQUEST).map(lambda n: "x" * n)


def wrap(value: Any, keys: list[str | None]) -> Any:
    """`value` inside containers, innermost first: a key makes a dict, None a list."""
    for key in keys:
        value = [1, value] if key is None else {key: value}
    return value


@st.composite
def bad_json_values(draw: st.DrawFn) -> Any:
    """A JSON value wrong in one place: a bad scalar (or key) inside good containers,
    nesting past 64 levels, or a container that contains itself."""
    match draw(st.sampled_from(["scalar", "key", "deep", "loop"])):
        case "scalar":
            keys = draw(st.lists(st.none() | texts, max_size=6))
            return wrap(draw(bad_scalars), keys)
        case "key":
            return wrap({draw(surrogates | bad_ints): 1}, draw(st.lists(texts, max_size=3)))
        case "deep":
            key = draw(texts)
            levels = draw(st.integers(65, 3000))
            return wrap(None, [key if i % 2 else None for i in range(levels)])
        case _:
            loop: dict[str, Any] = {}
            loop["self"] = wrap(loop, draw(st.lists(st.none() | texts, max_size=4)))
            return loop


# -- the spy and the model -----------------------------------------------------------------------


@dataclass
class Returned:
    first_lsn: int
    events: list[bytes]
    duplicate: bool


class Recording(_GroupCommit):
    """The log's committer, noting what every successful append returned, encoded at once."""

    def __init__(self, store: Store, seen: list[Returned]) -> None:
        super().__init__(store)
        self.seen = seen

    def submit(self, request: PendingRequest) -> eventlog.Appended:
        result = super().submit(request)
        self.seen.append(
            Returned(result.first_lsn, [_ENCODE(e) for e in result.events], result.duplicate)
        )
        return result


def open_recording(path: Path, seen: list[Returned]) -> eventlog.EventLog:
    log = eventlog.open(path, **OPTIONS)
    log._committer = Recording(log._store, seen)
    return log


@dataclass
class Model:
    """What the sequence has created so far: the ids each operation may refer to."""

    sessions: list[uuid.UUID] = field(default_factory=list)
    prompts: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # prompt -> session
    responses: list[uuid.UUID] = field(default_factory=list)
    agents: list[uuid.UUID] = field(default_factory=list)
    templates: dict[uuid.UUID, list[ev.VariableSpec]] = field(default_factory=dict)
    tools: list[uuid.UUID] = field(default_factory=list)  # not yet completed
    others: list[uuid.UUID] = field(default_factory=list)  # edges and generic nodes
    deleted: set[uuid.UUID] = field(default_factory=set)
    retries: list[tuple[Callable[[], Any], Any]] = field(default_factory=list)
    keys: int = 0

    def live(self, ids: Any) -> list[uuid.UUID]:
        return [i for i in ids if i not in self.deleted]

    def everything(self) -> list[uuid.UUID]:
        return self.live(
            [
                *self.sessions,
                *self.prompts,
                *self.responses,
                *self.agents,
                *self.templates,
                *self.tools,
                *self.others,
            ]
        )


Op = Callable[[eventlog.EventLog, Model, st.DataObject], None]


def coin(data: st.DataObject) -> bool:
    return data.draw(st.booleans())


def draw_options(data: st.DataObject, model: Model, log: eventlog.EventLog) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if data.draw(st.booleans(), label="actor?"):
        opts["actor"] = data.draw(names, label="actor")
    if data.draw(st.booleans(), label="occurred_at?"):
        opts["occurred_at"] = data.draw(st.integers(0, 2**62), label="occurred_at")
    if data.draw(st.integers(0, 3), label="key?") == 0:
        model.keys += 1
        opts["idempotency_key"] = f"key-{model.keys}"
    if data.draw(st.integers(0, 5), label="expect?") == 0:
        last = log.last_lsn()
        opts["expect_store_lsn"] = -1 if last is None else last
    return opts


def call(
    log: eventlog.EventLog, model: Model, data: st.DataObject, helper: str, /, *args: Any, **kw: Any
) -> Any:
    """Call a helper with drawn options; keyed calls are remembered to be retried later."""
    opts = draw_options(data, model, log)
    result = getattr(log, helper)(*args, **kw, **opts)
    if "idempotency_key" in opts:
        model.retries.append((lambda: getattr(log_box[0], helper)(*args, **kw, **opts), result))
    return result


log_box: list[eventlog.EventLog] = []  # the open log, so retries survive a reopening


# -- operations, each valid in the model's state -------------------------------------------------


def op_session(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        event = call(
            log,
            m,
            data,
            "create_session",
            data.draw(json_maps),
            data.draw(st.lists(names, max_size=2)),
        )
        m.sessions.append(event.id)
    else:
        events = call(
            log,
            m,
            data,
            "create_sessions_batch",
            data.draw(st.integers(1, 4)),
            data.draw(json_maps),
        )
        m.sessions.extend(e.id for e in events)


def op_update_session(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    s = data.draw(st.sampled_from(m.live(m.sessions)))
    tags = data.draw(st.none() | st.lists(names, max_size=2))
    call(log, m, data, "update_session", s, data.draw(json_maps), tags)


def op_fork(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    s = data.draw(st.sampled_from(m.live(m.sessions)))
    points = m.live(p for p, ps in m.prompts.items() if ps == s)
    point = data.draw(st.none() | st.sampled_from([s, *points]))
    event = call(log, m, data, "fork_session", s, point, data.draw(json_maps))
    m.sessions.append(event.id)


def op_prompt(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    s = data.draw(st.sampled_from(m.live(m.sessions)))
    parents = m.live(p for p, ps in m.prompts.items() if ps == s)
    kw: dict[str, Any] = {
        "parent_prompt_id": data.draw(st.none() | st.sampled_from(parents)) if parents else None,
        "metadata": data.draw(prompt_metadata),
    }
    content = data.draw(st.text(min_size=1, max_size=60))
    templates = m.live(m.templates)
    if templates and coin(data):
        t = data.draw(st.sampled_from(templates))
        kw["template_id"] = t
        kw["variables"] = bind(data, m.templates[t])
        content = data.draw(st.just("") | st.just(content))  # empty: rendered by the log
    p = call(log, m, data, "add_prompt", s, content, **kw)
    m.prompts[p] = s


def bind(data: st.DataObject, variables: list[ev.VariableSpec]) -> dict[str, Any]:
    bound = {v.name: data.draw(json_values) for v in variables if v.required}
    bound.update(data.draw(st.dictionaries(identifiers, json_values, max_size=2)))
    return bound


def op_prompts_batch(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    sessions = st.sampled_from(m.live(m.sessions))
    pairs = data.draw(
        st.lists(st.tuples(sessions, st.text(min_size=1, max_size=30)), min_size=1, max_size=5)
    )
    for p, (s, _) in zip(call(log, m, data, "add_prompts_batch", pairs), pairs, strict=True):
        m.prompts[p] = s


def op_response(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    prompts = st.sampled_from(m.live(m.prompts))
    if data.draw(st.booleans()):
        r = call(
            log,
            m,
            data,
            "add_response",
            data.draw(prompts),
            data.draw(texts),
            data.draw(st.none() | usages),
            finish_reason=data.draw(st.none() | names),
            latency_ms=data.draw(st.none() | st.floats(0, 10**6)),
            model=data.draw(st.none() | names),
            metadata=data.draw(json_maps),
        )
        m.responses.append(r)
    else:
        items = data.draw(st.lists(st.tuples(prompts, texts, usages), min_size=1, max_size=4))
        m.responses.extend(call(log, m, data, "add_responses_batch", items))


def op_conversations(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    sessions = st.sampled_from(m.live(m.sessions))
    answer = st.none() | st.tuples(texts, usages)
    items = data.draw(
        st.lists(
            st.tuples(st.tuples(sessions, st.text(min_size=1, max_size=30)), answer),
            min_size=1,
            max_size=3,
        )
    )
    pairs = call(log, m, data, "add_conversations_batch", items)
    for (p, r), ((s, _), _) in zip(pairs, items, strict=True):
        m.prompts[p] = s
        if r is not None:
            m.responses.append(r)


def op_agent(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    agents = m.live(m.agents)
    if agents and coin(data):
        call(
            log,
            m,
            data,
            "update_agent",
            data.draw(st.sampled_from(agents)),
            name=data.draw(st.none() | names),
            capabilities=data.draw(st.none() | st.lists(names, max_size=2)),
            metadata=data.draw(st.none() | json_maps),
        )
        return
    a = call(
        log,
        m,
        data,
        "add_agent",
        data.draw(names),
        data.draw(names),
        data.draw(st.lists(names, max_size=3)),
        model=data.draw(st.none() | names),
        metadata=data.draw(json_maps),
    )
    m.agents.append(a)


def op_assign(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    prompt = data.draw(st.sampled_from(m.live(m.prompts)))
    edge = call(
        log, m, data, "assign_agent_to_prompt", prompt, data.draw(st.sampled_from(m.live(m.agents)))
    )
    m.others.append(edge)


def op_handoff(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    agents = st.sampled_from(m.live(m.agents))
    edge = call(
        log,
        m,
        data,
        "transfer_to_agent",
        data.draw(st.sampled_from(m.live(m.responses))),
        data.draw(agents),
        from_agent_id=data.draw(st.none() | agents),
        reason=data.draw(st.none() | texts),
        context_summary=data.draw(st.none() | texts),
    )
    m.others.append(edge)


def op_template(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    variables = data.draw(variable_lists())
    text = " ".join(f"{{{{{v.name}}}}}" for v in variables) + data.draw(texts)
    templates = m.live(m.templates)
    choice = data.draw(st.integers(0, 2)) if templates else 0
    if choice == 0:
        t = call(
            log,
            m,
            data,
            "create_template",
            data.draw(names),
            text,
            variables,
            description=data.draw(st.none() | texts),
            metadata=data.draw(json_maps),
        )
    elif choice == 1:
        parent = data.draw(st.sampled_from(templates))
        t = call(
            log, m, data, "create_template_from_parent", parent, data.draw(names), text, variables
        )
    else:
        t = data.draw(st.sampled_from(templates))
        call(log, m, data, "update_template", t, text, variables, name=data.draw(st.none() | names))
    m.templates[t] = variables


def op_link(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    t = data.draw(st.sampled_from(m.live(m.templates)))
    prompt = data.draw(st.sampled_from(m.live(m.prompts)))
    m.others.append(
        call(log, m, data, "link_prompt_to_template", prompt, t, bind(data, m.templates[t]))
    )


def op_tool(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    tools = m.live(m.tools)
    if tools and coin(data):
        tool = data.draw(st.sampled_from(tools))
        failed = data.draw(st.booleans())
        call(
            log,
            m,
            data,
            "complete_tool_invocation",
            tool,
            result=None if failed else data.draw(json_values),
            error=data.draw(names) if failed else None,
            duration_ms=data.draw(st.none() | st.floats(0, 10**6)),
        )
        m.tools.remove(tool)
        m.others.append(tool)  # completed: it can still be an edge's end or deleted
        return
    response = data.draw(st.sampled_from(m.live(m.responses)))
    m.tools.append(
        call(
            log, m, data, "add_tool_invocation", response, data.draw(names), data.draw(json_values)
        )
    )


def op_edge(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    ends = st.sampled_from(m.everything())
    edge = call(
        log,
        m,
        data,
        "add_edge",
        data.draw(ends),
        data.draw(ends),
        data.draw(edge_types),
        data.draw(json_maps),
    )
    m.others.append(edge)


def op_node(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    sessions = m.live(m.sessions)
    session = data.draw(st.none() | st.sampled_from(sessions)) if sessions else None
    kind = data.draw(st.sampled_from(["document", "context", "feedback"]) | names)
    if data.draw(st.booleans()):
        n = call(
            log,
            m,
            data,
            "add_node",
            kind,
            data.draw(st.none() | texts),
            data=data.draw(json_maps),
            session_id=session,
        )
        m.others.append(n)
        return
    # The generic append, with events built by hand: a batch of nodes and edges between them.
    nodes = [
        ev.NodeAdded(id=uuid.uuid4(), kind=kind, session_id=session)
        for _ in range(data.draw(st.integers(1, 3)))
    ]
    edges = [
        ev.EdgeAdded(id=uuid.uuid4(), from_id=a.id, to_id=b.id, edge_type="REFERENCES")
        for a, b in itertools.pairwise(nodes)
    ]
    appended = call(log, m, data, "append", [*nodes, *edges])
    m.others.extend(e.id for e in appended.events)


def op_delete(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    victims = data.draw(
        st.lists(st.sampled_from(m.everything()), min_size=1, max_size=3, unique=True)
    )
    if len(victims) == 1 and coin(data):
        call(log, m, data, "delete_node", victims[0], reason=data.draw(st.none() | texts))
    else:
        call(log, m, data, "delete_nodes_batch", victims)
    m.deleted.update(victims)


def op_retry(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    """Retry an earlier keyed call: the helper must return what it returned the first time."""
    retry, first = data.draw(st.sampled_from(m.retries))
    again = retry()
    if isinstance(first, eventlog.Appended):
        assert (again.first_lsn, again.events, again.duplicate) == (
            first.first_lsn,
            first.events,
            True,
        )
    else:
        assert again == first


def op_rejected(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    """A request the log must refuse, leaving nothing behind."""
    before = log.last_lsn()
    try:
        if m.deleted and coin(data):
            log.add_prompt(data.draw(st.sampled_from(sorted(m.deleted))), "to a deleted node")
        elif m.live(m.sessions) and coin(data):
            log.add_response(data.draw(st.sampled_from(m.live(m.sessions))), "to a session")
        else:
            log.add_prompts_batch(
                [*[(s, "ok") for s in m.live(m.sessions)[:3]], (uuid.uuid4(), "no")]
            )
    except (eventlog.UnknownNode, eventlog.WrongNodeKind, eventlog.DeletedNodeReference):
        pass
    else:
        raise AssertionError("the log accepted an invalid request")
    assert log.last_lsn() == before


def op_bad_value(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    """A request with one value the log refuses: InvalidEvent, nothing written."""
    before = log.last_lsn()
    bad = data.draw(bad_json_values(), label="bad value")
    calls: list[Callable[[], Any]] = [
        lambda: log.create_session(metadata={"k": bad}),
        lambda: log.add_node("document", data={"k": bad}),
        lambda: log.add_agent("a", "r", metadata={"k": bad}),
        lambda: log.create_session(occurred_at=data.draw(bad_ints, label="occurred_at")),
        lambda: log.create_session(actor=data.draw(surrogates, label="actor")),
        lambda: log.add_node("document", data.draw(surrogates | huge_texts, label="content")),
        lambda: log.create_template(data.draw(names, label="name"), data.draw(huge_texts)),
    ]
    if m.live(m.sessions):
        session = data.draw(st.sampled_from(m.live(m.sessions)), label="session")
        calls.append(lambda: log.update_session(session, metadata={"k": bad}))
        calls.append(
            lambda: log.add_prompt(session, "q", metadata=ev.PromptMetadata(temperature=math.nan))
        )
    try:
        data.draw(st.sampled_from(calls), label="call")()
    except eventlog.InvalidEvent:
        pass
    else:
        raise AssertionError("the log accepted a value beyond its limits")
    assert log.last_lsn() == before


def op_reopen(log: eventlog.EventLog, m: Model, data: st.DataObject) -> None:
    """Handled by the driver (it owns the handle); listed so hypothesis can choose it."""


def available(m: Model) -> list[Op]:
    ops: list[Op] = [op_session, op_agent, op_template, op_node, op_rejected, op_reopen]
    ops.append(op_bad_value)
    if m.live(m.sessions):
        ops += [op_update_session, op_fork, op_prompt, op_prompts_batch, op_conversations]
    if m.live(m.prompts):
        ops += [op_response, op_response]
        if m.live(m.agents):
            ops.append(op_assign)
        if m.live(m.templates):
            ops.append(op_link)
    if m.live(m.responses):
        ops += [op_tool, op_tool]
        if m.live(m.agents):
            ops += [op_handoff, op_handoff]
    if m.everything():
        ops += [op_edge, op_delete]
    if m.retries:
        ops.append(op_retry)
    return ops


@pytest.mark.slow
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_event_sequence_round_trips(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        seen: list[Returned] = []
        model = Model()
        log_box[:] = [open_recording(path, seen)]
        try:
            for _ in range(data.draw(st.integers(1, 80), label="operations")):
                op = data.draw(st.sampled_from(available(model)), label="op")
                event(op.__name__)
                if op is op_reopen:
                    log_box[0].close()
                    log_box[0] = open_recording(path, seen)
                else:
                    op(log_box[0], model, data)
        finally:
            log_box[0].close()

        stored: list[bytes] = []  # what the appends returned, in LSN order
        for returned in seen:
            if returned.duplicate:
                end = returned.first_lsn + len(returned.events)
                assert returned.events == stored[returned.first_lsn : end], "retry differs"
            else:
                assert returned.first_lsn == len(stored), "LSNs are not dense"
                stored.extend(returned.events)
        assert eventlog.verify(path) == []
        with eventlog.open(path, **OPTIONS) as log:
            records = list(log.read())
            segments = log.stats().segments
        event(f"segments: {segments if segments < 4 else '4+'}")
        assert [r.lsn for r in records] == list(range(len(stored)))
        for record, expected in zip(records, stored, strict=True):
            assert _ENCODE(record.event) == expected, f"LSN {record.lsn} reads back differently"
