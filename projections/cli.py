"""The projections' commands of the `lmg` CLI: project and sql."""

from __future__ import annotations

import csv
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click
import msgspec

from eventlog._demo import next_steps, run_demo
from eventlog.cli import PathType, default_store, require_store, store_argument

from ._lifecycle_cli import commands as lifecycle_commands
from ._policy import SnapshotPolicy
from .errors import ProjectorBusy

if TYPE_CHECKING:  # imported where used: `lmg --help` must not load DuckDB
    import duckdb

    from .projector import Progress

__all__ = ["commands", "print_rows", "rows_format", "run_query"]

P = ParamSpec("P")
R = TypeVar("R")
_JSON = msgspec.json.Encoder()


def _database_option(fn: Callable[P, R]) -> Callable[P, R]:
    return click.option(
        "--database",
        type=PathType(dir_okay=False),
        default=None,
        help="The DuckDB file (default: STORE/projections.duckdb).",
    )(fn)


rows_format = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output: a table, JSON lines, or CSV with a header.",
)
"""The --format of commands that print rows (see `print_rows`)."""


class _Bar:
    """A progress bar on a terminal's stderr for a long backlog; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._shown = -1

    def update(self, p: Progress) -> None:
        if not self.enabled or p.log_end < 50_000:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=p.log_end, label="folding", file=sys.stderr, show_eta=True
            )
            self._bar.__enter__()
            self._shown = -1
        self._bar.update(p.checkpoint - self._shown)
        self._shown = p.checkpoint

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _describe(p: Progress) -> str:
    lag = "" if p.lag_ms is None else f", {p.lag_ms:.0f} ms behind the newest event"
    return (
        f"folded to LSN {p.checkpoint} of {p.log_end - 1}; lag {p.lag_events} events{lag}; "
        f"{p.events_per_s:,.0f} events/s; waited {p.waited_ms:.0f} ms for readers"
    )


@click.command(short_help="Fold the log into the DuckDB projections.")
@store_argument
@_database_option
@click.option(
    "--follow", "-f", is_flag=True, help="After catching up, fold new events as they land."
)
@click.option(
    "--rebuild",
    "from_zero",
    is_flag=True,
    help="Delete the projections and fold the whole log again.",
)
@click.option(
    "--report-every",
    type=float,
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="While following, print progress and lag this often (0: never).",
)
@click.option(
    "--snapshot-every",
    type=int,
    default=SnapshotPolicy().every_events,
    show_default=True,
    metavar="EVENTS",
    help="Save a snapshot (for fast replay) after this many events (0: never).",
)
@click.option(
    "--memory-limit",
    default="256MB",
    show_default=True,
    help="DuckDB's memory; raise it for a store of very long texts (docs/projections.md).",
)
def project(
    *,
    store: str | None,
    database: str | None,
    follow: bool,
    from_zero: bool,
    report_every: float,
    snapshot_every: int,
    memory_limit: str,
) -> None:
    """Fold the log into the DuckDB projections; with --follow, keep folding until stopped.

    One projector per database: a second is refused, but one that finds a one-off catch-up
    (lmg sql, or lmg project without --follow) folding waits for it to finish. Readers (lmg
    sql, Python, the duckdb CLI) may query while it runs: it opens the database only to
    commit. SIGINT or SIGTERM stop it cleanly after the batch in hand. An event that cannot
    be folded stops it with its LSN and type; everything before it stays folded. Every
    --snapshot-every events it saves a snapshot in STORE/snapshots, so `lmg replay` starts
    near any point.

    Example: lmg project ./my-store --follow
    """
    from .projector import DEFAULT_SNAPSHOTS, Projector

    path = require_store(store)
    bar = _Bar(sys.stderr.isatty())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    policy = (
        msgspec.structs.replace(DEFAULT_SNAPSHOTS, every_events=snapshot_every)
        if snapshot_every > 0
        else None
    )
    try:
        projector = Projector(
            path,
            database,
            rebuild=from_zero,
            snapshots=policy,
            memory_limit=memory_limit,
            passing=not follow,
            wait_turn=_TurnNotice(stop),
        )
    except ProjectorBusy:
        if not stop.is_set():
            raise
        click.echo("stopped while waiting for the database", err=True)
        return
    with projector:
        try:
            projector.catch_up(stop=stop, on_progress=bar.update)
        finally:
            bar.close()
        click.echo(_describe(projector.progress()), err=True)
        if not follow or stop.is_set():
            return
        last_report = time.monotonic()

        def report(_progress: Progress) -> None:
            nonlocal last_report
            if report_every and time.monotonic() - last_report >= report_every:
                projector.measure()  # the log's length now, for an honest lag
                click.echo(_describe(projector.progress(following=True)), err=True)
                last_report = time.monotonic()

        projector.follow(stop, on_progress=report)
        projector.measure()
        click.echo(f"stopped: {_describe(projector.progress(following=True))}", err=True)


class _TurnNotice:
    """`lmg project` waits its turn behind a one-off catch-up (`lmg sql`, or `lmg project`
    without --follow) instead of failing, saying so on stderr at once and every `every_s`."""

    def __init__(self, stop: threading.Event, every_s: float = 10.0) -> None:
        self.stop = stop
        self.every_s = every_s
        self._said = -every_s

    def __call__(self, holder: str) -> bool:
        if time.monotonic() - self._said >= self.every_s:
            click.echo(f"waiting for {holder} to finish folding", err=True)
            self._said = time.monotonic()
        return not self.stop.is_set()


def _fold_if_free(path: str, database: str | None) -> None:
    """Catch up first when no projector is running, so a one-off query sees the whole log."""
    from .projector import Projector

    try:
        with Projector(path, database, passing=True) as projector:
            projector.catch_up()
    except ProjectorBusy:
        pass  # a projector is following: read what it has committed


@click.command(short_help="Run a read-only SQL query on the projections.")
@click.argument("words", nargs=-1, required=True, metavar="[STORE] QUERY")
@_database_option
@rows_format
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the database if an embedded MemoryGraph holds it.",
)
@click.option(
    "--no-fold", is_flag=True, help="Do not catch up first, even when no projector is running."
)
def sql(
    *, words: tuple[str, ...], database: str | None, fmt: str, wait_s: float, no_fold: bool
) -> None:
    """Run a read-only SQL query on the projections.

    Only reads run (SELECT, WITH, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE); writes, files,
    extensions and settings are refused (docs/sql.md). Safe beside a running projector.
    With no projector running, it first folds what the log holds, so the answer covers
    every event. Tables: sessions, prompts, responses,
    tool_invocations, agents, templates, edges, lineage, handoffs, nodes, agent_stats
    (docs/sql.md). With one argument, it is the query, on the default store.

    Example: lmg sql ./my-store "SELECT name, prompts_handled FROM agent_stats" --format json
    """
    if len(words) > 2:
        raise click.UsageError("give a STORE and one QUERY (quote the query)")
    from .projector import connect

    store, query = (None, words[0]) if len(words) == 1 else words
    path = require_store(store)
    from eventlog._advert import find

    service = find(Path(path))
    if service is not None and database is None:  # its service owns the database: ask it
        print_rows(*remote_query(service, query), fmt)
        return
    if not no_fold:
        _fold_if_free(path, database)
    with connect(path, database, wait_s=wait_s) as con:
        names, rows = run_query(con, query)
    print_rows(names, rows, fmt)


def remote_query(
    service: dict[str, Any], query: str, at: int | str | None = None
) -> tuple[list[str], list[Any]]:
    """Run `query` through the store's service (`lmg serve`), with ``$LMG_TOKEN`` if set;
    with `at` (an LSN or a time), on its replay view of that point."""
    import urllib.error
    import urllib.request

    url = f"{service['url']}/v1/stores/{service['store']}/sql"
    headers = {"Content-Type": "application/json"}
    if os.environ.get("LMG_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['LMG_TOKEN']}"
    body = {"query": query} if at is None else {"query": query, "at": at}
    request = urllib.request.Request(url, _JSON.encode(body), headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = msgspec.json.decode(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = msgspec.json.decode(exc.read())["error"]["message"]
        except (msgspec.DecodeError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        raise click.ClickException(f"{message} (from the service at {service['url']})") from None
    except OSError as exc:
        url = service["url"]
        raise click.ClickException(f"the service at {url} did not answer: {exc}") from None
    if answer.get("truncated"):
        click.echo("warning: the service cut the rows at its limit", err=True)
    return answer["columns"], [tuple(row) for row in answer["rows"]]


def run_query(
    con: duckdb.DuckDBPyConnection, query: str
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The column names and rows of one SQL statement (`lmg sql` and `lmg replay --sql`), run
    in the SQL sandbox (`SqlRefused` and `SqlFailed`, one line each, pass on).

    Several statements are refused rather than run with only the last one's rows shown, which
    would hide what the others returned."""
    from ._sandbox import check, translated, user_cursor

    check(con, query)  # a refused statement is named, even among several; none is SqlFailed
    statements = translated(lambda: con.extract_statements(query))
    if len(statements) > 1:
        held = len(statements)
        raise click.ClickException(f"give one SQL statement; the query holds {held} statements")
    with user_cursor(con, query) as cursor:
        return [d[0] for d in cursor.description or ()], translated(cursor.fetchall)


