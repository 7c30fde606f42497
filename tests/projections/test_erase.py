"""Erasure, end to end: the log, the projections database and the snapshots of a store.

The proof is a scan of every file under the store for the erased strings (random per run):
raw bytes, every zstd frame found anywhere in a file decompressed, and the segments' frame
bodies decoded by the log's own reader. Before the erasure the scan must find them (so the
scan can see), after it must not, also after a kill -9 mid-erasure and a resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard

import eventlog
import projections
import replay
from eventlog import _format, _segment
from eventlog import events as ev
from projections import MemoryGraph, SnapshotPolicy
from tests._processes import LMG, WAIT_S, Child, run_with_full_disk

pytestmark = pytest.mark.slow  # real processes: in `make test`, not in `make test-fast`

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode


class Fixture:
    """A store where user `user` (alice) said secret things among bob's ordinary ones."""

    def __init__(
        self, path: Path, turns: int = 30, segment_bytes: int = 8192, **options: Any
    ) -> None:
        self.path = path
        self.user = f"u-{secrets.token_hex(6)}"
        self.secrets: list[str] = []
        self.kept: list[str] = []
        with eventlog.open(path, segment_bytes=segment_bytes, **options) as log:
            agent = log.add_agent("helper", "answers")
            alice = log.create_session(metadata={"user": self.user}, tags=["vip"])
            bob = log.create_session(metadata={"user": "bob"})
            for i in range(turns):
                p = log.add_prompt(alice.id, self._secret(f"alice asks {i}"))
                r = log.add_response(
                    p,
                    self._secret("alice hears"),
                    eventlog.TokenUsage(11, 22),
                    latency_ms=3.5,
                    metadata={"note": self._secret("note")},
                )
                t = log.add_tool_invocation(r, "search", {"q": self._secret("query")})
                log.complete_tool_invocation(t, result=[self._secret("result")])
                log.transfer_to_agent(r, agent, reason=self._secret("why"))
                q = log.add_prompt(bob.id, self._kept(f"bob asks {i}"))
                log.add_response(q, self._kept("bob hears"), eventlog.TokenUsage(1, 2))
            doc = log.add_node("document", self._secret("doc"), session_id=alice.id)
            log.add_edge(doc, p, "REFERENCES", {"why": self._secret("edge")})
            self.alice, self.bob = alice.id, bob.id
            self.prompt = p
        self.before = self.events()

    def _secret(self, label: str) -> str:
        word = f"zq{secrets.token_hex(10)}"
        self.secrets.append(word)
        return f"{label} {word}"

    def _kept(self, label: str) -> str:
        word = f"kb{secrets.token_hex(10)}"
        self.kept.append(word)
        return f"{label} {word}"

    def events(self) -> list[ev.EventBase]:
        with eventlog.open(self.path, readonly=True) as log:
            return [r.event for r in log.read()]

    def project(self) -> None:
        projections.rebuild(self.path, snapshots=SnapshotPolicy(every_events=60, keep=8))


def scan(store: Path, words: list[str]) -> list[str]:
    """Where any of `words` occurs under `store`: file bytes, zstd frames, decoded bodies."""
    needles = [w.encode() for w in words]
    found: list[str] = []
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blobs = [data, *_zstd_frames(data)]
        if path.suffix == ".seg":
            blobs += _frame_bodies(path)
        found += [f"{path.relative_to(store)}" for b in blobs for n in needles if n in b]
    return sorted(set(found))


def _zstd_frames(data: bytes) -> list[bytes]:
    out = []
    at = data.find(_ZSTD_MAGIC)
    while at != -1:
        with contextlib.suppress(zstandard.ZstdError):  # not a frame after all
            out.append(zstandard.ZstdDecompressor().decompressobj().decompress(data[at:]))
        at = data.find(_ZSTD_MAGIC, at + 1)
    return out


def _frame_bodies(path: Path) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        first = _segment.read_segment_header(fd)
        size = os.fstat(fd).st_size
        frames = _segment.iter_frames(fd, _format.SEGMENT_HEADER, size, first)
        return [_format.unpack_body(f.head, f.body) for f in frames]
    finally:
        os.close(fd)


