"""The `lmg` command line, through `click.testing.CliRunner` on `replay.cli.main`, plus real
processes of the installed ``lmg`` entry point (``tail --follow``, ``--version``, errors).

What a user sees is checked: every command's help has an example, `demo` names what it
recorded, `append` answers one JSON line per input line and stops at a bad one with a
one-line error, `tail` selects by LSN and by time, and a library error never shows a
traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import eventlog
from eventlog import events as ev
from eventlog._time import to_ns
from replay.cli import main

LMG = Path(sys.executable).with_name("lmg")
"""The installed entry point, next to the interpreter running the tests."""


def lmg(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, env=env)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_one_line_error(result: Result, *words: str) -> str:
    """A clean CLI failure: non-zero exit, one ``Error:`` line on stderr, no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a crash
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def event_count(store: Path) -> int:
    if not (store / "LOCK").exists():
        return 0
    with eventlog.open(store, readonly=True) as log:
        return log.stats().events


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The command paths of a group, nested groups included."""
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from walk(command, (*prefix, name))


# -- help ----------------------------------------------------------------------------------------


def test_every_command_has_help() -> None:
    paths = list(walk(main))
    assert {p[-1] for p in paths} >= {"demo", "append", "tail", "verify", "stats"}
    for path in paths:
        for flag in ("--help", "-h"):
            result = lmg(*path, flag)
            assert result.exit_code == 0, (path, result.output)
            assert result.output.startswith("Usage: "), (path, result.output)
            body = result.output.split("\n", 1)[1]
            assert len(body.strip()) > 40, (path, result.output)  # real help text, not a stub
            examples = [line for line in result.output.splitlines() if "Example:" in line]
            assert examples, f"`lmg {' '.join(path)} --help` has no Example: line"
            assert "lmg " in examples[0], examples[0]


def test_group_help_lists_every_command() -> None:
    result = lmg("--help")
    assert result.exit_code == 0
    assert "STORE" in result.output and "LMG_STORE" in result.output
    for path in walk(main):
        if len(path) == 1:
            assert re.search(rf"^\s+{path[0]}\s", result.output, re.MULTILINE), path


# -- demo ----------------------------------------------------------------------------------------


def test_demo_names_agents_handoff_and_tools(tmp_path: Path) -> None:
    store = tmp_path / "demo-store"
    result = lmg("demo", str(store))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "triage" in out and "coder" in out  # the agents
    assert re.search(r"handoff\s+triage\s*->\s*coder", out), out  # the handoff
    assert "run_sql" in out and "search_docs" in out  # the tools
    assert "docs index offline" in out  # the failing tool call
    assert "Answer as a helpful assistant" in out  # a prompt rendered from its template
    assert str(store) in out
    with eventlog.open(store, readonly=True) as log:
        stats = log.stats()
    assert stats.events >= 15
    assert stats.events_by_type["agent.handoff"] == 1
    assert stats.events_by_type["tool.invoked"] == 2
    assert f"{stats.events} events" in out
    verified = lmg("verify", str(store))
    assert verified.exit_code == 0, verified.output


# -- append --------------------------------------------------------------------------------------


def test_append_single_event_list_and_idempotent_retry(store: Path) -> None:
    session = uuid.uuid4()
    lines = [
        {"type": "session.created", "metadata": {"user": "42"}},
        [
            {"type": "session.created", "id": str(session)},
            {"type": "prompt.added", "session_id": str(session), "content": "q"},
        ],
        {
            "events": [{"type": "agent.registered", "name": "a", "role": "r"}],
            "idempotency_key": "k1",
        },
        {
            "events": [{"type": "agent.registered", "name": "a", "role": "r"}],
            "idempotency_key": "k1",
        },
    ]
    result = lmg("append", str(store), stdin="\n".join(json.dumps(x) for x in lines) + "\n")
    assert result.exit_code == 0, result.output
    single, batch, first, retry = json_lines(result.stdout)
    assert (single["lsn"], single["count"], single["duplicate"]) == (0, 1, False)
    assert uuid.UUID(single["ids"][0]).version == 7  # a missing id is made by the CLI
    assert (batch["lsn"], batch["count"], batch["duplicate"]) == (1, 2, False)
    assert batch["ids"][0] == str(session)
    assert (first["lsn"], first["duplicate"]) == (3, False)
    assert (retry["lsn"], retry["ids"], retry["duplicate"]) == (3, first["ids"], True)
    with eventlog.open(store, readonly=True) as log:
        events = [r.event for r in log.read()]
    assert len(events) == 4
    assert isinstance(events[0], ev.SessionCreated) and events[0].metadata == {"user": "42"}
    assert isinstance(events[2], ev.PromptAdded) and events[2].session_id == session


def test_append_batch_is_all_or_nothing(store: Path) -> None:
    good = json.dumps({"type": "session.created"})
    dangling = json.dumps({"type": "prompt.added", "session_id": str(uuid.uuid4()), "content": "q"})
    failed = lmg("append", str(store), "--batch", stdin=f"{good}\n{good}\n{dangling}\n")
    assert_one_line_error(failed, "UnknownNode")
    assert event_count(store) == 0
    done = lmg("append", str(store), "--batch", stdin=f"{good}\n\n{good}\n")
    assert done.exit_code == 0, done.output
    assert json_lines(done.stdout) == [
        {"lsn": 0, "count": 2, "ids": json_lines(done.stdout)[0]["ids"], "duplicate": False}
    ]


def _bad_lines(session: uuid.UUID) -> dict[str, tuple[object, tuple[str, ...]]]:
    """Bad input lines by name: the line (text as is, anything else as JSON), and the words
    the error must contain (besides "line 2"). Line 1 always created `session`."""
    s, missing = str(session), str(uuid.uuid4())
    agent = {"type": "agent.registered", "name": "a", "role": "r"}
    return {
        "not json": ("{not json", ("not JSON",)),
        "unknown type": ({"type": "session.exploded"}, ("type",)),
        "not an object": ("5", ("not an event",)),
        "bad uuid": ({"type": "session.updated", "session_id": "nope"}, ("UUID",)),
        "missing field": ({"type": "prompt.added", "content": "q"}, ("session_id",)),
        "content not str": (
            {"type": "prompt.added", "session_id": s, "content": 5},
            ("content",),
        ),
        "unknown node": (
            {"type": "response.added", "prompt_id": missing, "content": "a"},
            ("UnknownNode", missing),
        ),
        "wrong kind": (
            {"type": "response.added", "prompt_id": s, "content": "a"},
            ("WrongNodeKind", s),
        ),
        "edge type": (
            {"type": "edge.added", "from_id": s, "to_id": s, "edge_type": "lower"},
            ("InvalidEvent", "edge type"),
        ),
        "key reused": ({"events": [agent], "idempotency_key": "k"}, ("IdempotencyKeyReused",)),
        "stale expect": (
            {"events": [{"type": "session.created"}], "expect_store_lsn": -1},
            ("AppendConflict",),
        ),
        "unknown option": ({"events": [{"type": "session.created"}], "retries": 3}, ("retries",)),
        "empty request": ({"events": []}, ("at least one event",)),
    }


@pytest.mark.parametrize("case", sorted(_bad_lines(uuid.uuid4())))
def test_append_stops_at_a_bad_line_with_a_one_line_error(store: Path, case: str) -> None:
    session = uuid.uuid4()
    first = {"events": [{"type": "session.created", "id": str(session)}], "idempotency_key": "k"}
    bad, words = _bad_lines(session)[case]
    line = bad if isinstance(bad, str) else json.dumps(bad)
    after = json.dumps({"type": "session.created"})
    result = lmg("append", str(store), stdin=f"{json.dumps(first)}\n{line}\n{after}\n")
    assert_one_line_error(result, "line 2", *words)
    assert len(json_lines(result.stdout)) == 1  # line 1 was answered, line 3 never read
    assert event_count(store) == 1  # earlier lines stay appended; nothing after


# -- tail ----------------------------------------------------------------------------------------


@pytest.fixture
def six_events(store: Path) -> list[eventlog.Record]:
    """Six events, each a few ms after the last, so times between them are unambiguous."""
    with eventlog.open(store) as log:
        session = log.create_session(metadata={"n": 0})
        for i in range(5):
            time.sleep(0.003)
            log.add_prompt(session.id, f"prompt {i}")
        return list(log.read())


def iso(ts: int, z: bool = False) -> str:
    """An ISO 8601 time at or just before `ts` (ns), to the microsecond."""
    at = dt.datetime.fromtimestamp(ts // 1_000_000_000, dt.UTC).replace(
        microsecond=ts // 1000 % 1_000_000
    )
    text = at.isoformat()
    return text.replace("+00:00", "Z") if z else text


def tail_lsns(store: Path, *args: str) -> list[int]:
    result = lmg("tail", str(store), *args)
    assert result.exit_code == 0, result.output
    return [line["lsn"] for line in json_lines(result.stdout)]


def test_tail_prints_every_event_as_json(store: Path, six_events: list[eventlog.Record]) -> None:
    result = lmg("tail", str(store))
    assert result.exit_code == 0, result.output
    lines = json_lines(result.stdout)
    assert [line["lsn"] for line in lines] == [0, 1, 2, 3, 4, 5]
    assert next(iter(lines[0])) == "lsn"  # the LSN comes first
    for line, record in zip(lines, six_events, strict=True):
        assert line["type"] == ev.tag_of(record.event)
        assert line["ts"] == record.event.ts
    assert lines[0]["metadata"] == {"n": 0}
    assert [line["content"] for line in lines[1:]] == [f"prompt {i}" for i in range(5)]


def test_tail_output_is_what_append_reads(
    store: Path, tmp_path: Path, six_events: list[eventlog.Record]
) -> None:
    copy = tmp_path / "copy"
    tailed = lmg("tail", str(store))
    appended = lmg("append", str(copy), stdin=tailed.stdout)
    assert appended.exit_code == 0, appended.output
    with eventlog.open(copy, readonly=True) as log:
        copied = [r.event for r in log.read()]
    originals = [r.event for r in six_events]
    assert len(copied) == len(originals)
    for mine, theirs in zip(copied, originals, strict=True):  # equal but for the new ts
        assert msgspec_fields(mine, skip="ts") == msgspec_fields(theirs, skip="ts")


def msgspec_fields(event: ev.EventBase, skip: str) -> dict[str, object]:
    return {f: getattr(event, f) for f in event.__struct_fields__ if f != skip}


def test_tail_from_and_to_lsn(store: Path, six_events: list[eventlog.Record]) -> None:
    assert tail_lsns(store, "--from", "3") == [3, 4, 5]
    assert tail_lsns(store, "--to", "2") == [0, 1]
    assert tail_lsns(store, "--from", "1", "--to", "4") == [1, 2, 3]
    assert tail_lsns(store, "--from", "0", "--to", "0") == []
    assert tail_lsns(store, "--from", "99") == []


def test_tail_from_and_to_time(store: Path, six_events: list[eventlog.Record]) -> None:
    ts = [r.event.ts for r in six_events]
    assert tail_lsns(store, "--from", iso(ts[3])) == [3, 4, 5]
    assert tail_lsns(store, "--from", iso(ts[3], z=True)) == [3, 4, 5]
    assert tail_lsns(store, "--to", iso(ts[2])) == [0, 1]
    assert tail_lsns(store, "--from", iso(ts[1]), "--to", iso(ts[4])) == [1, 2, 3]
    assert tail_lsns(store, "--from", iso(ts[1]), "--to", "3") == [1, 2]  # time and LSN mixed
    later = dt.datetime.fromtimestamp(ts[-1] / 1e9, dt.UTC) + dt.timedelta(hours=1)
    assert tail_lsns(store, "--from", later.isoformat()) == []


def test_tail_errors_are_one_line(store: Path, six_events: list[eventlog.Record]) -> None:
    assert_one_line_error(lmg("tail", str(store), "--from", "yesterday"), "ISO 8601")
    assert_one_line_error(lmg("tail", str(store), "--follow", "--to", "3"), "--follow", "--to")


def _read_lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def test_tail_follow_prints_events_appended_later(store: Path) -> None:
    with eventlog.open(store) as log:
        session = log.create_session()
    with subprocess.Popen(
        [str(LMG), "tail", str(store), "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follower:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(follower.stdout, lines), daemon=True)
        reader.start()
        try:
            first = json.loads(lines.get(timeout=30))
            assert (first["lsn"], first["id"]) == (0, str(session.id))
            with eventlog.open(store) as log:
                node = log.add_node("document", "appended afterwards", session_id=session.id)
            second = json.loads(lines.get(timeout=15))
            assert (second["lsn"], second["type"], second["id"]) == (1, "node.added", str(node))
            assert second["content"] == "appended afterwards"
            assert follower.poll() is None  # still following
        finally:
            follower.terminate()
            follower.wait(timeout=15)
            reader.join(timeout=15)
        assert follower.stderr is not None
        assert "Traceback" not in follower.stderr.read()


# -- stats and verify ------------------------------------------------------------------------------


def test_stats_text_and_json(store: Path, six_events: list[eventlog.Record]) -> None:
    text = lmg("stats", str(store))
    assert text.exit_code == 0, text.output
    assert re.search(r"^events\s+6$", text.output, re.MULTILINE), text.output
    assert re.search(r"^segments\s+1$", text.output, re.MULTILINE), text.output
    assert re.search(r"^\s+prompt\.added\s+5$", text.output, re.MULTILINE), text.output
    assert re.search(r"^\s+session\.created\s+1$", text.output, re.MULTILINE), text.output

    as_json = lmg("stats", str(store), "--json")
    assert as_json.exit_code == 0, as_json.output
    stats = json.loads(as_json.stdout)  # exactly one JSON object
    assert stats["events"] == 6 and stats["segments"] == 1
    assert stats["events_by_type"] == {"prompt.added": 5, "session.created": 1}
    assert stats["durability"] == "fsync"
    assert stats["first_ts"] == six_events[0].event.ts
    assert stats["last_ts"] == six_events[-1].event.ts
    with eventlog.open(store, readonly=True) as log:
        times = {"first_ts_iso": stats.pop("first_ts_iso"), "last_ts_iso": stats.pop("last_ts_iso")}
        assert stats == json.loads(json.dumps(eventlog_stats(log)))  # and the times as ISO 8601:
    assert all(to_ns(iso) // 1000 == stats[key[:-4]] // 1000 for key, iso in times.items())


def eventlog_stats(log: eventlog.EventLog) -> dict[str, Any]:
    s = log.stats()
    return {f: getattr(s, f) for f in s.__struct_fields__}


def test_store_defaults_to_lmg_store(store: Path, six_events: list[eventlog.Record]) -> None:
    result = lmg("stats", "--json", env={"LMG_STORE": str(store)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["events"] == 6


def test_verify_clean_store(store: Path, six_events: list[eventlog.Record]) -> None:
    result = lmg("verify", str(store))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ok: {store} verified (0 warning(s))"
    assert result.stderr == ""


def test_verify_new_empty_store(store: Path) -> None:
    eventlog.open(store).close()
    result = lmg("verify", str(store))
    assert result.exit_code == 0, result.output


# -- library errors: one line, no traceback -----------------------------------------------------


@pytest.mark.parametrize("command", ["stats", "tail", "verify"])
@pytest.mark.parametrize("where", ["missing", "empty dir"])
def test_non_store_path_is_a_one_line_error(tmp_path: Path, command: str, where: str) -> None:
    path = tmp_path / "not-a-store"
    if where == "empty dir":
        path.mkdir()
    result = lmg(command, str(path))
    assert_one_line_error(result, "not an event log store", str(path))
    assert path.exists() == (where == "empty dir")  # nothing created
    if path.exists():
        assert list(path.iterdir()) == []


@pytest.mark.parametrize("command", ["append", "demo"])
def test_store_under_a_file_is_a_one_line_error(tmp_path: Path, command: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = lmg(command, str(blocker / "store"), stdin='{"type": "session.created"}\n')
    assert_one_line_error(result, str(blocker))
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("command", ["stats", "tail", "append"])
def test_damaged_store_is_a_one_line_error(store: Path, command: str) -> None:
    with eventlog.open(store) as log:
        session = log.create_session()
        log.add_prompt(session.id, "a frame after the damaged one")
    segment = next(store.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[40] ^= 0xFF  # inside the first frame's header; an intact frame follows it
    segment.write_bytes(bytes(data))
    result = lmg(command, str(store), stdin='{"type": "session.created"}\n')
    assert_one_line_error(result, "CorruptionError", segment.name)
    assert segment.read_bytes() == bytes(data)  # damage is reported, never repaired
    verified = lmg("verify", str(store))
    assert verified.exit_code == 1
    assert "Traceback" not in verified.output


# -- the installed entry point, as a real process -----------------------------------------------


def test_entry_point_runs(store: Path, six_events: list[eventlog.Record]) -> None:
    assert LMG.exists(), f"{LMG} is not installed: pip install -e ."
    version = subprocess.run(
        [str(LMG), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout
    stats = subprocess.run(
        [str(LMG), "stats", str(store), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["events"] == 6


def test_entry_point_error_has_no_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = subprocess.run(
        [str(LMG), "tail", str(missing)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "not an event log store" in lines[0]


def test_sql_takes_the_query_alone_on_the_default_store(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    assert lmg("demo", store).exit_code == 0
    env = {"LMG_STORE": store}
    alone = lmg("sql", "SELECT count(*) AS n FROM prompts", "--format", "json", env=env)
    assert alone.exit_code == 0, alone.output
    assert json.loads(alone.output) == {"n": 2}
    both = lmg("sql", store, "SELECT count(*) AS n FROM prompts", "--format", "json")
    assert both.output == alone.output
    extra = lmg("sql", store, "SELECT 1", "SELECT 2")
    assert extra.exit_code != 0 and "one QUERY" in extra.output
