"""`replay.fork`: a new store holding a store's history up to a point, to continue otherwise."""

from __future__ import annotations

import os

import eventlog
from eventlog import EventLogError, Origin

from ._points import Point, resolve
from .errors import ReplayError
from .view import open_log

__all__ = ["fork", "origin"]


def fork(path: str | os.PathLike[str], at: Point, new_path: str | os.PathLike[str]) -> Origin:
    """Create the store `new_path` with the events of `path` up to point `at` (same ids,
    times and LSNs), and return where it came from (also kept in the new store: `origin`).

    Append to the fork as to any store; the original is never touched. Projections and
    snapshots are not copied: the fork's are built from its own log."""
    with open_log(path) as log:
        last = resolve(log, at)
    try:
        eventlog.copy_prefix(path, new_path, last)
    except EventLogError as exc:
        raise ReplayError(f"cannot fork {path} into {new_path}: {exc}") from exc
    found = eventlog.origin(new_path)
    assert found is not None
    return found


def origin(path: str | os.PathLike[str]) -> Origin | None:
    """Where the store at `path` was forked from (None: it was not)."""
    return eventlog.origin(path)