def lmg(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(LMG), *args], capture_output=True, text=True, timeout=WAIT_S, check=False
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _digest(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file() and not p.name.endswith((".lock", ".gate", ".turnstile", ".waiting"))
    }


def assert_erased_as_expected(fx: Fixture, erased: set[int]) -> None:
    """Erased events keep their structure and carry the marker; every other event is
    byte-identical to what it was."""
    after = fx.events()
    assert isinstance(after[-1], ev.ErasureApplied)
    assert after[-1].events == len(erased)
    for lsn, (old, new) in enumerate(zip(fx.before, after, strict=False)):
        if lsn not in erased:
            assert _ENCODE(new) == _ENCODE(old), lsn
            continue
        assert new.erased_at is not None and new.ts == old.ts and type(new) is type(old)
        assert _ENCODE(new) == _ENCODE(ev.erase_content(old, new.erased_at))
        if isinstance(old, ev.ResponseAdded):
            assert isinstance(new, ev.ResponseAdded)
            assert (new.id, new.prompt_id, new.usage, new.latency_ms) == (
                old.id,
                old.prompt_id,
                old.usage,
                old.latency_ms,
            )
            assert new.content == ev.erased_marker(new.erased_at)


def _alice_lsns(fx: Fixture) -> set[int]:
    return {
        lsn
        for lsn, e in enumerate(fx.before)
        if eventlog._resolve.session_of(e) == fx.alice  # every alice event names her session
    }


# -- the proof --------------------------------------------------------------------------------


def test_erase_leaves_no_erased_text_in_any_file(tmp_path: Path) -> None:
    fx = Fixture(tmp_path / "store")
    fx.project()
    before = scan(fx.path, fx.secrets)
    assert any(p.endswith(".seg") for p in before) and any("snapshots" in p for p in before)

    done = lmg("erase", str(fx.path), "--metadata", f"user={fx.user}", "--by", "dpo")
    assert "erased the content of" in done.stdout and "other copies" in done.stdout
    assert not (fx.path / "projections.duckdb").exists()
    fx.project()  # the projections and snapshots, folded again from the erased log

    assert scan(fx.path, fx.secrets) == []
    assert scan(fx.path, fx.kept)  # bob's words are all still there
    assert lmg("verify", str(fx.path)).returncode == 0
    assert_erased_as_expected(fx, _alice_lsns(fx))
    record = fx.events()[-1]
    assert isinstance(record, ev.ErasureApplied)
    assert (record.actor, record.metadata_keys) == ("dpo", ["user"])
    assert fx.user.encode() not in _ENCODE(record)  # the value selected by is content


def test_reads_replay_and_diff_show_the_marker(tmp_path: Path) -> None:
    fx = Fixture(tmp_path / "store", turns=3)
    projections.erase(fx.path, eventlog.Selector.of(sessions=[fx.alice]))
    with MemoryGraph.open(fx.path) as g:
        prompt = g.get_node(fx.prompt)
        assert isinstance(prompt, projections.Prompt)
        assert prompt.content.startswith("[erased ")
        query = "SELECT content FROM prompts WHERE session_id = ? LIMIT 1"
        ((bob_text,),) = g.sql(query, [fx.bob]).fetchall()
        assert bob_text.startswith("bob asks")
    lsn = next(i for i, e in enumerate(fx.before) if getattr(e, "id", None) == fx.prompt)
    with replay.at(fx.path, lsn=lsn) as past:
        ((content,),) = past.sql("SELECT content FROM prompts WHERE id = ?", [fx.prompt]).fetchall()
        assert content.startswith("[erased ")
    shown = lmg("diff", str(fx.path), "--from", str(lsn - 1), "--to", str(lsn)).stdout
    assert "[erased " in shown and "erased_at=" in shown


def test_dry_run_lists_and_changes_nothing(tmp_path: Path) -> None:
    fx = Fixture(tmp_path / "store", turns=2)
    fx.project()
    files = _digest(fx.path)
    done = lmg("erase", str(fx.path), "--session", str(fx.alice), "--dry-run")
    listed = [line.split("\t")[0] for line in done.stdout.splitlines()[:-1]]
    assert sorted(map(int, listed)) == sorted(_alice_lsns(fx))
    assert "nothing was changed" in done.stdout and fx.secrets[0] not in done.stdout
    assert _digest(fx.path) == files


