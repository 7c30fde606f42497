"""`replay.at`: every projection as it was just after a point, behind MemoryGraph's read API."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import duckdb

import eventlog
from eventlog import EventLog, EventLogError
from projections import GraphView, SnapshotInfo

from ._points import Point, Time, datetime_of, event_ts, resolve
from ._workspace import Progress, Workspace
from .errors import BadPoint, ReplayError

__all__ = ["View", "at"]


class View(GraphView):
    """A read-only view of the projections at one point of a store's history.

    It has MemoryGraph's reads (`get_node`, `query()`, lineage, `context_window`, `sql`, ...)
    over a private database; close it (or use ``with``) to delete that database."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        store: Path,
        lsn: int,
        ts: int | None,
        snapshot: SnapshotInfo | None,
        workspace: Workspace | None = None,
    ) -> None:
        super().__init__(con)
        self.store = store
        self.lsn = lsn  # the last event the view holds (-1: none)
        self.ts = ts  # that event's time, ns (None: no event)
        self.snapshot = snapshot  # where the fold started (None: from zero)
        self._workspace = workspace

    @property
    def time(self) -> dt.datetime | None:
        """The time of the last event the view holds, as a UTC datetime, rounded up to the
        microsecond: ``at(time=view.time)`` holds that event (and its whole group commit)."""
        return None if self.ts is None else datetime_of(self.ts)

    @property
    def database(self) -> Path | None:
        """The file the view reads (deleted on close unless it was `out`)."""
        return None if self._workspace is None else self._workspace.db

    def close(self) -> None:
        super().close()
        if self._workspace is not None:
            self._workspace.discard()
            self._workspace = None

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<replay.View of {self.store} at LSN {self.lsn}>"


def at(
    path: str | os.PathLike[str],
    *,
    lsn: int | None = None,
    time: dt.datetime | str | int | None = None,
    out: str | os.PathLike[str] | None = None,
    snapshots: bool = True,
    on_progress: Progress | None = None,
) -> View:
    """The projections of the store at `path` as they were just after `lsn` (included), or
    at `time` (every event with ``ts <= time``: a datetime, ISO 8601 string or int ns).
    Neither means now (the log's end). -1, or a time before the first event, is an empty view.

    The view starts from the newest snapshot at or before the point (unless `snapshots` is
    False) and folds the log forward. It lives in a private temporary file, or in `out`
    (a new ``.duckdb`` file that stays after the view is closed)."""
    if lsn is not None and time is not None:
        raise BadPoint("give lsn or time, not both")
    point: Point | None = lsn if time is None else Time(time)
    if lsn is not None and (not isinstance(lsn, int) or isinstance(lsn, bool)):
        raise BadPoint(f"lsn must be an int, not {type(lsn).__name__}")
    target = Path(out) if out is not None else None
    if target is not None and target.exists():
        raise ReplayError(f"{target} already exists: --out writes a new database file")
    with open_log(path) as log:
        last = resolve(log, point)
        workspace = Workspace(log, at_most=last, out=target, snapshots=snapshots)
        try:
            workspace.fold_to(last, on_progress)
            con = workspace.read_only(keep=target is not None)
            return View(
                con,
                store=Path(path),
                lsn=last,
                ts=event_ts(log, last),
                snapshot=workspace.snapshot,
                workspace=workspace,
            )
        except BaseException:
            workspace.discard()  # an `out` not yet complete was never linked into place
            raise


def open_log(path: str | os.PathLike[str]) -> EventLog:
    """The store's log, read-only (a replay never writes to it)."""
    try:
        return eventlog.open(path, readonly=True)
    except EventLogError as exc:
        raise ReplayError(f"cannot read the store at {path}: {exc}") from exc
