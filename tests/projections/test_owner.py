"""`Owner`, the service's hold on a store's projections: how a read waits for the fold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import eventlog
from projections._owner import Owner

_SLOW_FOLD_S = 0.5


async def _wait_for_a_slow_fold(store: Path, fold: Callable[[Any], Any] | None = None) -> float:
    """Append a session beside an `Owner` whose fold takes `_SLOW_FOLD_S` longer, and wait
    for the fold to hold it as a read does (`reach`): the CPU this thread spent waiting."""
    log = await eventlog.open_async(store)
    owner = await asyncio.to_thread(Owner, log)
    try:
        run = owner._embedded.run

        def slow(read: Any) -> Any:
            time.sleep(_SLOW_FOLD_S)
            return fold(read) if fold is not None else run(read)

        owner._embedded.run = slow  # type: ignore[method-assign,assignment]
        await log.create_session()
        lsn = await log.next_lsn() - 1
        began = time.thread_time()
        await owner.reach(lsn, 10.0)
        spent = time.thread_time() - began
        assert owner.checkpoint >= lsn or owner.error is not None
        return spent
    finally:
        await asyncio.to_thread(owner.close)
        await log.close()


def test_a_read_waiting_for_the_fold_is_answered_by_it_without_polling(store: Path) -> None:
    """The read is woken once, when the fold commits what it waits for: it polled the
    checkpoint every 2 ms, waking the event loop (and the fold) 250 times in half a second."""
    spent = asyncio.run(_wait_for_a_slow_fold(store))
    assert spent < 0.003, f"the event loop spent {spent * 1e3:.1f} ms of CPU waiting"


def test_a_read_waiting_for_a_fold_that_stops_is_answered(store: Path) -> None:
    """A fold that fails (a poison event) answers the reads waiting for it: they read what
    was folded (/readyz says why the fold stopped) instead of waiting out their time."""

    def fails(_read: Any) -> None:
        raise RuntimeError("poison")

    began = time.monotonic()
    asyncio.run(_wait_for_a_slow_fold(store, fails))
    assert time.monotonic() - began < 5.0
