"""Coalescing: the appends one client makes concurrently travel in one HTTP request, the
client's analogue of the log's group commit (`Coalescer` for asyncio, `ThreadCoalescer` for
threads).

Each append waits in a queue. With asyncio, a *flight* (a task of the client's, never a
caller's) takes what waits, up to `max_count` appends and `max_bytes` of their bodies, sends
it as one request, hands each caller its own outcome, and takes what queued meanwhile, until
the queue is empty. At most `flights` fly at once; an append that finds fewer starts one, so
a lone append leaves at once (one turn of the event loop later) and appends made while
requests are in flight go together in the next. The service commits a request's appends in one group
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

With threads, the flights are the callers' own threads, as in the log's leader/follower group
commit: a thread that finds fewer than `flights` flying carries one request (its own append
and those waiting), hands each thread its outcome, and hands the flight on to the first
thread still waiting, so no caller carries more than one request for the others. A thread
interrupted while it waits (Ctrl-C) leaves its append unsent if it was not yet taken, and
passes on a flight it was handed; one interrupted while it carries a request raises the
interrupt itself, and the others it carried get the error of a request with no answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from ._store import Appended
from .errors import ServiceError

__all__ = ["Bounds", "Coalescer", "Outcome", "Send", "SendSync", "ThreadCoalescer"]

Outcome = Appended | Exception
Send = Callable[[list[bytes]], Awaitable[list[Outcome]]]
"""Sends the bodies of some appends as one request; one outcome for each, in order."""
SendSync = Callable[[list[bytes]], list[Outcome]]
"""The same, blocking (threads)."""


class _Queued(Protocol):
    @property
    def body(self) -> bytes: ...

    def gone(self) -> bool: ...


Q = TypeVar("Q", bound=_Queued)


class Bounds:
    """What one request may carry, and how many fly at once."""

    def __init__(self, flights: int = 2, max_count: int = 256, max_bytes: int = 1 << 20) -> None:
        self.flights = flights
        self.max_count = max_count
        """Appends in one request at most (the service refuses more than its limit)."""
        self.max_bytes = max_bytes
        """Bytes of append bodies in one request at most, unless one alone is larger."""
        self.batching = True
        """False once the service showed it has no batch route (it is older): each append
        then goes alone, as without coalescing."""

    def _take(self, queue: deque[Q]) -> list[Q]:
        """The next request's appends, in the order they were made; those whose callers
        went (cancelled, interrupted) before they were taken are dropped unsent.

        A flight takes all it may, even when another starts in the same turn: splitting a
        turn's appends between two requests, so the service parses one while it commits
        the other, cost more CPU per append and was no faster (docs/benchmarks.md)."""
        batch: list[Q] = []
        size = 0
        while queue and len(batch) < self.max_count:
            waiting = queue[0]
            if waiting.gone():
                queue.popleft()
                continue
            if batch and size + len(waiting.body) > self.max_bytes:
                break
            batch.append(queue.popleft())
            size += len(waiting.body)
        return batch


class _Waiting(NamedTuple):
    body: bytes
    future: asyncio.Future[Appended]

    def gone(self) -> bool:
        return self.future.done()


class Coalescer(Bounds):
    """The queue and flights of one async client's appends (the module's docstring)."""

    def __init__(self, send: Send, *, flights: int = 2) -> None:
        super().__init__(flights)
        self.send = send
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
            while batch := self._take(self._queue):
                await self._carry(batch)
        finally:
            self._flying -= 1

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


@dataclass(eq=False)
class _Slot:
    """One thread's append. Its fields change under the coalescer's lock."""

    body: bytes
    outcome: Outcome | None = None
    lead: bool = False  # it is to carry the next request
    left: bool = False  # its thread was interrupted while it waited
    wake: threading.Event = field(default_factory=threading.Event)

    def gone(self) -> bool:
        return self.left


def _interrupted() -> ServiceError:
    """What a thread whose append rode in a request another thread's interrupt (Ctrl-C) cut
    short gets: not the interrupt, which is that thread's alone, but the error of a request
    that got no answer, which says to retry it with its idempotency key."""
    return ServiceError(
        0,
        "unreachable",
        "the request carrying this append was interrupted in another thread "
        "(the append's outcome is unknown: retry it with its idempotency_key)",
    )


class ThreadCoalescer(Bounds):
    """The queue of one sync client's appends, flown by its callers' threads (the module's
    docstring)."""

    def __init__(self, send: SendSync, *, flights: int = 2) -> None:
        super().__init__(flights)
        self.send = send
        self._lock = threading.Lock()
        self._queue: deque[_Slot] = deque()
        self._flying = 0

    def submit(self, body: bytes) -> Appended:
        """Queue one append's body; its outcome once the request carrying it is answered."""
        slot = _Slot(body)
        with self._lock:
            self._queue.append(slot)
            slot.lead = self._flying < self.flights
            self._flying += slot.lead
        try:
            while True:
                with self._lock:
                    lead, slot.lead = slot.lead, False
                    outcome = slot.outcome
                    if not lead and outcome is None:
                        slot.wake.clear()  # set again (after a change here) to wake us
                if lead:
                    self._fly()
                elif outcome is not None:
                    break
                else:
                    slot.wake.wait()
        except BaseException:
            self._leave(slot)
            raise
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _fly(self) -> None:
        """Carry one request, then hand the flight to the first thread still waiting."""
        with self._lock:
            batch = self._take(self._queue)
            if not batch:
                self._flying -= 1
                return
        interrupted: BaseException | None = None
        try:
            outcomes: list[Outcome] = list(self.send([s.body for s in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} appends")
        except Exception as exc:
            outcomes = [exc] * len(batch)
        except BaseException as exc:  # Ctrl-C: ours to raise; the others' outcome is unknown
            outcomes, interrupted = [_interrupted() for _ in batch], exc
        with self._lock:
            for slot, outcome in zip(batch, outcomes, strict=True):
                slot.outcome = outcome
            successor = self._hand_over()
        for slot in batch:
            slot.wake.set()
        if successor is not None:
            successor.wake.set()
        if interrupted is not None:
            raise interrupted

    def _hand_over(self) -> _Slot | None:
        """Under the lock: the flight to the first thread still waiting, or one fewer."""
        successor = next((s for s in self._queue if not s.left), None)
        if successor is None:
            self._flying -= 1
        else:
            successor.lead = True
        return successor

    def _leave(self, slot: _Slot) -> None:
        """A thread interrupted while it waited: its append is not sent if not yet taken,
        and a flight it was handed goes on to another."""
        with self._lock:
            slot.left = True
            successor = self._hand_over() if slot.lead else None
            slot.lead = False
        if successor is not None:
            successor.wake.set()
