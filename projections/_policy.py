"""`SnapshotPolicy`, apart from the snapshots themselves so that the CLI can show its defaults
without importing DuckDB."""

from __future__ import annotations

import msgspec

from .errors import ProjectionError

__all__ = ["SnapshotPolicy"]


class SnapshotPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When a projector takes snapshots, and how many are kept.

    A snapshot is due after `every_events` events or `every_bytes` bytes of log since the
    newest one, whichever comes first. Beyond `keep` snapshots, pruning drops the one whose
    neighbours are closest, so what is kept stays spread over the whole history (a replay
    folds at most about one gap). The defaults keep `replay.at` under a second on a
    million-event store (docs/benchmarks.md)."""

    every_events: int = 20_000
    every_bytes: int = 16 << 20
    keep: int = 64

    def __post_init__(self) -> None:
        if self.every_events < 1 or self.every_bytes < 1 or self.keep < 1:
            raise ProjectionError("snapshot policy values must be positive")
