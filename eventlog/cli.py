"""The event log's commands of the `lmg` CLI: demo, append, tail, verify, stats.

Library errors become one-line messages in one place, where `replay.cli` assembles the `lmg`
group. Every command takes the store as an optional argument defaulting to ``$LMG_STORE`` or
``./lmg-data``.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import msgspec

from . import events as ev
from ._demo import lmg_command, next_steps, run_demo
from ._retention import MAX_DAYS, RetentionPolicy, due, retention, set_retention
from ._store import check_store
from ._time import iso_time
from ._wire import decode_json, parse_request, record_json
from .errors import EventLogError, InvalidEvent
from .log import EventLog
from .log import open as open_log
from .options import Durability, Options
from .verify import verify

__all__ = [
    "PathType",
    "commands",
    "default_store",
    "durability_option",
    "require_store",
    "store_argument",
]

P = ParamSpec("P")
R = TypeVar("R")
_JSON = msgspec.json.Encoder()


def default_store() -> str:
    return os.environ.get("LMG_STORE", "lmg-data")


class PathType(click.Path):
    """A path argument or option of `lmg`: as `click.Path`, but an empty string is refused.
    `Path("")` is the current directory, so `lmg backup STORE "$UNSET"` would otherwise write
    a backup into whatever directory the command runs in."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "":
            self.fail("an empty path names nothing (did a variable expand to nothing?)", param, ctx)
        return super().convert(value, param, ctx)


def store_argument(fn: Callable[P, R]) -> Callable[P, R]:
    """The STORE argument shared by every command."""
    return click.argument(
        "store", required=False, default=None, type=PathType(file_okay=False), metavar="[STORE]"
    )(fn)


def require_store(store: str | None) -> str:
    """The store's path, checked first by commands that would otherwise create files in it
    (a projector's lock beside the database) before finding out it is no store."""
    if store == "":  # as PathType refuses it, for a STORE taken from free words (`lmg sql`)
        raise EventLogError("an empty path names no store (did a variable expand to nothing?)")
    path = store or default_store()
    check_store(Path(path))
    return path


def _position(value: str | None) -> tuple[int | None, str | None]:
    """An LSN (digits) or a time (ISO 8601)."""
    if value is None:
        return None, None
    return (int(value), None) if re.fullmatch(r"[0-9]+", value) else (None, value)


durability_option = click.option(
    "--durability",
    type=click.Choice([d.value for d in Durability]),
    default="fsync",
    show_default=True,
    help="When appends are acknowledged (see docs/operations.md).",
)
"""The `--durability` of every command that appends."""


@click.command(short_help="Record a multi-agent conversation, then show it.")
@store_argument
def demo(store: str | None) -> None:
    """Record a small multi-agent conversation and show what the log holds.

    Two agents, a template and a child template, a handoff, two tool calls (one fails) and
    user feedback are appended to STORE, then read back and summarised. If STORE already
    holds the demo, it is shown again and nothing is recorded.

    Example: lmg demo ./my-store
    """
    path = store or default_store()
    with open_log(path) as log:
        demo = run_demo(log, path, click.echo)
    for line in next_steps(path, demo, sql=False):
        click.echo(line)


