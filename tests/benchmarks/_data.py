"""Events for the benchmarks: sessions first, then prompts and responses referring to them.

Texts come from a pool of unique generated prompts and responses (`_text.TextGen`), used in
order and wrapping around. Every frame (one event, or one batch of 1,000) is compressed on
its own, so as long as the pool is larger than a batch no frame sees a repeated text and
compression ratios stay honest. Event ids are made once per case; every repetition appends
them to a fresh store, so the same prebuilt events serve every repetition and every side.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterator

import msgspec

from eventlog import events as ev
from eventlog._ids import new_id

from ._text import TextGen

__all__ = [
    "ENCODER",
    "TextPool",
    "batches",
    "conversation_events",
    "pool",
    "prompt_events",
    "session_events",
]

ENCODER = msgspec.msgpack.Encoder(uuid_format="bytes")  # the log's own MessagePack settings


class TextPool:
    """Unique prompts and responses, generated once per process and handed out in order."""

    def __init__(self, size: int, seed: int = 20240501) -> None:
        gen = TextGen(seed)
        self.prompts = gen.prompts(size)
        self.responses = gen.responses(size)

    def prompt(self, i: int) -> str:
        return self.prompts[i % len(self.prompts)]

    def response(self, i: int) -> str:
        return self.responses[i % len(self.responses)]

    def prompt_texts(self, count: int, start: int = 0) -> list[str]:
        return [self.prompt(start + i) for i in range(count)]


POOL_SIZE = 3000  # prompts and as many responses: 3x a batch of 1,000


@functools.cache
def pool() -> TextPool:
    """The shared pool, generated on first use (about 1.5 s)."""
    return TextPool(POOL_SIZE)


def session_events(count: int) -> list[ev.SessionCreated]:
    """Sessions with fixed ids, appended first to every fresh store."""
    now = time.time_ns()
    return [
        ev.SessionCreated(id=new_id(), metadata={"agent": f"agent-{i}"}, ts=now)
        for i in range(count)
    ]


def prompt_events(sessions: list[uuid.UUID], count: int, start: int = 0) -> list[ev.PromptAdded]:
    """`count` prompts spread over the sessions round robin, `ts` set as the log would."""
    now = time.time_ns()
    return [
        ev.PromptAdded(
            id=new_id(),
            session_id=sessions[i % len(sessions)],
            content=pool().prompt(start + i),
            ts=now,
        )
        for i in range(count)
    ]


def conversation_events(
    sessions: list[uuid.UUID], count: int, start: int = 0
) -> list[ev.PromptAdded | ev.ResponseAdded]:
    """`count` events alternating prompt, response (to that prompt), with `session_id` and
    `ts` filled in as the log stores them, so raw baselines encode the same bytes."""
    now = time.time_ns()
    out: list[ev.PromptAdded | ev.ResponseAdded] = []
    for i in range(count):
        k = (start + i) // 2
        session = sessions[k % len(sessions)]
        if i % 2 == 0 or not out:
            out.append(
                ev.PromptAdded(id=new_id(), session_id=session, content=pool().prompt(k), ts=now)
            )
        else:
            prompt = out[-1]
            out.append(
                ev.ResponseAdded(
                    id=new_id(),
                    prompt_id=prompt.id,
                    session_id=prompt.session_id,
                    content=pool().response(k),
                    usage=ev.TokenUsage(len(prompt.content) // 4, len(pool().response(k)) // 4),
                    ts=now,
                )
            )
    return out


def batches(items: list[ev.EventBase], size: int) -> Iterator[list[ev.EventBase]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
