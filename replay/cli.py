"""The `lmg` command: every package's commands under one group, and replay's own.

It lives here because `replay` is the top of the import chain (it may import both other
packages), so the CLI can gather commands from all of them without an upward import.
"""

from __future__ import annotations

import errno
import inspect
import io
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click
import msgspec

from eventlog import EventLogError
from eventlog._advert import find
from eventlog._files import STDOUT, NamedOutput
from eventlog.cli import PathType, default_store, require_store, store_argument
from eventlog.cli import commands as eventlog_commands
from eventlog.ingest_cli import ingest
from projections._policy import SnapshotPolicy
from projections.cli import commands as projections_commands
from projections.cli import print_rows, remote_query, rows_format, run_query
from projections.errors import ProjectionError

from ._points import Point, datetime_of
from .errors import ReplayError

if TYPE_CHECKING:  # the rest of replay is imported where used: `lmg --help` needs no DuckDB
    from ._workspace import Progress
    from .diff import Diff

__all__ = ["main"]

_JSON = msgspec.json.Encoder()


class _Lmg(click.Group):
    """The `lmg` group: the one place where errors become what a user reads.

    Library errors (the log's, the projections', replay's) and OS errors become one plain
    line, without a Python class name or a traceback; warnings (a skipped snapshot) are said
    on stderr. A closed pipe (`lmg tail | head`) ends every command the same way: quietly,
    with status 0, since the reader chose to stop (under `set -o pipefail` the pipeline's
    status is then the reader's, as with ripgrep). A stdout that cannot take the output (a
    full disk) ends every command as `lmg export` does: one line naming standard output,
    status 1. The group's own options (`--help`, `--version`) print while its arguments are
    parsed, before any command runs: they end the same ways."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _as_a_command(ctx):
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with _as_a_command(ctx):
            return super().invoke(ctx)


@contextmanager
def _as_a_command(ctx: click.Context) -> Iterator[None]:
    """Run what `lmg` does (parse its options, or a command) as `_Lmg` says every command
    ends: errors said in one line, a closed pipe quietly, a full stdout naming it."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _warn
        try:
            with _stdout_named():
                yield
        except (EventLogError, ProjectionError, ReplayError) as exc:
            raise click.ClickException(_said(exc)) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                _discard_stdout()
                ctx.exit(0)
            raise click.ClickException(_os_error(exc)) from None


@contextmanager
def _stdout_named() -> Iterator[None]:
    """The command's stdout over a file whose write errors name `STDOUT` (a full disk said
    only ``[Errno 27] File too large``), flushed before the command ends, so that such an
    error is the command's, not one Python's flush at exit reports again with status 120."""
    original = sys.stdout
    named = _named_copy(original)
    if named is None:
        yield
        return
    sys.stdout = named
    try:
        yield
    except BaseException:
        _flush(named, raising=False)  # the command's own error is the one to say
        raise
    else:
        _flush(named, raising=True)
    finally:
        sys.stdout = original


def _named_copy(stdout: TextIO) -> io.TextIOWrapper | None:
    """`stdout` as it is set up, over a `NamedOutput` on its file; None if it is no text
    file (click's test runner's)."""
    if not isinstance(stdout, io.TextIOWrapper):
        return None
    try:
        fd = stdout.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    stdout.flush()
    raw = NamedOutput(fd, STDOUT, own=False)
    unbuffered = isinstance(stdout.buffer, io.RawIOBase)  # python -u, PYTHONUNBUFFERED
    return io.TextIOWrapper(
        raw if unbuffered else io.BufferedWriter(raw),
        encoding=stdout.encoding,
        errors=stdout.errors,
        line_buffering=stdout.line_buffering,
        write_through=stdout.write_through,
    )


def _flush(stdout: TextIO, raising: bool) -> None:
    """Flush `stdout`; if it refuses, what it still holds goes to /dev/null instead (Python's
    flush at exit would meet the same error)."""
    try:
        stdout.flush()
    except OSError:
        _discard_stdout()
        stdout.flush()
        if raising:
            raise


