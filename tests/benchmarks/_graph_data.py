"""A store of mixed events for the projections' benchmarks (fold, follow, reads, rss).

What an agent platform writes: agents and templates first (a child template inheriting from
a base one), then sessions of 8 turns each. A turn is a prompt (a third from each template
or none, about half naming the session's previous prompt as its parent), the agent it is
assigned to, a response with token usage, latency, model and finish reason, in 30% of turns
a tool call and its completion (one in five failing), and in 5% a handoff to another agent.
That is about 30 events per session; prompt and response texts come from the shared pool
(`_data.pool`). Seeded, so every run builds the same events (their ids and `ts` differ).

`long_chunks` is the other shape, for `fold_long`: conversations of about 1 KB a message, as
an export of real chats holds them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import eventlog
from eventlog import events as ev
from eventlog._ids import new_id

from ._data import pool
from ._text import TextGen

__all__ = [
    "AGENTS",
    "SESSIONS_PER_CHUNK",
    "TURNS",
    "build_graph_store",
    "build_long_store",
    "long_chunks",
    "mixed_chunks",
]

AGENTS = 20
TURNS = 8  # per session
SESSIONS_PER_CHUNK = 10
_TOOLS = ("search", "sql", "calc", "fetch", "python")
_MODELS = ("large-2", "small-1")


def mixed_chunks(seed: int = 20240501) -> Iterator[list[ev.EventBase]]:
    """Endless lists of events, each valid after the ones before it: agents and templates
    first, then `SESSIONS_PER_CHUNK` sessions per list (about 300 events)."""
    rng = random.Random(seed)
    texts = pool()
    agents = [
        ev.AgentRegistered(
            id=new_id(),
            name=f"agent-{i}",
            role=("planner", "coder", "reviewer", "researcher")[i % 4],
            capabilities=["chat", _TOOLS[i % len(_TOOLS)]],
            model=_MODELS[i % 2],
        )
        for i in range(AGENTS)
    ]
    spec = [ev.VariableSpec(name="question")]
    base = ev.TemplateCreated(id=new_id(), name="base", text="Q: {{question}}", variables=spec)
    child = ev.TemplateCreated(
        id=new_id(),
        name="expert",
        text="Answer as an expert. Q: {{question}}",
        variables=spec,
        parent_id=base.id,
    )
    yield [*agents, base, child]
    templates = (None, base.id, child.id)
    i = 0
    while True:
        chunk: list[ev.EventBase] = []
        sessions = [
            ev.SessionCreated(
                id=new_id(), metadata={"user": f"user-{rng.randrange(100)}"}, tags=["bench"]
            )
            for _ in range(SESSIONS_PER_CHUNK)
        ]
        chunk += sessions
        for session in sessions:
            previous: ev.PromptAdded | None = None
            for _turn in range(TURNS):
                agent = agents[rng.randrange(AGENTS)]
                template = templates[rng.randrange(3)]
                content = texts.prompt(i)
                prompt = ev.PromptAdded(
                    id=new_id(),
                    session_id=session.id,
                    content=content,
                    template_id=template,
                    template_version=None if template is None else 1,
                    variables={"question": content[:40]} if template else {},
                    parent_prompt_id=previous.id if previous and rng.random() < 0.5 else None,
                )
                response = ev.ResponseAdded(
                    id=new_id(),
                    prompt_id=prompt.id,
                    content=texts.response(i),
                    usage=ev.TokenUsage(len(content) // 4, rng.randrange(50, 400)),
                    latency_ms=rng.uniform(80.0, 2500.0),
                    model=agent.model,
                    finish_reason="stop",
                )
                chunk += [
                    prompt,
                    ev.AgentAssigned(id=new_id(), prompt_id=prompt.id, agent_id=agent.id),
                    response,
                ]
                if rng.random() < 0.3:
                    call = ev.ToolInvoked(
                        id=new_id(),
                        response_id=response.id,
                        tool_name=rng.choice(_TOOLS),
                        parameters={"query": content[:30], "limit": rng.randrange(1, 50)},
                    )
                    failed = rng.random() < 0.2
                    chunk += [
                        call,
                        ev.ToolCompleted(
                            tool_id=call.id,
                            result=None if failed else {"rows": rng.randrange(100)},
                            error="timeout" if failed else None,
                            duration_ms=rng.uniform(1.0, 300.0),
                        ),
                    ]
                if rng.random() < 0.05:
                    chunk.append(
                        ev.AgentHandoff(
                            id=new_id(),
                            response_id=response.id,
                            to_agent_id=agents[rng.randrange(AGENTS)].id,
                            from_agent_id=agent.id,
                            reason="needs a specialist",
                        )
                    )
                previous = prompt
                i += 1
        yield chunk


def build_graph_store(path: Path, n: int, seed: int = 20240501) -> dict[str, int]:
    """A store of exactly `n` mixed events (the last chunk cut short), appended with
    `Durability.NONE` in requests of one chunk (untimed setup); returns counts by type."""
    return _build(path, n, mixed_chunks(seed))


def _build(path: Path, n: int, chunks: Iterator[list[ev.EventBase]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with eventlog.open(path, durability=eventlog.Durability.NONE) as log:
        left = n
        for chunk in chunks:
            if left <= 0:
                break
            part = chunk[:left]
            log.append(part)
            left -= len(part)
            for e in part:
                tag = ev.tag_of(e)
                counts[tag] = counts.get(tag, 0) + 1
    return counts


# Words a real conversation corpus mixes into English: accents, typography, units, CJK.
_NON_ASCII = ("café", "naïve", "—", "“quoted”", "résumé", "Zürich", "日本語", "→", "µs", "€")


def long_chunks(seed: int = 20240501) -> Iterator[list[ev.EventBase]]:
    """Endless lists of conversations as a chat export holds them: a session, then 3 to 15
    turns of a prompt and its response, each text 700 to 1,300 characters (about 1 KB)
    with a few non-ASCII words; no agents, templates or tools."""
    rng = random.Random(seed)
    gen = TextGen(seed)

    def text() -> str:
        words = f"{gen.prompt()} {gen.response()}"[: rng.randint(700, 1300)].split(" ")
        for _ in range(3):
            words[rng.randrange(len(words))] = rng.choice(_NON_ASCII)
        return " ".join(words)

    while True:
        chunk: list[ev.EventBase] = []
        for _ in range(SESSIONS_PER_CHUNK):
            session = ev.SessionCreated(id=new_id(), metadata={"source": "chat export"})
            chunk.append(session)
            for _turn in range(rng.randint(3, 15)):
                prompt = ev.PromptAdded(id=new_id(), session_id=session.id, content=text())
                answer = text()
                chunk += [
                    prompt,
                    ev.ResponseAdded(
                        id=new_id(),
                        prompt_id=prompt.id,
                        content=answer,
                        usage=ev.TokenUsage(len(prompt.content) // 4, len(answer) // 4),
                        model="chat-1",
                        finish_reason="stop",
                    ),
                ]
        yield chunk


def build_long_store(path: Path, n: int, seed: int = 20240501) -> dict[str, int]:
    """`build_graph_store` for `long_chunks`: exactly `n` events of long conversation text."""
    return _build(path, n, long_chunks(seed))
