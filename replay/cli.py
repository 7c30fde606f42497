"""The `lmg` command: every package's commands under one group, and replay's own.

It lives here because `replay` is the top of the import chain (it may import both other
packages), so the CLI can gather commands from all of them without an upward import.
"""

from __future__ import annotations

import functools
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import click
import msgspec

from eventlog.cli import cli_errors, default_store, store_argument
from eventlog.cli import commands as eventlog_commands
from eventlog.ingest_cli import ingest
from projections import TABLE_NAMES, SnapshotPolicy
from projections.cli import commands as projections_commands
from projections.cli import print_rows, projection_errors, rows_format

from ._points import Point
from ._workspace import Progress
from .diff import Diff, diff
from .errors import ReplayError
from .fork import fork
from .snapshot import snapshot, snapshots
from .view import at, datetime_of

__all__ = ["main"]

P = ParamSpec("P")
R = TypeVar("R")
_JSON = msgspec.json.Encoder()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llm-memory-graph")
def main() -> None:
    """llm-memory-graph: the memory and lineage store for LLM agents.

    Every command takes a STORE directory, defaulting to $LMG_STORE or ./lmg-data.
    """


def replay_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Replay errors become one-line CLI errors; skipped snapshots are said on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _warn
            try:
                return fn(*args, **kwargs)
            except ReplayError as exc:
                raise click.ClickException(f"{type(exc).__name__}: {exc}") from None

    return wrapper


def _warn(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    click.echo(f"warning: {message}", err=True)


def _point(value: str) -> Point:
    """An LSN (digits, or -1 for before the first event) or a time (ISO 8601)."""
    return int(value) if re.fullmatch(r"-?[0-9]+", value) else value


@contextmanager
def _progress(label: str) -> Iterator[Progress]:
    """A progress bar on a terminal's stderr while a long fold runs; silent otherwise."""
    bar: Any = None
    shown = 0

    def update(done: int, total: int) -> None:
        nonlocal bar, shown
        if total < 50_000 or not sys.stderr.isatty():
            return
        if bar is None:
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_eta=True)
            bar.__enter__()
        bar.update(done - shown)
        shown = done

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


_AT = click.option(
    "--at",
    "point",
    required=True,
    metavar="LSN|TIME",
    help="An LSN (the view holds it and everything before) or an ISO 8601 time.",
)
_NO_SNAPSHOTS = click.option(
    "--no-snapshots", is_flag=True, help="Fold from the first event, ignoring snapshots."
)


def _when(ts: int | None) -> str:
    if ts is None:
        return "before the first event"
    return datetime_of(ts).isoformat().replace("+00:00", "Z")


@click.command()
@store_argument
@_AT
@click.option("--sql", "query", default=None, help="Run this query on the view and print it.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the view to this new DuckDB file, to open with any DuckDB client.",
)
@rows_format
@_NO_SNAPSHOTS
@cli_errors
@projection_errors
@replay_errors
def replay(
    *,
    store: str | None,
    point: str,
    query: str | None,
    out: str | None,
    fmt: str,
    no_snapshots: bool,
) -> None:
    """The projections as they were at a point: query them, or save them to a file.

    Without --sql, it prints what the view holds: the point, and each table's row count.

    Example: lmg replay ./my-store --at 1234 --sql "SELECT count(*) FROM prompts"

    Or: lmg replay ./my-store --at 2026-11-20T10:00:00Z --out past.duckdb
    """
    path = store or default_store()
    with _progress("replaying") as progress:
        view = at(
            path,
            **_at_kwargs(_point(point)),
            out=out,
            snapshots=not no_snapshots,
            on_progress=progress,
        )
    with view:
        start = "from zero" if view.snapshot is None else f"from snapshot {view.snapshot.lsn}"
        click.echo(f"at LSN {view.lsn} ({_when(view.ts)}), folded {start}", err=True)
        if query is not None:
            try:
                cursor = view.connection.execute(query)
                names = [d[0] for d in cursor.description or ()]
                rows = cursor.fetchall()
            except Exception as exc:  # DuckDB's parser and binder errors: show them plainly
                raise click.ClickException(str(exc).splitlines()[0]) from None
            print_rows(names, rows, fmt)
        elif out is None:
            counts = [(t, view.rows(f"SELECT count(*) FROM {t}")[0][0]) for t in TABLE_NAMES]
            print_rows(["table", "rows"], counts, "table")
        if out is not None:
            click.echo(f"wrote {out}", err=True)


def _at_kwargs(point: Point) -> dict[str, Any]:
    return {"lsn": point} if isinstance(point, int) else {"time": point}


