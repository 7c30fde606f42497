"""Attacks and a newcomer's mistakes, through the public surfaces: `lmg` run as a process, and
the Python API. Each test is one defect a pass over the hardened store found; it failed before
its fix. (The attacks of the hardening issue itself live beside the code they test.)"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eventlog
import eventlog._export
from eventlog import InvalidEvent, InvalidVariable
from eventlog import events as ev
from eventlog._demo import record_demo
from projections import MemoryGraph, Projector, SnapshotPolicy, SqlRefused
from tests._processes import run_with_full_disk

LMG = Path(sys.executable).with_name("lmg")


def run_lmg(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LMG), *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 1 (or 2, click's usage error), one `Error: ...` line, no traceback."""
    assert result.returncode in (1, 2), (result.returncode, result.stdout, result.stderr)
    line = result.stderr.splitlines()[-1]
    assert line.startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in line, (word, line)
    return line


def not_private(root: Path) -> list[str]:
    """Everything under `root` (itself included) that others than its owner may read."""
    paths = [root, *root.rglob("*")]
    return [f"{p} {stat.S_IMODE(p.stat().st_mode):o}" for p in paths if p.stat().st_mode & 0o077]


@pytest.fixture
def snapshotted(tmp_path: Path) -> Path:
    """A demo store whose projections have a snapshot (so a backup carries its chunks)."""
    store = tmp_path / "store"
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        record_demo(log)
    with Projector(store, snapshots=SnapshotPolicy(every_events=5)) as projector:
        projector.catch_up()
    return store


# -- files a backup and a restore create: private whatever the umask ---------------------------


@pytest.mark.slow
def test_backup_and_restore_of_snapshot_chunks_are_private_under_umask_022(
    snapshotted: Path, tmp_path: Path, umask_022: None
) -> None:
    """The chunk directories of a backup's snapshot were made by the umask (0755, files 0640),
    and so was a restore's `snapshots/chunks` (0755): a backup of a private store was not."""
    backup, restored = tmp_path / "backup", tmp_path / "restored"
    assert run_lmg("backup", str(snapshotted), str(backup)).returncode == 0
    assert list((backup / "snapshots" / "chunks").iterdir())
    assert not_private(backup) == []
    assert run_lmg("restore", str(backup), str(restored)).returncode == 0
    assert not_private(restored) == []


# -- template patterns: no catastrophic backtracking -------------------------------------------


def test_a_backtracking_pattern_renders_and_appends_in_linear_time(store: Path) -> None:
    """`(a+)+$` against 'aaaa...b' took 1.3 s at 24 characters and doubled with each more:
    one template made `render` (under the log's lock) and every prompt from it hang."""
    evil = "a" * 10_000 + "b"
    with eventlog.open(store) as log:
        t = log.create_template("t", "say {{x}}", [ev.VariableSpec(name="x", pattern="(a+)+$")])
        s = log.create_session()
        started = time.monotonic()
        with pytest.raises(InvalidVariable, match="variable x"):
            log.render(t, {"x": evil})
        with pytest.raises(InvalidVariable, match="variable x"):
            log.add_prompt(s.id, "", template_id=t, variables={"x": evil})
        assert time.monotonic() - started < 2.0
        assert log.render(t, {"x": "a" * 10_000}) == "say " + "a" * 10_000


def test_a_pattern_with_a_backreference_is_refused_in_one_line(store: Path) -> None:
    """RE2 has no backreferences: such a pattern is refused when stored, with no log line."""
    with eventlog.open(store) as log:
        spec = ev.VariableSpec(name="x", pattern=r"(a)\1")
        with pytest.raises(InvalidEvent, match="variable x: pattern is not a regular expr"):
            log.create_template("t", "{{x}}", [spec])


