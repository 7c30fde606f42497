"""The lifecycle benchmark: export, backup and restore rates on a store of a realistic size.

Each operation is timed whole (they are one-shot commands, not loops to slice) and compared
with the raw cost of the same bytes: a full read of the log (`log.read()`, decode included)
for exports, a `shutil.copytree` of the log's files, each fsynced, for backup and
restore.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import eventlog
import projections

from . import _sides as s
from ._harness import Plan, Row, log, remove_tree

__all__ = ["lifecycle"]


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.iterdir() if p.suffix in (".seg", ".idx", ".ids"))


def _log_files(src: str, names: list[str]) -> list[str]:
    return [n for n in names if not n.endswith((".seg", ".idx", ".ids"))]


def _durable_copy(store: Path, dest: Path) -> None:
    """The baseline: the log's files copied and fsynced, as a backup must."""
    shutil.copytree(store, dest, ignore=_log_files)
    for path in dest.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _repetition(store: Path, root: Path, session: uuid.UUID, times: dict[str, list[float]]) -> int:
    """Time each operation once; return the size of the JSON export."""

    def run(name: str, fn: Callable[[], object], fresh: Path | None = None) -> None:
        if fresh is not None:
            remove_tree(fresh)
        times.setdefault(name, []).append(_timed(fn))

    with eventlog.open(store, readonly=True) as reader:
        run("read", lambda: sum(1 for _ in reader.read()))
    out = io.BytesIO()
    run("export", lambda: eventlog.export_events(store, out))
    one = io.BytesIO()
    run("export one session", lambda: eventlog.export_events(store, one, sessions=[session]))
    run("parquet", lambda: projections.export_parquet(store, root / "pq"), root / "pq")
    copy = root / "copy"
    run("copytree", lambda: _durable_copy(store, copy), copy)
    run("backup", lambda: eventlog.backup(store, root / "bk"), root / "bk")
    run("backup again", lambda: eventlog.backup(store, root / "bk"))
    restored = root / "restored"
    run("restore", lambda: eventlog.restore(root / "bk", restored), restored)
    return len(out.getvalue())


def lifecycle(plan: Plan, n: int, reps: int) -> tuple[list[Row], list[str]]:
    root = Path(tempfile.mkdtemp(prefix="lmg-bench-lifecycle-", dir=plan.tmp_root))
    times: dict[str, list[float]] = {}
    try:
        log(f"  lifecycle: building a store of {n:,} events")
        store = s.build_store(root / "store", n)
        size = _bytes(store)
        with eventlog.open(store, readonly=True) as reader:
            session = next(r.event for r in reader.read(0, 1)).id  # type: ignore[attr-defined]
        projections.rebuild(store, snapshots=None)  # untimed: Parquet exports the tables
        for rep in range(reps):
            log(f"  lifecycle: repetition {rep + 1} of {reps}")
            exported = _repetition(store, root, session, times)
    finally:
        remove_tree(root)
    med = statistics.median

    def row(what: str, subject: str, names: tuple[str, str], baseline: str) -> Row:
        name, base = names
        ratios = [b / a for a, b in zip(times[name], times[base], strict=True)]
        return Row("lifecycle", what, subject, baseline, None, med(ratios), min(ratios),
                   max(ratios), size / med(times[name]) / 1e6, size / med(times[base]) / 1e6,
                   "MB/s", len(ratios))  # fmt: skip

    mb = size / 1e6
    rows = [
        row(f"export {n:,} events as JSON lines", "`eventlog.export_events`",
            ("export", "read"), "reading every event"),
        row(f"Parquet export of {n:,} events' tables", "`projections.export_parquet`",
            ("parquet", "read"), "reading every event"),
        row(f"back up {mb:.0f} MB of log", "`eventlog.backup` (new DEST)",
            ("backup", "copytree"), "copy + fsync"),
        row(f"restore {mb:.0f} MB of log", "`eventlog.restore`",
            ("restore", "copytree"), "copy + fsync"),
    ]  # fmt: skip
    notes = [
        f"The store held {n:,} events in {mb:.0f} MB of segments and indexes; MB/s are of "
        f"those bytes. JSON export: {n / med(times['export']):,.0f} events/s "
        f"({exported / 1e6:.0f} MB of JSON). Export of one of its 64 sessions: "
        f"{med(times['export one session']):.2f} s (two scans of the log). Parquet export: "
        f"{n / med(times['parquet']):,.0f} events/s. Backup: "
        f"{n / med(times['backup']):,.0f} events/s; a second backup into the same DEST "
        f"(incremental: nothing new but the last segment): {med(times['backup again']):.2f} s "
        f"(verification reads the whole backup). Restore: {n / med(times['restore']):,.0f} "
        "events/s (copy, verify, recovery, fsync).",
    ]
    return rows, notes
