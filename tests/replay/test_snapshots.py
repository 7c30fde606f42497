"""Snapshots: taken where the policy says, used by replay, never trusted over the log.

One store is built per module: a mixed workload folded by a real `Projector` with a small
policy (a batch of `BATCH` events, a snapshot every `EVERY`), so its snapshots sit at LSNs the
policy predicts. Tests that damage or prune work on copies of it. Views are compared, table
by table over `projections.TABLE_NAMES`, with a view of the same point folded from zero
(``snapshots=False``): a snapshot may only make a replay cheaper, never different.

Damage is done to the files themselves (a chunk flipped, deleted or cut short; a manifest
flipped or renamed; a manifest of another schema, or naming another checkpoint's database),
each to the oldest snapshot and to a middle one: the replay must warn (`SnapshotSkipped`) and
start from the next older usable snapshot, or from zero.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import random
import re
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import google_crc32c
import pytest

import eventlog
import projections
import replay
from projections import SCHEMA_VERSION, TABLE_NAMES, SnapshotPolicy, SnapshotSkipped

from ..projections._projector_child import Workload, populate

BATCH = 150  # the projector's batch: it checks the policy after each commit
EVERY = 300  # events between snapshots: every other batch
EVENTS = 1200  # at least this many events in the store

Rows = dict[str, list[tuple[Any, ...]]]


# -- the store, built once -----------------------------------------------------------------------


@dataclass
class Base:
    path: Path
    end: int  # the last LSN
    lsns: list[int]  # the projector's snapshots
    _references: dict[int, Rows] = field(default_factory=dict)

    def reference(self, lsn: int) -> Rows:
        """The tables at `lsn` folded from zero, ignoring every snapshot."""
        if lsn not in self._references:
            with replay.at(self.path, lsn=lsn, snapshots=False) as view:
                assert view.snapshot is None
                self._references[lsn] = read_tables(view)
        return self._references[lsn]


def due_lsns(end: int, batch: int, every: int) -> list[int]:
    """Where a projector folding LSNs 0..end in batches of `batch` takes its snapshots: after
    a commit, once `every` events have been folded since the last one."""
    taken, last = [], -1
    for stop in range(batch - 1, end + batch, batch):
        checkpoint = min(stop, end)
        if checkpoint - last >= every:
            taken.append(checkpoint)
            last = checkpoint
    return taken


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    path = tmp_path_factory.mktemp("snapshots") / "store"
    with eventlog.open(path, durability=eventlog.Durability.NONE) as log:
        populate(log, Workload(random.Random(20_240)), EVENTS)
        end = log.next_lsn() - 1
    policy = SnapshotPolicy(every_events=EVERY, keep=100)
    with projections.Projector(path, batch_events=BATCH, snapshots=policy) as projector:
        assert projector.catch_up() == end
    lsns = [s.lsn for s in replay.snapshots(path)]
    assert len(lsns) >= 4, "the damage tests need an oldest, a middle and newer snapshots"
    return Base(path, end, lsns)


def copy_store(base: Base, tmp: Path, *, snapshots: bool = True) -> Path:
    """A copy of the base store's log (and its snapshots, unless told not to); never the
    projector's database, which no replay reads."""
    ignored = ["projections.duckdb*", *([] if snapshots else ["snapshots"])]
    target = tmp / "store"
    shutil.copytree(base.path, target, ignore=shutil.ignore_patterns(*ignored))
    return target


# -- reading ---------------------------------------------------------------------------------------


def read_tables(view: replay.View) -> Rows:
    return {t: view.rows(f"SELECT * FROM {t} ORDER BY ALL") for t in TABLE_NAMES}


def assert_same(found: Rows, expected: Rows, where: str) -> None:
    for table in TABLE_NAMES:
        assert found[table] == expected[table], (
            f"{where}: table {table} differs from a fold from zero "
            f"({len(found[table])} rows, expected {len(expected[table])})"
        )


def newest_at_or_before(lsns: list[int], target: int) -> int | None:
    return max((s for s in lsns if s <= target), default=None)


