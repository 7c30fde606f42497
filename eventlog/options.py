"""Options of an open log: one frozen struct, every field with its default and its risk."""

from __future__ import annotations

import enum

import msgspec

__all__ = ["Durability", "Options"]


class Durability(enum.Enum):
    """When an append is acknowledged, and what a crash can take back."""

    FSYNC = "fsync"
    """Default. An append returns after its frame is written and fsynced (and, for a new
    segment, its directory entry too). Neither a killed process nor a power loss loses an
    acknowledged event. Concurrent appenders share one write and one fsync (group commit)."""

    INTERVAL = "interval"
    """Frames are written at once and fsynced at most `fsync_interval_ms` later. A killed
    process loses nothing (the kernel holds the data); a power loss or kernel crash may lose
    the acknowledged appends of the last interval."""

    NONE = "none"
    """Frames are written and fsynced only by flush(), close(), and when a segment is
    sealed. A killed process loses nothing; a power loss may lose anything not yet flushed
    by the kernel, typically the last 30 s. For bulk loads that can be redone."""


class Options(msgspec.Struct, frozen=True, kw_only=True):
    """How a log is opened. Every field has a safe default."""

    durability: Durability = Durability.FSYNC
    """See `Durability`. Default FSYNC: nothing acknowledged is ever lost."""

    fsync_interval_ms: int = 200
    """INTERVAL mode only: the longest time an acknowledged frame stays unsynced."""

    segment_bytes: int = 16 * 1024 * 1024
    """Rotate to a new segment once the active one reaches this size. Larger segments mean
    fewer files; smaller ones bound the memory of the id index (one segment's ids are held
    in a dict) and the work of recovery on open (the last segment is checked in full)."""

    compression_level: int = 3
    """zstd level for frame bodies. 1 is ~1.6x faster and ~15% larger; 3 is the default."""

    index_interval_bytes: int = 64 * 1024
    """Sparse index granularity: one (LSN, time, offset) entry per this many segment bytes.
    A seek reads at most this much plus one frame."""

    id_cache_entries: int = 65_536
    """Ids of sealed segments looked up at append are cached; this bounds that cache."""

    max_request_bytes: int = 64 * 1024 * 1024
    """An append larger than this (encoded) is rejected with InvalidEvent before writing."""

    readonly: bool = False
    """Open for reading only: no lock taken, no recovery, appends raise."""

    group_readable: bool = False
    """Only when the store is created: make its directory 0750 instead of 0700, so its group
    may read it (files 0640 instead of 0600). Whatever is created in a store later takes its
    directory's owner and group bits, never bits for others (docs/operations.md, Security)."""

    def __post_init__(self) -> None:
        if self.segment_bytes < 4096:
            raise ValueError("segment_bytes must be at least 4096")
        if not 1 <= self.compression_level <= 22:
            raise ValueError("compression_level must be within 1..22")
        if self.fsync_interval_ms <= 0:
            raise ValueError("fsync_interval_ms must be positive")
        if self.index_interval_bytes <= 0 or self.id_cache_entries < 0:
            raise ValueError("index_interval_bytes must be positive, id_cache_entries >= 0")
