"""The `lmg` command line, through `click.testing.CliRunner` on `replay.cli.main`, plus real
processes of the installed ``lmg`` entry point (``tail --follow``, ``--version``, errors).

What a user sees is checked: every command's help has an example, `demo` names what it
recorded, `append` answers one JSON line per input line and stops at a bad one with a
one-line error, `tail` selects by LSN and by time, and a library error never shows a
traceback.
"""

from __future__ import annotations

import contextlib
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
from eventlog._demo import record_demo
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


def test_group_help_summarises_every_command_whole() -> None:
    """Each command's line in `lmg --help` is its own summary, not a first sentence cut
    short with "..." at 80 columns."""
    result = lmg("--help", env={"COLUMNS": "80"})
    commands = result.output.split("Commands:", 1)[1]
    assert "..." not in commands, commands
    assert max(map(len, commands.splitlines())) <= 80


def test_help_prints_examples_and_install_commands_on_one_line() -> None:
    """A line a user copies is printed as written, at 80 columns: click's rewrapping broke
    `pip install 'llm-memory-\ngraph[serve]'` at its hyphen and long examples mid-command."""
    for path in walk(main):
        output = lmg(*path, "--help", env={"COLUMNS": "80"}).output
        lines = output.splitlines()
        example = next(i for i, line in enumerate(lines) if "Example:" in line)
        assert lines[example + 1 :][:1] in ([], [""]), (path, lines[example : example + 2])
        for line in lines:
            if "pip install" in line:
                assert re.search(r"pip install '[^']+'", line), (path, line)


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
    assert_one_line_error(failed, "unknown session")
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
            ("unknown prompt", missing),
        ),
        "wrong kind": (
            {"type": "response.added", "prompt_id": s, "content": "a"},
            ("is a session, not a prompt", s),
        ),
        "edge type": (
            {"type": "edge.added", "from_id": s, "to_id": s, "edge_type": "lower"},
            ("edge type", "upper-case"),
        ),
        "key reused": ({"events": [agent], "idempotency_key": "k"}, ("idempotency key",)),
        "stale expect": (
            {"events": [{"type": "session.created"}], "expect_store_lsn": -1},
            ("conflict", "expected last LSN -1"),
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


def test_append_refuses_a_100000_deep_line_in_one_line(store: Path) -> None:
    """A JSON line nested 100,000 deep is refused as it is parsed (it was a RecursionError
    traceback); the line before it stays appended, the line after is never read."""
    deep = "[" * 100_000 + "]" * 100_000
    lines = ['{"type": "session.created"}', deep, '{"type": "session.created"}']
    result = subprocess.run(
        [str(LMG), "append", str(store)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "Error: line 2: nested too deeply to parse (the limit is 64 levels)"
    ]
    assert len(json_lines(result.stdout)) == 1
    assert event_count(store) == 1


def test_append_refuses_values_beyond_the_limits(store: Path) -> None:
    """Nesting the JSON parser takes but the log refuses, NaN, and ints beyond 64 bits."""
    inner: Any = {}
    for _ in range(100):
        inner = {"k": inner}
    for line, words in [
        (json.dumps({"type": "session.created", "metadata": inner}), ("deeper than 64",)),
        ('{"type": "session.created", "metadata": {"x": NaN}}', ("not JSON",)),
        ('{"type": "session.created", "occurred_at": 18446744073709551616}', ("occurred_at",)),
        ('{"type": "session.created", "metadata": {"n": 9223372036854775808}}', ("range",)),
    ]:
        assert_one_line_error(lmg("append", str(store), stdin=line + "\n"), "line 1", *words)
    assert event_count(store) == 0


def test_append_line_limit_is_exact_and_bounds_a_batch(store: Path) -> None:
    line = '{"type": "session.created"}'
    limit = str(len(line))
    assert lmg("append", str(store), "--max-line-bytes", limit, stdin=line + "\n").exit_code == 0
    too_long = lmg("append", str(store), "--max-line-bytes", str(len(line) - 1), stdin=line)
    assert_one_line_error(too_long, "line 1", f"longer than {len(line) - 1} bytes")
    both = f"{line}\n{line}\n"
    batch = lmg("append", str(store), "--batch", "--max-line-bytes", limit, stdin=both)
    assert_one_line_error(batch, "--batch", f"longer than {limit} bytes")
    assert event_count(store) == 1


_MEASURED = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)  # KiB
sys.exit(code)
"""


def _append_measured(store: Path, limit: int, feed: Iterator[bytes]) -> tuple[int, str, int]:
    """Run `lmg append` (under a parent that reports its peak RSS) on a streamed stdin:
    (exit code, its error line, peak RSS in KiB). Stops feeding once it has exited."""
    cmd = [sys.executable, "-c", _MEASURED, str(LMG), "append", str(store)]
    with subprocess.Popen(
        [*cmd, "--max-line-bytes", str(limit)],
        bufsize=0,  # nothing left in a buffer to flush into a closed pipe
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as child:
        assert child.stdin is not None and child.stderr is not None
        with contextlib.suppress(BrokenPipeError):
            for chunk in feed:
                child.stdin.write(chunk)
            child.stdin.close()
        err = child.stderr.read()
        child.wait(timeout=120)
    *lines, rss = err.decode().splitlines()
    return child.returncode, "\n".join(lines), int(rss)


@pytest.mark.slow
def test_append_reads_an_overlong_line_only_up_to_the_limit(store: Path) -> None:
    """A 64 MiB line with no newline, against a 1 MiB limit: refused after about 1 MiB is
    read (it was read whole, then parsed: 1.1 GB for 500 MB). Peak memory is compared with
    the same command appending one small line."""
    mib = 1024 * 1024
    code, error, small = _append_measured(store, mib, iter([b'{"type": "session.created"}\n']))
    assert (code, error) == (0, "")
    code, error, peak = _append_measured(store, mib, (b"x" * mib for _ in range(64)))
    assert code != 0
    assert error == f"Error: line 1: longer than {mib} bytes (--max-line-bytes)"
    assert peak - small < 16 * 1024, f"peak RSS grew {peak - small} KiB for a 1 MiB limit"
    assert event_count(store) == 1


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


def test_tail_of_a_span_appends_and_an_erasure_is_refused_by_name(
    store: Path, tmp_path: Path
) -> None:
    """A `span.recorded` line (its span events are ``"events"``) was read as a request's
    wrapper and refused as 'no "type"'; so was an `erasure.applied`, which is now refused
    for what it is: appended, it would claim an erasure that never ran."""
    span = {
        "type": "span.recorded",
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "name": "chat",
        "events": [{"name": "gen_ai.choice", "attributes": {"index": 0}}],
    }
    assert lmg("append", str(store), stdin=json.dumps(span) + "\n").exit_code == 0
    copy = tmp_path / "copy"
    appended = lmg("append", str(copy), stdin=lmg("tail", str(store)).stdout)
    assert appended.exit_code == 0, appended.output
    with eventlog.open(copy, readonly=True) as log:
        [copied] = [r.event for r in log.read()]
    assert isinstance(copied, ev.SpanRecorded) and copied.events == span["events"]
    erasure = {"type": "erasure.applied", "erasure_id": str(uuid.uuid4()), "marked_at": 1}
    refused = lmg("append", str(copy), stdin=json.dumps({**erasure, "events": 0}) + "\n")
    assert_one_line_error(refused, "erasure.applied is recorded by an erasure (lmg erase)")


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
    said = "not an event log store" if where == "empty dir" else "no store at"
    assert_one_line_error(result, said, str(path))
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
    assert_one_line_error(result, "damaged frame", segment.name)
    assert segment.read_bytes() == bytes(data)  # damage is reported, never repaired
    verified = lmg("verify", str(store))
    assert verified.exit_code == 1
    assert "Traceback" not in verified.output


# -- the installed entry point, as a real process -----------------------------------------------


@pytest.mark.slow
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
    assert f"no store at {missing}" in lines[0]


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


# -- errors through the installed `lmg`: one plain line, no class name, no traceback -----------

_CLASS_NAME = re.compile(r"\b[A-Z][a-z]+[A-Z]\w*\b|NoneType|Traceback")
"""A Python class name (CamelCase: `BadPoint`, `FileNotFoundError`) or a traceback's words."""


def run_lmg(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LMG), *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def assert_plain_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 1, nothing on stdout, one `Error: ...` line on stderr naming no Python class."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert not _CLASS_NAME.search(lines[0]), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.slow
def test_sql_on_a_missing_store_says_there_is_no_store(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    line = assert_plain_error(run_lmg("sql", str(missing), "SELECT 1"), f"no store at {missing}")
    assert ".lock" not in line
    assert not missing.exists()  # nothing created on the way to the error


@pytest.mark.slow
def test_sql_of_an_empty_query_is_a_plain_error(demo_store: Path) -> None:
    assert_plain_error(run_lmg("sql", str(demo_store), ""), "no statement")
    assert_plain_error(run_lmg("sql", str(demo_store), " ; -- nothing"), "no statement")


@pytest.mark.slow
def test_sql_of_several_statements_is_refused(demo_store: Path) -> None:
    result = run_lmg("sql", str(demo_store), "SELECT 1; SELECT 2")
    assert_plain_error(result, "one SQL statement", "2 statements")
    replayed = run_lmg("replay", str(demo_store), "--at", "3", "--sql", "SELECT 1; SELECT 2")
    assert replayed.returncode == 1
    assert replayed.stderr.splitlines()[-1].endswith("the query holds 2 statements")


def test_stats_into_a_closed_pipe_exits_quietly(demo_store: Path) -> None:
    """`lmg stats STORE | head -1`: the reader goes away; no BrokenPipeError, no message."""
    child = subprocess.Popen(
        [str(LMG), "stats", str(demo_store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # before the first line is written: every write meets a closed pipe
    with child.stderr:
        stderr = child.stderr.read().decode()
    assert child.wait(timeout=60) == 0  # as every command (tests/test_attacks.py)
    assert stderr == ""


def test_snapshot_list_of_a_missing_store_fails(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert_plain_error(run_lmg("snapshot", str(missing), "--list"), f"no store at {missing}")
    assert not missing.exists()


@pytest.mark.parametrize("command", ["tail", "stats", "verify", "project", "diff"])
@pytest.mark.slow
def test_a_missing_directory_is_called_missing_not_a_store_without_lock(
    tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "missing"
    args = ["--from", "0", "--to", "1"] if command == "diff" else []
    line = assert_plain_error(run_lmg(command, str(missing), *args), f"no store at {missing}")
    assert "LOCK" not in line


def test_append_of_an_unknown_type_lists_the_known_ones(tmp_path: Path) -> None:
    store = tmp_path / "store"
    line = assert_plain_error(
        run_lmg("append", str(store), stdin='{"type": "session.exploded"}\n'),
        "line 1",
        "unknown type 'session.exploded'",
    )
    known = line.split("known types: ", 1)[1].split(", ")
    assert known == sorted(ev.event_types())


@pytest.mark.slow
def test_library_errors_name_no_python_class(demo_store: Path) -> None:
    assert_plain_error(run_lmg("replay", str(demo_store), "--at", "99"), "not in the log")
    missing = str(uuid.uuid4())
    line = json.dumps({"type": "response.added", "prompt_id": missing, "content": "a"})
    assert_plain_error(run_lmg("append", str(demo_store), stdin=line + "\n"), "line 1", missing)


@pytest.fixture
def demo_store(tmp_path: Path) -> Path:
    store = tmp_path / "demo"
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        record_demo(log)
    return store


# -- start-up: `lmg --help` and `import eventlog` load no DuckDB ---------------------------------

_HEAVY = ("duckdb", "pyarrow", "numpy", "pandas", "watchfiles")
_WEB = ("starlette", "uvicorn", "prometheus_client", "httpx2", "aiohttp", "uvloop")  # serve extra


@pytest.mark.parametrize(
    "code",
    [
        "import eventlog",
        "import projections, replay",
        "from replay.cli import main; main(['--help'], standalone_mode=False)",
        "from replay.cli import main; main(['tail', '--help'], standalone_mode=False)",
        "from replay.cli import main; main(['serve', '--help'], standalone_mode=False)",
    ],
)
@pytest.mark.slow
def test_light_imports_load_no_heavy_module(code: str) -> None:
    """Start-up time is mostly imports: these paths must not import DuckDB, pyarrow, watchfiles,
    nor the web stack of `lmg serve` (an optional extra)."""
    heavy = _HEAVY + _WEB
    check = f"import sys\n{code}\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines()[-1] == "[]", result.stdout


_EXPORTS_CHECK = """
import importlib, eventlog, projections, replay
for name in ("diff", "fork", "snapshot", "step"):  # the submodule first, then the name
    importlib.import_module(f"replay.{name}")
    assert callable(getattr(replay, name)), name
for package in (eventlog, projections, replay):
    for name in package.__all__:
        assert getattr(package, name) is not None, (package.__name__, name)
    assert set(package.__all__) <= set(dir(package))
"""


def test_lazy_packages_export_every_name() -> None:
    """Every name in `__all__` resolves, and a submodule never hides the function it is named
    after (`replay.diff` stays the function once `replay/diff.py` is imported). In a fresh
    process: here, earlier tests have imported everything already."""
    subprocess.run([sys.executable, "-c", _EXPORTS_CHECK], timeout=60, check=True)