@click.command(short_help="Append events given as JSON lines on stdin.")
@store_argument
@click.option("--batch", is_flag=True, help="Append all lines as one all-or-nothing request.")
@durability_option
@click.option(
    "--max-line-bytes",
    type=click.IntRange(min=1, max=Options().max_request_bytes),  # the log refuses more anyway
    default=Options().max_request_bytes,
    show_default=True,
    help="Refuse a longer line (with --batch: a longer input) before parsing it.",
)
def append(store: str | None, batch: bool, durability: str, max_line_bytes: int) -> None:
    """Append events given as JSON lines on stdin; print one JSON result line per input line.

    Each line is an event ({"type": "prompt.added", "session_id": ..., "content": ...}), a list
    of events (one all-or-nothing request), or {"events": [...], "idempotency_key": ...,
    "expect_session_lsn": ..., "expect_store_lsn": ...}. Ids of new nodes are made if absent.
    Stops at the first bad line with an error naming it; earlier lines stay appended. A line
    is read only up to --max-line-bytes, and values must keep the limits of docs/events.md
    (64 levels of nesting, signed 64-bit ints, no NaN).

    Example: echo '{"type": "session.created"}' | lmg append ./my-store
    """
    with open_log(store or default_store(), durability=Durability(durability)) as log:
        if batch:
            lines = _lines(max_line_bytes, "the input (--batch)")
            requests = [_parse_line(line, n) for n, line in lines]
            events = [e for evs, _ in requests for e in evs]
            if events:
                _append_line(log, 1, (events, {}))
            return
        for n, line in _lines(max_line_bytes):
            _append_line(log, n, _parse_line(line, n))


def _lines(limit: int, total: str | None = None) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of stdin, numbered. Each is refused once it passes `limit` bytes
    (newline not counted), before more of it is read; with `total` named, so is the sum."""
    stdin = sys.stdin.buffer
    n, size = 0, 0
    while line := stdin.readline(limit + 1):
        n += 1
        length = len(line) - line.endswith(b"\n")
        if length > limit:
            raise click.ClickException(f"line {n}: longer than {limit} bytes (--max-line-bytes)")
        size += length
        if total is not None and size > limit:
            raise click.ClickException(f"{total} is longer than {limit} bytes (--max-line-bytes)")
        if line.strip():
            yield n, line


def _parse_line(line: bytes, n: int) -> tuple[list[ev.EventBase], dict[str, Any]]:
    try:
        return parse_request(decode_json(line))
    except InvalidEvent as exc:
        raise click.ClickException(f"line {n}: {exc}") from None


def _append_line(log: EventLog, n: int, parsed: tuple[list[ev.EventBase], dict[str, Any]]) -> None:
    events, options = parsed
    try:
        result = log.append(events, **options)
    except EventLogError as exc:
        raise click.ClickException(f"line {n}: {exc}") from None
    ids = [str(getattr(e, "id", "")) or None for e in result.events]
    out = {
        "lsn": result.first_lsn,
        "count": len(result.events),
        "ids": ids,
        "duplicate": result.duplicate,
    }
    click.echo(json.dumps(out))


@click.command(short_help="Print events as JSON lines; --follow waits for more.")
@store_argument
@click.option("--from", "start", metavar="LSN|TIME", help="First LSN, or ISO 8601 time.")
@click.option("--to", "stop", metavar="LSN|TIME", help="Stop before this LSN or time.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are appended.")
def tail(store: str | None, start: str | None, stop: str | None, follow: bool) -> None:
    """Print events as JSON lines: {"lsn": N, "ts_iso": TIME, "type": ..., "ts": ..., ...}.

    Example: lmg tail ./my-store --from 2026-11-20T10:00:00Z --follow
    """
    start_lsn, start_time = _position(start)
    stop_lsn, stop_time = _position(stop)
    out = sys.stdout.buffer
    with open_log(store or default_store(), readonly=True) as log:
        if follow:
            if stop is not None:
                raise InvalidEvent("--follow and --to do not go together")
            halt = threading.Event()
            threading.Thread(target=_halt_when_reader_leaves, args=(halt,), daemon=True).start()
            records = log.follow(start_lsn or 0, start_time=start_time, stop=halt)
        else:
            records = log.read(start_lsn or 0, stop_lsn, start_time=start_time, stop_time=stop_time)
        try:
            for record in records:
                out.write(record_json(record) + b"\n")
                if follow:
                    out.flush()
        except KeyboardInterrupt:
            pass
        finally:
            out.flush()  # a closed pipe (`lmg tail | head`) ends here, as for every command


def _halt_when_reader_leaves(halt: threading.Event) -> None:
    """Stop following once stdout's reader is gone (`lmg tail --follow | head -1`): with no
    new event to write, nothing else would notice. A pipe whose reader left polls POLLERR."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), 0)  # POLLERR and POLLHUP are reported regardless
    while not halt.is_set():
        if poller.poll(200):
            halt.set()


