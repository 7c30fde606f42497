"""Snapshots on demand (`lmg snapshot`): built from the log alone, beside any projector."""

from __future__ import annotations

import os

from projections import SnapshotInfo, SnapshotPolicy, Snapshots

from ._points import Point, event_ts, resolve
from ._workspace import Progress, Workspace
from .errors import BadPoint
from .view import open_log

__all__ = ["prune", "snapshot", "snapshots"]


def snapshot(
    path: str | os.PathLike[str],
    at: Point | None = None,
    *,
    keep: int | None = SnapshotPolicy().keep,
    on_progress: Progress | None = None,
) -> SnapshotInfo:
    """Save the projections of the store at `path` as they are at point `at` (None: now) as
    a snapshot, then prune to `keep` (None: no pruning).

    It folds a private copy (from the newest snapshot before the point), so it never waits
    for, nor disturbs, a projector or an embedded graph using the live database."""
    with open_log(path) as log:
        last = resolve(log, at)
        if last < 0:
            raise BadPoint("there is nothing to snapshot before the first event")
        workspace = Workspace(log, at_most=last)
        try:
            workspace.fold_to(last, on_progress)
            info = Snapshots(path).take(workspace.con, workspace.db, ts=event_ts(log, last))
        finally:
            workspace.discard()
    if keep is not None:
        prune(path, keep)
    return info


def snapshots(path: str | os.PathLike[str]) -> list[SnapshotInfo]:
    """The store's snapshots, oldest first. A path that holds no store is an error, not an
    empty list, so that a mistyped path is not mistaken for a store without snapshots."""
    open_log(path).close()
    return Snapshots(path).all()


def prune(path: str | os.PathLike[str], keep: int) -> list[int]:
    """Keep at most `keep` snapshots, spread over the history; returns the LSNs dropped."""
    return Snapshots(path).prune(keep)