@contextlib.contextmanager
def no_warnings() -> Iterator[None]:
    """Any warning (a skipped snapshot above all) fails the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- manifests and chunks, as files --------------------------------------------------------------


def manifest_path(store: Path, lsn: int) -> Path:
    return store / "snapshots" / f"{lsn:020d}.snap"


def read_manifest(path: Path) -> dict[str, Any]:
    body = path.read_bytes().split(b"\n", 1)[0]
    manifest: dict[str, Any] = json.loads(body)
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """A manifest with a correct checksum line: what a writer (maybe newer code) would write."""
    body = json.dumps(manifest).encode()
    path.write_bytes(body + f"\n{google_crc32c.value(body):08x}\n".encode())


def chunk_path(store: Path, digest: str) -> Path:
    return store / "snapshots" / "chunks" / digest[:2] / digest


def chunk_files(store: Path) -> dict[str, int]:
    """Every chunk file: name -> size."""
    return {p.name: p.stat().st_size for p in (store / "snapshots" / "chunks").glob("*/*")}


def live_chunks(store: Path) -> set[str]:
    """The chunks some manifest names."""
    return {
        chunk[0]
        for path in (store / "snapshots").glob("*.snap")
        for chunk in read_manifest(path)["chunks"]
    }


def own_chunk(store: Path, lsn: int) -> Path:
    """A chunk only the snapshot at `lsn` uses (damaging it damages that snapshot alone)."""
    mine = {c[0] for c in read_manifest(manifest_path(store, lsn))["chunks"]}
    others = {
        c[0]
        for path in (store / "snapshots").glob("*.snap")
        if path != manifest_path(store, lsn)
        for c in read_manifest(path)["chunks"]
    }
    candidates = sorted(mine - others)
    assert candidates, f"every chunk of snapshot {lsn} is shared"
    path = chunk_path(store, candidates[len(candidates) // 2])
    assert path.stat().st_size > 1, path
    return path


# -- 1. where snapshots are taken and used ---------------------------------------------------------


@pytest.mark.slow
def test_projector_takes_snapshots_where_the_policy_says(base: Base) -> None:
    assert base.lsns == due_lsns(base.end, BATCH, EVERY)
    with eventlog.open(base.path, readonly=True) as log:
        ts = {r.lsn: r.event.ts for r in log.read() if r.lsn in base.lsns}
    for info in replay.snapshots(base.path):
        assert info.ts == ts[info.lsn]
        assert info.schema_version == SCHEMA_VERSION
        manifest = read_manifest(Path(info.path))
        assert manifest["lsn"] == info.lsn
        assert sum(c[2] for c in manifest["chunks"]) == info.size
    assert set(chunk_files(base.path)) == live_chunks(base.path)


@pytest.mark.slow
def test_replay_starts_from_the_newest_snapshot_at_or_before_its_point(base: Base) -> None:
    first, second, newest = base.lsns[0], base.lsns[1], base.lsns[-1]
    targets = sorted({-1, first - 1, first, (first + second) // 2, base.end})
    compared = {(first + second) // 2}
    with no_warnings():
        for target in targets:
            with replay.at(base.path, lsn=target) as view:
                assert view.lsn == target
                expected = newest_at_or_before(base.lsns, target)
                assert (view.snapshot and view.snapshot.lsn) == expected, target
                (low, high) = view.rows("SELECT min(lsn), max(lsn) FROM lmg_checkpoints")[0]
                assert low == high == target
                if target in compared:
                    assert_same(read_tables(view), base.reference(target), f"at LSN {target}")
        with replay.at(base.path) as latest:  # now: the log's end
            assert latest.lsn == base.end
            assert latest.snapshot is not None and latest.snapshot.lsn == newest
        # A time point resolves to an LSN first; it starts from the same snapshot.
        info = replay.snapshots(base.path)[1]
        assert info.ts is not None
        with replay.at(base.path, time=info.ts) as view:
            assert view.lsn >= info.lsn and view.ts == info.ts
            assert view.snapshot is not None and view.snapshot.lsn == info.lsn


# -- 2. damaged snapshots are skipped, and the replay is still right ----------------------------


@dataclass(frozen=True)
class Damage:
    """Damage done to the snapshot at `lsn`; `donor` is another snapshot's LSN."""

    do: Callable[[Path, int, int], str]  # (store, lsn, donor) -> the manifest name warned about
    listed: bool  # does `replay.snapshots` still list it (its manifest reads)?


