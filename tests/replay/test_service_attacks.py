"""Attacks on `lmg serve`'s network surface that held only once fixed: each drives a real
`lmg serve` child on 127.0.0.1 with real HTTP clients, as tests/replay/test_service.py does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests._processes import WAIT_S

from .test_service import Service

# real server processes: `make test` runs them, `make test-fast` not
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_session")]


def test_concurrent_follows_cannot_pass_max_follows(tmp_path: Path, store: Path) -> None:
    """Follow streams opened at once are counted as they are admitted: the check and the
    count were apart (the count came when the stream began to send), so 20 requests sent
    together all passed a `max_follows` of 2."""
    service = Service(tmp_path, [str(store), "--limit", "max_follows=2"])
    try:
        statuses = asyncio.run(_follow_at_once(service.url, 20))
        assert statuses.count(200) == 2 and statuses.count(429) == 18, statuses
        # the streams closed give their places back (each once its end is seen)
        _wait_for(
            lambda: 'lmg_follow_streams{store="default"} 0.0' in service.http.get("/metrics").text
        )
        again = asyncio.run(_follow_at_once(service.url, 2))
        assert again == [200, 200]
    finally:
        assert service.stop() == 0


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.02)


async def _follow_at_once(url: str, n: int) -> list[int]:
    """The statuses of `n` follow streams requested together, each held open until every
    one has its status."""
    everyone = asyncio.Barrier(n)
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S, limits=limits) as client:

        async def follow() -> int:
            path = "/v1/stores/default/events?follow=true&from=1000"
            async with client.stream("GET", path) as answer:
                await everyone.wait()
                return answer.status_code

        return sorted(await asyncio.gather(*(follow() for _ in range(n))))
