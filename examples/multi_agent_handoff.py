"""Several agents in threads share one session: handoffs, templates, tools, and
optimistic concurrency so an agent never answers on a stale view of the conversation.

Run: .venv/bin/python examples/multi_agent_handoff.py [STORE]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import uuid

import eventlog
from eventlog import VariableSpec


def specialist(log: eventlog.EventLog, session: uuid.UUID, me: uuid.UUID, topic: str) -> None:
    """Answer one question; on a conflict (another agent wrote first), re-read and retry."""
    while True:
        seen = log.last_lsn(session)
        try:
            prompt = log.add_prompt(
                session,
                f"Explain {topic} briefly.",
                expect_session_lsn=seen,
                actor=f"agent:{topic}",
            )
        except eventlog.AppendConflict:
            continue  # the conversation moved on: look again before speaking
        log.assign_agent_to_prompt(prompt, me)
        answer = log.add_response(prompt, f"{topic}: a short answer.", eventlog.TokenUsage(12, 20))
        call = log.add_tool_invocation(answer, "cite", {"topic": topic})
        log.complete_tool_invocation(call, result={"source": f"docs/{topic}"}, duration_ms=2.0)
        return


def main(path: str) -> None:
    with eventlog.open(path) as log:
        router = log.add_agent("router", "routes questions")
        template = log.create_template(
            "route", "Route this question: {{question}}", [VariableSpec(name="question")]
        )
        session = log.create_session(metadata={"user": "ada"})
        question = log.add_prompt(
            session.id, template_id=template, variables={"question": "ownership and async?"}
        )
        routed = log.add_response(question, "Two specialists needed.", eventlog.TokenUsage(9, 4))

        topics = ["ownership", "async"]
        agents = [log.add_agent(t, "specialist", [t]) for t in topics]
        for agent in agents:
            log.transfer_to_agent(routed, agent, from_agent_id=router, reason="specialist topic")
        threads = [
            threading.Thread(target=specialist, args=(log, session.id, a, t))
            for a, t in zip(agents, topics, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        print(f"session {session.id}: last LSN {log.last_lsn(session.id)}")
        for record in log.read():
            event = record.event
            print(f"{record.lsn:>3} {eventlog.events.tag_of(event):<18} actor={event.actor}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="lmg-"))
