"""The data lifecycle commands of the `lmg` CLI: export and import (docs/lifecycle.md).

They live with the projections because an export may be of the tables (Parquet, the session
document); the events themselves come from `eventlog`, which knows nothing of tables.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import click

import eventlog
from eventlog._copy import replaced_leftovers
from eventlog._files import STDOUT, NamedOutput, create_file
from eventlog._index import fsync_dir
from eventlog._time import iso_time as eventlog_iso
from eventlog.cli import PathType, default_store, store_argument

__all__ = ["commands"]


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[BinaryIO]:
    """stdout, or a new private file (never over an existing one: nothing is overwritten).

    The file is written as ``.NAME.exporting-PID`` beside it and linked to its name once
    whole: written under its own name, an export killed midway was left there cut short, and
    `lmg import` took one cut at a line's end for the whole export."""
    if path is None or path == "-":
        sys.stdout.flush()
        with io.BufferedWriter(NamedOutput(sys.stdout.fileno(), STDOUT, own=False)) as out:
            yield out
        return
    target = Path(path)
    if os.path.lexists(target):  # said before the export runs, not after
        raise FileExistsError(path)
    from ._export import being_written, remove_abandoned  # DuckDB: on use, not at lmg's start

    remove_abandoned(target)  # of killed exports
    temp = being_written(target)
    try:
        fd = create_file(temp, 0o600)
    except FileExistsError:
        raise
    except OSError as exc:  # no such directory, no permission: said of FILE, not of temp
        raise OSError(exc.errno, exc.strerror, path) from None
    try:
        raw = NamedOutput(fd, path)
        with io.BufferedWriter(raw) as out:
            yield out
            out.flush()
            raw.fsync()
        try:
            os.link(temp, target)  # FileExistsError if a file came there meanwhile
        except OSError as exc:  # a file system without hard links (FAT): check, then rename
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.ENOSYS):
                raise
            if os.path.lexists(target):
                raise FileExistsError(path) from None
            os.rename(temp, target)
        fsync_dir(target.parent)
    finally:
        temp.unlink(missing_ok=True)


@click.command(
    name="export", short_help="Export events (JSON lines), tables (Parquet) or sessions."
)
@store_argument
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["events", "parquet", "session"]),
    default="events",
    show_default=True,
    help="JSON lines of events, Parquet tables (a directory), or session JSON documents.",
)
@click.option(
    "--session", "sessions", multiple=True, metavar="ID", help="Only this session (repeatable)."
)
@click.option("--from", "start", metavar="TIME", help="Only events recorded at/after TIME.")
@click.option("--to", "stop", metavar="TIME", help="Only events recorded before TIME.")
@click.option(
    "--output",
    "-o",
    type=PathType(),
    metavar="PATH",
    help="A new file (a directory for parquet); default stdout.",
)
def export(
    store: str | None,
    *,
    fmt: str,
    sessions: tuple[str, ...],
    start: str | None,
    stop: str | None,
    output: str | None,
) -> None:
    """Export a store's events (JSON lines, the shape of `lmg tail`, with LSNs), its tables
    (Parquet, one directory per table, by day), or sessions as session documents (the format
    of the Rust crate llm-memory-graph).

    With --session (repeatable), an events export carries what those sessions refer to
    (agents, templates, sessions their forks and edges reach), so it imports on its own.

    Example: lmg export ./my-store --session 0192... -o session.jsonl
    """
    from ._export import export_parquet, export_sessions

    path = store or default_store()
    chosen = list(sessions) or None
    try:
        if fmt == "parquet":
            if output is None:
                raise click.UsageError("--format parquet needs --output DIR")
            counts = export_parquet(path, output, sessions=chosen, start_time=start, stop_time=stop)
            click.echo(f"{sum(counts.values())} rows in {len(counts)} tables under {output}")
            return
        if fmt == "session":
            if not sessions:
                raise click.UsageError("--format session needs --session ID")
            with _output(output) as out:
                export_sessions(path, out, sessions)
            return
        with _output(output) as out:
            count = eventlog.export_events(
                path, out, sessions=chosen, start_time=start, stop_time=stop
            )
        if output is not None:
            click.echo(f"{count} events written to {output}")
    except FileExistsError:
        raise click.ClickException(f"{output} already exists: not overwritten") from None


