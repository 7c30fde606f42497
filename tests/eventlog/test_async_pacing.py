"""How the asyncio committer sizes its groups (`eventlog.log._Pacing`).

Many agents on one `AsyncEventLog` that all wait on the same group cannot overlap the disk's
sync with Python; the committer splits such a group in two when building it took longer
than two syncs, and lets two cohorts merge again when a sync outlasts building both. Neither
may change what an append's return means: its frame was written and synced first.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest

import eventlog
from eventlog import _segment
from eventlog import log as eventlog_log
from eventlog.events import PromptAdded

from .test_reserve import FRAME_HEADER, SEGMENT_HEADER

AGENTS = 64
ROUNDS = 12


def frame_sizes(store: Path) -> list[int]:
    """Events per frame of every segment, from the frame headers (count: bytes 20-24)."""
    counts = []
    for segment in sorted(store.glob("*.seg")):
        data = segment.read_bytes()
        offset = SEGMENT_HEADER
        while data[offset : offset + 4] == b"LMGF":
            counts.append(int.from_bytes(data[offset + 20 : offset + 24], "little"))
            offset += FRAME_HEADER + int.from_bytes(data[offset + 4 : offset + 8], "little")
    return counts


class Synced:
    """The next LSN after the frames a sync covered, walked on from the last sync's."""

    def __init__(self) -> None:
        self.offset, self.next = SEGMENT_HEADER, 0

    def sync(self, fd: int) -> None:
        end = _segment.file_size(fd)
        for frame in _segment.iter_frames(fd, self.offset, end, self.next, whole=True):
            self.offset, self.next = frame.offset + frame.head.size, frame.head.next_lsn


def run_agents(
    store: Path, monkeypatch: pytest.MonkeyPatch, sync_s: float, work_s: float = 0.0
) -> list[int]:
    """64 agents appending prompts in rounds, each working `work_s` on the loop before an
    append, every sync taking `sync_s` (not reaching the disk: what is tested is when an
    append returns): each append must return only after a sync that covered its frame.
    Events per frame."""
    synced = Synced()

    def sync(fd: int) -> None:
        time.sleep(sync_s)
        synced.sync(fd)

    async def main() -> None:
        async with await eventlog.open_async(store) as log:
            session = await log.create_session()
            monkeypatch.setattr(os, "fdatasync", sync)

            async def agent(k: int) -> None:
                for n in range(ROUNDS):
                    busy_until = time.perf_counter() + work_s  # holding the GIL, as Python does
                    while time.perf_counter() < busy_until:
                        pass
                    prompt = PromptAdded(id=uuid.uuid4(), session_id=session.id, content=f"{k}:{n}")
                    stored = await log.append(prompt)
                    assert stored.last_lsn < synced.next, "acknowledged before its sync"

            await asyncio.gather(*(agent(k) for k in range(AGENTS)))
        monkeypatch.undo()

    asyncio.run(main())
    assert synced.next == 1 + AGENTS * ROUNDS
    return frame_sizes(store)[1:]  # the session's frame first


def test_async_appends_of_split_groups_return_only_after_their_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # syncs of 0.1 ms against 30 µs of work an append: building 64 takes longer than two
    # syncs, so groups split (how often depends on the machine's load: not asserted here,
    # `_Pacing`'s decisions are, below); `run_agents` checks every return against the syncs
    sizes = run_agents(tmp_path / "store", monkeypatch, sync_s=0.0001, work_s=0.00003)
    assert sum(sizes) == AGENTS * ROUNDS


def test_async_agents_whose_syncs_are_long_share_one_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = run_agents(tmp_path / "store", monkeypatch, sync_s=0.05)
    assert sum(sizes) == AGENTS * ROUNDS
    assert len(sizes) <= ROUNDS + 3, sizes  # one group a round: cohorts would double them


def queued(pacing: eventlog_log._Pacing, appends: int, seconds: float, at: float = 0.0) -> None:
    """`appends` single appends queued over `seconds` from `at`, as `_enqueue` notes them."""
    for k in range(appends):
        pacing.put(at + seconds * k / (appends - 1), empty=k == 0)


def test_agents_wait_for_each_other_once_a_sync_outlasts_building_all() -> None:
    pacing = eventlog_log._Pacing()
    queued(pacing, 64, 0.0063)  # 0.1 ms an append
    pacing.measure()
    pacing.committed(0.0002)  # a sync of 0.2 ms
    assert pacing.merge(64, 64) is None and pacing.split(64, 64) == 32  # all wait on it
    pacing.taken(32)
    assert pacing.merge(32, 64) is None and pacing.split(32, 64) == 32  # two cohorts
    queued(pacing, 40, 0.004, at=1.0)
    assert pacing.split(40, 64) == 32  # at most half the agents
    pacing.committed(0.004)
    pacing.committed(0.004)  # syncs of 4 ms, as measured, between half and all the building
    assert pacing.merge(32, 64) is None and pacing.split(32, 64) == 32  # cohorts last
    assert pacing.split(64, 64) == 64  # but one group of all is not split
    pacing.committed(0.01)
    pacing.committed(0.01)
    pacing.committed(0.01)  # now syncs of 10 ms, longer than building 64 appends
    pacing.committed(0.01)
    deadline = pacing.merge(32, 64)
    assert deadline is not None and deadline > time.perf_counter()  # wait for the others
    assert pacing.merge(64, 64) is None and pacing.split(64, 64) == 64  # one group


def test_a_batch_queued_by_one_append_is_never_split() -> None:
    pacing = eventlog_log._Pacing()
    queued(pacing, 64, 0.0063)
    pacing.measure()
    pacing.committed(0.0002)
    pacing.taken(64)
    pacing.put(1.0, empty=True)  # the service's batch route: 500 requests at once
    assert pacing.split(500, 500) == 500