def flip_chunk_byte(store: Path, lsn: int, _donor: int) -> str:
    path = own_chunk(store, lsn)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return manifest_path(store, lsn).name


def delete_chunk(store: Path, lsn: int, _donor: int) -> str:
    own_chunk(store, lsn).unlink()
    return manifest_path(store, lsn).name


def truncate_chunk(store: Path, lsn: int, _donor: int) -> str:
    path = own_chunk(store, lsn)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return manifest_path(store, lsn).name


def flip_manifest_byte(store: Path, lsn: int, _donor: int) -> str:
    path = manifest_path(store, lsn)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside the JSON body, ahead of the checksum line
    path.write_bytes(bytes(data))
    return path.name


def rename_manifest(store: Path, lsn: int, _donor: int) -> str:
    moved = manifest_path(store, lsn + 51)  # still at or before the replay's point
    manifest_path(store, lsn).rename(moved)
    return moved.name


def newer_schema(store: Path, lsn: int, _donor: int) -> str:
    path = manifest_path(store, lsn)
    write_manifest(path, {**read_manifest(path), "schema_version": SCHEMA_VERSION + 1})
    return path.name


def wrong_checkpoint(store: Path, lsn: int, donor: int) -> str:
    """A manifest for `lsn` whose chunks make an intact database at LSN `donor`."""
    path = manifest_path(store, lsn)
    other = read_manifest(manifest_path(store, donor))
    write_manifest(path, {**read_manifest(path), "chunks": other["chunks"], "size": other["size"]})
    return path.name


DAMAGES = {
    "chunk-byte-flipped": Damage(flip_chunk_byte, listed=True),
    "chunk-deleted": Damage(delete_chunk, listed=True),
    "chunk-truncated": Damage(truncate_chunk, listed=True),
    "manifest-byte-flipped": Damage(flip_manifest_byte, listed=False),
    "manifest-renamed": Damage(rename_manifest, listed=False),
    "newer-schema": Damage(newer_schema, listed=True),
    "checkpoint-not-the-manifest-lsn": Damage(wrong_checkpoint, listed=True),
}


@pytest.mark.parametrize("name", DAMAGES)
@pytest.mark.slow
def test_damaged_snapshot_is_skipped_for_an_older_one(
    base: Base, tmp_path: Path, name: str
) -> None:
    damage = DAMAGES[name]
    store = copy_store(base, tmp_path)
    oldest, middle = base.lsns[0], base.lsns[2]
    # Points between each damaged snapshot and the next: the damaged one is the natural start.
    low, high = (oldest + base.lsns[1]) // 2, (middle + base.lsns[3]) // 2
    # Damage the oldest (nothing older: fold from zero) and a middle one (an older one is
    # usable). The donor is newer: trusting that database would show events past the point.
    warned = {
        low: damage.do(store, oldest, base.lsns[1]),
        high: damage.do(store, middle, base.lsns[3]),
    }

    with warnings.catch_warnings(record=True) as listing_warnings:
        warnings.simplefilter("always")
        listed = replay.snapshots(store)
    damaged = {oldest, middle}
    if damage.listed:
        assert [s.lsn for s in listed] == base.lsns
        assert not listing_warnings, "chunks are checked on restore, not when listing"
        if name == "newer-schema":
            assert {s.lsn for s in listed if s.schema_version != SCHEMA_VERSION} == damaged
    else:
        assert [s.lsn for s in listed] == [s for s in base.lsns if s not in damaged]
        assert {w.category for w in listing_warnings} == {SnapshotSkipped}

    for point, fallback in ((high, base.lsns[1]), (low, None)):
        with pytest.warns(SnapshotSkipped) as caught:
            view = replay.at(store, lsn=point)
        with view:
            messages = [str(w.message) for w in caught]
            assert any(warned[point] in m for m in messages), messages
            if name == "newer-schema":
                assert any(f"schema version {SCHEMA_VERSION + 1}" in m for m in messages)
            assert (view.snapshot and view.snapshot.lsn) == fallback, (point, messages)
            assert view.lsn == point
            assert_same(read_tables(view), base.reference(point), f"{name}, at LSN {point}")


