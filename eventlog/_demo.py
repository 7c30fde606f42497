"""`lmg demo`: a small multi-agent conversation, recorded and then read back as a summary.

The summary is built by reading the log, not by echoing what was written, so it shows a
newcomer both halves: the typed append helpers and what the log holds afterwards.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec

from . import events as ev
from .log import EventLog

__all__ = ["Demo", "lmg_command", "next_steps", "record_demo", "run_demo", "summarise"]

_METADATA: dict[str, ev.JSON] = {"user": "ada", "channel": "chat"}
_TAGS = ["demo"]


class Demo(msgspec.Struct, frozen=True):
    """Where the demo sits in its store: its session, and the LSN of its handoff."""

    session_id: uuid.UUID
    handoff_lsn: int


def run_demo(log: EventLog, path: str, say: Callable[[str], None]) -> Demo:
    """Record the demo, unless the store already holds it, then summarise it.

    A rerun (`make demo` twice) shows the recorded demo again instead of recording a second
    copy, which would double every count and leave the printed LSNs pointing at the first."""
    demo = find_demo(log)
    if demo is None:
        record_demo(log)
        demo = find_demo(log)
        assert demo is not None, "the demo just recorded has a handoff"
    else:
        say(
            f"{path} already holds the demo: showing it again, recording nothing "
            f"(delete {path} to record it afresh)."
        )
        say("")
    summarise(log, demo.session_id, say)
    return demo


def next_steps(path: str, demo: Demo, *, sql: bool) -> list[str]:
    """The commands to try next, each runnable as printed from this directory in any shell.

    `sql` adds those that need the projections: SQL, the projector and time travel."""
    lmg, store = lmg_command(), shlex.quote(path)
    lines = ["", f"Next, from this directory ({_how(lmg)}):"]
    if sql:
        query = shlex.quote("SELECT * FROM agent_stats")
        lines.append(f"  {lmg} sql {store} {query}")
        lines.append(f"  {lmg} project {store}   # add --follow to keep folding new events")
    lines += [f"  {lmg} tail {store} | head", f"  {lmg} stats {store}", f"  {lmg} verify {store}"]
    if sql:
        at, before = demo.handoff_lsn, demo.handoff_lsn - 1
        query = shlex.quote("SELECT name, handoffs_in FROM agent_stats")
        fix = shlex.quote(_unused(f"{path.rstrip('/')}-fix"))
        lines += [
            f"Time travel to the handoff (LSN {at}; an LSN is an event's log sequence number):",
            f"  {lmg} replay {store} --at {at} --sql {query}",
            f"  {lmg} diff {store} --from {before} --to {at}",
            f"  {lmg} fork {store} --at {before} {fix}",
        ]
    return lines


def lmg_command() -> str:
    """How to run this `lmg` again from this directory: plain `lmg` if PATH finds it (a pip
    install in an active environment), else its path (`.venv/bin/lmg` after `make demo`)."""
    me = Path(sys.argv[0])
    if me.name != "lmg":  # not the console script (python -m, or a test runner)
        return "lmg"
    found = shutil.which("lmg")
    if found is not None and Path(found).resolve() == me.resolve():
        return "lmg"
    relative = os.path.relpath(me.absolute())
    if relative.startswith(".."):
        return shlex.quote(str(me.absolute()))
    return shlex.quote(relative if os.sep in relative else f".{os.sep}{relative}")


def _how(lmg: str) -> str:
    return "lmg is on PATH" if lmg == "lmg" else f"{lmg} is the lmg this demo ran"


def _unused(path: str) -> str:
    """`path`, or `path-2`, `path-3`...: the first that does not exist yet."""
    n = 1
    candidate = path
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate


def find_demo(log: EventLog) -> Demo | None:
    """The demo session last recorded in full (through its handoff) in this store, if any."""
    session: uuid.UUID | None = None
    for record in log.read():
        match record.event:
            case ev.SessionCreated(id=sid, metadata=metadata, tags=tags):
                if metadata == _METADATA and tags == _TAGS:
                    session = sid
            case ev.AgentHandoff(session_id=sid) if session is not None and sid == session:
                return Demo(session, record.lsn)
            case _:
                pass
    return None


def record_demo(log: EventLog) -> uuid.UUID:
    """Record one support conversation with a triage agent, a handoff, templates and tools."""
    triage = log.add_agent("triage", "routes questions", ["classify"], model="small-1")
    coder = log.add_agent(
        "coder", "answers programming questions", ["python", "sql"], model="large-2"
    )
    base = log.create_template(
        "answer",
        "Answer as {{persona}}: {{question}}",
        [
            ev.VariableSpec(name="persona", required=False, default="a helpful assistant"),
            ev.VariableSpec(name="question"),
        ],
    )
    expert = log.create_template_from_parent(
        base,
        "expert-answer",
        "Answer as a senior {{language}} engineer: {{question}}",
        [ev.VariableSpec(name="language"), ev.VariableSpec(name="question")],
    )
    session = log.create_session(metadata=_METADATA, tags=_TAGS)

    ask = "How do I count rows per day in DuckDB?"
    p1 = log.add_prompt(session.id, template_id=base, variables={"question": ask}, actor="user:ada")
    log.assign_agent_to_prompt(p1, triage)
    r1 = log.add_response(
        p1,
        "This is a SQL question; handing over to the coder agent.",
        ev.TokenUsage(31, 12),
        finish_reason="stop",
        latency_ms=180.0,
        model="small-1",
        actor="agent:triage",
    )
    log.transfer_to_agent(
        r1,
        coder,
        from_agent_id=triage,
        reason="needs SQL expertise",
        context_summary="user wants a per-day row count in DuckDB",
    )
    p2 = log.add_prompt(
        session.id,
        template_id=expert,
        variables={"language": "SQL", "question": ask},
        parent_prompt_id=p1,
        actor="agent:triage",
    )
    log.assign_agent_to_prompt(p2, coder)
    r2 = log.add_response(
        p2,
        "SELECT date_trunc('day', ts) AS day, count(*) FROM events GROUP BY day ORDER BY day;",
        ev.TokenUsage(58, 41),
        finish_reason="stop",
        latency_ms=920.0,
        model="large-2",
        actor="agent:coder",
    )
    check = log.add_tool_invocation(r2, "run_sql", {"query": "SELECT 1"}, actor="agent:coder")
    log.complete_tool_invocation(check, result={"rows": 1}, duration_ms=3.2)
    lookup = log.add_tool_invocation(r2, "search_docs", {"q": "date_trunc"}, actor="agent:coder")
    log.complete_tool_invocation(lookup, error="docs index offline", duration_ms=1500.0)
    feedback = log.add_node(
        "feedback", "Worked first time, thanks!", data={"rating": 5}, session_id=session.id
    )
    log.add_edge(feedback, r2, ev.EdgeType.REFERENCES, {"relevance": 1.0})
    return session.id


def summarise(log: EventLog, session_id: uuid.UUID, say: Callable[[str], None]) -> None:
    """Describe a session as the log holds it, then the whole store."""
    names: dict[uuid.UUID, str] = {}
    lines: list[str] = []
    counts: Counter[str] = Counter()
    for record in log.read():
        event = record.event
        counts[ev.tag_of(event)] += 1
        match event:
            case ev.AgentRegistered():
                names[event.id] = event.name
            case ev.PromptAdded() if event.session_id == session_id:
                via = f" (template v{event.template_version})" if event.template_id else ""
                lines.append(f"  [{record.lsn:>4}] prompt{via}: {event.content}")
            case ev.AgentAssigned() if event.session_id == session_id:
                lines.append(f"  [{record.lsn:>4}]   handled by {names.get(event.agent_id, '?')}")
            case ev.ResponseAdded() if event.session_id == session_id:
                tokens = event.usage.total_tokens
                lines.append(
                    f"  [{record.lsn:>4}] response ({event.model}, {tokens} tokens, "
                    f"{event.latency_ms:.0f} ms): {event.content}"
                )
            case ev.AgentHandoff() if event.session_id == session_id:
                source = names.get(event.from_agent_id or event.to_agent_id, "?")
                target = names.get(event.to_agent_id, "?")
                lines.append(f"  [{record.lsn:>4}]   handoff {source} -> {target}: {event.reason}")
            case ev.ToolInvoked() if event.session_id == session_id:
                lines.append(
                    f"  [{record.lsn:>4}]   tool call {event.tool_name}({event.parameters})"
                )
            case ev.ToolCompleted() if event.session_id == session_id:
                outcome = f"failed: {event.error}" if event.error else f"ok: {event.result}"
                lines.append(f"  [{record.lsn:>4}]   tool {outcome} in {event.duration_ms} ms")
            case ev.NodeAdded() if event.session_id == session_id:
                lines.append(f"  [{record.lsn:>4}] {event.kind}: {event.content}")
            case _:
                pass
    say(f"Session {session_id}, as recorded in the log:")
    for line in lines:
        say(line)
    stats = log.stats()
    say("")
    say(
        f"Store {stats.path}: {stats.events} events in {stats.segments} segment(s), "
        f"{stats.stored_bytes:,} bytes of frames. Each append above was its own frame, "
        "fsynced before it returned; batched appends compress about 3x."
    )
    say("Events by type: " + ", ".join(f"{tag} {n}" for tag, n in sorted(counts.items())))
