"""`lmg ingest STORE FILE...`: OTLP files (JSON lines or protobuf) into a store.

Registered by `replay.cli` with the other commands. Spans of every file are buffered per
trace and mapped once all files are read (a file's root spans may come before their
children), or earlier when `max_pending_spans` are buffered; each request is keyed by trace
and span id, so ingesting the same file twice adds nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import click

from ._spans import Malformed, Span, decode_json_line, decode_protobuf
from .cli import PathType, durability_option
from .errors import EventLogError
from .log import open as open_log
from .options import Durability, Options

if TYPE_CHECKING:
    from ._ingest import Ingester
    from ._logs import LogRecord

__all__ = ["ingest"]


class _Bar(Protocol):
    def update(self, n_steps: int) -> None: ...


_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
_PROTO_SUFFIXES = (".pb", ".proto", ".protobuf", ".otlp", ".bin")


def _format_of(path: Path, head: bytes) -> str:
    if path.suffix.lower() in _JSON_SUFFIXES:
        return "json"
    if path.suffix.lower() in _PROTO_SUFFIXES:
        return "proto"
    return "json" if head.lstrip()[:1] == b"{" else "proto"


def _json_lines(
    stream: IO[bytes], name: str, limit: int, advance: _Bar | None
) -> Iterator[Span | LogRecord | Malformed]:
    from ._logs import decode_logs_json_line, is_logs_json

    for n, line in enumerate(iter(lambda: stream.readline(limit + 1), b""), 1):
        if advance is not None:
            advance.update(len(line))
        if len(line) > limit and not line.endswith(b"\n"):
            raise EventLogError(f"{name}: line {n} is longer than --max-line-bytes ({limit})")
        if not line.strip():
            continue
        if is_logs_json(line):
            yield from decode_logs_json_line(line, f"{name}:{n}")
        else:
            yield from decode_json_line(line, f"{name}:{n}")


def _feed(ingester: Ingester, items: Iterable[Span | LogRecord | Malformed]) -> None:
    """Spans streamed to `ingester.add` (one call: the file is read as one batch), log
    records set aside on the way and given to `ingester.add_logs` after."""
    logs: list[LogRecord] = []

    def spans() -> Iterator[Span | Malformed]:
        for item in items:
            if isinstance(item, Span | Malformed):
                yield item
            else:
                logs.append(item)

    ingester.add(spans())
    ingester.add_logs(logs)


def _spans(
    path: Path, fmt: str, limit: int, bar: _Bar | None
) -> Iterator[Span | LogRecord | Malformed]:
    with path.open("rb") as stream:
        head = stream.read(64)
        stream.seek(0)
        if (fmt if fmt != "auto" else _format_of(path, head)) == "json":
            yield from _json_lines(stream, path.name, limit, bar)
            return
        data = stream.read()
    if bar is not None:
        bar.update(len(data))
    try:
        from ._logs import decode_logs_protobuf, is_logs_protobuf

        if is_logs_protobuf(data):
            yield from decode_logs_protobuf(data, path.name)
        else:
            yield from decode_protobuf(data, path.name)
    except ImportError:
        raise EventLogError(
            "reading OTLP protobuf needs the opentelemetry-proto package: "
            "pip install 'llm-memory-graph[otel]'"
        ) from None


@click.command(short_help="Ingest OpenTelemetry traces and logs from OTLP files.")
@click.argument("store", type=PathType(file_okay=False))
@click.argument("files", nargs=-1, required=True, type=PathType(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "json", "proto"]),
    default="auto",
    show_default=True,
    help="OTLP JSON lines or protobuf; auto goes by the file's suffix, then its first byte.",
)
@durability_option
@click.option(
    "--max-line-bytes",
    type=click.IntRange(min=1),
    default=Options().max_request_bytes,
    show_default=True,
    help="Refuse a longer JSON line (an export request) before parsing it.",
)
def ingest(
    store: str, files: tuple[str, ...], fmt: str, durability: str, max_line_bytes: int
) -> None:
    """Ingest OpenTelemetry traces and logs from OTLP files: every span is kept (the spans
    table), every log record too (nodes of kind otel.log), and GenAI spans, with the GenAI
    events their log records carry, become sessions, prompts, responses, agents, handoffs and
    tool calls.

    JSON files are what the OpenTelemetry Collector's file exporter writes: one export request
    (traces or logs) per line, ids in hex. Protobuf files hold one ExportTraceServiceRequest or
    ExportLogsServiceRequest, or the Collector's stream of them, each after its 4-byte
    big-endian length. Ingesting a file
    again adds nothing. Malformed spans are counted and skipped; see docs/ingest.md.

    Example: lmg ingest ./my-store traces.jsonl
    """
    paths = [Path(f) for f in files]
    total = sum(p.stat().st_size for p in paths)
    with open_log(store, durability=Durability(durability)) as log:
        from ._ingest import Ingester  # the mapping loads when a file is ingested

        ingester = Ingester(log, flush_on_root=False)
        bar = (
            click.progressbar(length=total, label="ingesting", file=sys.stderr, show_eta=True)
            if sys.stderr.isatty()
            else None
        )
        with bar or contextlib.nullcontext():
            for path in paths:
                _feed(ingester, _spans(path, fmt, max_line_bytes, bar))
        ingester.flush()
        s = ingester.stats
    click.echo(
        f"{s.received} spans and {s.logs} log records read from {len(paths)} file(s): "
        f"{s.spans} spans and {s.events} "
        f"events stored, {s.duplicates} requests already stored, {s.traces} traces"
    )
    if s.malformed or s.partial:
        click.echo(
            f"{s.malformed} malformed span(s) skipped, {s.partial} request(s) stored without "
            "their GenAI events",
            err=True,
        )
