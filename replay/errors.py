"""Replay's errors: one root, so a caller can catch everything replay raises."""

from __future__ import annotations

__all__ = ["BadPoint", "ReplayError", "ViewStorageFull"]


class ReplayError(Exception):
    """The root of every error `replay` raises (beside the log's and projections' own)."""


class BadPoint(ReplayError, ValueError):
    """A point in history that is malformed, or not in the log (an LSN past its end)."""


class ViewStorageFull(ReplayError):
    """The disk a view is written to (the temporary directory, or `out`'s) is full, or
    refuses a file that large: the store is untouched, and a retry may succeed once there
    is room (`lmg serve` answers it 507, as it answers the store's own full disk)."""
