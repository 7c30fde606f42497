"""Property: a request's short ways through the checks decide exactly as the long way.

Two shortcuts check a bulk request (issue 14): the limits a column at a time
(`_limits._fine`), and a request of only new sessions, plain prompts and responses against
the id index in one pass (`Resolver._resolve_plain`). Each only vouches for what it is sure
of and hands everything else to the per-event walk it replaced. Hypothesis draws batches of
such events, valid and not (ids used twice or already taken, references to nothing, to the
wrong kind, to deleted nodes, to a prompt later in the batch, sessions that do not match,
empty prompts, templates, ints past 64 bits, NaN and infinity, nesting past 64 levels in
any field), and appends each through `EventLog.append` to two stores holding the same
nodes: one as shipped, one with both shortcuts switched off (the code before them). Both
must accept the same batches, store the same events, and refuse the rest with the same
one-line error.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import eventlog
from eventlog import _commands, _limits, _resolve
from eventlog import events as ev
from eventlog._store import PendingRequest

NONE = eventlog.Durability.NONE  # what is compared is the decisions, not fsync
SEGMENT = 4096  # small: the nodes of earlier batches soon sit in sealed segments


class Known:
    """Ids of the nodes both stores hold before any batch."""

    def __init__(self) -> None:
        ids = iter(uuid.UUID(int=(i + 1) << 64 | 7) for i in range(16))
        self.session, self.other_session, self.deleted_session = next(ids), next(ids), next(ids)
        self.prompt, self.deleted_prompt, self.response = next(ids), next(ids), next(ids)
        self.node = next(ids)

    def events(self) -> list[ev.EventBase]:
        return [
            ev.SessionCreated(id=self.session),
            ev.SessionCreated(id=self.other_session),
            ev.SessionCreated(id=self.deleted_session),
            ev.PromptAdded(id=self.prompt, session_id=self.session, content="q"),
            ev.PromptAdded(id=self.deleted_prompt, session_id=self.session, content="q"),
            ev.ResponseAdded(id=self.response, prompt_id=self.prompt, content="a"),
            ev.NodeAdded(id=self.node, kind="document", session_id=self.session),
            ev.NodeDeleted(node_id=self.deleted_session),
            ev.NodeDeleted(node_id=self.deleted_prompt),
        ]


KNOWN = Known()


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


# (good values, bad values) of each kind of field
INTS = [0, 1, 2**63 - 1, -(2**63)], [2**63, 2**64 - 1]
FLOATS = [0.0, 1.5, -2.0], [math.nan, math.inf, -math.inf]
JSON = [{}, {"n": 1, "f": 0.5}, {"d": nested(63)}], [{"n": 2**64}, {"x": [math.nan]}, nested(65)]
TEXTS = ["a question", "ünïcode ✓"], [""]
SERIALS = itertools.count(1)
SHORT_WAYS_FROM = max(_limits.COLUMNS_FROM, _resolve.PLAIN_FROM)  # events in a request
KINDS = ["session", "prompt", "prompt", "prompt", "response", "response", "response", "node"]
FLAWS = ["none", "value", "id", "reference", "session", "template"]


@st.composite
def batches(draw: st.DrawFn) -> list[ev.EventBase]:
    """Enough events for the short ways (16-20), mostly sessions, prompts and responses
    (with generic nodes in about a quarter of the batches), with good values, new ids and
    references to nodes of the right kind (stored, or earlier in the batch), but for one
    flaw (or none) in one event: a bad value in one field; an id used by another event of
    the batch or a stored node; a reference to a deleted node, one of another kind, nothing,
    a node later in the batch, or the event itself; a response's session that is not its
    prompt's; a template or parent prompt. (Smaller requests go the long way only.)"""
    flaw = draw(st.sampled_from(FLAWS), label="flaw")
    size = draw(st.integers(SHORT_WAYS_FROM, SHORT_WAYS_FROM + 4), label="size")
    kinds = draw(st.sampled_from([KINDS, *[KINDS[:-1]] * 3]), label="kinds")  # nodes, or not
    kinds = [draw(st.sampled_from(kinds), label="kind") for _ in range(size)]
    flawed = draw(st.integers(0, size - 1), label="the flawed event")
    which = draw(st.integers(0, 6), label="the flawed value")  # among the event's values
    picks = itertools.count()
    serial = next(SERIALS)  # new ids are new to the stores, whatever came before
    fresh = [uuid.UUID(int=1 << 127 | serial << 64 | i) for i in range(size)]
    out: list[ev.EventBase] = []

    def pick(values: tuple[list[Any], list[Any]], what: str = "value") -> Any:
        good, bad = values
        here = flaw == what and len(out) == flawed and (what != "value" or next(picks) == which)
        return draw(st.sampled_from(bad if here else good))

    def ref(kind: str, stored: list[uuid.UUID]) -> uuid.UUID:
        i = len(out)
        good = stored + [fresh[j] for j in range(i) if kinds[j] == kind]
        bad = draw(
            st.sampled_from(
                [
                    [KNOWN.deleted_session if kind == "session" else KNOWN.deleted_prompt],
                    [KNOWN.response, KNOWN.node, KNOWN.prompt, KNOWN.session],
                    [uuid.UUID(int=5)],
                    fresh[i:],  # later in the batch, or itself
                ]
            )
        )
        return pick((good, bad), "reference")  # type: ignore[no-any-return]

    for i, kind in enumerate(kinds):
        taken = [*fresh[:i], *fresh[i + 1 :], KNOWN.session, KNOWN.prompt]
        own = pick(([fresh[i]], taken), "id")
        base = {
            "ts": pick(([0, 1_700_000_000_000_000_000], [2**64 - 1])),
            "occurred_at": pick(([None, 5], [2**63])),
        }
        if kind == "session":
            out.append(ev.SessionCreated(id=own, metadata=pick(JSON), **base))
        elif kind == "prompt":
            metadata = None
            if draw(st.booleans()):
                metadata = ev.PromptMetadata(temperature=pick(FLOATS), max_tokens=pick(INTS))
            out.append(
                ev.PromptAdded(
                    id=own,
                    session_id=ref("session", [KNOWN.session, KNOWN.other_session]),
                    content=pick(TEXTS),
                    template_id=pick(([None], [None, KNOWN.prompt]), "template"),
                    parent_prompt_id=pick(([None], [None, KNOWN.prompt]), "template"),
                    variables=pick(JSON),
                    metadata=metadata,
                    **base,
                )
            )
        elif kind == "response":
            out.append(
                ev.ResponseAdded(
                    id=own,
                    prompt_id=ref("prompt", [KNOWN.prompt]),
                    content=pick(TEXTS),
                    usage=ev.TokenUsage(pick(INTS), pick(INTS)),
                    latency_ms=pick(([None, *FLOATS[0]], FLOATS[1])),
                    metadata=pick(JSON),
                    session_id=pick(([None], [KNOWN.session, KNOWN.other_session]), "session"),
                    **base,
                )
            )
        else:
            out.append(ev.NodeAdded(id=own, kind="document", data=pick(JSON), **base))
    return out


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[eventlog.EventLog, eventlog.EventLog]]:
    """The store as shipped and the store without the short ways, holding the same nodes.
    A batch that is accepted joins both, so later batches meet its ids too."""
    with tempfile.TemporaryDirectory() as tmp:
        fast = eventlog.open(Path(tmp) / "fast", durability=NONE, segment_bytes=SEGMENT)
        slow = eventlog.open(Path(tmp) / "slow", durability=NONE, segment_bytes=SEGMENT)
        try:
            for log in (fast, slow):
                log.append(KNOWN.events())
            yield fast, slow
        finally:
            fast.close()
            slow.close()