def print_rows(names: list[str], rows: list[tuple[Any, ...]], fmt: str) -> None:
    """Rows as a table, JSON lines or CSV (the shared output of `lmg sql` and `lmg replay`)."""
    if fmt == "json":
        for row in rows:
            click.echo(_JSON.encode(dict(zip(names, row, strict=True))).decode())
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(_plain(row) for row in rows)
    else:
        cells: list[list[str]] = [names, *(_plain(row) for row in rows)]
        widths = [min(60, max(len(r[i]) for r in cells)) for i in range(len(names))]
        for n, line in enumerate(cells):
            click.echo(
                "  ".join(c[:60].ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            )
            if n == 0:
                click.echo("  ".join("-" * w for w in widths))
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _plain(row: tuple[Any, ...]) -> list[str]:
    return [
        "" if v is None else v if isinstance(v, str) else _JSON.encode(v).decode().strip('"')
        for v in row
    ]


@click.command(short_help="Record a multi-agent conversation, then show it.")
@store_argument
def demo(store: str | None) -> None:
    """Record a small multi-agent conversation, then show what the log and projections hold.

    Two agents, a template and a child template, a handoff, two tool calls (one fails) and
    user feedback are appended to STORE through an embedded MemoryGraph, read back from the
    log, then queried from the DuckDB projections (context window, lineage, agent stats).
    If STORE already holds the demo, it is shown again and nothing is recorded.

    Example: lmg demo ./my-store
    """
    from ._demo import show_projections
    from .memory_graph import MemoryGraph

    path = store or default_store()
    with MemoryGraph.open(path) as graph:
        demo = run_demo(graph, path, click.echo)
        show_projections(graph, demo.session_id, click.echo)
    for line in next_steps(path, demo, sql=True):
        click.echo(line)


commands: list[click.Command] = [demo, project, sql, *lifecycle_commands]