@click.command(name="diff")
@store_argument
@click.option("--from", "start", required=True, metavar="LSN|TIME", help="The earlier point.")
@click.option("--to", "stop", required=True, metavar="LSN|TIME", help="The later point.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: a readable summary; json: one JSON document with every row.",
)
@click.option(
    "--rows", "shown", type=int, default=5, show_default=True, help="Rows shown per table (text)."
)
@_NO_SNAPSHOTS
@cli_errors
@projection_errors
@replay_errors
def diff_command(
    *, store: str | None, start: str, stop: str, fmt: str, shown: int, no_snapshots: bool
) -> None:
    """What changed between two points: table by table, and the events in between.

    Example: lmg diff ./my-store --from 1200 --to 1234
    """
    path = store or default_store()
    with _progress("replaying") as progress:
        result = diff(
            path, _point(start), _point(stop), snapshots=not no_snapshots, on_progress=progress
        )
    if fmt == "json":
        click.echo(_JSON.encode(_diff_json(result)).decode())
        return
    _print_diff(result, shown)


def _diff_json(result: Diff) -> dict[str, Any]:
    return {
        "start": result.start,
        "stop": result.stop,
        "tables": {name: t for name, t in result.tables.items() if t},
        "events": [{"lsn": r.lsn, **msgspec.to_builtins(r.event)} for r in result.events],
    }


def _print_diff(result: Diff, shown: int) -> None:
    count = len(result.events)
    click.echo(f"from LSN {result.start} to LSN {result.stop}: {_plural(count, 'event')}")
    for record in result.events[:shown]:
        click.echo(f"  {record.lsn}  {_JSON.encode(record.event).decode()[:150]}")
    if count > shown:
        click.echo(f"  ... {_plural(count - shown, 'more event')}")
    for name in result.changed_tables():
        table = result.tables[name]
        click.echo(
            f"{name}: {len(table.added)} added, {len(table.removed)} removed, "
            f"{len(table.changed)} changed"
        )
        for row in table.added[:shown]:
            click.echo(f"  + {_row(row)}")
        for row in table.removed[:shown]:
            click.echo(f"  - {_row(row)}")
        for change in table.changed[:shown]:
            cols = change.columns
            before = {c: change.before[c] for c in cols}
            after = {c: change.after[c] for c in cols}
            click.echo(f"  ~ {_row({'key': list(change.key)})} {_row(before)}")
            click.echo(f"    -> {_row(after)}")
    if not result.changed_tables():
        click.echo("no table changed")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _row(row: dict[str, Any]) -> str:
    return _JSON.encode(row).decode()[:200]


@click.command(name="fork")
@store_argument
@_AT
@click.argument("new", type=click.Path(file_okay=False))
@cli_errors
@projection_errors
@replay_errors
def fork_command(*, store: str | None, point: str, new: str) -> None:
    """Create store NEW holding STORE's history up to a point, to append another future.

    NEW records where it came from (its ORIGIN file). STORE is not changed.

    Example: lmg fork ./my-store --at 1220 ./my-store-fix
    """
    path = store or default_store()
    origin = fork(path, _point(point), new)
    click.echo(
        f"forked {new} from {origin.source} at LSN {origin.last_lsn} ({_when(origin.last_ts)})"
    )


@click.command(name="snapshot")
@store_argument
@click.option("--at", "point", default=None, metavar="LSN|TIME", help="Default: now.")
@click.option(
    "--keep",
    type=int,
    default=SnapshotPolicy().keep,
    show_default=True,
    help="Then prune to this many snapshots, spread over the history.",
)
@click.option("--list", "listing", is_flag=True, help="List the snapshots; take none.")
@cli_errors
@projection_errors
@replay_errors
def snapshot_command(*, store: str | None, point: str | None, keep: int, listing: bool) -> None:
    """Save the projections at a point as a snapshot, so replays near it start there.

    Built from the log in a private copy: it never waits for a running projector. A
    projector also takes snapshots as it folds (lmg project --snapshot-every).

    Example: lmg snapshot ./my-store
    """
    path = store or default_store()
    if not listing:
        with _progress("folding") as progress:
            info = snapshot(
                path, None if point is None else _point(point), keep=keep, on_progress=progress
            )
        click.echo(f"snapshot at LSN {info.lsn} ({_when(info.ts)}): {info.size:,} bytes")
        return
    rows = [(s.lsn, _when(s.ts), s.size, s.schema_version) for s in snapshots(path)]
    print_rows(["lsn", "time", "bytes", "schema"], rows, "table")


for command in [
    *eventlog_commands,
    ingest,
    *projections_commands,
    replay,
    diff_command,
    fork_command,
    snapshot_command,
]:
    main.add_command(command)


if __name__ == "__main__":
    main()
