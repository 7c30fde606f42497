"""64 asyncio agents append concurrently (group commit: one fsync serves many), while a
follower task prints events as they land.

Run: .venv/bin/python examples/async_agents.py [STORE]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

import eventlog


async def agent(log: eventlog.AsyncEventLog, n: int, turns: int) -> None:
    session = await log.create_session(metadata={"agent": n})
    for turn in range(turns):
        prompt = await log.add_prompt(session.id, f"agent {n}, turn {turn}: what next?")
        await log.add_response(prompt, "keep going", eventlog.TokenUsage(8, 3))


async def main(path: str) -> None:
    agents, turns = 64, 10
    async with await eventlog.open_async(path) as log:
        stop = asyncio.Event()
        seen = 0

        async def watch() -> None:
            nonlocal seen
            async for _record in log.follow(stop=stop):
                seen += 1

        follower = asyncio.create_task(watch())
        started = time.perf_counter()
        await asyncio.gather(*(agent(log, n, turns) for n in range(agents)))
        elapsed = time.perf_counter() - started
        total = agents * (1 + 2 * turns)
        print(
            f"{total} durable appends from {agents} agents in {elapsed:.2f} s "
            f"({total / elapsed:,.0f}/s, each fsynced before it returned)"
        )
        while seen < total:
            await asyncio.sleep(0.05)
        stop.set()
        await follower
        print(f"the follower saw all {seen} events")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="lmg-")))
