"""A store's retention policy: kept in the store, and what it makes due (`lmg erase --due`
applies it; content already erased is not due again)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import eventlog

LMG = Path(sys.executable).with_name("lmg")
DAY = 86_400 * 1_000_000_000


def _store_with_ages(store: Path, now: int) -> tuple[uuid.UUID, uuid.UUID]:
    """Session `old` idle for 100 days; session `busy` created then too, active a day ago."""
    old, busy = uuid.uuid4(), uuid.uuid4()
    lines = [
        {"type": "session.created", "id": str(old), "ts": now - 100 * DAY},
        {"type": "session.created", "id": str(busy), "ts": now - 100 * DAY},
        {"type": "prompt.added", "id": str(uuid.uuid4()), "session_id": str(old),
         "content": "long ago", "ts": now - 99 * DAY},
        {"type": "prompt.added", "id": str(uuid.uuid4()), "session_id": str(busy),
         "content": "yesterday", "ts": now - DAY},
    ]  # fmt: skip
    eventlog.import_events(store, [json.dumps(line).encode() for line in lines])
    return old, busy


def test_due_selects_old_content_and_idle_sessions(store: Path) -> None:
    now = time.time_ns()
    old, _busy = _store_with_ages(store, now)
    eventlog.set_retention(store, eventlog.RetentionPolicy(content_days=30, session_days=30))
    found = eventlog.due(store, now=now)
    assert found.content_before_lsn == found.content_events == 3  # of 99 and 100 days ago
    assert found.sessions == [old]
    assert eventlog.due(store, now=now - 98 * DAY).content_before_lsn == 0


def test_policy_is_kept_in_a_private_file_and_can_be_cleared(store: Path) -> None:
    eventlog.open(store).close()
    assert eventlog.retention(store) is None
    policy = eventlog.RetentionPolicy(content_days=90)
    eventlog.set_retention(store, policy)
    assert eventlog.retention(store) == policy
    assert (store / "RETENTION.json").stat().st_mode & 0o777 == 0o600
    eventlog.set_retention(store, None)
    assert eventlog.retention(store) is None


def test_a_policy_of_zero_days_is_refused() -> None:
    with pytest.raises(eventlog.InvalidEvent, match="a number of days from 1 to"):
        eventlog.RetentionPolicy(session_days=0)


def test_cli_retention_sets_reports_and_erases_nothing(store: Path) -> None:
    _store_with_ages(store, time.time_ns())
    before = (store / "00000000000000000000.seg").read_bytes()
    run = subprocess.run(
        [LMG, "retention", str(store), "--content-days", "30", "--session-days", "30"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert '"content_days":30' in run.stdout
    assert "the content of 3 event(s)" in run.stdout and "1 idle session(s)" in run.stdout
    hint = re.search(r"apply with: (\S*lmg) erase (\S+) --due$", run.stdout, flags=re.M)
    assert hint is not None and hint[2] == str(store), run.stdout  # to paste, as printed
    assert (store / "00000000000000000000.seg").read_bytes() == before
    bad = subprocess.run(
        [LMG, "retention", str(store), "--content-days", "0"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_retention_does_not_report_erased_content_as_due(store: Path) -> None:
    """Once `lmg erase --due` has run, what it erased is not due any more: neither the old
    events' content nor the idle session whose every event is erased."""
    now = time.time_ns()
    old, _busy = _store_with_ages(store, now)
    eventlog.set_retention(store, eventlog.RetentionPolicy(content_days=30, session_days=30))
    eventlog.erase(store, eventlog.Selector.of(sessions=[old], before=now - 30 * DAY))
    found = eventlog.due(store, now=now)
    assert (found.content_events, found.sessions) == (0, [])
    assert found.content_before_lsn == 3  # the boundary stays where it was
    run = subprocess.run(
        [LMG, "retention", str(store)], check=False, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "the content of 0 event(s)" in run.stdout and "0 idle session(s)" in run.stdout


def test_due_counts_only_content_not_yet_erased(store: Path) -> None:
    now = time.time_ns()
    _store_with_ages(store, now)
    eventlog.set_retention(store, eventlog.RetentionPolicy(content_days=30))
    assert eventlog.due(store, now=now).content_events == 3
    eventlog.erase(store, eventlog.Selector.of(before=now - 99 * DAY - 1))  # the two sessions
    assert eventlog.due(store, now=now).content_events == 1  # the prompt of 99 days ago
