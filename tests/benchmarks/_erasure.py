"""The erasure benchmark: the time to erase one user's data (one session of 64) from a store.

One session's events are spread over the whole log (the 64 sessions take turns), so every
segment holds some and every segment is rewritten: the worst case for one user. Each
repetition erases from a fresh copy of the store (copying is untimed) and times, whole:
`eventlog.select` (the dry run: one scan), `projections.erase` (select, rewrite, record,
drop the projections and snapshots), and the fold from zero that the next use pays. The
baseline is a full read of the log (`log.read()`).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import eventlog
import projections

from . import _sides as s
from ._harness import Plan, Row, log, remove_tree

__all__ = ["erasure"]


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _repetition(
    store: Path, copy: Path, session: uuid.UUID, times: dict[str, list[float]]
) -> eventlog.Erasure:
    remove_tree(copy)
    shutil.copytree(store, copy)
    chosen = eventlog.Selector.of(sessions=[session])
    with eventlog.open(copy, readonly=True) as reader:
        times.setdefault("read", []).append(_timed(lambda: sum(1 for _ in reader.read())))
    times.setdefault("select", []).append(_timed(lambda: eventlog.select(copy, chosen)))
    started = time.perf_counter()
    done = projections.erase(copy, chosen)
    times.setdefault("erase", []).append(time.perf_counter() - started)
    times.setdefault("refold", []).append(_timed(lambda: projections.rebuild(copy)))
    return done


def erasure(plan: Plan, n: int, reps: int) -> tuple[list[Row], list[str]]:
    root = Path(tempfile.mkdtemp(prefix="lmg-bench-erasure-", dir=plan.tmp_root))
    times: dict[str, list[float]] = {}
    try:
        log(f"  erasure: building a store of {n:,} events")
        store = s.build_store(root / "store", n)
        size = s.store_bytes(store)
        segments = len(list(store.glob("*.seg")))
        with eventlog.open(store, readonly=True) as reader:
            session = next(r.event for r in reader.read(0, 1)).id  # type: ignore[attr-defined]
        projections.rebuild(store)  # untimed: the projections and snapshots an erasure drops
        for rep in range(reps):
            log(f"  erasure: repetition {rep + 1} of {reps}")
            done = _repetition(store, root / "copy", session, times)
    finally:
        remove_tree(root)
    med = statistics.median
    ratios = [b / a for a, b in zip(times["erase"], times["read"], strict=True)]
    row = Row("erasure", f"erase one session of 64 from {n:,} events", "`projections.erase`",
              "reading every event", None, med(ratios), min(ratios), max(ratios),
              med(times["erase"]), med(times["read"]), "s", len(ratios))  # fmt: skip
    notes = [
        f"The store held {n:,} events in {segments} segments ({size / 1e6:.0f} MB); the "
        f"session had {done.record.events:,} events, in {done.segments_rewritten} segments "
        f"(all rewritten). Erasure: {med(times['erase']):.1f} s; of it, selecting (the dry "
        f"run, one scan): {med(times['select']):.1f} s. Reading every event: "
        f"{med(times['read']):.1f} s. The fold from zero the next use pays (default "
        f"snapshots): {med(times['refold']):.1f} s.",
    ]
    return [row], notes
