"""Replay's errors: one root, so a caller can catch everything replay raises."""

from __future__ import annotations

__all__ = ["BadPoint", "ReplayError"]


class ReplayError(Exception):
    """The root of every error `replay` raises (beside the log's and projections' own)."""


class BadPoint(ReplayError, ValueError):
    """A point in history that is malformed, or not in the log (an LSN past its end)."""
