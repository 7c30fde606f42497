"""`lmg ingest STORE FILE...` through the CLI, and time travel on what it and the exporter
wrote (`lmg replay --at` a time inside an ingested conversation)."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from pathlib import Path

import pytest

from tests.test_cli import assert_one_line_error, json_lines, lmg

from ._otlp import proto_stream
from ._traces import genai_trace

GOLDEN = Path(__file__).with_name("golden") / "otel" / "openai-v2.jsonl"


def test_ingest_a_missing_file_is_a_one_line_error_and_creates_nothing(tmp_path: Path) -> None:
    result = lmg("ingest", str(tmp_path / "s"), str(tmp_path / "nope.jsonl"))
    assert result.exit_code != 0
    assert "does not exist" in result.stderr
    assert not (tmp_path / "s").exists()


def test_ingest_skips_malformed_spans_and_keeps_the_rest(tmp_path: Path) -> None:
    good = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "GET /"}
    bad = {"traceId": "ab" * 16, "spanId": "", "name": "no id"}
    request = {"resourceSpans": [{"scopeSpans": [{"spans": [bad, good]}]}]}
    path = tmp_path / "mixed.jsonl"
    path.write_text(f"{json.dumps(request)}\nnot json at all\n")
    result = lmg("ingest", str(tmp_path / "s"), str(path))
    assert result.exit_code == 0, result.output
    assert "1 spans and 1 events stored" in result.stdout
    assert "2 malformed span(s) skipped" in result.stderr
    rows = lmg("sql", str(tmp_path / "s"), "SELECT name FROM spans", "--format", "json")
    assert json_lines(rows.stdout) == [{"name": "GET /"}]


def test_ingest_an_overlong_line_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    first = GOLDEN.read_text().splitlines()[0]
    limit = len(first) + 10
    path.write_text(first + "\n" + "x" * (limit + 1) + "\n")
    result = lmg("ingest", str(tmp_path / "s"), str(path), "--max-line-bytes", str(limit))
    assert_one_line_error(result, f"big.jsonl: line 2 is longer than --max-line-bytes ({limit})")
    stats = lmg("stats", str(tmp_path / "s"), "--json")
    assert json.loads(stats.stdout)["events"] == 0


def test_ingest_reads_several_files_in_any_order(tmp_path: Path) -> None:
    """A trace split across two files, children first: mapped once both are read."""
    pytest.importorskip("opentelemetry.proto")
    spans = genai_trace(random.Random(5), conversation="split")
    (tmp_path / "a.pb").write_bytes(proto_stream([spans[4:]]))
    (tmp_path / "b.pb").write_bytes(proto_stream([spans[:4]]))
    result = lmg("ingest", str(tmp_path / "s"), str(tmp_path / "a.pb"), str(tmp_path / "b.pb"))
    assert result.exit_code == 0, result.output
    query = "SELECT name, handoffs_in FROM agent_stats ORDER BY name"
    rows = lmg("sql", str(tmp_path / "s"), query, "--format", "json")
    assert json_lines(rows.stdout) == [
        {"name": "triage", "handoffs_in": 0},
        {"name": "writer", "handoffs_in": 1},
    ]


def test_replay_at_a_time_inside_an_exported_conversation(tmp_path: Path) -> None:
    """Two turns of one conversation, each its own trace, written as each ends: a view at a
    time between them holds the first turn only."""
    pytest.importorskip("opentelemetry.sdk")
    from eventlog import otel  # noqa: PLC0415 (needs the otel extra)
    from projections import MemoryGraph  # noqa: PLC0415

    store = tmp_path / "s"
    with MemoryGraph.open(store) as g, otel.instrument(g, batch=False):
        with otel.session("talk"), otel.agent("helper", input="first?") as run:
            run.output = "first."
        time.sleep(0.01)
        between = dt.datetime.now(dt.UTC).isoformat()
        time.sleep(0.01)
        with otel.session("talk"), otel.agent("helper", input="second?") as run:
            run.output = "second."
    query = "SELECT content FROM prompts ORDER BY occurred_at"
    now = lmg("replay", str(store), "--at", between, "--sql", query, "--format", "json")
    assert now.exit_code == 0, now.output
    assert json_lines(now.stdout) == [{"content": "first?"}]
    later = lmg("sql", str(store), query, "--format", "json")
    assert json_lines(later.stdout) == [{"content": "first?"}, {"content": "second?"}]
