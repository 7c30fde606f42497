"""The spans projection: `spans`, one row per OpenTelemetry span received (`span.recorded`).

Every span `eventlog.otel` receives is kept here, GenAI or not, so the HTTP and database
spans around an agent's calls can be queried beside the conversation they belong to. A span
recorded twice (two stores merged, a hand-written duplicate) keeps its first row.

A span is the same span when its trace id, span id *and start* are: a re-export carries all
three. The start is what makes the check cheap: spans go in by LSN, close to the order they
started in, so the zone maps of `start_ns` (which DuckDB fills from the staged rows' range as
it joins) skip every block of the table but the last few. On the ids alone the check read
the whole table: 65 to 90 ms a fold at a million spans, growing with the store. No primary
key for the same reason: DuckDB's ART index of the two text ids was six times the table's
own size on disk and served no read (a trace's spans are found by scanning either way).
"""

from __future__ import annotations

import duckdb

from ._fold import SetsOnly
from ._stage import Staged
from ._table import RECORDED, Column, Table

__all__ = ["SPANS", "Spans"]

SPANS = Table(
    "spans",
    [
        Column("trace_id", "VARCHAR", "NOT NULL"),
        Column("span_id", "VARCHAR", "NOT NULL"),
        Column("parent_span_id", "VARCHAR"),
        *RECORDED,
        Column("name", "VARCHAR", "NOT NULL"),
        Column("kind", "VARCHAR", "NOT NULL"),
        Column("start_ns", "BIGINT", "NOT NULL"),
        Column("end_ns", "BIGINT", "NOT NULL"),
        Column("duration_ms", "DOUBLE", "NOT NULL"),
        Column("status", "VARCHAR", "NOT NULL"),
        Column("status_message", "VARCHAR"),
        Column("attributes", "JSON"),
        Column("events", "JSON"),
        Column("resource", "JSON"),
        Column("scope", "VARCHAR"),
    ],
    ["trace_id", "span_id", "start_ns"],
    indexed=False,  # see the module's docstring
)

_INSERT = """
INSERT INTO spans
SELECT s.trace_id, s.span_id, s.parent_span_id, s.lsn, s.ts, s.occurred_at, s.actor, s.name,
       s.kind, s.start_ns, s.end_ns, (s.end_ns - s.start_ns) / 1e6, s.status, s.status_message,
       s.attributes, s.events, s.resource, s.scope
FROM stage_spans s
LEFT JOIN spans t
  ON t.start_ns = s.start_ns AND t.trace_id = s.trace_id AND t.span_id = s.span_id
WHERE t.trace_id IS NULL
QUALIFY row_number() OVER (PARTITION BY s.trace_id, s.span_id, s.start_ns ORDER BY s.lsn) = 1
ORDER BY s.lsn
"""
"""A left join, not ``NOT EXISTS``: DuckDB plans that as a mark join hashing the whole table;
this hashes the staged rows and scans the table through the range of their starts."""


class Spans(SetsOnly):
    name = "spans"
    tables: tuple[Table, ...] = (SPANS,)
    views: tuple[str, ...] = ()

    def bulk(self, con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
        if "spans" in staged:
            con.execute(_INSERT)
