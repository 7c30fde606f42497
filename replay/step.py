"""`replay.step`: walk the log one event at a time, with the projections after each."""

from __future__ import annotations

import os
from collections.abc import Iterator

import msgspec

import projections
from eventlog import EventBase

from ._points import Point, event_ts, resolve
from ._workspace import Workspace
from .view import View, open_log

__all__ = ["Step", "step"]


class Step(msgspec.Struct, frozen=True):
    """One event and the view just after it. The view is shared by every step of a walk and
    moves on with it: read what you need from it before taking the next step."""

    lsn: int
    event: EventBase
    view: View


def step(
    path: str | os.PathLike[str],
    start: Point | None = None,
    stop: Point | None = None,
    *,
    snapshots: bool = True,
) -> Iterator[Step]:
    """Yield each event after point `start` (None: from the first event) up to and including
    `stop` (None: the log's end, as it is when the walk begins), with the view after it.

    Each event is folded in its own transaction, by the projections' fold; the walk starts
    from the view at `start` (from a snapshot when there is one)."""
    with open_log(path) as log:
        first = -1 if start is None else resolve(log, start)
        last = resolve(log, stop)
        workspace = Workspace(log, at_most=first, snapshots=snapshots)
        try:
            workspace.fold_to(first)
            view = View(
                workspace.con,
                store=log.path,
                lsn=first,
                ts=event_ts(log, first),
                snapshot=workspace.snapshot,
            )
            for record in log.read(first + 1, last + 1):
                with workspace.writing():
                    projections.fold_records(
                        workspace.con, iter([record]), on_batch=lambda batch, _: view.forget(batch)
                    )
                view.lsn, view.ts = record.lsn, record.event.ts
                yield Step(record.lsn, record.event, view)
        finally:
            workspace.discard()