@click.command(name="import", short_help="Import an events export or session documents.")
@click.argument("store", type=PathType(file_okay=False))
@click.argument("file", type=PathType(dir_okay=False, allow_dash=True))
def import_command(store: str, file: str) -> None:
    """Import an events export (JSON lines, as `lmg export` writes), or session documents
    (`lmg export --format session`), into STORE.

    Into a new store (missing or empty directory), events keep their ids, ts and
    occurred_at. Into an existing store, they are appended as new events: ids are kept and
    checked (a duplicate id is an error), occurred_at keeps the original time.

    Example: lmg import ./new-store session.jsonl
    """
    with contextlib.ExitStack() as stack:
        source = sys.stdin.buffer if file == "-" else stack.enter_context(Path(file).open("rb"))
        result = eventlog.import_events(store, source)
    how = "ids and times kept" if result.new_store else "appended as new events"
    new, before = result.events - result.stored_before, result.stored_before
    if not before:
        click.echo(f"{new} events imported into {store} ({how})")
    elif not new:
        click.echo(
            f"0 events imported into {store}: all {before} were stored by an earlier run of "
            "this import, and not again"
        )
    else:
        click.echo(
            f"{new} events imported into {store} ({how}); {before} more were stored by an "
            "earlier run of this import, and not again"
        )


@click.command(name="backup", short_help="Back up a store while writers and a projector run.")
@click.argument("store", type=PathType(file_okay=False))
@click.argument("dest", type=PathType(file_okay=False))
@click.option("--link", is_flag=True, help="Hard-link sealed segments (same file system).")
def backup_command(store: str, dest: str, *, link: bool) -> None:
    """Back up STORE into DEST while writers and a projector run: the log up to a frame
    boundary, verified, and the newest snapshot of the projections. Incremental when DEST
    holds an older backup of STORE: only new segments (and the last one) are copied.

    Example: lmg backup ./my-store /backups/my-store
    """
    from ._backup import backup

    run, snapshot = backup(store, dest, link=link)
    info = run.info
    click.echo(
        f"backup of LSN 0..{info.last_lsn} in {dest}: {run.copied} segment(s) copied "
        f"({run.copied_bytes} bytes), {run.reused} kept from the older backup; verified"
    )
    if snapshot is None:
        click.echo("no snapshot: a restore folds the projections from the whole log")
    else:
        click.echo(f"projections: the snapshot at LSN {snapshot.lsn}")


@click.command(name="restore", short_help="Create a store from a backup.")
@click.argument("dest", type=PathType(file_okay=False))
@click.argument("store", type=PathType(file_okay=False))
@click.option("--force", is_flag=True, help="Replace STORE if it is a store, not empty.")
def restore_command(dest: str, store: str, *, force: bool) -> None:
    """Create STORE from the backup in DEST: the log as backed up (verified), and the
    projections from the backup's snapshot. Refuses a non-empty STORE unless --force.

    Example: lmg restore /backups/my-store ./my-store
    """
    from ._backup import restore

    _say_replaced_leftovers(store)
    info, snapshot = restore(dest, store, force=force)
    where = "none: `lmg project` folds the log" if snapshot is None else f"LSN {snapshot.lsn}"
    click.echo(f"restored LSN 0..{info.last_lsn} into {store}; projections snapshot: {where}")


def _say_replaced_leftovers(store: str) -> None:
    """Name, in one line, the stores an interrupted `lmg restore --force` moved aside (before
    the swap was one step) and left with nothing naming them: the user's data, so kept."""
    leftovers = replaced_leftovers(store)
    if leftovers:
        names = ", ".join(str(p) for p in leftovers)
        click.echo(
            f"warning: {names}: what was {store} before an interrupted `lmg restore --force`, "
            "moved aside and kept as it was; check it, then delete it (or move it back)",
            err=True,
        )


_OTHER_COPIES = (
    "forks, backups and databases outside the store are other copies: erase them by path "
    "(lmg erase PATH ...)"
)