@pytest.mark.slow
def test_no_snapshots_directory_folds_from_zero_silently(base: Base, tmp_path: Path) -> None:
    store = copy_store(base, tmp_path, snapshots=False)
    point = (base.lsns[1] + base.lsns[2]) // 2
    with no_warnings():
        assert replay.snapshots(store) == []
        assert replay.prune(store, 3) == []
        with replay.at(store, lsn=point) as view:
            assert view.snapshot is None
            assert_same(read_tables(view), base.reference(point), "without snapshots")
        (store / "snapshots").mkdir()  # an empty one is no different
        with replay.at(store, lsn=point) as view:
            assert view.snapshot is None
    assert not (store / "snapshots" / "chunks").exists(), "a replay wrote into snapshots/"


# -- 3. pruning ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_prune_keeps_a_spread_and_collects_unreferenced_chunks(base: Base, tmp_path: Path) -> None:
    store = copy_store(base, tmp_path)
    oldest, newest = base.lsns[0], base.lsns[-1]
    before = chunk_files(store)
    with no_warnings():
        for keep in range(len(base.lsns) - 1, 1, -1):
            previous = [s.lsn for s in replay.snapshots(store)]
            dropped = replay.prune(store, keep)
            kept = [s.lsn for s in replay.snapshots(store)]
            assert len(kept) == keep and sorted(dropped) == dropped
            assert sorted([*kept, *dropped]) == previous
            assert kept[0] == oldest and kept[-1] == newest, kept
            # Spread over the history: no gap wider than twice an even share.
            gaps = [b - a for a, b in itertools.pairwise(kept)]
            assert max(gaps) <= 2 * (newest - oldest) / (keep - 1), kept
            now = chunk_files(store)
            assert set(now) == live_chunks(store), "an unreferenced chunk stayed, or one went"
            assert len(now) < len(before) and set(now) <= set(before)
            for lsn in kept:  # what is left restores (no chunk it needs went)
                with replay.at(store, lsn=lsn) as view:
                    assert view.snapshot is not None and view.snapshot.lsn == lsn
        assert replay.prune(store, 2) == []  # nothing to do
        assert replay.prune(store, 1) == [oldest]  # one left: the newest
        assert [s.lsn for s in replay.snapshots(store)] == [newest]
        assert set(chunk_files(store)) == live_chunks(store)
    with pytest.raises(projections.ProjectionError):
        replay.prune(store, 0)


