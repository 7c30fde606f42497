"""Snapshots: taken where the policy says, used by replay, never trusted over the log.

One store is built per module: a mixed workload folded by a real `Projector` with a small
policy (a batch of `BATCH` events, a snapshot every `EVERY`), so its snapshots sit at LSNs the
policy predicts. Tests that damage or prune work on copies of it. Every view a test takes is
compared, table by table over `projections.TABLE_NAMES`, with a view of the same point folded
from zero (``snapshots=False``): a snapshot may only make a replay cheaper, never different.
"""

from __future__ import annotations

import errno
import json
import random
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google_crc32c
import pytest

import eventlog
import projections
import replay
from projections import SCHEMA_VERSION, TABLE_NAMES, SnapshotPolicy, SnapshotSkipped

from ..projections._projector_child import Workload, populate

BATCH = 100  # the projector's batch: it checks the policy after each commit
EVERY = 300  # events between snapshots
EVENTS = 1500  # at least this many events in the store

Rows = dict[str, list[tuple[Any, ...]]]


# -- the store, built once -----------------------------------------------------------------------


@dataclass
class Base:
    path: Path
    end: int  # the last LSN
    lsns: list[int]  # the projector's snapshots
    _references: dict[int, Rows] = field(default_factory=dict)

    def reference(self, lsn: int) -> Rows:
        """The tables at `lsn` folded from zero, ignoring every snapshot."""
        if lsn not in self._references:
            with replay.at(self.path, lsn=lsn, snapshots=False) as view:
                assert view.snapshot is None
                self._references[lsn] = read_tables(view)
        return self._references[lsn]


def due_lsns(end: int, batch: int, every: int) -> list[int]:
    """Where a projector folding LSNs 0..end in batches of `batch` takes its snapshots: after
    a commit, once `every` events have been folded since the last one."""
    taken, last = [], -1
    for stop in range(batch - 1, end + batch, batch):
        checkpoint = min(stop, end)
        if checkpoint - last >= every:
            taken.append(checkpoint)
            last = checkpoint
    return taken


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    path = tmp_path_factory.mktemp("snapshots") / "store"
    with eventlog.open(path, durability=eventlog.Durability.NONE) as log:
        populate(log, Workload(random.Random(20_240)), EVENTS)
        end = log.next_lsn() - 1
    policy = SnapshotPolicy(every_events=EVERY, keep=100)
    with projections.Projector(path, batch_events=BATCH, snapshots=policy) as projector:
        assert projector.catch_up() == end
    lsns = [s.lsn for s in replay.snapshots(path)]
    assert len(lsns) >= 4, "the damage tests need an oldest, a middle and newer snapshots"
    return Base(path, end, lsns)


def copy_store(base: Base, tmp: Path, *, snapshots: bool = True) -> Path:
    """A copy of the base store's log (and its snapshots, unless told not to); never the
    projector's database, which no replay reads."""
    ignored = ["projections.duckdb*", "LOCK", *([] if snapshots else ["snapshots"])]
    target = tmp / "store"
    shutil.copytree(base.path, target, ignore=shutil.ignore_patterns(*ignored))
    return target


# -- reading ---------------------------------------------------------------------------------------


def read_tables(view: replay.View) -> Rows:
    return {t: view.rows(f"SELECT * FROM {t} ORDER BY ALL") for t in TABLE_NAMES}


def assert_same(found: Rows, expected: Rows, where: str) -> None:
    for table in TABLE_NAMES:
        assert found[table] == expected[table], (
            f"{where}: table {table} differs from a fold from zero "
            f"({len(found[table])} rows, expected {len(expected[table])})"
        )


def newest_at_or_before(lsns: list[int], target: int) -> int | None:
    return max((s for s in lsns if s <= target), default=None)


