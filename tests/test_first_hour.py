"""What a newcomer meets in the first hour, through the `lmg` CLI: a demo that can be rerun,
times a person can read, and `lmg replay` without a point."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner, Result

import eventlog
from eventlog._time import to_ns
from replay.cli import main

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def lmg(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def event_count(store: Path) -> int:
    with eventlog.open(store, readonly=True) as log:
        return log.stats().events


def test_demo_twice_records_the_demo_once(store: Path) -> None:
    first = lmg("demo", str(store))
    assert first.exit_code == 0, first.output
    events = event_count(store)
    again = lmg("demo", str(store))
    assert again.exit_code == 0, again.output
    assert f"{store} already holds the demo" in again.output
    assert event_count(store) == events
    agents = lmg(
        "sql",
        str(store),
        "SELECT name, handoffs_in FROM agent_stats ORDER BY name",
        "--format",
        "json",
    )
    assert [json.loads(line) for line in agents.output.splitlines()] == [
        {"name": "coder", "handoffs_in": 1},
        {"name": "triage", "handoffs_in": 0},
    ]


def test_demo_on_a_store_with_other_events_points_at_its_own_handoff(store: Path) -> None:
    with eventlog.open(store) as log:
        for _ in range(3):
            log.create_session()
    result = lmg("demo", str(store))
    assert result.exit_code == 0, result.output
    assert "already holds" not in result.output
    assert f"diff {store} --from 10 --to 11" in result.output  # LSN 8 of the demo, plus 3
    assert re.search(r"\[\s*11\]\s+handoff triage -> coder", result.output), result.output


def test_tail_and_stats_show_iso_times_beside_nanoseconds(store: Path) -> None:
    with eventlog.open(store) as log:
        s = log.create_session()
        log.add_prompt(s.id, "What is Rust?")
    lines = [json.loads(line) for line in lmg("tail", str(store)).output.splitlines()]
    assert [line["lsn"] for line in lines] == [0, 1]
    for line in lines:
        assert ISO.match(line["ts_iso"]), line
        assert to_ns(line["ts_iso"]) // 1000 == line["ts"] // 1000  # the same instant
    later = lmg("tail", str(store), "--from", lines[1]["ts_iso"])
    assert [json.loads(x)["lsn"] for x in later.output.splitlines()] == [1]
    stats = json.loads(lmg("stats", str(store), "--json").output)
    assert stats["first_ts"] == lines[0]["ts"] and stats["last_ts"] == lines[1]["ts"]
    assert stats["first_ts_iso"] == lines[0]["ts_iso"]
    assert stats["last_ts_iso"] == lines[1]["ts_iso"]
    assert f"{lines[0]['ts_iso']} to {lines[1]['ts_iso']}" in lmg("stats", str(store)).output


def test_replay_without_at_means_now(store: Path) -> None:
    with eventlog.open(store) as log:
        s = log.create_session()
        log.add_prompt(s.id, "What is Rust?")
    result = lmg(
        "replay", str(store), "--sql", "SELECT count(*) AS n FROM prompts", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"n": 1}
    assert "at LSN 1 " in result.stderr