@pytest.mark.slow
def test_prune_drops_older_schemas_and_leaves_newer_ones(base: Base, tmp_path: Path) -> None:
    store = copy_store(base, tmp_path)
    # An older code's snapshot and a newer code's (which may be running beside), each with a
    # chunk nobody else uses, between two of ours.
    template = read_manifest(manifest_path(store, base.lsns[1]))
    strangers = {base.lsns[1] + 7: SCHEMA_VERSION - 1, base.lsns[1] + 8: SCHEMA_VERSION + 1}
    own: dict[int, Path] = {}
    for lsn, version in strangers.items():
        odd = f"a chunk only the schema {version} snapshot uses".encode()
        own[lsn] = chunk_path(store, hashlib.sha256(odd).hexdigest())
        own[lsn].parent.mkdir(exist_ok=True)
        own[lsn].write_bytes(odd)
        write_manifest(
            manifest_path(store, lsn),
            {
                **template,
                "lsn": lsn,
                "schema_version": version,
                "chunks": [
                    *template["chunks"],
                    [own[lsn].name, google_crc32c.value(odd), len(odd)],
                ],
                "size": template["size"] + len(odd),
            },
        )
    older, newer = sorted(strangers)
    with no_warnings():
        assert {older, newer} <= {s.lsn for s in replay.snapshots(store)}
        assert replay.prune(store, 100) == [older]  # keep is not reached: it goes anyway
        assert [s.lsn for s in replay.snapshots(store)] == sorted([*base.lsns, newer])
        # Pruning to fewer counts this schema's snapshots only; the newer one stays.
        dropped = replay.prune(store, 2)
        assert newer not in dropped
        assert [s.lsn for s in replay.snapshots(store)] == sorted(
            [base.lsns[0], base.lsns[-1], newer]
        )
    assert not manifest_path(store, older).exists() and not own[older].exists()
    assert own[newer].exists(), "a chunk of the newer schema's snapshot went"
    assert set(chunk_files(store)) == live_chunks(store)
    # A replay passes the newer one over with a warning, as another schema's.
    with pytest.warns(SnapshotSkipped, match=f"schema version {SCHEMA_VERSION + 1}"):
        view = replay.at(store, lsn=newer)
    with view:
        assert view.snapshot is not None and view.snapshot.lsn == base.lsns[0]


def test_policy_and_keep_must_be_positive() -> None:
    for bad in ({"every_events": 0}, {"every_bytes": 0}, {"keep": 0}, {"every_events": -5}):
        with pytest.raises(projections.ProjectionError, match="positive"):
            SnapshotPolicy(**bad)


# -- 4. snapshots on demand ------------------------------------------------------------------------


@pytest.mark.slow
def test_snapshot_on_demand_is_idempotent_and_shares_chunks(base: Base, tmp_path: Path) -> None:
    store = copy_store(base, tmp_path, snapshots=False)
    point = (base.lsns[1] + base.lsns[2]) // 2  # a point other tests compare too
    at = point - 9
    with no_warnings():
        first = replay.snapshot(store, at=at, keep=None)
        assert first.lsn == at
        manifest = Path(first.path).read_bytes()
        chunks = chunk_files(store)
        # A first snapshot stores every block of the database (compressed: see snapshots.py).
        assert set(chunks) == {c[0] for c in read_manifest(Path(first.path))["chunks"]}

        again = replay.snapshot(store, at=at)  # the default keep prunes nothing here
        assert again == first, "a second snapshot at the same LSN is the first one"
        assert Path(first.path).read_bytes() == manifest
        assert chunk_files(store) == chunks

        # A few events later most chunks are shared: DuckDB rewrote only what changed.
        later = replay.snapshot(store, at=at + 5, keep=None)
        added = sum(size for name, size in chunk_files(store).items() if name not in chunks)
        print(
            f"snapshot at {at}: {first.size:,} bytes; at {at + 5}: {later.size:,} bytes, "
            f"{added:,} of them new chunks"
        )
        assert added < later.size / 2, (added, later.size)
        assert [s.lsn for s in replay.snapshots(store)] == [at, at + 5]

        with replay.at(store, lsn=point) as view:
            assert view.snapshot == later
            assert_same(read_tables(view), base.reference(point), "from an on-demand snapshot")


def test_snapshot_chunks_are_stored_compressed(base: Base, tmp_path: Path) -> None:
    """Chunk files hold zstd frames of the database's blocks: a snapshot takes less room than
    the database it saves (issue 14: 50 snapshots took 2.6x the live database)."""
    store = copy_store(base, tmp_path, snapshots=False)
    info = replay.snapshot(store, at=base.lsns[2], keep=None)
    stored = chunk_files(store)
    assert sum(stored.values()) < info.size / 2, (sum(stored.values()), info.size)
    for digest in stored:
        assert chunk_path(store, digest).read_bytes().startswith(b"\x28\xb5\x2f\xfd")


