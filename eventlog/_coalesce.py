"""Coalescing: the appends one async client makes concurrently travel in one HTTP request,
the client's analogue of the log's group commit.

Each append waits in a queue. A *flight* (a task of the client's, never a caller's) takes
what waits, up to `max_count` appends and `max_bytes` of their bodies, sends it as one
request, hands each caller its own outcome, and takes what queued meanwhile, until the queue
is empty. At most `flights` fly at once; an append that finds fewer starts one, so a lone
append leaves at once (one turn of the event loop later) and appends made while requests
are in flight go together in the next. The service commits a request's appends in one group
(`POST .../events:batch`), each all-or-nothing alone.

What it keeps:

1. **Each caller its own outcome**: its `Appended`, or the exception it would have had
   sending alone; one append's refusal is never another's.
2. **Cancellation is the caller's alone.** A caller cancelled before its append is sent
   leaves the queue unsent; one cancelled later leaves its outcome standing (as an embedded
   append's stands in the log). Flights are not the callers' tasks, so no cancellation
   reaches a request carrying others' appends.
3. **Nothing waits for ever**: a flight that fails outright fails exactly the appends it
   carried; `drain` returns once every queued append has its outcome.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from ._store import Appended

__all__ = ["Coalescer", "Outcome", "Send"]

Outcome = Appended | Exception
Send = Callable[[list[bytes]], Awaitable[list[Outcome]]]
"""Sends the bodies of some appends as one request; one outcome for each, in order."""


class _Waiting(NamedTuple):
    body: bytes
    future: asyncio.Future[Appended]


class Coalescer:
    """The queue and flights of one client's appends (the module's docstring says how)."""

    def __init__(
        self, send: Send, *, flights: int = 2, max_count: int = 256, max_bytes: int = 1 << 20
    ) -> None:
        self.send = send
        self.flights = flights
        self.max_count = max_count
        """Appends in one request at most (the service refuses more than its limit)."""
        self.max_bytes = max_bytes
        """Bytes of append bodies in one request at most, unless one alone is larger."""
        self._queue: deque[_Waiting] = deque()
        self._flying = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, body: bytes) -> Appended:
        """Queue one append's body; its outcome once the request carrying it is answered."""
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(body, future))
        if self._flying < self.flights:
            self._flying += 1  # counted now: the appends of this turn wait for this flight
            task = asyncio.create_task(self._fly(), name="eventlog-coalesce")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def drain(self) -> None:
        """Return once every queued append has been sent and answered (the flights end)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))  # not gather: cancelling us spares them

    async def _fly(self) -> None:
        try:
            while batch := self._take():
                await self._carry(batch)
        finally:
            self._flying -= 1

    def _take(self) -> list[_Waiting]:
        """The next request's appends, in the order they were made; those whose callers
        were cancelled are dropped unsent.

        A flight takes all it may, even when another starts in the same turn: splitting a
        turn's appends between two requests, so the service parses one while it commits
        the other, cost more CPU per append and was no faster (docs/benchmarks.md)."""
        batch: list[_Waiting] = []
        size = 0
        queue = self._queue
        while queue and len(batch) < self.max_count:
            waiting = queue[0]
            if waiting.future.done():
                queue.popleft()
                continue
            if batch and size + len(waiting.body) > self.max_bytes:
                break
            batch.append(queue.popleft())
            size += len(waiting.body)
        return batch

    async def _carry(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = await self.send([waiting.body for waiting in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} appends")
        except asyncio.CancelledError:  # the loop is shutting down: so are the callers
            for waiting in batch:
                waiting.future.cancel()
            raise
        except Exception as exc:  # `send` answers failures as outcomes; a bug still ends here
            outcomes = [exc] * len(batch)
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if waiting.future.done():
                continue  # its caller was cancelled in flight: the outcome stands
            if isinstance(outcome, Exception):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result(outcome)