@pytest.mark.parametrize("flag", ["--session", "--node"])
def test_unknown_ids_are_one_line_errors(tmp_path: Path, flag: str) -> None:
    fx = Fixture(tmp_path / "store", turns=1)
    files = _digest(fx.path)
    done = lmg("erase", str(fx.path), flag, str(uuid.uuid4()), check=False)
    assert done.returncode != 0 and "no such node in the log" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert _digest(fx.path) == files
    with pytest.raises(eventlog.UnknownNode):
        eventlog.erase(fx.path, eventlog.Selector.of(sessions=[fx.prompt]))  # not a session


def test_erase_of_a_damaged_store_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """A flipped byte in a frame the erasure would scan (and rewrite): a one-line error naming
    the segment, before any journal or rewrite; the damage is reported, never repaired."""
    fx = Fixture(tmp_path / "store", turns=8, segment_bytes=4096)
    segments = sorted(fx.path.glob("*.seg"))
    assert len(segments) > 1  # the damage is in a sealed segment: opening the log reads it not
    segment = segments[0]
    original = segment.read_bytes()
    data = bytearray(original)
    data[40] ^= 0xFF  # inside the first frame's header; intact frames follow it
    segment.write_bytes(bytes(data))
    files = _digest(fx.path)
    done = lmg("erase", str(fx.path), "--session", str(fx.alice), check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "damaged frame" in done.stderr and segment.name in done.stderr
    assert _digest(fx.path) == files and not (fx.path / "ERASURE.json").exists()
    segment.write_bytes(original)
    assert eventlog.verify(fx.path) == []  # the same store, the byte put back: whole
    lmg("erase", str(fx.path), "--session", str(fx.alice))
    assert scan(fx.path, fx.secrets) == []


def test_erase_by_node_actor_and_age(tmp_path: Path) -> None:
    fx = Fixture(tmp_path / "store", turns=2)
    with eventlog.open(fx.path) as log:
        cut = time.time_ns()
        late = log.create_session(actor="carol", metadata={"x": "carol said zqcarol"})
    chosen = eventlog.select(fx.path, eventlog.Selector.of(before=cut))
    assert [s.lsn for s in chosen] == list(range(len(fx.before)))
    chosen = eventlog.select(fx.path, eventlog.Selector.of(actors=["carol"]))
    assert [s.node_id for s in chosen] == [late.id]
    erasure = eventlog.erase(fx.path, eventlog.Selector.of(nodes=[fx.prompt]))
    assert erasure.record.events == 1 and erasure.phase == "projections"
    again = eventlog.erase(fx.path, eventlog.Selector.of(nodes=[fx.prompt]))
    assert again.record.events == 0  # erased before: nothing left to erase


def test_a_reader_opened_before_the_erasure_reads_the_rewritten_segment(tmp_path: Path) -> None:
    fx = Fixture(tmp_path / "store", turns=40, segment_bytes=32 * 1024, index_interval_bytes=256)
    with eventlog.open(fx.path, readonly=True) as log:
        middle = 40  # inside the first (sealed) segment, many frames past its first
        assert log._store.summary(0).next_lsn > middle and log._store.summary(0).seek_lsn(middle)
        assert next(log.read(middle)).lsn == middle  # its summary (offsets) is cached now
        projections.erase(fx.path, eventlog.Selector.of(sessions=[fx.alice]))
        records = list(log.read(middle))  # seeks with the old offsets: must notice and re-seek
    assert [r.lsn for r in records] == list(range(middle, len(fx.before) + 1))


def test_a_following_projector_drops_its_database_at_the_erasure(tmp_path: Path) -> None:
    fx = Fixture(tmp_path / "store", turns=5)
    stop = threading.Event()
    with projections.Projector(fx.path, snapshots=SnapshotPolicy(every_events=20)) as projector:
        follower = threading.Thread(target=projector.follow, args=(stop,), kwargs={"poll_s": 0.1})
        follower.start()
        try:
            projections.erase(fx.path, eventlog.Selector.of(sessions=[fx.alice]), wait_s=30)
            with eventlog.open(fx.path) as log:
                log.add_prompt(fx.bob, "after the erasure")
                end = log.next_lsn() - 1
            deadline = time.monotonic() + WAIT_S
            while projector.checkpoint < end and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            follower.join()
    assert projector.checkpoint == end
    assert scan(fx.path, fx.secrets) == []


def test_an_embedded_graph_drops_its_database_at_its_next_hold(tmp_path: Path) -> None:
    fx = Fixture(tmp_path / "store", turns=2)
    errors: list[BaseException] = []

    def erase() -> None:
        try:
            projections.erase(fx.path, eventlog.Selector.of(sessions=[fx.alice]), wait_s=30)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    with MemoryGraph.open(fx.path) as g:
        prompt = g.get_node(fx.prompt)
        assert isinstance(prompt, projections.Prompt) and fx.secrets[-8] in prompt.content
        eraser = threading.Thread(target=erase)
        eraser.start()
        deadline = time.monotonic() + WAIT_S
        while eraser.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
            prompt = g.get_node(fx.prompt)  # a read after the graph let go holds it anew
        eraser.join()
        prompt = g.get_node(fx.prompt)
        assert isinstance(prompt, projections.Prompt) and prompt.content.startswith("[erased ")
    assert not errors and eventlog.pending_erasure(fx.path) is None


def _graph_text(g: MemoryGraph) -> str:
    """Every row of every table the graph answers SQL from, as one text."""
    return repr([g.rows(f"SELECT * FROM {name}") for name in projections.TABLE_NAMES])


def test_an_in_memory_graph_folds_again_after_an_erasure(tmp_path: Path) -> None:
    """An in-memory graph is a live cache of the store, not a copy: an erasure of events it
    has folded and read reaches its next read, whether `projections.erase` ran in this
    process or ``lmg erase`` in another, and what was not erased reads as before."""
    fx = Fixture(tmp_path / "store", turns=3)
    with MemoryGraph.open(fx.path, database=":memory:") as g:
        prompt = g.get_node(fx.prompt)  # folded, read, and cached
        assert isinstance(prompt, projections.Prompt) and fx.secrets[-8] in prompt.content
        assert all(word in _graph_text(g) for word in fx.secrets + fx.kept)

        projections.erase(fx.path, eventlog.Selector.of(sessions=[fx.alice]))
        prompt = g.get_node(fx.prompt)
        assert isinstance(prompt, projections.Prompt) and prompt.content.startswith("[erased ")
        text = _graph_text(g)
        assert [word for word in fx.secrets if word in text] == []
        assert all(word in text for word in fx.kept)

        ((bob_prompt, said),) = g.rows(
            "SELECT id, content FROM prompts WHERE session_id = ? ORDER BY lsn LIMIT 1", [fx.bob]
        )
        assert g.context_window(fx.bob, 100)[0].prompt.content == said  # cached too
        lmg("erase", str(fx.path), "--node", str(bob_prompt))  # another process
        assert g.context_window(fx.bob, 100)[0].prompt.content.startswith("[erased ")
        gone = said.split()[-1]
        text = _graph_text(g)
        assert gone not in text and all(w in text for w in fx.kept if w != gone)
        node = g.get_node(bob_prompt)
        assert isinstance(node, projections.Prompt) and node.content.startswith("[erased ")

        later = g.add_prompt(fx.bob, "after the erasures")  # the graph goes on as before
        assert g.get_session_nodes(fx.bob)[-1].id == later


def test_retention_longer_than_the_epoch_is_due_nothing_not_an_error(tmp_path: Path) -> None:
    """A policy of more days than since 1970 (up to the 106,751 `lmg retention` takes) puts
    the cutoff at negative ns: `lmg erase --due` passed it on as text, read it as an ISO time
    and failed ("before '-795...' is not an ISO 8601 time") instead of erasing nothing."""
    fx = Fixture(tmp_path / "store", turns=1)
    for days in ("30000", "106751"):
        lmg("retention", str(fx.path), "--content-days", days)
        for dry in ((), ("--dry-run",)):
            done = lmg("erase", str(fx.path), "--due", *dry, check=False)
            assert done.returncode == 0, done.stderr
            assert "0 event(s)" in done.stdout or "nothing to erase" in done.stdout


def test_retention_due_is_applied_by_erase(tmp_path: Path) -> None:
    fx = Fixture(tmp_path / "source", turns=2)
    old = time.time_ns() - 40 * 86_400 * 1_000_000_000
    out = io.BytesIO()
    eventlog.export_events(fx.path, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    for line in lines:  # alice's history happened 40 days ago, bob's today
        line["ts"] = old + line["lsn"] if line["lsn"] < 12 else line["ts"]
    store = tmp_path / "store"
    eventlog.import_events(store, io.BytesIO(b"\n".join(json.dumps(x).encode() for x in lines)))
    eventlog.set_retention(store, eventlog.RetentionPolicy(content_days=30))
    done = lmg("erase", str(store), "--due")
    assert "erased the content of 12 event(s) (LSN 0..11)" in done.stdout
    assert "nothing to erase" in lmg("erase", str(store), "--due").stdout  # done already


def test_a_backup_is_erased_by_its_path_and_still_restores(tmp_path: Path) -> None:
    fx = Fixture(tmp_path / "store", turns=3)
    fx.project()
    backup = tmp_path / "backup"
    lmg("backup", str(fx.path), str(backup))
    done = lmg("erase", str(backup), "--session", str(fx.alice))
    assert "erased the content of" in done.stdout
    restored = tmp_path / "restored"
    lmg("restore", str(backup), str(restored))  # its manifest says what it holds now
    assert scan(backup, fx.secrets) == [] and scan(restored, fx.secrets) == []
    assert scan(fx.path, fx.secrets)  # the store backed up is another store


# -- crashes, full disks and concurrent appends -----------------------------------------------


@pytest.mark.parametrize("finish", ["--resume", "again"])
def test_erase_onto_a_full_disk_loses_nothing_and_finishes_with_room(
    tmp_path: Path, finish: str
) -> None:
    """`lmg erase` whose writes fail past 8 KiB: the small segments are rewritten, the first
    larger one is not. A one-line error saying how to finish; the store verifies with no
    stray file, every event not selected is what it was, a selected one is whole or erased;
    with room, `--resume` (or the same erasure again) finishes it."""
    fx = Fixture(tmp_path / "store", turns=6, segment_bytes=4096)
    with eventlog.open(fx.path, segment_bytes=64 * 1024) as log:  # then one big segment
        for i in range(120):
            log.add_prompt(fx.alice, fx._secret(f"alice again {i}"))
            log.add_prompt(fx.bob, fx._kept(f"bob again {i}"))
    fx.before = fx.events()
    fx.project()
    sizes = sorted(p.stat().st_size for p in fx.path.glob("*.seg"))
    assert sizes[0] < 8192 < sizes[-1]
    erase = [str(LMG), "erase", str(fx.path), "--metadata", f"user={fx.user}"]
    full = run_with_full_disk(erase, 8192)
    assert full.returncode == 1, (full.stdout, full.stderr)
    assert len(full.stderr.splitlines()) == 1 and "Traceback" not in full.stderr, full.stderr
    line = full.stderr.strip()
    assert line.startswith("Error: ") and "File too large" in line and "--resume" in line, line
    assert "Errno" not in line and ".tmp" not in line, line
    checked = lmg("verify", str(fx.path))  # (it warns of index files the disk had no room for)
    assert "temporary file" not in checked.stdout, checked.stdout  # no half copy left
    pending = eventlog.pending_erasure(fx.path)
    assert pending is not None and pending.phase == "log"
    alice = _alice_lsns(fx)
    after = fx.events()
    assert len(after) == len(fx.before)  # no record yet
    erased = {lsn for lsn, e in enumerate(after) if e.erased_at is not None}
    assert erased and erased < alice  # some segments rewritten, not all
    for lsn, (old, new) in enumerate(zip(fx.before, after, strict=True)):
        if lsn not in erased:
            assert _ENCODE(new) == _ENCODE(old), lsn
    again = ["--resume"] if finish == "--resume" else ["--metadata", f"user={fx.user}"]
    lmg("erase", str(fx.path), *again)  # (again: it finishes this one, finds nothing new)
    assert eventlog.pending_erasure(fx.path) is None
    assert lmg("verify", str(fx.path)).returncode == 0
    fx.project()
    assert scan(fx.path, fx.secrets) == []
    assert scan(fx.path, fx.kept)
    assert_erased_as_expected(fx, alice)


def test_a_hand_edited_journal_is_resumed_whole(tmp_path: Path) -> None:
    """A journal edited by hand (its ranges out of order, no ``projections_from``):
    ``--resume`` erased the first range it met and skipped those before it, kept the
    snapshots that held the content, and reported every event erased. It now erases every
    LSN the journal names and drops the snapshots from the first."""
    fx = Fixture(tmp_path / "store")
    fx.project()
    alice = sorted(_alice_lsns(fx))
    first_half = [lsn for lsn in alice if lsn < alice[len(alice) // 2]]
    ranges = [(a, a) for a in alice if a not in first_half] + [(a, a) for a in first_half]
    record = ev.ErasureApplied(
        erasure_id=uuid.uuid4(),
        marked_at=time.time_ns(),
        events=len(alice),
        first_lsn=alice[0],
        last_lsn=alice[-1],
        metadata_keys=["user"],
        actor="dpo",
    )
    journal = json.loads(msgspec.json.encode(eventlog.Erasure(record=record, ranges=ranges)))
    del journal["projections_from"]
    (fx.path / eventlog.JOURNAL_FILE).write_text(json.dumps(journal))
    done = lmg("erase", str(fx.path), "--resume")
    assert f"snapshots from LSN {alice[0]} were dropped" in done.stdout, done.stdout
    assert eventlog.pending_erasure(fx.path) is None
    fx.project()
    assert scan(fx.path, fx.secrets) == []
    assert scan(fx.path, fx.kept)
    assert_erased_as_expected(fx, set(alice))


ERASE_CHILD = [sys.executable, "-m", "tests.projections._erase_child"]


@pytest.mark.parametrize("finish", ["again", "--resume", "another"])
def test_erase_run_again_after_a_kill_says_it_completed_the_interrupted_erasure(
    tmp_path: Path, finish: str
) -> None:
    """`lmg erase` SIGKILLed after rewriting two of the segments it erases, then run again
    (or with --resume, or to erase another session). Run again, it finished the erasure but
    said "nothing to erase" (or only what it erased then), and counted only the segments
    its own run rewrote. It says it completed the interrupted erasure, with what an erasure
    never interrupted says it did, then what else it erased."""
    fx = Fixture(tmp_path / "store", turns=30, segment_bytes=4096)
    reference = tmp_path / "reference"
    shutil.copytree(fx.path, reference)
    chosen = ["--metadata", f"user={fx.user}"]
    whole = lmg("erase", str(reference), *chosen).stdout
    found = re.search(r"erased the content of .*, (\d+) segment\(s\) rewritten", whole)
    assert found is not None and int(found.group(1)) > 2, whole
    child = Child([*ERASE_CHILD, "2", "erase", str(fx.path), *chosen], tmp_path, "eraser")
    assert child.wait() == -signal.SIGKILL, child.stderr()
    pending = eventlog.pending_erasure(fx.path)
    assert pending is not None and pending.phase == "log"
    rerun = {"again": chosen, "--resume": ["--resume"], "another": ["--session", str(fx.bob)]}
    out = lmg("erase", str(fx.path), *rerun[finish]).stdout
    assert out.startswith(f"completed the interrupted erasure: {found.group(0)}"), out
    assert "nothing to erase" not in out
    if finish == "again":
        assert "\nnothing else to erase: no other event matches\n" in out, out
    if finish == "another":
        assert "\nthen erased the content of " in out, out
    assert eventlog.pending_erasure(fx.path) is None
    fx.project()
    assert scan(fx.path, fx.secrets) == []
    assert lmg("erase", str(fx.path), *chosen).stdout.startswith("nothing to erase")


_APPENDER = """
import json, sys, eventlog
with eventlog.open(sys.argv[1]) as log:
    session = log.create_session()
    while True:
        p = log.add_prompt(session.id, "appended during the erasure")
        print(json.dumps({"id": str(p)}), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kill_9_mid_erasure_then_resume(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    print(f"seed {seed}")
    fx = Fixture(tmp_path / "store", turns=150, segment_bytes=4096)
    fx.project()
    appender = Child([sys.executable, "-c", _APPENDER, str(fx.path)], tmp_path, "appender")
    appender.wait_for(appender.said_something, "a first append")
    args = [str(LMG), "erase", str(fx.path), "--metadata", f"user={fx.user}"]
    eraser = Child(args, tmp_path, "eraser")
    journal = fx.path / eventlog.JOURNAL_FILE
    eraser.wait_for(journal.exists, "the erasure's journal")
    time.sleep(rng.uniform(0.0, 2.5))  # rewriting its segments takes about 3 s here
    eraser.signal(signal.SIGKILL)
    eraser.wait()
    print("journal left by the kill:", eventlog.pending_erasure(fx.path) is not None)
    assert lmg("verify", str(fx.path)).returncode == 0  # every segment wholly old or new
    finish = ["--resume"] if seed % 2 else ["--metadata", f"user={fx.user}"]  # both finish it
    again = lmg("erase", str(fx.path), *finish, check=False)
    assert again.returncode == 0, again.stderr
    assert eventlog.pending_erasure(fx.path) is None
    appender.signal(signal.SIGKILL)
    appender.wait()
    fx.project()
    assert scan(fx.path, fx.secrets) == []
    assert lmg("verify", str(fx.path)).returncode == 0
    acknowledged = {uuid.UUID(line["id"]) for line in appender.lines()}
    stored = {getattr(e, "id", None) for e in fx.events()}
    assert acknowledged <= stored  # no acknowledged append lost
    after = fx.events()
    alice = _alice_lsns(fx)
    for lsn, old in enumerate(fx.before):
        new: Any = after[lsn]
        assert (new.erased_at is not None) == (lsn in alice), lsn
        if lsn not in alice:
            assert _ENCODE(new) == _ENCODE(old)


# -- spans ------------------------------------------------------------------------------------


def _secret_trace(seed: int, conversation: str, word: str) -> list[Any]:
    """A GenAI trace of `conversation` whose prompt text (in the chat spans' attributes,
    which become the spans' `span.recorded` and the session's prompts) holds `word`."""
    from tests.eventlog._traces import genai_trace  # noqa: PLC0415 (a helper of another package)

    def hide(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.replace("Weather in", f"Weather {word} in")

    return [
        msgspec.structs.replace(s, attributes={k: hide(v) for k, v in s.attributes.items()})
        for s in genai_trace(random.Random(seed), conversation=conversation)
    ]


def test_erasing_an_ingested_session_erases_its_traces_spans(tmp_path: Path) -> None:
    """Spans name traces, not sessions, yet their attributes hold the prompt: erasing the
    session must blank the spans of every trace it came from, and no other span."""
    pytest.importorskip("opentelemetry.proto")
    from tests.eventlog._otlp import proto_stream  # noqa: PLC0415

    secret, kept = f"zq{secrets.token_hex(10)}", f"kb{secrets.token_hex(10)}"
    store = tmp_path / "store"
    spans = [
        _secret_trace(1, "secret-chat", secret),
        _secret_trace(2, "secret-chat", secret),  # a second trace of the same conversation
        _secret_trace(3, "other-chat", kept),
    ]
    (tmp_path / "spans.pb").write_bytes(proto_stream(spans))
    lmg("ingest", str(store), str(tmp_path / "spans.pb"))
    with eventlog.open(store, readonly=True) as log:
        events = [r.event for r in log.read()]
    (session,) = [
        e.id
        for e in events
        if isinstance(e, ev.SessionCreated) and e.metadata.get("conversation_id") == "secret-chat"
    ]
    lmg("project", str(store))
    assert any(p.endswith(".seg") for p in scan(store, [secret]))

    lmg("erase", str(store), "--session", str(session))
    lmg("project", str(store))

    assert scan(store, [secret]) == []
    assert scan(store, [kept])  # the other conversation's spans and prompts stay
    with eventlog.open(store, readonly=True) as log:
        after = [r.event for r in log.read()]
    erased = {e.trace_id for e in after if isinstance(e, ev.SpanRecorded) and e.erased_at}
    assert erased == {spans[0][0].trace_id, spans[1][0].trace_id}