@click.command(name="erase", short_help="Erase chosen content from the log, tables and snapshots.")
@store_argument
@click.option("--session", "sessions", multiple=True, metavar="ID", help="A session (repeatable).")
@click.option("--node", "nodes", multiple=True, metavar="ID", help="A node (repeatable).")
@click.option("--actor", "actors", multiple=True, metavar="NAME", help="An actor (repeatable).")
@click.option(
    "--metadata",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Sessions and nodes whose metadata holds KEY=VALUE, e.g. user=42 (repeatable).",
)
@click.option("--before", metavar="TIME", help="Events the log recorded before TIME (ISO 8601).")
@click.option("--due", is_flag=True, help="What the store's retention policy makes due now.")
@click.option("--dry-run", is_flag=True, help="List what would be erased; change nothing.")
@click.option("--resume", is_flag=True, help="Finish an interrupted erasure, and nothing else.")
@click.option("--by", "by", metavar="NAME", help="Who erases (recorded in the log).")
@click.option(
    "--wait",
    "wait_s",
    default=60.0,
    show_default=True,
    help="Seconds to wait for a running projector to drop its database.",
)
def erase_command(
    store: str | None,
    *,
    sessions: tuple[str, ...],
    nodes: tuple[str, ...],
    actors: tuple[str, ...],
    pairs: tuple[str, ...],
    before: str | None,
    due: bool,
    dry_run: bool,
    resume: bool,
    by: str | None,
    wait_s: float,
) -> None:
    """Erase the content (texts, tool parameters and results, metadata values) of the chosen
    events from STORE's log, its projections database and its snapshots, for good. The
    structure stays: LSNs, ids, times, kinds, edges, token counts and latencies; each erased
    event is marked with the time, and the log records the erasure (never the content).
    Criteria add up: an event matching any of them is erased. The projections are folded
    again from the whole log on next use.

    Example: lmg erase ./my-store --metadata user=42 --dry-run
    """
    from ._erasure import erase, resume_erasure

    path = store or default_store()
    if resume:
        done = resume_erasure(path, wait_s=wait_s)
        click.echo("no erasure to resume" if done is None else f"{_RESUMED}: {_report(done)}")
        return
    selector = _selector(
        path, sessions=sessions, nodes=nodes, actors=actors, pairs=pairs, before=before, due=due
    )
    if dry_run:
        chosen = eventlog.select(path, selector)
        for item in chosen:
            click.echo(
                f"{item.lsn}\t{item.type}\t{item.node_id or '-'}\t{item.session_id or '-'}\t"
                f"{eventlog_iso(item.ts)}"
            )
        click.echo(f"dry run: {len(chosen)} event(s) would be erased; nothing was changed")
        return
    click.echo(_report(erase(path, selector, actor=by, wait_s=wait_s)))
    click.echo(_OTHER_COPIES)


def _selector(
    store: str,
    *,
    sessions: tuple[str, ...],
    nodes: tuple[str, ...],
    actors: tuple[str, ...],
    pairs: tuple[str, ...],
    before: str | None,
    due: bool,
) -> eventlog.Selector:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--metadata {pair!r}: expected KEY=VALUE")
        metadata[key] = value
    chosen_sessions = list(sessions)
    cutoff: int | str | None = before
    if due:
        if before is not None:
            raise click.UsageError("--due and --before are exclusive")
        policy = eventlog.retention(store)
        if policy is None:
            raise click.ClickException(f"{store} has no retention policy (lmg retention)")
        chosen = eventlog.due(store).selector()
        if chosen is not None:
            # kept as int ns, not passed on as text: a policy longer than since 1970 puts
            # the cutoff before 0, and "-795..." read as text was "not an ISO 8601 time"
            cutoff = chosen.before
            chosen_sessions += [str(s) for s in chosen.sessions]
        if cutoff is None and not chosen_sessions:
            raise click.ClickException("the retention policy makes nothing due now")
    selector = eventlog.Selector.of(
        sessions=chosen_sessions,
        nodes=nodes,
        actors=actors,
        metadata=metadata,
        before=int(cutoff) if isinstance(cutoff, str) and cutoff.isdigit() else cutoff,
    )
    if selector.is_empty():
        raise click.UsageError(
            "choose what to erase: --session, --node, --actor, --metadata, --before or --due"
        )
    return selector


_RESUMED = "completed the interrupted erasure"


def _report(erasure: eventlog.Erasure) -> str:
    """What `erasure` did; first, what the interrupted one it finished first had to do."""
    if erasure.resumed is None:
        if not erasure.ranges:
            return "nothing to erase: no event matches (or all were erased before)"
        return _erased(erasure)
    first = f"{_RESUMED}: {_erased(erasure.resumed)}"
    if not erasure.ranges:
        return f"{first}\nnothing else to erase: no other event matches"
    return f"{first}\nthen {_erased(erasure)}"


def _erased(erasure: eventlog.Erasure) -> str:
    record = erasure.record
    return (
        f"erased the content of {record.events} event(s) (LSN {record.first_lsn}.."
        f"{record.last_lsn}), {erasure.segments_rewritten} segment(s) rewritten, recorded "
        f"in the log at {eventlog_iso(record.ts)}; the projections database and the snapshots from "
        f"LSN {erasure.projections_from} were dropped (the next fold rebuilds them)"
    )


commands: list[click.Command] = [
    export,
    import_command,
    backup_command,
    restore_command,
    erase_command,
]