@click.command(name="verify", short_help="Check every frame of every segment; report damage.")
@store_argument
def verify_command(store: str | None) -> None:
    """Check every frame of every segment; report damage with file, offset and LSN.

    Exits 1 if anything is damaged. Warnings (a torn tail recovery will cut, a stale index
    that will be rebuilt, a stray file) are printed but do not fail.

    Example: lmg verify ./my-store
    """
    path = store or default_store()
    problems = verify(path)
    for problem in problems:
        click.echo(str(problem), err=problem.severity == "error")
    errors = sum(p.severity == "error" for p in problems)
    if errors:
        raise click.ClickException(f"{errors} damaged place(s) in {path}")
    click.echo(f"ok: {path} verified ({len(problems)} warning(s))")


@click.command(short_help="Segments, events by type, bytes, compression ratio.")
@store_argument
@click.option("--json", "as_json", is_flag=True, help="Print the stats as one JSON object.")
def stats(store: str | None, as_json: bool) -> None:
    """Segments, events by type, bytes, compression ratio, recovered bytes.

    Example: lmg stats ./my-store --json
    """
    with open_log(store or default_store(), readonly=True) as log:
        s = log.stats()
    if as_json:
        times = {
            f"{end}_ts_iso": None if ns is None else iso_time(ns)
            for end, ns in (("first", s.first_ts), ("last", s.last_ts))
        }
        click.echo(_JSON.encode({**msgspec.structs.asdict(s), **times}).decode())
        return
    click.echo(f"store            {s.path}")
    click.echo(f"segments         {s.segments}")
    click.echo(f"events           {s.events}")
    click.echo(f"stored bytes     {s.stored_bytes} (frames), {s.disk_bytes} on disk with indexes")
    click.echo(f"raw bytes        {s.raw_bytes} (compression ratio {s.compression_ratio}x)")
    click.echo(f"recovered bytes  {s.recovered_bytes} (torn tails cut by recovery, ever)")
    if s.first_ts is not None and s.last_ts is not None:
        click.echo(f"times            {iso_time(s.first_ts)} to {iso_time(s.last_ts)}")
    for tag, n in s.events_by_type.items():
        click.echo(f"  {tag:<18} {n}")


_DAYS = click.IntRange(min=1, max=MAX_DAYS)


@click.command(name="retention", short_help="Set or show a store's retention policy.")
@store_argument
@click.option("--content-days", type=_DAYS, help="Keep content this many days.")
@click.option("--session-days", type=_DAYS, help="Keep idle sessions this long (days).")
@click.option("--clear", is_flag=True, help="Remove the policy (keep everything).")
def retention_command(
    store: str | None, *, content_days: int | None, session_days: int | None, clear: bool
) -> None:
    """Set or show STORE's retention policy, and what it makes due now. Nothing is removed
    here: `lmg erase STORE --due` applies it (docs/lifecycle.md).

    Example: lmg retention ./my-store --content-days 90 --session-days 365
    """
    path = store or default_store()
    if clear:
        set_retention(path, None)
    elif content_days is not None or session_days is not None:
        set_retention(path, RetentionPolicy(content_days=content_days, session_days=session_days))
    policy = retention(path)
    if policy is None:
        click.echo(f"{path}: no retention policy (everything is kept)")
        return
    click.echo(f"{path}: {_JSON.encode(policy).decode()}")
    found = due(path)
    click.echo(
        f"due now: the content of {found.content_events} event(s) (of the LSNs before "
        f"{found.content_before_lsn}; content already erased is not counted) and "
        f"{len(found.sessions)} idle session(s); "
        f"apply with: {lmg_command()} erase {shlex.quote(path)} --due"
    )


commands: list[click.Command] = [demo, append, tail, verify_command, stats, retention_command]
