"""The spans projection: `spans`, one row per OpenTelemetry span received (`span.recorded`).

Every span `eventlog.otel` receives is kept here, GenAI or not, so the HTTP and database
spans around an agent's calls can be queried beside the conversation they belong to. A span
recorded twice (two stores merged, a hand-written duplicate) keeps its first row.
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
    ["trace_id", "span_id"],
)

_INSERT = """
INSERT INTO spans
SELECT trace_id, span_id, parent_span_id, lsn, ts, occurred_at, actor, name, kind, start_ns,
       end_ns, (end_ns - start_ns) / 1e6, status, status_message, attributes, events, resource,
       scope
FROM stage_spans s
WHERE NOT EXISTS (SELECT 1 FROM spans t WHERE t.trace_id = s.trace_id AND t.span_id = s.span_id)
QUALIFY row_number() OVER (PARTITION BY trace_id, span_id ORDER BY lsn) = 1
ORDER BY lsn
"""


class Spans(SetsOnly):
    name = "spans"
    tables: tuple[Table, ...] = (SPANS,)
    views: tuple[str, ...] = ()

    def bulk(self, con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
        if "spans" in staged:
            con.execute(_INSERT)
