"""Check every byte of a store without changing it: the engine of `lmg verify`.

Every segment header, every frame (checksum, LSN sequence, decodable body) and the chain of
segments is checked (a sealed last segment means the one after it is lost); index files are
compared with what the segment says. After damage the check resynchronises on the next
intact frame, so one run reports every damaged place. A
torn tail of the last segment is a warning (recovery on the next open cuts it); anything
else that fails is an error. Takes no lock: a frame being written reads as a torn tail.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import msgspec

from ._files import open_file
from ._format import SEGMENT_HEADER, FrameError, decode_body, segment_name, unpack_body
from ._index import IdTable, load_summary
from ._segment import (
    BadFrame,
    Frame,
    Verdict,
    judge,
    next_intact_frame,
    read_frame,
    read_segment_header,
)
from ._store import check_store

__all__ = ["Problem", "verify"]

_KNOWN = re.compile(r"^(\d{20}\.(seg|idx|ids|tail)|LOCK|ORIGIN|recovery\.jsonl)$")
_SEGMENT = re.compile(r"^\d{20}\.seg$")
_LOG_LIKE = re.compile(r"^(\d|.*\.(seg|idx|ids|tmp)$)")
"""Names the log could have written. Anything else in the directory belongs to someone else
(the projections database, snapshots): not the log's to judge."""


class Problem(msgspec.Struct, frozen=True):
    """One finding: where, and what."""

    severity: Literal["error", "warning"]
    path: str
    offset: int | None
    lsn: int | None
    message: str

    def __str__(self) -> str:
        where = self.path + (f" at offset {self.offset}" if self.offset is not None else "")
        where += f" (LSN {self.lsn})" if self.lsn is not None else ""
        return f"{self.severity}: {where}: {self.message}"


def _directory(path: Path) -> bool:
    """A directory is none of the log's files (``projections.duckdb.tmp`` is DuckDB's)."""
    return path.is_dir() and not path.is_symlink()


def verify(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem found in the store at `path`; an empty list means it is intact."""
    root = Path(path)
    check_store(root)
    problems: list[Problem] = []
    for name in sorted(os.listdir(root)):
        if _LOG_LIKE.match(name) and not _KNOWN.match(name) and not _directory(root / name):
            kind = (
                "temporary file (removed on the next open once its writer has exited)"
                if name.endswith(".tmp")
                else "unexpected file"
            )
            problems.append(Problem("warning", str(root / name), None, None, kind))
    firsts = sorted(int(n[:20]) for n in os.listdir(root) if n.endswith(".seg") and _KNOWN.match(n))
    expected = 0
    for i, first in enumerate(firsts):
        seg = root / segment_name(first)
        if first != expected:
            problems.append(
                Problem(
                    "error",
                    str(seg),
                    None,
                    expected,
                    f"segment starts at LSN {first}, expected {expected} (missing segment?)",
                )
            )
        expected = _verify_segment(seg, first, last=i == len(firsts) - 1, problems=problems)
        if i < len(firsts) - 1:
            _verify_indexes(root, first, expected, seg.stat().st_size, problems)
    if firsts and _successor_lost(root, firsts[-1]):
        problems.append(
            Problem(
                "error",
                str(root / segment_name(expected)),
                None,
                expected,
                f"segment missing: {segment_name(firsts[-1])} was sealed (it has index files), "
                "so the log went on after it",
            )
        )
    return problems


def _successor_lost(root: Path, last: int) -> bool:
    """Is the last segment sealed? A rotation creates the next segment before it writes the
    index files of this one, so index files beside the last segment mean its successor is
    gone (listing again after seeing them tells a rotation racing us from a loss)."""
    if not any((root / f"{last:020d}.{ext}").exists() for ext in ("idx", "ids")):
        return False
    return max(int(n[:20]) for n in os.listdir(root) if _SEGMENT.match(n)) == last


def _verify_segment(seg: Path, first: int, *, last: bool, problems: list[Problem]) -> int:
    """Check one segment; return the LSN after its last intact frame."""
    fd = open_file(seg)
    try:
        try:
            declared = read_segment_header(fd)
            if declared != first:
                problems.append(Problem("error", str(seg), 0, first, f"header says LSN {declared}"))
        except FrameError as exc:
            problems.append(Problem("error", str(seg), 0, first, f"bad segment header: {exc}"))
            return first
        size = os.fstat(fd).st_size
        offset, lsn = SEGMENT_HEADER, first
        while offset < size:
            try:
                frame = read_frame(fd, offset, size, lsn)
                decode_body(unpack_body(frame.head, frame.body))
            except (FrameError, msgspec.DecodeError) as exc:
                problems.append(
                    Problem("error", str(seg), offset, lsn, f"frame does not decode: {exc}")
                )
                offset += frame.head.size
                lsn = frame.head.next_lsn
                continue
            except BadFrame as bad:
                verdict = judge(fd, offset, size, lsn, last=last)
                if verdict is Verdict.RESERVE:
                    break  # the writer's zeros ahead of it: the end of the log
                if isinstance(verdict, Frame):
                    size = os.fstat(fd).st_size  # a writer filled its reserve as we looked
                    continue
                if verdict is Verdict.TORN:
                    severity: Literal["error", "warning"] = "warning" if last else "error"
                    note = (
                        "torn tail: recovery on the next open truncates it"
                        if last
                        else "damaged tail"
                    )
                    problems.append(
                        Problem(
                            severity,
                            str(seg),
                            offset,
                            lsn,
                            f"{note} ({bad.reason}, {size - offset} bytes)",
                        )
                    )
                    break
                problems.append(
                    Problem("error", str(seg), offset, lsn, f"damaged frame: {bad.reason}")
                )
                found = next_intact_frame(fd, offset, size)
                offset, lsn = (found.offset, found.head.first_lsn) if found else (size, -1)
                continue
            offset += frame.head.size
            lsn = frame.head.next_lsn
        return lsn
    finally:
        os.close(fd)


def _verify_indexes(
    root: Path, first: int, next_lsn: int, size: int, problems: list[Problem]
) -> None:
    idx = root / f"{first:020d}.idx"
    summary = load_summary(idx)
    if summary is None or summary.size != size or summary.next_lsn != next_lsn:
        problems.append(
            Problem(
                "warning",
                str(idx),
                None,
                first,
                "index missing, damaged or stale: rebuilt from the segment on next use",
            )
        )
    table = IdTable.load(root / f"{first:020d}.ids")
    if table is None or table.next_lsn != next_lsn:
        problems.append(
            Problem(
                "warning",
                str(root / f"{first:020d}.ids"),
                None,
                first,
                "id index missing, damaged or stale: rebuilt from the segment on next use",
            )
        )
    elif table is not None:
        table.close()
