"""The sealed segments a store knows: their summaries and id tables, cached, rebuilt, looked up.

Sealed segments never change, so what is derived from them is kept: a summary (LSN range,
counts, sparse index) from the segment's ``.idx`` file and an id table from its ``.ids`` file,
each rebuilt from the segment when missing, damaged or stale, and written back when the
handle may write (they are only a cache: a full disk keeps them in memory). A segment sealed
by this handle has its files written on a background thread; until then its entries serve
from memory, then the file replaces them, so memory stays bounded. At most `MAPPED_TABLES`
id files are open at once (the least recently used is closed), each read a block at a time
(`IdTable`: not mapped, whose touched pages counted as the process's memory), and a long log
has thousands. Each
segment's smallest and largest key are kept, so a lookup maps only the tables that may hold
its key, and a file is checksummed once per handle, not at every mapping.

Lookups go newest segment first, pruned by each table's key range and by the largest key of
all (UUIDv7 ids grow with time, so a node created now costs one comparison), behind an LRU.
Not thread-safe: the store calls it under its mutex; readers only call `summary`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from ._index import Entry, IdTable, SegmentSummary, load_summary, save_summary
from .options import Options

__all__ = ["MAPPED_TABLES", "MemoryTable", "Rebuild", "SealedSegments"]

MAPPED_TABLES = 8
"""Id files of sealed segments mapped at once: about 2 MB each at the default segment size."""

Rebuild = Callable[[int], tuple[SegmentSummary, dict[int, Entry]]]
"""Scan a sealed segment whole: its summary and id entries (damage is an error)."""


class MemoryTable:
    """An id table held in memory: just sealed, or rebuilt where it cannot be written."""

    def __init__(self, entries: dict[int, Entry], next_lsn: int) -> None:
        self._entries = entries
        self.next_lsn = next_lsn
        self.min_key = min(entries, default=1)
        self.max_key = max(entries, default=0)

    def get(self, key: int) -> Entry | None:
        return self._entries.get(key)

    def close(self) -> None:
        pass


class SealedSegments:
    """Summaries and id tables of the sealed segments of one store directory."""

    def __init__(self, path: Path, options: Options, rebuild: Rebuild) -> None:
        self._path = path
        self._options = options
        self._rebuild = rebuild
        self._summaries: dict[int, SegmentSummary] = {}
        self._tables: dict[int, MemoryTable] = {}  # just sealed, or not writable
        self._mapped: OrderedDict[int, IdTable] = OrderedDict()  # an LRU of MAPPED_TABLES
        self._verified: set[int] = set()  # id files checksummed by this handle
        self._bounds: dict[int, tuple[int, int]] = {}  # smallest and largest key of each
        self._sealers: dict[int, threading.Thread] = {}  # index files being written
        self._cache: OrderedDict[int, Entry | None] = OrderedDict()
        self._max_keys: dict[int, int] = {}  # newest segment of a list -> its largest key

    def _file(self, first_lsn: int, suffix: str) -> Path:
        return self._path / f"{first_lsn:020d}.{suffix}"

    def summary(self, first_lsn: int) -> SegmentSummary:
        """Summary and sparse index of a sealed segment: loaded, or rebuilt from it."""
        found = self._summaries.get(first_lsn)
        if found is None:
            found = load_summary(self._file(first_lsn, "idx"))
            size = (self._path / f"{first_lsn:020d}.seg").stat().st_size
            if found is None or found.first_lsn != first_lsn or found.size != size:
                found, entries = self._rebuild(first_lsn)
                self._save(first_lsn, found, entries)
            self._summaries[first_lsn] = found
        return found

    def table(self, first_lsn: int) -> IdTable | MemoryTable:
        """The id table of a sealed segment: read from its file, or rebuilt."""
        sealer = self._sealers.get(first_lsn)
        if sealer is not None and not sealer.is_alive():  # its file is written: use it
            del self._sealers[first_lsn]
            written = self._map(first_lsn, self._tables[first_lsn].next_lsn)
            if written is not None:
                del self._tables[first_lsn]  # frees its entries
        found = self._tables.get(first_lsn) or self._mapped.get(first_lsn)
        if found is not None:
            if first_lsn in self._mapped:
                self._mapped.move_to_end(first_lsn)
            return found
        next_lsn = self.summary(first_lsn).next_lsn
        mapped = self._map(first_lsn, next_lsn)
        if mapped is not None:
            return mapped
        summary, entries = self._rebuild(first_lsn)
        if self._save(first_lsn, summary, entries):
            self._verified.discard(first_lsn)
            mapped = self._map(first_lsn, next_lsn)
            if mapped is not None:
                return mapped
        table = self._tables[first_lsn] = MemoryTable(entries, summary.next_lsn)
        return table

    def _map(self, first_lsn: int, next_lsn: int) -> IdTable | None:
        """Map a segment's id file if it is sound and matches; unmap the least recently used
        beyond `MAPPED_TABLES`."""
        verified = first_lsn in self._verified
        table = IdTable.load(self._file(first_lsn, "ids"), verify=not verified)
        if table is None or table.next_lsn != next_lsn:
            if table is not None:
                table.close()
            return None
        self._verified.add(first_lsn)
        self._mapped[first_lsn] = table
        while len(self._mapped) > MAPPED_TABLES:
            _first, oldest = self._mapped.popitem(last=False)
            oldest.close()
        return table

    def _bound(self, first_lsn: int) -> tuple[int, int]:
        """The smallest and largest key of a segment's table (kept: a lookup maps no table
        that cannot hold its key)."""
        bound = self._bounds.get(first_lsn)
        if bound is None:
            table = self.table(first_lsn)
            bound = self._bounds[first_lsn] = (table.min_key, table.max_key)
        return bound

    def _save(self, first_lsn: int, summary: SegmentSummary, entries: dict[int, Entry]) -> bool:
        """Write a segment's index files if this handle may; False if they were not written."""
        if self._options.readonly:
            return False
        try:  # the .idx last: recovery rebuilds a segment whose .idx is missing, so a process
            # killed between the two leaves no sealed segment without its .ids
            IdTable.write(self._file(first_lsn, "ids"), entries.items(), summary.next_lsn)
            save_summary(self._file(first_lsn, "idx"), summary)
        except OSError:
            return False
        return True

    def seal(self, first_lsn: int, summary: SegmentSummary, entries: dict[int, Entry]) -> None:
        """Take in a segment this handle just sealed; write its index files in the background
        (sorting and writing a segment's ids takes ~0.1 s: not on the append path)."""
        self._summaries[first_lsn] = summary
        self._tables[first_lsn] = MemoryTable(entries, summary.next_lsn)
        self._cache.clear()
        for done in [f for f, t in self._sealers.items() if not t.is_alive()]:
            self.table(done)  # swaps in the written file, freeing its entries
        sealer = threading.Thread(
            target=self._save,
            args=(first_lsn, summary, entries),
            name=f"eventlog-seal-{first_lsn}",
            daemon=True,
        )
        self._sealers[first_lsn] = sealer
        sealer.start()

    def forget(self, first_lsn: int) -> None:
        """Drop what is known of a segment that was rewritten (-1: none), once its index files
        are written; a segment's id table stays valid (ids and LSNs never change)."""
        for sealer in self._sealers.values():
            sealer.join()
        self._summaries.pop(first_lsn, None)

    def replace(self, first_lsn: int, summary: SegmentSummary) -> None:
        """Take in the summary of a rewritten segment, and write its ``.idx`` if we may."""
        self._summaries[first_lsn] = summary
        if not self._options.readonly:
            with contextlib.suppress(OSError):  # a cache: rebuilt on use if it is not written
                save_summary(self._file(first_lsn, "idx"), summary)

    def adopt(self, first_lsn: int, summary: SegmentSummary) -> None:
        """Take in a segment another process sealed (its files are that process's job)."""
        self._summaries[first_lsn] = summary
        self._cache.clear()

    def lookup(self, key: int, sealed: list[int], *, cached: bool) -> Entry | None:
        """An id's newest state in `sealed` (first LSNs, oldest first); `cached` when
        `sealed` is every sealed segment, so the LRU may answer."""
        if not sealed or key > self.max_key(sealed):
            return None
        if cached and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        found = None
        for first in reversed(sealed):
            low, high = self._bound(first)
            if low <= key <= high and (found := self.table(first).get(key)) is not None:
                break
        if cached and self._options.id_cache_entries:
            self._cache[key] = found
            if len(self._cache) > self._options.id_cache_entries:
                self._cache.popitem(last=False)
        return found

    def max_key(self, sealed: list[int]) -> int:
        """The largest key in any of `sealed` (-1 if none)."""
        if not sealed:
            return -1
        known = self._max_keys.get(sealed[-1])
        if known is None:
            known = self._max_keys[sealed[-1]] = max(self._bound(f)[1] for f in sealed)
        return known

    def close(self) -> None:
        for sealer in self._sealers.values():
            sealer.join()  # the next open finds the index files
        for table in self._mapped.values():
            table.close()
        self._mapped.clear()