def outcome(log: eventlog.EventLog, batch: list[ev.EventBase]) -> object:
    """The stored events without their times, or the error's class and message."""
    try:
        stored = log.append(batch).events
    except eventlog.EventLogError as exc:
        return type(exc).__name__, str(exc)
    return [msgspec.structs.replace(e, ts=0) for e in stored]


def long_way(log: eventlog.EventLog, batch: list[ev.EventBase]) -> object:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_limits, "_fine", lambda events: False)
        patch.setattr(_resolve.Resolver, "_resolve_plain", lambda self, events, first: False)
        return outcome(log, batch)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_the_short_ways_decide_as_the_long_way(
    stores: tuple[eventlog.EventLog, eventlog.EventLog], batch: list[ev.EventBase]
) -> None:
    fast, slow = stores
    expected = long_way(slow, batch)
    got = outcome(fast, batch)
    event("refused" if isinstance(expected, tuple) else "accepted")
    event(f"size {len(batch)}")
    if isinstance(expected, tuple):
        event(expected[1][:70])
        assert len(expected[1].splitlines()) == 1
    assert got == expected
    assert fast.next_lsn() == slow.next_lsn()


def test_a_bulk_request_takes_the_short_ways(
    log: eventlog.EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The property above holds trivially if the short ways are never taken: a plain batch
    of sessions, prompts and responses must go through both."""
    taken: list[str] = []
    fine, plain = _limits._fine, _resolve.Resolver._resolve_plain

    def spy_fine(events: list[object]) -> bool:
        taken.append(f"limits {fine(events)}")
        return taken[-1].endswith("True")

    def spy_plain(self: _resolve.Resolver, events: list[ev.EventBase], first: int) -> bool:
        taken.append(f"resolve {plain(self, events, first)}")
        return taken[-1].endswith("True")

    monkeypatch.setattr(_limits, "_fine", spy_fine)
    monkeypatch.setattr(_resolve.Resolver, "_resolve_plain", spy_plain)
    session = uuid.uuid4()
    prompt = uuid.uuid4()
    batch: list[ev.EventBase] = [ev.SessionCreated(id=session, metadata={"n": 1})]
    for _ in range(SHORT_WAYS_FROM):
        batch.append(ev.PromptAdded(id=prompt, session_id=session, content="q"))
        batch.append(ev.ResponseAdded(id=uuid.uuid4(), prompt_id=prompt, content="a"))
        prompt = uuid.uuid4()
    stored = log.append(batch).events
    assert taken == ["limits True", "resolve True"]
    assert stored[2].session_id == session  # type: ignore[attr-defined]
    log.append([ev.PromptAdded(id=uuid.uuid4(), session_id=session, content="q") for _ in "ab"])
    assert len(taken) == 2  # a small request goes the long way, as an agent's always did


EDGES = {  # field -> (a value at the limit, one past it)
    "metadata": (nested(64), nested(65)),
    "occurred_at": (2**63 - 1, 2**63),
    "latency_ms": (1e308, math.inf),
    "usage": (ev.TokenUsage(2**63 - 1, 0), ev.TokenUsage(0, 2**63)),
}


@pytest.mark.parametrize("field", sorted(EDGES))
def test_a_bulk_request_keeps_each_limit_and_its_message(
    log: eventlog.EventLog, field: str
) -> None:
    """The column check's edges are the walk's: at the limit, a bulk request is stored; one
    past it, it is refused with the message the same event gets alone."""
    session = log.create_session().id
    prompts = [ev.PromptAdded(id=uuid.uuid4(), session_id=session, content="q") for _ in range(20)]
    log.append(prompts)

    def batch(value: object) -> list[ev.EventBase]:
        responses = [
            ev.ResponseAdded(id=uuid.uuid4(), prompt_id=p.id, content="a") for p in prompts
        ]
        responses[7] = msgspec.structs.replace(responses[7], **{field: value})
        return list(responses)

    good, bad = EDGES[field]
    assert len(log.append(batch(good)).events) == len(prompts)
    with pytest.raises(eventlog.InvalidEvent) as alone:
        log.append(batch(bad)[7])
    with pytest.raises(eventlog.InvalidEvent) as in_bulk:
        log.append(batch(bad))
    assert str(in_bulk.value) == str(alone.value)
    assert field.split("_", maxsplit=1)[0] in str(alone.value)


def group_outcome(log: eventlog.EventLog, batch: list[ev.EventBase]) -> list[object]:
    """Each event appended as its own request, all in one group commit (what many agents'
    single appends become): per request, its stored event without its time, or its error's
    class and message. A value the caller's own check refuses never reaches the group."""
    requests: list[PendingRequest] = []
    out: list[object] = []
    for one in batch:
        try:
            requests.append(_commands.prepare([one], {}))
        except eventlog.EventLogError as exc:
            out.append((type(exc).__name__, str(exc)))
    for result in log._store.commit(requests):
        if isinstance(result, eventlog.EventLogError):
            out.append((type(result).__name__, str(result)))
        else:
            out.append([msgspec.structs.replace(e, ts=0) for e in result.events])
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_a_group_of_single_appends_is_decided_as_one_by_one(
    stores: tuple[eventlog.EventLog, eventlog.EventLog], batch: list[ev.EventBase]
) -> None:
    """A group commit checks a run of plain requests by the short way at once
    (`Store._take_run`); each request must still be stored or refused alone, exactly as
    when each goes its own way: a flawed event refuses its own request, not its group's."""
    fast, slow = stores
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_resolve.Resolver, "_resolve_plain", lambda self, events, first: False)
        expected = group_outcome(slow, batch)
    got = group_outcome(fast, batch)
    event(f"refused {sum(isinstance(o, tuple) for o in expected)}")
    assert got == expected
    assert fast.next_lsn() == slow.next_lsn()


def test_a_group_of_agents_prompts_takes_the_short_way(
    log: eventlog.EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The property above holds trivially if a group never takes the short way: the
    prompts of 64 agents, one each, committed as one group, must go through it at once."""
    sessions = [s.id for s in log.create_sessions_batch(64)]
    taken: list[int] = []
    plain = _resolve.Resolver._resolve_plain

    def spy_plain(self: _resolve.Resolver, events: list[ev.EventBase], first: int) -> bool:
        taken.append(len(events))
        return plain(self, events, first)

    monkeypatch.setattr(_resolve.Resolver, "_resolve_plain", spy_plain)
    requests = [
        _commands.prepare([ev.PromptAdded(id=uuid.uuid4(), session_id=s, content="q")], {})
        for s in sessions
    ]
    results = log._store.commit(requests)
    assert taken == [64]
    assert [r.first_lsn for r in results] == list(range(64, 128))  # type: ignore[union-attr]
    assert log.last_lsn(sessions[5]) == 69