def _discard_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for the closed pipe is then flushed
    there at exit, instead of failing the exit with Python's status 120."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _said(exc: Exception) -> str:
    """A library error's message; of one that is an OSError too (`StorageFull`: a full disk),
    without Python's ``[Errno 28]`` before it."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None:
        return exc.strerror
    return str(exc)


def _os_error(exc: OSError) -> str:
    """`path: No such file or directory`, as Unix tools say it."""
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror}"


@click.group(cls=_Lmg, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llm-memory-graph")
def main() -> None:
    """llm-memory-graph: the memory and lineage store for LLM agents.

    Commands take a STORE directory; where it is optional ([STORE] in a command's usage),
    it defaults to $LMG_STORE, else ./lmg-data.
    """


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


@click.command(short_help="Query or save the projections as they were at a point.")
@store_argument
@click.option(
    "--at",
    "point",
    default=None,
    metavar="LSN|TIME",
    help="An LSN (the view holds it and everything before) or an ISO 8601 time. Default: now.",
)
@click.option("--sql", "query", default=None, help="Run this query on the view and print it.")
@click.option(
    "--out",
    type=PathType(dir_okay=False),
    default=None,
    help="Write the view to this new DuckDB file, to open with any DuckDB client.",
)
@rows_format
@_NO_SNAPSHOTS
def replay(
    *,
    store: str | None,
    point: str | None,
    query: str | None,
    out: str | None,
    fmt: str,
    no_snapshots: bool,
) -> None:
    """The projections as they were at a point: query them, or save them to a file.

    Without --sql, it prints what the view holds: the point, and each table's row count.
    With --sql on a store that `lmg serve` owns, the service runs it (with `$LMG_TOKEN`).

    Example: lmg replay ./my-store --at 1234 --sql "SELECT count(*) FROM prompts"

    Or: lmg replay ./my-store --at 2026-11-20T10:00:00Z --out past.duckdb
    """
    from projections import TABLE_NAMES

    from .view import at

    path = store or default_store()
    service = find(Path(path)) if query is not None and out is None else None
    if service is not None:  # its service owns the store: ask it, as `lmg sql` does
        given = None if point is None else _point(point)
        click.echo(f"through the service at {service['url']}", err=True)
        print_rows(*remote_query(service, query or "", given), fmt)  # type: ignore[arg-type]
        return
    with _progress("replaying") as progress:
        view = at(
            path,
            **({} if point is None else _at_kwargs(_point(point))),
            out=out,
            snapshots=not no_snapshots,
            on_progress=progress,
        )
    with view:
        start = "from zero" if view.snapshot is None else f"from snapshot {view.snapshot.lsn}"
        click.echo(f"at LSN {view.lsn} ({_when(view.ts)}), folded {start}", err=True)
        if query is not None:
            print_rows(*run_query(view.connection, query), fmt)
        elif out is None:
            counts = [(t, view.rows(f"SELECT count(*) FROM {t}")[0][0]) for t in TABLE_NAMES]
            print_rows(["table", "rows"], counts, "table")
        if out is not None:
            click.echo(f"wrote {out}", err=True)


def _at_kwargs(point: Point) -> dict[str, Any]:
    return {"lsn": point} if isinstance(point, int) else {"time": point}


@click.command(name="diff", short_help="What changed between two points, table by table.")
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
def diff_command(
    *, store: str | None, start: str, stop: str, fmt: str, shown: int, no_snapshots: bool
) -> None:
    """What changed between two points: table by table, and the events in between.

    Example: lmg diff ./my-store --from 1200 --to 1234
    """
    from .diff import diff

    path = store or default_store()
    with _progress("replaying") as progress:
        result = diff(
            path, _point(start), _point(stop), snapshots=not no_snapshots, on_progress=progress
        )
    if fmt == "json":
        click.echo(_JSON.encode(_diff_json(result)).decode())
        return
    click.echo(result.text(shown))


def _diff_json(result: Diff) -> dict[str, Any]:
    return {
        "start": result.start,
        "stop": result.stop,
        "tables": {name: t for name, t in result.tables.items() if t},
        "events": [{"lsn": r.lsn, **msgspec.to_builtins(r.event)} for r in result.events],
    }


@click.command(name="fork", short_help="Start a new store from a store's history up to a point.")
@store_argument
@_AT
@click.argument("new", type=PathType(file_okay=False))
def fork_command(*, store: str | None, point: str, new: str) -> None:
    """Create store NEW holding STORE's history up to a point, to append another future.

    NEW records where it came from (its ORIGIN file). STORE is not changed.

    Example: lmg fork ./my-store --at 1220 ./my-store-fix
    """
    from .fork import fork

    path = store or default_store()
    origin = fork(path, _point(point), new)
    click.echo(
        f"forked {new} from {origin.source} at LSN {origin.last_lsn} ({_when(origin.last_ts)})"
    )


@click.command(name="snapshot", short_help="Save the projections at a point, for fast replays.")
@store_argument
@click.option(
    "--at",
    "point",
    default=None,
    metavar="LSN|TIME",
    help="The point: an LSN or an ISO 8601 time. Default: now.",
)
@click.option(
    "--keep",
    type=int,
    default=SnapshotPolicy().keep,
    show_default=True,
    help="Then prune to this many snapshots, spread over the history.",
)
@click.option("--list", "listing", is_flag=True, help="List the snapshots; take none.")
def snapshot_command(*, store: str | None, point: str | None, keep: int, listing: bool) -> None:
    """Save the projections at a point as a snapshot, so replays near it start there.

    Built from the log in a private copy: it never waits for a running projector. A
    projector also takes snapshots as it folds (lmg project --snapshot-every).

    Example: lmg snapshot ./my-store
    """
    from .snapshot import snapshot, snapshots

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


@click.command(short_help="Serve stores over HTTP: appends, feed, SQL, reads.")
@click.argument("store", type=PathType(file_okay=False))
@click.option(
    "--store",
    "more",
    multiple=True,
    metavar="NAME=PATH",
    help="Serve another store under NAME (repeatable). STORE is served as `default`.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=8420,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to bind (0: a free one, printed at start-up).",
)
@click.option(
    "--auth",
    "auth_file",
    type=PathType(dir_okay=False, exists=True),
    help="Tokens file (docs/service.md); required for a --host that is not loopback.",
)
@click.option("--tls-cert", type=PathType(dir_okay=False, exists=True), help="PEM certificate.")
@click.option("--tls-key", type=PathType(dir_okay=False, exists=True), help="PEM private key.")
@click.option(
    "--limit",
    "limits",
    multiple=True,
    metavar="NAME=VALUE",
    help="Change a limit (repeatable): max_body_bytes, max_bodies_bytes, body_timeout_s, "
    "max_batch_appends, max_rows, max_answer_bytes, max_sql_bytes, max_sql_params, sql_time_s, "
    "replay_time_s, max_queries, max_follows, otlp_trace_timeout_s, otlp_log_wait_s "
    "(docs/service.md, Limits).",
)
@click.option(
    "--retention-every",
    "retention_every",
    metavar="DURATION",
    help="Apply each store's retention policy (lmg retention) at start-up and then every "
    "DURATION (e.g. 6h; s, m, h, d; from 1s to 366d), as lmg erase --due would. "
    "Default: never (docs/lifecycle.md, Retention).",
)
def serve(
    *,
    store: str,
    more: tuple[str, ...],
    host: str,
    port: int,
    auth_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    limits: tuple[str, ...],
    retention_every: str | None,
) -> None:
    """Serve stores over HTTP: appends, the log's feed, SQL, typed reads, diff, metrics.

    One process owns each store's projections and folds continuously; reads never wait for
    a file lock. Without --auth it binds to loopback only. SIGTERM drains and exits 0.

    Needs the serve extra (docs/service.md): pip install 'llm-memory-graph[serve]'

    Example: lmg serve ./my-store --store team=./team-store --port 8420
    """
    from pathlib import Path

    try:
        from eventlog._http import Auth, Limits
        from projections._retention import parse_every
        from projections.errors import BadArgument

        from ._service import serve as run
    except ImportError as exc:
        raise click.ClickException(
            f"lmg serve needs the serve extra ({exc.name} is missing): "
            "pip install 'llm-memory-graph[serve]'"
        ) from None
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("give --tls-cert and --tls-key together")
    stores = {"default": Path(require_store(store))}
    for item in more:
        name, sep, path = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name) or name in stores:
            raise click.UsageError(
                f"--store {item!r}: give a new NAME=PATH (NAME: letters, digits, _.-)"
            )
        stores[name] = Path(require_store(path))
    auth = Auth.load(auth_file) if auth_file else None
    tls = (tls_cert, tls_key) if tls_cert and tls_key else None
    changes = dict(item.partition("=")[::2] for item in limits)
    try:
        chosen = msgspec.convert(changes, Limits, strict=False)
    except msgspec.ValidationError as exc:
        raise click.UsageError(f"--limit: {exc}") from None
    try:
        every_s = None if retention_every is None else parse_every(retention_every)
    except BadArgument as exc:
        raise click.ClickException(str(exc)) from None
    run(stores, host=host, port=port, auth=auth, tls=tls, limits=chosen, retention_every_s=every_s)


@click.group(short_help="Tokens of an auth file for lmg serve --auth.")
def token() -> None:
    """Tokens of an auth file for `lmg serve --auth` (docs/service.md, Auth).

    Example: lmg token add --auth tokens.json --name analyst --scope sql --store default
    """


@token.command(name="add", short_help="Add a token to an auth file and print it, once.")
@click.option("--auth", "auth_file", required=True, type=PathType(dir_okay=False))
@click.option("--name", required=True, help="Who holds it (shown in the access log).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["append", "read", "sql", "admin"]),
    help="What it may do (repeatable).",
)
@click.option("--store", "stores", multiple=True, required=True, help="A store name, or '*'.")
def token_add(auth_file: str, name: str, scopes: tuple[str, ...], stores: tuple[str, ...]) -> None:
    """Add a token to an auth file (created 0600 if missing) and print it, once.

    Only its SHA-256 is stored; a lost token is replaced, never recovered.

    Example: lmg token add --auth tokens.json --name agent-a --scope append --store default
    """
    from eventlog._tokens import add_token

    click.echo(add_token(auth_file, name, list(scopes), list(stores)))


for command in [
    *eventlog_commands,
    ingest,
    *projections_commands,
    replay,
    diff_command,
    fork_command,
    snapshot_command,
    serve,
    token,
]:
    main.add_command(command)


def _keep_whole(command: click.Command) -> None:
    """Mark the help paragraphs a user copies (an example, an install command) so click
    prints them as written: rewrapped, they break at a hyphen or mid-command."""
    if command.help:
        command.help = "\n\n".join(
            f"\b\n{p}" if p.startswith("Example:") or "pip install" in p else p
            for p in inspect.cleandoc(command.help).split("\n\n")
        )
    for sub in getattr(command, "commands", {}).values():
        _keep_whole(sub)


_keep_whole(main)


if __name__ == "__main__":
    main()
