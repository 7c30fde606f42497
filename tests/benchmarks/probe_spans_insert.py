"""What the fold's insert into `spans` costs per batch as the table grows.

    python -m tests.benchmarks.probe_spans_insert                  # 1,000,000 spans, 5 rounds
    python -m tests.benchmarks.probe_spans_insert --spans 200000 --batch 512
    python -m tests.benchmarks.probe_spans_insert --early 300000   # long traces (below)

Every batch the service folds while traces stream in inserts its spans, leaving out those
the table holds. Schema 3 declared `PRIMARY KEY (trace_id, span_id)` and checked with
``NOT EXISTS`` on the two ids: random hex, so no zone map helps, and DuckDB reads the whole
table every batch. Schema 4 (`projections.spans`) has no index and joins on the start too;
rows go in close to the order spans started in, so the zone maps of `start_ns` leave only
the last blocks to read. Both sides run here on the same synthetic table (the real DDL and
statement of today, schema 3's as it was), with batches of `--batch` new spans of which a
tenth are copies of spans stored just before (a re-export). Stored spans start 1 ms apart.
A trace is written when its root ends, so a batch can hold a span that started long before:
``--early N`` makes one span in 64 of each batch start N ms (N stored spans) earlier than
its place, and schema 4's check then reads every block from there on. Prints per side the
median ms per batch and the size of the file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from projections import spans

_OLD_INSERT = """
INSERT INTO spans
SELECT trace_id, span_id, parent_span_id, lsn, ts, occurred_at, actor, name, kind, start_ns,
       end_ns, (end_ns - start_ns) / 1e6, status, status_message, attributes, events, resource,
       scope
FROM stage_spans s
WHERE NOT EXISTS (SELECT 1 FROM spans t WHERE t.trace_id = s.trace_id AND t.span_id = s.span_id)
QUALIFY row_number() OVER (PARTITION BY trace_id, span_id ORDER BY lsn) = 1
ORDER BY lsn
"""

_ROWS = """
SELECT md5((i // 8)::VARCHAR) AS trace_id, substr(md5((i * 7)::VARCHAR), 1, 16) AS span_id,
       NULL::VARCHAR AS parent_span_id, i AS lsn, 0::BIGINT AS ts,
       1700000000000000000 + i * 1000000 AS occurred_at, NULL::VARCHAR AS actor,
       'chat gpt-4o' AS name, 'client' AS kind,
       1700000000000000000 + (i - CASE WHEN i % 64 = 0 THEN $early ELSE 0 END) * 1000000
           AS start_ns,
       1700000000000000000 + i * 1000000 + 5000000 AS end_ns, 'ok' AS status,
       NULL::VARCHAR AS status_message, '{"gen_ai.operation.name": "chat"}'::JSON AS attributes,
       '[]'::JSON AS events, '{}'::JSON AS resource, 'openai' AS scope
FROM range(?, ?) t(i)
"""


def _side(
    path: Path, label: str, ddl: str, insert: str, *, n: int, batch: int, rounds: int, early: int
) -> None:
    con = duckdb.connect(str(path))
    con.execute(ddl)
    rows = _ROWS.replace("$early", str(early))
    con.execute(
        "INSERT INTO spans SELECT trace_id, span_id, parent_span_id, lsn, ts, occurred_at, actor,"
        " name, kind, start_ns, end_ns, 5.0, status, status_message, attributes, events,"
        f" resource, scope FROM ({rows})",
        [0, n],
    )
    con.execute("CHECKPOINT")
    times, base = [], n
    for _ in range(rounds):
        copies = batch // 10
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE stage_spans AS {rows}", [base - copies, base + batch]
        )
        con.execute("BEGIN")
        started = time.perf_counter()
        (inserted,) = con.execute(insert).fetchall()[0]
        times.append(time.perf_counter() - started)
        con.execute("COMMIT")
        assert inserted == batch, (label, inserted)
        base += batch
    con.execute("CHECKPOINT")
    con.close()
    size = os.path.getsize(path) / 1e6
    print(f"{label:<36}{statistics.median(times) * 1e3:>9.1f} ms a batch{size:>9.0f} MB file")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.probe_spans_insert")
    p.add_argument("--spans", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--early", type=int, default=0, help="ms before its place a span in 64 starts")
    args = p.parse_args(argv)
    old_ddl = spans.SPANS.ddl().replace(
        "\n)", ",\n  PRIMARY KEY (trace_id, span_id)\n)"
    )  # schema 3's
    root = Path(tempfile.mkdtemp(prefix="lmg-spans-"))
    try:
        print(
            f"{args.spans:,} spans stored, batches of {args.batch}, {args.rounds} rounds,"
            f" one span in 64 started {args.early:,} ms early"
        )
        sides = [
            ("schema 3: NOT EXISTS, primary key", old_ddl, _OLD_INSERT),
            ("schema 4: joined on the start", spans.SPANS.ddl(), spans._INSERT),
        ]
        for i, (label, ddl, insert) in enumerate(sides):
            path = root / f"{i}.duckdb"
            _side(
                path,
                label,
                ddl,
                insert,
                n=args.spans,
                batch=args.batch,
                rounds=args.rounds,
                early=args.early,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