def test_manifest_records_each_chunk_file_and_a_rewritten_file_is_checked_by_name(
    base: Base, tmp_path: Path
) -> None:
    """A manifest records the SHA-256 of each chunk's file (a restore then hashes the zstd
    frame, not the bytes it decompresses to). A file written again differently (another
    zstd level or version) with the right bytes still restores, checked against its name;
    with other bytes, it is damaged (here with its CRC32C forged, in a manifest without the
    files' digests, as older code wrote them)."""
    import zstandard  # noqa: PLC0415 (only this test writes chunks itself)

    store = copy_store(base, tmp_path, snapshots=False)
    at = base.lsns[2]
    info = replay.snapshot(store, at=at, keep=None)
    manifest = read_manifest(Path(info.path))
    chunks = manifest["chunks"]
    for (digest, _crc, _length), frame in zip(chunks, manifest["frames"], strict=True):
        assert frame == hashlib.sha256(chunk_path(store, digest).read_bytes()).hexdigest()
    rewritten = chunks[len(chunks) // 2][0]
    path = chunk_path(store, rewritten)
    data = zstandard.ZstdDecompressor().decompress(path.read_bytes())
    path.write_bytes(zstandard.ZstdCompressor(level=19).compress(data))
    with no_warnings(), replay.at(store, lsn=at) as view:
        assert view.snapshot == info
        assert_same(read_tables(view), base.reference(at), "from a chunk written again")

    other = bytearray(data)
    other[len(other) // 2] ^= 0xFF
    frame = zstandard.ZstdCompressor().compress(bytes(other))
    path.write_bytes(frame)
    for entry in manifest["chunks"]:
        if entry[0] == rewritten:  # the CRC forged to match, the file's digest dropped
            entry[1] = google_crc32c.value(bytes(other))
    manifest["frames"] = None  # what older code wrote
    write_manifest(Path(info.path), manifest)
    with pytest.warns(SnapshotSkipped, match=f"chunk {rewritten} is damaged"):
        replay.at(store, lsn=at).close()


def test_uncompressed_chunks_of_older_code_still_restore(base: Base, tmp_path: Path) -> None:
    """Snapshots written before chunks were compressed hold each block as it is: they restore
    as they did, and a new snapshot shares their chunks instead of writing them again."""
    import zstandard  # noqa: PLC0415 (only this test writes chunks the old way)

    store = copy_store(base, tmp_path, snapshots=False)
    at = base.lsns[2]
    first = replay.snapshot(store, at=at, keep=None)
    for digest in chunk_files(store):  # what the older code wrote: the bytes themselves
        path = chunk_path(store, digest)
        path.write_bytes(zstandard.ZstdDecompressor().decompress(path.read_bytes()))
    raw = chunk_files(store)
    with no_warnings():
        with replay.at(store, lsn=at) as view:
            assert view.snapshot == first
            assert_same(read_tables(view), base.reference(at), "from uncompressed chunks")
        later = replay.snapshot(store, at=at + 3, keep=None)
    shared = {c[0] for c in read_manifest(Path(later.path))["chunks"]} & set(raw)
    assert shared, "no chunk in common: this test would prove nothing"
    assert all(chunk_files(store)[d] == raw[d] for d in shared), "an old chunk was rewritten"


# -- 5. a snapshot that cannot be written --------------------------------------------------------


@pytest.mark.slow
def test_unwritable_snapshot_warns_and_the_projector_folds_on(
    base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = copy_store(base, tmp_path, snapshots=False)

    def disk_full(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    # The tests run as root, where a read-only chunks directory would not stop a write.
    monkeypatch.setattr(projections.snapshots, "_write_durably", disk_full)
    batch = 300
    policy = SnapshotPolicy(every_events=EVERY, keep=100)
    with (
        pytest.warns(SnapshotSkipped) as caught,
        projections.Projector(store, batch_events=batch, snapshots=policy) as projector,
    ):
        assert projector.catch_up() == base.end
    failed = [int(re.findall(r"no snapshot at LSN (\d+)", str(w.message))[0]) for w in caught]
    assert failed == due_lsns(base.end, batch, EVERY), "one warning per snapshot due, no retry"
    assert all("No space left" in str(w.message) for w in caught)
    monkeypatch.undo()

    with no_warnings():
        assert replay.snapshots(store) == []
        with projections.connect(store) as con:
            found = {
                t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLE_NAMES
            }
        assert_same(found, base.reference(base.end), "the projector's database")


def test_snapshot_of_a_file_checkpointed_while_it_is_read_is_not_saved(
    base: Base, tmp_path: Path
) -> None:
    """A projector saves a snapshot's chunks on a thread while it folds on: the file must stay
    as checkpointed until they are read. If it is checkpointed again meanwhile, the snapshot
    fails and no manifest names what was read."""
    store = copy_store(base, tmp_path, snapshots=False)
    db = tmp_path / "live.duckdb"
    projections.rebuild(store, db, snapshots=None)
    hold = threading.Event()
    with (
        duckdb.connect(str(db)) as con,
        ThreadPoolExecutor(1) as pool,
    ):
        pool.submit(hold.wait)  # the saver is busy: the chunks are read only once it is let go
        saving = projections.Snapshots(store).take_in_background(
            con, db, ts=None, keep=64, pool=pool
        )
        con.execute("CREATE TABLE later AS SELECT range AS n FROM range(300000)")
        con.execute("CHECKPOINT")  # what the projector never does before the chunks are read
        hold.set()
        with pytest.raises(projections.ProjectionError, match="checkpointed while its snapshot"):
            saving.result()
    assert replay.snapshots(store) == []


@pytest.mark.slow
def test_a_new_snapshot_does_not_reuse_a_damaged_chunk(base: Base, tmp_path: Path) -> None:
    """Chunks are shared by name (their SHA-256): a damaged chunk file must be written again
    by the next snapshot that holds those bytes, not named as it is."""
    store = copy_store(base, tmp_path, snapshots=False)
    at = (base.lsns[1] + base.lsns[2]) // 2
    first = replay.snapshot(store, at=at, keep=None)
    chunks = read_manifest(Path(first.path))["chunks"]
    for digest, _crc, _length in chunks[1:]:  # every chunk but the header
        path = chunk_path(store, digest)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.warns(SnapshotSkipped):  # the new one is folded from zero, skipping `first`
        later = replay.snapshot(store, at=at + 3, keep=None)
    shared = {c[0] for c in chunks[1:]} & {c[0] for c in read_manifest(Path(later.path))["chunks"]}
    assert shared, "no chunk in common: this test would prove nothing"
    with no_warnings(), replay.at(store, lsn=at + 3) as view:
        assert view.snapshot == later


@pytest.mark.parametrize("stale", ["older-schema", "damaged-chunk"])
@pytest.mark.slow
def test_taking_a_snapshot_again_replaces_an_unusable_one(
    base: Base, tmp_path: Path, stale: str
) -> None:
    store = copy_store(base, tmp_path)
    lsn = base.lsns[2]
    path = manifest_path(store, lsn)
    if stale == "older-schema":  # left by the code before a schema change
        write_manifest(path, {**read_manifest(path), "schema_version": SCHEMA_VERSION - 1})
    else:
        flip_chunk_byte(store, lsn, lsn)
    with pytest.warns(SnapshotSkipped):  # folding the new one passes the stale one over
        info = replay.snapshot(store, at=lsn, keep=None)
    assert info.schema_version == SCHEMA_VERSION
    with no_warnings(), replay.at(store, lsn=lsn) as view:
        assert view.snapshot is not None and view.snapshot.lsn == lsn


# -- forged manifests and chunks, and files where directories belong -----------------------------


@pytest.mark.slow
def test_manifest_naming_a_chunk_outside_the_store_is_skipped(base: Base, tmp_path: Path) -> None:
    """A manifest is protected by a CRC anyone can recompute: one that names a chunk
    ``../../outside`` (a copy of a real chunk, so every checksum holds) must not be followed."""
    store = copy_store(base, tmp_path)
    lsn, older = base.lsns[1], base.lsns[0]
    path = manifest_path(store, lsn)
    manifest = read_manifest(path)
    outside = tmp_path / "outside"
    shutil.copy(chunk_path(store, manifest["chunks"][0][0]), outside)
    before = outside.read_bytes()
    manifest["chunks"][0][0] = "../../outside"  # snapshots/chunks/../../outside
    write_manifest(path, manifest)

    with pytest.warns(SnapshotSkipped, match=path.name):
        view = replay.at(store, lsn=lsn)
    with view:
        assert view.snapshot is not None and view.snapshot.lsn == older
        assert_same(read_tables(view), base.reference(lsn), "beside a forged manifest")
    assert outside.read_bytes() == before


def test_chunk_whose_bytes_do_not_hash_to_its_name_is_skipped(base: Base, tmp_path: Path) -> None:
    """A chunk changed and its CRC32C in the manifest made to match: its SHA-256 (its name)
    still tells, so the snapshot is skipped as damaged."""
    store = copy_store(base, tmp_path)
    lsn, older = base.lsns[1], base.lsns[0]
    chunk = own_chunk(store, lsn)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    path = manifest_path(store, lsn)
    manifest = read_manifest(path)
    for entry in manifest["chunks"]:
        if entry[0] == chunk.name:
            entry[1] = google_crc32c.value(bytes(data))
    write_manifest(path, manifest)

    with pytest.warns(SnapshotSkipped, match=f"chunk {chunk.name} is damaged"):
        view = replay.at(store, lsn=lsn)
    with view:
        assert view.snapshot is not None and view.snapshot.lsn == older
        assert_same(read_tables(view), base.reference(lsn), "beside a tampered chunk")


def test_restore_names_the_first_damaged_chunk_of_several(base: Base, tmp_path: Path) -> None:
    """Chunks are restored on several threads; a snapshot with two damaged chunks is still
    skipped for the first in file order, and the replay is still exact."""
    store = copy_store(base, tmp_path)
    lsn, older = base.lsns[1], base.lsns[0]
    older_chunks = {c[0] for c in read_manifest(manifest_path(store, older))["chunks"]}
    own = [
        c[0] for c in read_manifest(manifest_path(store, lsn))["chunks"] if c[0] not in older_chunks
    ]
    first = own[0]
    last = next(d for d in reversed(own) if d != first)  # two chunks of its own, far apart
    for digest in (first, last):
        chunk_path(store, digest).write_bytes(b"damaged")

    with pytest.warns(SnapshotSkipped, match=f"chunk {first} is damaged") as caught:
        view = replay.at(store, lsn=lsn)
    assert not any(last in str(w.message) for w in caught)
    with view:
        assert view.snapshot is not None and view.snapshot.lsn == older
        assert_same(read_tables(view), base.reference(lsn), "beside two damaged chunks")


def test_chunks_that_is_a_file_skips_every_snapshot(base: Base, tmp_path: Path) -> None:
    store = copy_store(base, tmp_path)
    shutil.rmtree(store / "snapshots" / "chunks")
    (store / "snapshots" / "chunks").write_bytes(b"not a directory")
    with pytest.warns(SnapshotSkipped, match="unreadable"):
        view = replay.at(store, lsn=base.lsns[1])
    with view:
        assert view.snapshot is None
        assert view.lsn == base.lsns[1]


@pytest.mark.slow
def test_lmg_snapshot_on_a_snapshots_file_is_a_one_line_error(base: Base, tmp_path: Path) -> None:
    store = copy_store(base, tmp_path, snapshots=False)
    (store / "snapshots").write_bytes(b"not a directory")
    lmg = str(Path(sys.executable).with_name("lmg"))
    command = [lmg, "snapshot", str(store)]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "is not a directory" in result.stderr, result.stderr
    assert (store / "snapshots").read_bytes() == b"not a directory"