# -- the CLI's edges: closed pipes, empty paths, out-of-range numbers --------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["tail"],
        ["tail", "--follow"],
        ["stats"],
        ["sql", "SELECT * FROM range(100000)"],
        ["export"],
        ["diff", "--from", "1", "--to", "8"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
@pytest.mark.slow
def test_every_command_into_a_closed_pipe_exits_0_quietly(
    snapshotted: Path, args: list[str]
) -> None:
    """`lmg tail | head` exited 0, or 120 when Python's final flush met the closed pipe;
    `lmg stats | head` exited 1: under `set -o pipefail` the same pipeline passed or failed
    by command and by timing. Every command now ends the same way: status 0, nothing said."""
    command = [str(LMG), args[0], str(snapshotted), *args[1:]]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.read(1)  # some output came, then the reader goes away
    child.stdout.close()
    with child.stderr:
        stderr = child.stderr.read().decode()
    assert child.wait(timeout=60) == 0
    assert stderr == ""


_WIDE = "SELECT repeat('x', 99) FROM range(300000)"
"""30 MB of CSV: more than the limit that lets a replay write its view, a few MB."""


@pytest.mark.parametrize(
    ("args", "limit"),
    [
        (["tail"], 4096),  # the demo's events: 6 kB of JSON lines
        (["tail", "--follow"], 4096),
        (["stats"], 256),
        (["sql", "SELECT * FROM range(100000)"], 4096),
        (["export"], 4096),
        (["replay", "--at", "8", "--format", "csv", "--sql", _WIDE], 16 << 20),
    ],
    ids=lambda value: " ".join(value[:2]) if isinstance(value, list) else str(value),
)
@pytest.mark.slow
def test_every_command_onto_a_full_disk_says_standard_output_in_one_line(
    snapshotted: Path, args: list[str], limit: int
) -> None:
    """`lmg tail STORE > FILE` whose writes fail past `limit` bytes (a full disk) said
    `Error: [Errno 27] File too large`, then Python's flush at exit said it again, with a
    traceback's `Exception ignored` and status 120; `lmg sql` the same. Every command now
    ends as `lmg export` did: one line naming standard output, status 1."""
    command = [str(LMG), args[0], str(snapshotted), *args[1:]]
    assert_onto_a_full_disk(command, snapshotted.parent / "out", limit)


@pytest.mark.parametrize("option", ["--help", "-h", "--version"])
@pytest.mark.slow
def test_lmg_help_and_version_onto_a_full_disk_say_standard_output_in_one_line(
    tmp_path: Path, option: str
) -> None:
    """`lmg --help > FILE` and `lmg --version > FILE` on a full disk printed a traceback, then
    Python's `Exception ignored`, status 120: the group's own options print while its
    arguments are parsed, which only wrapped a command's run. They end as every command."""
    result = assert_onto_a_full_disk([str(LMG), option], tmp_path / "out", 8)
    assert result.stderr == "Error: standard output: File too large\n"


def assert_onto_a_full_disk(
    command: list[str], out: Path, limit: int
) -> subprocess.CompletedProcess[str]:
    """`command > out` whose writes fail past `limit` bytes ends in one line naming standard
    output, status 1, having written up to the limit."""
    shell = 'unset PYTHONUNBUFFERED; exec "$@" > "$0"'  # stdout buffered, as a user's is
    result = run_with_full_disk(["sh", "-c", shell, str(out), *command], limit)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result, "standard output: File too large")
    assert "Errno" not in result.stderr and "Exception" not in result.stderr, result.stderr
    assert out.stat().st_size == limit  # written up to the full disk
    return result


