"""Time-travel debugging: a triage agent hands a billing question to the wrong agent. Find
the moment with `replay.diff` and `replay.step`, fork the store just before it with
`replay.fork`, record the right handoff in the fork, and compare the two histories.

Run: .venv/bin/python examples/time_travel_debugging.py [STORE]
(STORE: a new directory; default: a temporary one). The fork is made beside it, as STORE-fix.
Then, from a shell:
  .venv/bin/lmg diff STORE --from 2 --to 12
  .venv/bin/lmg replay STORE-fix --at 7 --sql "SELECT * FROM handoffs"
(`.venv` is what `make demo` installs into; after `pip install`, `lmg` is on your PATH.)
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

import msgspec

import eventlog
import replay
from eventlog import TokenUsage
from eventlog.events import AgentAssigned, AgentHandoff, PromptAdded, ResponseAdded
from projections import MemoryGraph


class Run(msgspec.Struct, frozen=True):
    """What the recording returns: ids a debugger would find in the log anyway."""

    setup: int  # the last LSN before the conversation (the agents are registered)
    end: int  # the last LSN of the run
    session: uuid.UUID
    routed: uuid.UUID  # triage's response, after which control passes to another agent
    agents: dict[str, uuid.UUID]


def record_bad_run(path: Path) -> Run:
    """Three agents, then one conversation that goes wrong."""
    with eventlog.open(path) as log:
        agents = {
            "triage": log.add_agent("triage", "routes questions", ["classify"]),
            "billing": log.add_agent("billing", "answers billing questions", ["invoices"]),
            "search": log.add_agent("search", "searches the public web", ["web"]),
        }
        setup = log.next_lsn() - 1
        session = log.create_session(metadata={"user": "ada"}, tags=["support"])
        asked = log.add_prompt(
            session.id, "Why was I charged twice for my May invoice?", actor="ada"
        )
        log.assign_agent_to_prompt(asked, agents["triage"])
        routed = log.add_response(asked, "A lookup question: routing it.", TokenUsage(24, 6))
        log.transfer_to_agent(  # the mistake: a billing question sent to web search
            routed,
            agents["search"],
            from_agent_id=agents["triage"],
            reason="looks like a lookup",
            context_summary="user wants to search for double charges",
        )
        searched = log.add_prompt(session.id, "Search: double charges", actor="agent:search")
        log.assign_agent_to_prompt(searched, agents["search"])
        answer = log.add_response(
            searched, "Many people report double charges online; ask your bank.", TokenUsage(40, 22)
        )
        call = log.add_tool_invocation(answer, "web_search", {"q": "charged twice invoice"})
        log.complete_tool_invocation(call, error="no results for an account question")
        return Run(setup, log.next_lsn() - 1, session.id, routed, agents)


def what_changed(path: Path, run: Run) -> None:
    """`replay.diff`: the projections before the conversation against after it."""
    d = replay.diff(path, run.setup, run.end)
    print(f"== replay.diff: tables changed: {', '.join(d.changed_tables())}")
    print(d.text(rows=1))  # what `lmg diff` prints: agents and templates by name, not by id


def find_the_handoff(path: Path, run: Run) -> int:
    """`replay.step`: walk the conversation one event at a time, stop at the handoff."""
    print("\n== replay.step: the decision path, event by event")
    names: dict[uuid.UUID, str] = {}
    for s in replay.step(path, start=run.setup):
        if not names:  # the view holds the agents already: the walk starts after them
            names = {agent: name for agent, name in s.view.rows("SELECT id, name FROM agents")}
        match s.event:
            case PromptAdded(content=content, actor=actor):
                print(f"  [{s.lsn:>2}] {actor} asks: {content}")
            case AgentAssigned(agent_id=agent):
                print(f"  [{s.lsn:>2}]   handled by {names[agent]}")
            case ResponseAdded(content=content):
                print(f"  [{s.lsn:>2}]   answer: {content}")
            case AgentHandoff(from_agent_id=source, to_agent_id=to, context_summary=summary):
                assert source is not None
                print(f"  [{s.lsn:>2}] HANDOFF {names[source]} -> {names[to]}, with {summary!r}")
                stats = s.view.rows("SELECT name, handoffs_in FROM agent_stats ORDER BY name")
                print(f"       at {s.view.time:%H:%M:%S.%f}, handoffs in: {dict(stats)}")
                return s.lsn
    raise SystemExit("no handoff in the run")


def fix_in_a_fork(path: Path, fix: Path, bad: int, run: Run) -> None:
    """`replay.fork` just before the bad handoff, then append the right one to the fork."""
    origin = replay.fork(path, bad - 1, fix)
    print(f"\n== replay.fork: {fix.name} holds LSNs 0..{origin.last_lsn} of {path.name}")
    with MemoryGraph.open(fix) as g:
        billing = run.agents["billing"]
        g.transfer_to_agent(
            run.routed,
            billing,
            from_agent_id=run.agents["triage"],
            reason="billing question",
            context_summary="ada was charged twice for her May invoice",
        )
        asked = g.add_prompt(run.session, "Check ada's May invoice.", actor="agent:billing")
        g.assign_agent_to_prompt(asked, billing)
        answer = g.add_response(
            asked, "You were charged twice; the duplicate is refunded.", TokenUsage(35, 12)
        )
        call = g.add_tool_invocation(answer, "lookup_invoices", {"user": "ada", "month": 5})
        g.complete_tool_invocation(call, result={"duplicates": 1}, duration_ms=8.0)
        print(f"  appended the fix to the fork: LSNs {bad}..{g.stats().events - 1}")


OUTCOME = (
    "SELECT (SELECT name FROM agents WHERE id = h.to_agent_id), h.context_summary, "
    "(SELECT string_agg(tool_name || ': ' || status, ', ') FROM tool_invocations) "
    "FROM handoffs h"
)


def compare(path: Path, fix: Path, run: Run) -> None:
    """The original is unchanged (`replay.at`); the fork holds the fixed path (MemoryGraph)."""
    print("\n== Two histories")
    with replay.at(path) as now:
        ((to, summary, tools),) = now.rows(OUTCOME)
        assert now.lsn == run.end, "the fork never writes to the original"
        print(f"  {path.name} (LSNs 0..{now.lsn}): -> {to}, {summary!r}; {tools}")
    with MemoryGraph.open(fix) as g:
        ((to, summary, tools),) = g.rows(OUTCOME)
        print(f"  {fix.name} (LSNs 0..{g.stats().events - 1}): -> {to}, {summary!r}; {tools}")
        last = g.context_window(run.session, turns=1)[-1]
        print(f"  the fork's last answer: {last.responses[0].content}")
    origin = replay.origin(fix)
    assert origin is not None
    print(f"  {fix.name}/ORIGIN: forked from {origin.source} after LSN {origin.last_lsn}")


def main(store: str) -> None:
    path = Path(store)
    fix = path.with_name(f"{path.name}-fix")
    if (path.exists() and any(path.iterdir())) or fix.exists():
        raise SystemExit(f"{path} must be a new directory, and {fix} must not exist")
    run = record_bad_run(path)
    print(f"Recorded a support conversation in {path}: LSNs 0..{run.end}\n")
    what_changed(path, run)
    bad = find_the_handoff(path, run)
    fix_in_a_fork(path, fix, bad, run)
    compare(path, fix, run)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="lmg-"))
