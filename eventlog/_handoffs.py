"""Handoffs across a whole session, whatever trace each of its turns came in.

A handoff is a change of agent between two consecutive turns of one session (ordered by the
turn's start, then its prompt id). Agents often run as traces of their own that share only a
conversation id, and traces arrive in any order, so the handoffs cannot be read off one
trace: `Handoffs` keeps each session's timeline of agent turns (prompt, response, agent),
learnt from the events `map_trace` made, and after every write says what changed:

- a pair of turns that became consecutive with different agents gets an ``agent.handoff``
  (keyed ``otel:handoff:<from prompt>:<to prompt>``, its id derived from the pair);
- a pair that stopped being consecutive, because a turn that started between them arrived
  late, has its handoff tombstoned (``node.deleted``, keyed ``...:retracted``).

Turns are never removed, so a pair stops being consecutive at most once: the live handoffs of
a session are those of its complete timeline, whatever the arrival order or batch split, and a
retried batch changes no timeline and adds nothing. A session this ingester has not seen that
the log already holds (an earlier `lmg ingest`, another process, a restart) is read from the
log once, from where it began (the LSN of its ``otel:session:...`` request, which the id
index holds) to its last event (the index's LSN of the session): one pass for all such
sessions of a write, as long as the sessions' lives, not the log.
"""

from __future__ import annotations

import itertools
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from . import events as ev
from ._genai import Unit, _timed_id
from ._ids import uuid_from_int
from ._reader import Cursor
from ._store import Store, key_digest

__all__ = ["Handoffs"]


_Turn = tuple[int, int, int, int, str | None]
"""A turn: its start, its prompt's, response's and agent's ids (`UUID.int`) and its agent's
name. A plain tuple of atoms, which the garbage collector stops tracking: an ingester keeps
the turns of 10,000 sessions."""
_Pair = tuple[_Turn, _Turn]


def _turns(events: Iterable[ev.EventBase]) -> dict[int, list[_Turn]]:
    """The agent turns among `events`, by session (`UUID.int`): a prompt with its assignment
    and response."""
    prompts: dict[uuid.UUID, ev.PromptAdded] = {}
    agents: dict[uuid.UUID, ev.AgentAssigned] = {}
    responses: dict[uuid.UUID, uuid.UUID] = {}
    for e in events:
        if isinstance(e, ev.SpanRecorded):  # most events an ingest writes
            continue
        if isinstance(e, ev.PromptAdded):
            prompts[e.id] = e
        elif isinstance(e, ev.AgentAssigned):
            agents[e.prompt_id] = e
        elif isinstance(e, ev.ResponseAdded):
            responses[e.prompt_id] = e.id
    out: dict[int, list[_Turn]] = {}
    for pid, prompt in prompts.items():
        assigned, response = agents.get(pid), responses.get(pid)
        if assigned is not None and response is not None and prompt.session_id is not None:
            start = prompt.occurred_at or 0
            turn = (start, pid.int, response.int, assigned.agent_id.int, assigned.actor)
            out.setdefault(prompt.session_id.int, []).append(turn)
    return out


def _pairs(timeline: Sequence[_Turn]) -> dict[tuple[int, int], _Pair]:
    """The consecutive turns of a timeline whose agents differ: its handoffs."""
    return {(a[1], b[1]): (a, b) for a, b in itertools.pairwise(timeline) if a[3] != b[3]}


def _handoff(pair: _Pair) -> tuple[str, uuid.UUID]:
    a, b = pair
    key = f"otel:handoff:{uuid_from_int(a[1])}:{uuid_from_int(b[1])}"
    return key, _timed_id(b[0], key)


class Handoffs:
    """Session timelines of agent turns (the last `remembered` sessions), and the handoff
    units each write adds or retracts. Not thread-safe: the `Ingester` guards it."""

    def __init__(self, store: Store, *, remembered: int = 10_000) -> None:
        self._store = store
        self._remembered = remembered
        self._sessions: OrderedDict[int, list[_Turn]] = OrderedDict()

    def after(self, units: Sequence[Unit]) -> list[Unit]:
        """The handoff and retraction units that the turns among `units` make."""
        found = _turns([e for u in units for e in u.events])
        created = {
            u.events[0].id.int: u.key for u in units if isinstance(u.events[0], ev.SessionCreated)
        }
        self._load({s: created.get(s) for s in found if s not in self._sessions})
        out: list[Unit] = []
        for session, turns in found.items():
            timeline = self._sessions[session]
            self._sessions.move_to_end(session)
            before = _pairs(timeline)
            known = {t[1] for t in timeline}
            timeline.extend(t for t in turns if t[1] not in known)
            timeline.sort()  # by start, then prompt id
            after = _pairs(timeline)
            out += [_added(p) for k, p in after.items() if k not in before]
            out += [_retracted(p) for k, p in before.items() if k not in after]
        while len(self._sessions) > self._remembered:
            self._sessions.popitem(last=False)
        return out

    def _load(self, sessions: dict[int, str | None]) -> None:
        """Timelines of `sessions` (each with the key of the request that created it) from
        the log: empty for a session it does not hold yet, else read from the LSN its key
        names (where the session began) to the session's last, one pass for all of them."""
        if not sessions:  # nothing to look up: a flush with nothing buffered reads no log
            return
        for s in sessions:
            self._sessions[s] = []
        keys = [key_digest(k) for k in sessions.values() if k is not None]
        entries = dict(
            zip([*sessions, *keys], self._store.entries([*sessions, *keys]), strict=True)
        )
        held: dict[int, tuple[int, int]] = {}  # session -> (first, last) LSN of its events
        for s, key in sessions.items():
            last = entries[s]
            if last is not None and last.kind == ev.NodeKind.SESSION:
                first = entries.get(key_digest(key)) if key is not None else None
                held[s] = (0 if first is None else first.lsn, last.lsn)
        if not held:
            return
        start = min(first for first, _ in held.values())
        stop = max(last for _, last in held.values()) + 1
        cursor = Cursor(self._store, start=start, stop=stop)
        try:
            wanted = (
                r.event
                for r in cursor.records()
                if isinstance(r.event, ev.PromptAdded | ev.AgentAssigned | ev.ResponseAdded)
                and r.event.session_id is not None
                and r.event.session_id.int in held
            )
            for session, turns in _turns(wanted).items():
                self._sessions[session] = sorted(turns)
        finally:
            cursor.close()


def _added(pair: _Pair) -> Unit:
    (_, _, response, from_agent, name), (start, _, _, to_agent, _) = pair
    key, handoff_id = _handoff(pair)
    handoff = ev.AgentHandoff(
        id=handoff_id,
        response_id=uuid_from_int(response),
        to_agent_id=uuid_from_int(to_agent),
        from_agent_id=uuid_from_int(from_agent),
        occurred_at=start,
        actor=name,
    )
    return Unit(key, [handoff])


def _retracted(pair: _Pair) -> Unit:
    key, handoff_id = _handoff(pair)
    reason = "a turn of the session that started between the two arrived later"
    deleted = ev.NodeDeleted(node_id=handoff_id, reason=reason, occurred_at=pair[1][0])
    return Unit(f"{key}:retracted", [deleted])