@pytest.mark.parametrize(
    "args",
    [
        ["backup", "{store}", ""],
        ["restore", "", "{tmp}/restored"],
        ["fork", "{store}", "--at", "1", ""],
        ["export", "{store}", "-o", ""],
        ["sql", "", "SELECT 1"],
        ["stats", ""],
        ["append", ""],
        ["ingest", "", "{tmp}"],
        ["serve", ""],
    ],
    ids=lambda args: args[0],
)
@pytest.mark.slow
def test_an_empty_path_is_refused_not_taken_for_the_current_directory(
    snapshotted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """`Path("")` is `.`: `lmg backup STORE "$UNSET"` wrote into the current directory's
    check, `lmg sql "" Q` and `lmg append ""` used ./lmg-data (append created it)."""
    monkeypatch.chdir(tmp_path)
    filled = [a.format(store=snapshotted, tmp=tmp_path) for a in args]
    before = sorted(tmp_path.iterdir())
    assert_one_line_error(run_lmg(*filled), "empty path")
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.slow
def test_huge_numbers_are_refused_in_one_line_and_nothing_is_written(snapshotted: Path) -> None:
    """`--max-line-bytes 10**23` was an OverflowError traceback; `--content-days 10**23` was
    stored in RETENTION.json (beyond 106,751 days, a day count reaches before any event time)."""
    huge = str(10**23)
    assert_one_line_error(run_lmg("append", str(snapshotted), "--max-line-bytes", huge), "range")
    for option in ("--content-days", "--session-days"):
        assert_one_line_error(run_lmg("retention", str(snapshotted), option, huge), "range")
    assert not (snapshotted / "RETENTION.json").exists()
    with pytest.raises(InvalidEvent, match="from 1 to 106751"):
        eventlog.RetentionPolicy(content_days=106_752)


def test_retention_of_a_missing_store_is_an_error(tmp_path: Path) -> None:
    """It printed 'no retention policy (everything is kept)' and exited 0 for a typo."""
    missing = tmp_path / "missing"
    assert_one_line_error(run_lmg("retention", str(missing)), f"no store at {missing}")
    with pytest.raises(eventlog.EventLogError, match="no store at"):
        eventlog.retention(missing)


@pytest.mark.slow
def test_replay_out_in_a_missing_directory_names_out_not_a_temporary_name(
    snapshotted: Path, tmp_path: Path
) -> None:
    """It said `/missing/.x.duckdb.building-4891: No such file or directory`."""
    out = tmp_path / "missing" / "x.duckdb"
    line = assert_one_line_error(
        run_lmg("replay", str(snapshotted), "--at", "1", "--out", str(out))
    )
    assert str(out) in line and "building" not in line


# -- the SQL sandbox: EXPLAIN ANALYZE runs what it explains ------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "EXPLAIN ANALYZE CHECKPOINT",
        "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1",
        "/* c */ explain (analyze) create temp table t as select 1",
        "-- c\nEXPLAIN ANALYZE CHECKPOINT",
    ],
)
@pytest.mark.slow
def test_explain_analyze_of_anything_but_a_select_is_refused(store: Path, query: str) -> None:
    """The statement check let every EXPLAIN through; EXPLAIN ANALYZE executes its statement,
    so a CHECKPOINT ran on an embedded graph's database and a temporary table was made."""
    with MemoryGraph.open(store) as graph:
        graph.create_session()
        with pytest.raises(SqlRefused, match="EXPLAIN of anything but a SELECT"):
            graph.rows(query)
        assert graph.rows("EXPLAIN ANALYZE SELECT count(*) FROM sessions")
        assert graph.rows("EXPLAIN (FORMAT JSON) WITH x AS (SELECT 1) SELECT * FROM x")
    refused = run_lmg("sql", str(store), "--", query)  # `--`: a query may start with "--"
    assert_one_line_error(refused, "EXPLAIN of anything but a SELECT")


# -- lmg import: a line is bounded before it is read ------------------------------------------


def test_import_bounds_a_line_before_reading_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lmg import` read a file's line whole before parsing it: a 600 MB file without a
    newline used 1.2 GB (`lmg append` was bounded; import was not). Here the bound is made
    small so the test stays small; the CLI's is `MAX_IMPORT_LINE_BYTES` (docs/lifecycle.md)."""
    monkeypatch.setattr(eventlog._export, "MAX_IMPORT_LINE_BYTES", 1000)
    export = tmp_path / "export.jsonl"
    first = b'{"lsn": 0, "type": "session.created", "id": "01a23bf3-8078-700f-b372-7b513d60490a"}'
    export.write_bytes(first + b"\n" + b"a" * 100_000)
    store = tmp_path / "imported"
    with export.open("rb") as f, pytest.raises(InvalidEvent, match="line 2: longer than 1000"):
        eventlog.import_events(store, f)
    assert not store.exists()


# -- a forged backup manifest ------------------------------------------------------------------


@pytest.mark.slow
def test_restore_refuses_a_manifest_naming_a_file_outside_the_backup(
    snapshotted: Path, tmp_path: Path, victim: Path
) -> None:
    """BACKUP.json named `../victim.txt` as a segment: restore opened and checksummed that file
    outside the backup (and said so: whether it matched told the caller about it)."""
    backup = tmp_path / "backup"
    assert run_lmg("backup", str(snapshotted), str(backup)).returncode == 0
    manifest = backup / "BACKUP.json"
    info = json.loads(manifest.read_text())
    info["segments"]["../victim.txt"] = info["segments"].pop("00000000000000000000.seg")
    manifest.write_text(json.dumps(info))
    restored = tmp_path / "restored"
    assert_one_line_error(run_lmg("restore", str(backup), str(restored)), "no segment file")
    assert not restored.exists()
    with pytest.raises(eventlog.CorruptionError, match="no segment file"):
        eventlog.backup_info(backup)
