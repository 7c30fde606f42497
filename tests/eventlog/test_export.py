"""Export of events as JSON lines and their import, through the public API and `lmg`.

An export line is what `lmg tail` prints (LSN, ids, ts, occurred_at, actor); an import into a
new store keeps ids and times, into an existing one appends new events; bad input writes
nothing.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import eventlog
from eventlog import events as ev
from eventlog._demo import record_demo

LMG = Path(sys.executable).with_name("lmg")


def _lmg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LMG, *args], check=False, capture_output=True, text=True)


def _export(store: Path, **kwargs: object) -> bytes:
    out = io.BytesIO()
    eventlog.export_events(store, out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


def _records(store: Path) -> list[tuple[int, ev.EventBase]]:
    with eventlog.open(store, readonly=True) as log:
        return [(r.lsn, r.event) for r in log.read()]


@pytest.fixture
def demo(store: Path) -> tuple[Path, ev.SessionCreated, ev.SessionCreated]:
    """The demo session (agents, templates, a handoff, tools) and a second, plain session."""
    with eventlog.open(store) as log:
        demo_session = record_demo(log)
        other = log.create_session(metadata={"user": "bob"}, actor="user:bob")
        log.add_prompt(other.id, "unrelated", occurred_at="2026-01-02T03:04:05Z")
    events = [e for _, e in _records(store)]
    first = next(e for e in events if isinstance(e, ev.SessionCreated) and e.id == demo_session)
    return store, first, other


def test_export_lines_carry_lsn_ids_ts_occurred_at_and_actor(demo: tuple[Path, ...]) -> None:
    store = demo[0]
    lines = [json.loads(line) for line in _export(store).splitlines()]
    assert [line["lsn"] for line in lines] == list(range(len(lines)))
    stored = _records(store)
    for line, (lsn, event) in zip(lines, stored, strict=True):
        assert line["lsn"] == lsn
        assert line["type"] == ev.tag_of(event)
        assert line["ts"] == event.ts
        assert line.get("occurred_at") == event.occurred_at
        assert line.get("actor") == event.actor
        assert line.get("id") == (str(event.id) if hasattr(event, "id") else None)
    assert any("occurred_at" in line for line in lines) and any("actor" in line for line in lines)


def test_import_into_new_store_keeps_ids_times_and_lsns(
    demo: tuple[Path, ...], tmp_path: Path
) -> None:
    store = demo[0]
    result = eventlog.import_events(tmp_path / "copy", _export(store).splitlines())
    assert result.new_store and result.first_lsn == 0
    assert _records(tmp_path / "copy") == _records(store)
    assert not [p for p in eventlog.verify(tmp_path / "copy") if p.severity == "error"]


def test_session_export_carries_what_the_session_refers_to(
    demo: tuple[Path, ev.SessionCreated, ev.SessionCreated], tmp_path: Path
) -> None:
    store, session, other = demo
    lines = [json.loads(line) for line in _export(store, sessions=[session.id]).splitlines()]
    types = {line["type"] for line in lines}
    assert {"agent.registered", "template.created", "agent.handoff"} <= types
    assert str(other.id) not in {line.get("session_id") or line.get("id") for line in lines}
    eventlog.import_events(tmp_path / "one", [json.dumps(line).encode() for line in lines])
    imported = [e for _, e in _records(tmp_path / "one")]
    source = {lsn: e for lsn, e in _records(store)}
    assert imported == [source[line["lsn"]] for line in lines]  # same ids, ts, fields


def test_session_export_follows_a_fork_to_its_parent(store: Path) -> None:
    with eventlog.open(store) as log:
        parent = log.create_session()
        prompt = log.add_prompt(parent.id, "first")
        log.create_session()  # not reached
        child = log.append(
            ev.SessionForked(
                id=eventlog._ids.new_id(), parent_session_id=parent.id, fork_point=prompt
            )
        ).events[0]
        log.add_prompt(child.id, "second")  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in _export(store, sessions=[child.id]).splitlines()]  # type: ignore[attr-defined]
    assert [line["type"] for line in lines] == [
        "session.created",
        "prompt.added",
        "session.forked",
        "prompt.added",
    ]


def test_export_of_an_unknown_session_is_an_error(store: Path) -> None:
    with eventlog.open(store) as log:
        log.create_session()
    with pytest.raises(eventlog.InvalidEvent, match="no events of session"):
        _export(store, sessions=["01900000-0000-7000-8000-000000000000"])


def test_export_by_time_range(store: Path) -> None:
    with eventlog.open(store) as log:
        s = log.create_session()
        middle = log.add_prompt(s.id, "in range")
        log.add_prompt(s.id, "after")
    times = {lsn: e.ts for lsn, e in _records(store)}
    lines = _export(store, start_time=times[1], stop_time=times[2]).splitlines()
    assert [json.loads(line)["id"] for line in lines] == [str(middle)]


def test_import_into_existing_store_appends_new_events(
    demo: tuple[Path, ev.SessionCreated, ev.SessionCreated], tmp_path: Path
) -> None:
    store, session, _ = demo
    target = tmp_path / "target"
    with eventlog.open(target) as log:
        log.create_session()
    exported = _export(store, sessions=[session.id])
    result = eventlog.import_events(target, exported.splitlines())
    assert not result.new_store and result.first_lsn == 1
    source = [json.loads(line) for line in exported.splitlines()]
    imported = [e for lsn, e in _records(target) if lsn >= 1]
    assert [str(getattr(e, "id", "")) for e in imported] == [line.get("id", "") for line in source]
    for event, line in zip(imported, source, strict=True):
        assert event.ts > line["ts"]  # recorded now
        assert event.occurred_at == line.get("occurred_at", line["ts"])  # when it happened


def test_import_in_parts_completes_when_run_again_after_a_failure(
    demo: tuple[Path, ...], tmp_path: Path
) -> None:
    good = _export(demo[0]).splitlines()
    dangling = json.dumps(
        {"type": "prompt.added", "id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()),
         "content": "refers to nothing"}
    ).encode()  # fmt: skip
    target = tmp_path / "target"
    eventlog.open(target).close()
    with pytest.raises(eventlog.UnknownNode):
        eventlog.import_events(target, [*good[:10], dangling, *good[10:]], part_bytes=1)
    assert len(_records(target)) == 10  # one part per event: the ten before it are stored
    result = eventlog.import_events(target, good, part_bytes=1)
    assert result.events == len(good)
    assert result.stored_before == 10  # by the failed run
    imported = [e for _, e in _records(target)]
    assert len(imported) == len(good)  # nothing twice
    ids = [getattr(e, "id", None) for e in imported]
    assert ids == [
        json.loads(line).get("id") and uuid.UUID(json.loads(line)["id"]) for line in good
    ]


def test_import_of_a_duplicate_id_is_an_error_and_writes_nothing(
    demo: tuple[Path, ...], tmp_path: Path
) -> None:
    exported = _export(demo[0]).splitlines()
    target = tmp_path / "target"
    eventlog.import_events(target, exported)
    before = _records(target)
    with pytest.raises(eventlog.InvalidEvent, match="already used"):
        eventlog.import_events(target, exported)
    assert _records(target) == before


def test_import_out_of_order_is_an_error_and_creates_no_store(
    demo: tuple[Path, ...], tmp_path: Path
) -> None:
    lines = _export(demo[0]).splitlines()
    with pytest.raises(eventlog.InvalidEvent, match="line 2: LSN 0 is not after 1"):
        eventlog.import_events(tmp_path / "new", [lines[1], lines[0]])
    assert not (tmp_path / "new").exists()
    assert not list(tmp_path.glob(".new.*"))


def test_import_of_an_event_with_a_dangling_reference_creates_no_store(
    demo: tuple[Path, ev.SessionCreated, ev.SessionCreated], tmp_path: Path
) -> None:
    lines = [json.loads(line) for line in _export(demo[0]).splitlines()]
    prompts = [line for line in lines if line["type"] == "prompt.added"]
    with pytest.raises(eventlog.UnknownNode):
        eventlog.import_events(tmp_path / "new", [json.dumps(prompts[0]).encode()])
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("points_to", ["empty", "nothing"])
def test_cli_import_and_fork_into_a_symlink_say_so_and_make_nothing(
    store: Path, tmp_path: Path, points_to: str
) -> None:
    """A symbolic link as the new store: the import (or fork) ran to its end, then failed
    as "already exists and is not an empty directory", of a link to an empty directory."""
    with eventlog.open(store) as log:
        log.create_session()
    exported = tmp_path / "all.jsonl"
    assert _lmg("export", str(store), "-o", str(exported)).returncode == 0
    target = tmp_path / "target"
    if points_to == "empty":
        target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    for args in (
        ("import", str(link), str(exported)),
        ("fork", str(store), "--at", "0", str(link)),
    ):
        run = _lmg(*args)
        assert run.returncode != 0 and "Traceback" not in run.stderr
        assert "symbolic link" in run.stderr and len(run.stderr.strip().splitlines()) == 1
        assert link.is_symlink() and (not target.exists() or not any(target.iterdir()))
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_cli_export_then_import_round_trip(demo: tuple[Path, ...], tmp_path: Path) -> None:
    store = demo[0]
    exported = tmp_path / "all.jsonl"
    run = _lmg("export", str(store), "-o", str(exported))
    assert run.returncode == 0, run.stderr
    assert exported.stat().st_mode & 0o777 == 0o600
    again = _lmg("export", str(store), "-o", str(exported))
    assert again.returncode != 0 and "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    run = _lmg("import", str(tmp_path / "copy"), str(exported))
    assert run.returncode == 0, run.stderr
    assert "ids and times kept" in run.stdout
    assert _records(tmp_path / "copy") == _records(store)


def test_cli_import_run_again_says_it_stored_nothing_twice(
    demo: tuple[Path, ...], tmp_path: Path
) -> None:
    """Into an existing store, a rerun of the same import completes it (docs/lifecycle.md):
    the parts an earlier run stored are not stored again, and `lmg import` says so rather than
    report them imported anew."""
    exported = tmp_path / "all.jsonl"
    exported.write_bytes(_export(demo[0]))
    target = tmp_path / "target"
    eventlog.open(target).close()
    first = _lmg("import", str(target), str(exported))
    assert first.returncode == 0, first.stderr
    stored = len(_records(target))
    assert f"{stored} events imported into {target} (appended as new events)\n" == first.stdout
    again = _lmg("import", str(target), str(exported))
    assert again.returncode == 0, again.stderr
    assert len(_records(target)) == stored
    assert again.stdout == (
        f"0 events imported into {target}: all {stored} were stored by an earlier run of this "
        "import, and not again\n"
    )
    result = eventlog.import_events(target, exported.read_bytes().splitlines())
    assert (result.events, result.stored_before) == (stored, stored)


def test_cli_import_reads_stdin(demo: tuple[Path, ...], tmp_path: Path) -> None:
    exported = _export(demo[0])
    run = subprocess.run(
        [LMG, "import", str(tmp_path / "copy"), "-"],
        check=False,
        input=exported,
        capture_output=True,
    )
    assert run.returncode == 0, run.stderr
    assert _records(tmp_path / "copy") == _records(demo[0])


def test_cli_export_of_an_unknown_session_leaves_no_file(
    demo: tuple[Path, ...], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    run = _lmg("export", str(demo[0]), "--session", str(uuid.uuid4()), "-o", str(out))
    assert run.returncode != 0 and "no events of session" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_import_of_a_bad_line_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "session.created", "id": "01900000-0000-7000-8000-000000000000"}\nx\n')
    run = _lmg("import", str(tmp_path / "new"), str(bad))
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "line 2" in run.stderr, run.stderr
    assert not (tmp_path / "new").exists()


def test_import_into_new_store_refuses_times_that_go_back(tmp_path: Path) -> None:
    lines = [
        json.dumps({"type": "session.created", "id": str(uuid.uuid4()), "ts": ts}).encode()
        for ts in (2_000, 1_000)
    ]
    with pytest.raises(eventlog.InvalidEvent, match="before the log's last"):
        eventlog.import_events(tmp_path / "new", lines)
    assert not (tmp_path / "new").exists()


def test_import_of_events_without_ts_gives_them_the_import_time(tmp_path: Path) -> None:
    line = json.dumps({"type": "session.created", "id": str(uuid.uuid4())}).encode()
    before = time.time_ns()
    eventlog.import_events(tmp_path / "new", [line])
    ((_, event),) = _records(tmp_path / "new")
    assert before <= event.ts <= time.time_ns()
