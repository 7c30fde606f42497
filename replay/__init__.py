"""Time travel: the projections as they were at any point of a store's history.

import replay
past = replay.at("./data", time="2026-11-20T10:00:00Z")   # or lsn=1234
past.sql("SELECT count(*) FROM prompts").fetchall()
d = replay.diff("./data", 1200, 1234)                     # table by table, and the events
for s in replay.step("./data", 1200, 1234): ...           # one event at a time, with the view
replay.fork("./data", 1220, "./data-fix")                 # a new store from that point

Every view equals a fold, from zero, of exactly the events up to its point; snapshots only
make getting there cheaper (docs/replay.md).
"""

from typing import TYPE_CHECKING

from eventlog._lazy import export_lazily

if TYPE_CHECKING:  # the names as mypy sees them; at run time, imported on first use
    from eventlog import Origin
    from projections import SnapshotInfo, SnapshotPolicy, SnapshotSkipped

    from ._points import Point, Time
    from ._workspace import Progress
    from .diff import Diff, RowChange, TableDiff, diff
    from .errors import BadPoint, ReplayError, ViewStorageFull
    from .fork import fork, origin
    from .snapshot import prune, snapshot, snapshots
    from .step import Step, step
    from .view import View, at

__all__ = [
    "BadPoint",
    "Diff",
    "Origin",
    "Point",
    "Progress",
    "ReplayError",
    "RowChange",
    "SnapshotInfo",
    "SnapshotPolicy",
    "SnapshotSkipped",
    "Step",
    "TableDiff",
    "Time",
    "View",
    "ViewStorageFull",
    "at",
    "diff",
    "fork",
    "origin",
    "prune",
    "snapshot",
    "snapshots",
    "step",
]

export_lazily(
    __name__,
    {
        "eventlog": ("Origin",),
        "projections": ("SnapshotInfo", "SnapshotPolicy", "SnapshotSkipped"),
        "._points": ("Point", "Time"),
        "._workspace": ("Progress",),
        ".diff": ("Diff", "RowChange", "TableDiff", "diff"),
        ".errors": ("BadPoint", "ReplayError", "ViewStorageFull"),
        ".fork": ("fork", "origin"),
        ".snapshot": ("prune", "snapshot", "snapshots"),
        ".step": ("Step", "step"),
        ".view": ("View", "at"),
    },
)
