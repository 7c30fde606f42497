"""Golden bytes: what version 1 of every event, and a whole small store, look like on disk.

``golden/events/`` holds, for every event type, the MessagePack bytes of version 1 as the log
encodes it, twice: ``<tag>.full.msgpack`` with every field set and ``<tag>.min.msgpack`` with
only the required ones; ``golden/events.json`` holds the value each must decode to. The
bytes are never rewritten: a change to the schema that stops them decoding to those values
breaks rule 2 of `eventlog/events.py` (adding a field with a default is allowed, and shows
up here as an extra field, which the comparison accepts).

``golden/store/`` is a store written by the log itself: two segments (so a sealed one with its
``.idx`` and ``.ids`` files), raw and zstd frames, a frame holding two requests (one group
commit) and idempotency keys. ``golden/store.json`` lists its events and frames. The frames
are parsed here from the layout in docs/format.md, independently of `eventlog._format`.

The files are written once, by `write_golden` (``python -m tests.eventlog.test_golden``),
which only ever adds missing files: run it when a new event type is added, never to
"update" a fixture.

Last, the upcaster registry: a test-only old version of ``session.created`` decodes into the
current class, in a frame body and in a store.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import google_crc32c
import msgspec
import msgspec.inspect as mi
import pytest
import zstandard

import eventlog
from eventlog import _format
from eventlog import events as ev
from eventlog._commands import prepare

GOLDEN = Path(__file__).with_name("golden")
EVENTS = GOLDEN / "events"
STORE = GOLDEN / "store"
_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode  # as the log encodes events
_RAW = msgspec.msgpack.Decoder()
_EVENT = msgspec.msgpack.Decoder(ev.Event)
TS = 1_700_000_000_123_456_789
OCCURRED = 1_600_000_000_000_000_001
_NAMESPACE = uuid.UUID("6f1e0c55-9d62-4b1a-8f0e-3a7c2b9d4e10")


# -- a typed, JSON-able picture of a decoded value -----------------------------------------------


def plain(value: Any) -> Any:
    """JSON for `value` that keeps types: UUIDs and structs are tagged, floats stay floats."""
    if isinstance(value, msgspec.Struct):
        out: dict[str, Any] = {"$struct": type(value).__name__}
        tag = value.__struct_config__.tag
        if tag is not None:
            out["$tag"] = tag
        out.update({f: plain(getattr(value, f)) for f in value.__struct_fields__})
        return out
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def assert_matches(expected: Any, actual: Any, where: str = "") -> None:
    """`actual` (from `plain`) equals `expected`, types included; a struct may have gained
    fields (new fields with defaults are allowed), but never lost or changed one."""
    if isinstance(expected, dict) and "$struct" in expected:
        assert isinstance(actual, dict), f"{where}: {actual!r} is not a struct"
        for key, value in expected.items():
            assert key in actual, f"{where}.{key}: field missing"
            assert_matches(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), (where, actual)
        for key, value in expected.items():
            assert_matches(value, actual[key], f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (where, actual)
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_matches(e, a, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, (where, expected, actual)


# -- the generator (run by hand; adds missing files only) ----------------------------------------


def sample(t: mi.Type, where: str, default: Any = msgspec.NODEFAULT) -> Any:
    """A fixed, non-default value of type `t` for the field at `where`."""
    match t:
        case mi.UnionType(types=types):
            return sample(next(x for x in types if not isinstance(x, mi.NoneType)), where)
        case mi.UUIDType():
            return uuid.uuid5(_NAMESPACE, where)
        case mi.StrType():
            return f"{where.rsplit('.', 1)[-1]} text"
        case mi.BoolType():
            return not default if isinstance(default, bool) else True
        case mi.IntType():
            return {"ts": TS, "occurred_at": OCCURRED}.get(where.rsplit(".", 1)[-1], 7)
        case mi.FloatType():
            return 0.25
        case mi.AnyType():
            return {"list": [1, -2, 0.5, "s", None, True], "map": {"deep": {}}}
        case mi.DictType(value_type=value_type):
            return {"key": sample(value_type, f"{where}.key"), "other": None}
        case mi.ListType(item_type=item_type):
            return [sample(item_type, f"{where}.0"), sample(item_type, f"{where}.1")]
        case mi.StructType(cls=cls, fields=fields):
            return cls(**{f.name: sample(f.type, f"{where}.{f.name}", f.default) for f in fields})
    raise TypeError(f"no sample for {t} at {where}")


def golden_events() -> dict[str, ev.EventBase]:
    """Version 1 of every current event type, full and minimal, by fixture name."""
    out: dict[str, ev.EventBase] = {}
    for tag, cls in ev.event_types().items():
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        full = sample(info, tag)
        required = {
            f.name: sample(f.type, f"{tag}.min.{f.name}") for f in info.fields if f.required
        }
        out[f"{tag}.full"] = full
        out[f"{tag}.min"] = cls(**required, ts=TS)
    return out


def write_store(path: Path) -> dict[str, Any]:
    """A small store written by the log; returns what store.json records about it."""
    with eventlog.open(path, segment_bytes=4096) as log:
        s = log.create_session({"user": "42"}, ["golden"], idempotency_key="golden-session")
        agent = log.add_agent("triage", "routes", ["classify"], model="small-1")
        template = log.create_template(
            "answer",
            "Answer as {{persona}}: {{question}}",
            [
                ev.VariableSpec(name="persona", required=False, default="a helper"),
                ev.VariableSpec(name="question"),
            ],
        )
        prompt = log.add_prompt(s.id, template_id=template, variables={"question": "Why?"})
        log.assign_agent_to_prompt(prompt, agent, actor="router")
        response = log.add_response(
            prompt, "Because.", ev.TokenUsage(3, 1), finish_reason="stop", latency_ms=12.5
        )
        tool = log.add_tool_invocation(response, "search", {"q": "why"})
        log.complete_tool_invocation(tool, result=["a", "b"], duration_ms=3.0)
        filler = 0
        while log.stats().segments < 2:  # zstd frames, until the first segment is sealed
            texts = [hashlib.sha256(f"{filler}.{i}".encode()).hexdigest() * 2 for i in range(8)]
            log.add_prompts_batch([(s.id, text) for text in texts])
            filler += 1
        # One group commit of two requests, one of them keyed: a frame with two requests.
        group = [
            prepare([ev.NodeAdded(id=uuid.uuid4(), kind="document", content="doc")], {}),
            prepare(
                [ev.NodeAdded(id=uuid.uuid4(), kind="context", session_id=s.id)],
                {"idempotency_key": "golden-node"},
            ),
        ]
        assert all(isinstance(r, eventlog.Appended) for r in log._store.commit(group))
        log.update_template(template, "v2: {{question}}", [ev.VariableSpec(name="question")])
        log.delete_node(tool, reason="done")
        records = list(log.read())
    (path / "LOCK").write_bytes(b"")
    return {
        "session": str(s.id),
        "records": [{"lsn": r.lsn, "event": plain(r.event)} for r in records],
        "frames": describe_frames(path),
    }


def write_golden(directory: Path = GOLDEN) -> list[Path]:
    """Write every missing fixture; existing files are never touched. Returns what it wrote."""
    written: list[Path] = []
    (directory / "events").mkdir(parents=True, exist_ok=True)
    expected_path = directory / "events.json"
    expected = json.loads(expected_path.read_text()) if expected_path.exists() else {}
    for name, event in golden_events().items():
        target = directory / "events" / f"{name}.msgpack"
        if target.exists() or name in expected:
            continue
        target.write_bytes(_ENCODE(event))
        expected[name] = plain(event)
        written.append(target)
    if written:
        expected_path.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
        written.append(expected_path)
    if not (directory / "store").exists():
        tmp = directory / "store.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        report = write_store(tmp)
        tmp.rename(directory / "store")
        (directory / "store.json").write_text(json.dumps(report, indent=1) + "\n")
        written += [directory / "store", directory / "store.json"]
    return written


# -- an independent reading of the frame format (docs/format.md) ----------------------------------

_SEGMENT_HEADER = struct.Struct("<8sHHQqI")  # magic, version, flags, first_lsn, created, crc
_FRAME_HEADER = struct.Struct("<4sIIQIqqBBHI")


def describe_frames(store: Path) -> list[dict[str, Any]]:
    """Every frame of every segment, parsed and checked from the documented layout."""
    frames = []
    for seg in sorted(store.glob("*.seg")):
        data = seg.read_bytes()
        magic, version, flags, first_lsn, _created, crc = _SEGMENT_HEADER.unpack_from(data)
        assert (magic, version, flags) == (b"LMGSEG\r\n", 1, 0)
        assert crc == google_crc32c.value(data[:28]) and int(seg.stem) == first_lsn
        offset, lsn = 32, first_lsn
        while offset < len(data):
            head = _FRAME_HEADER.unpack_from(data, offset)
            magic, length, crc, first, count, min_ts, max_ts, codec, fl, reserved, raw_len = head
            assert (magic, fl, reserved, first) == (b"LMGF", 0, 0, lsn)
            body = data[offset + 48 : offset + 48 + length]
            assert crc == google_crc32c.extend(
                google_crc32c.value(data[offset + 12 : offset + 48]), body
            )
            raw = body if codec == 0 else zstandard.ZstdDecompressor().decompress(body)
            assert codec in (0, 1) and len(raw) == raw_len and min_ts <= max_ts
            requests = _RAW.decode(raw)
            assert sum(len(events) for events, _key in requests) == count
            frames.append(
                {
                    "segment": seg.name,
                    "offset": offset,
                    "first_lsn": first,
                    "count": count,
                    "ts": [min_ts, max_ts],
                    "codec": codec,
                    "requests": [{"events": len(e), "key": k} for e, k in requests],
                }
            )
            offset, lsn = offset + 48 + length, lsn + count
    return frames


def segment_header(first_lsn: int) -> bytes:
    head = _SEGMENT_HEADER.pack(b"LMGSEG\r\n", 1, 0, first_lsn, TS, 0)[:28]
    return head + struct.pack("<I", google_crc32c.value(head))


def raw_frame(body: bytes, *, first_lsn: int, count: int) -> bytes:
    """An uncompressed frame, built from the documented layout."""
    fields = (b"LMGF", len(body), 0, first_lsn, count, TS, TS, 0, 0, 0, len(body))
    tail = _FRAME_HEADER.pack(*fields)[12:]
    crc = google_crc32c.extend(google_crc32c.value(tail), body)
    return struct.pack("<4sII", b"LMGF", len(body), crc) + tail + body


# -- the tests -----------------------------------------------------------------------------------


def test_every_event_type_has_golden_bytes() -> None:
    expected = json.loads((GOLDEN / "events.json").read_text())
    missing = [
        f"{tag}.{form}"
        for tag in ev.event_types()
        for form in ("full", "min")
        if f"{tag}.{form}" not in expected or not (EVENTS / f"{tag}.{form}.msgpack").exists()
    ]
    assert not missing, (
        f"no golden bytes for {missing}: run `python -m tests.eventlog.test_golden` once"
    )


def fixture_names() -> list[str]:
    expected = GOLDEN / "events.json"
    return sorted(json.loads(expected.read_text())) if expected.exists() else []


@pytest.mark.parametrize("name", fixture_names())
def test_golden_event_decodes(name: str) -> None:
    expected = json.loads((GOLDEN / "events.json").read_text())[name]
    raw = (EVENTS / f"{name}.msgpack").read_bytes()
    tag = name.rsplit(".", 1)[0]
    assert _RAW.decode(raw)["type"] == tag  # version 1: the plain tag
    # Through the log's own path: a frame body of one request holding the event.
    body = b"\x91\x92\x91" + raw + b"\xc0"  # [[[event], nil]]
    [request] = _format.decode_body(body)
    [event] = request.events
    current = ev.event_types()
    cls = next(c for t, c in current.items() if t.partition("@")[0] == tag)
    assert type(event) is cls
    if ev.tag_of(cls) != tag:
        return  # a newer version exists: its upcaster decides the values (see its own tests)
    assert_matches(expected, plain(event), name)
    assert _ENCODE(event) == raw, "re-encoding version 1 no longer gives the same bytes"


@pytest.fixture
def golden_store(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of the golden store (opening may take its lock) and its description."""
    assert STORE.exists(), "no golden store: run `python -m tests.eventlog.test_golden` once"
    copy = tmp_path / "store"
    shutil.copytree(STORE, copy)
    return copy, json.loads((GOLDEN / "store.json").read_text())


def test_golden_store_reads_back(golden_store: tuple[Path, dict[str, Any]]) -> None:
    path, expected = golden_store
    frames = expected["frames"]
    assert describe_frames(path) == frames
    # What the fixture is for: both codecs, a group commit frame, keys, a sealed segment.
    assert {f["codec"] for f in frames} == {_format.CODEC_RAW, _format.CODEC_ZSTD}
    assert any(len(f["requests"]) == 2 for f in frames)
    assert {r["key"] for f in frames for r in f["requests"]} >= {"golden-session", "golden-node"}
    assert len({f["segment"] for f in frames}) >= 2
    assert index_tolerant(eventlog.verify(path)) == []
    with eventlog.open(path, readonly=True) as log:
        records = list(log.read())
    assert [r.lsn for r in records] == [r["lsn"] for r in expected["records"]]
    for record, want in zip(records, expected["records"], strict=True):
        assert_matches(want["event"], plain(record.event), f"LSN {record.lsn}")


def test_golden_store_opens_unchanged_and_takes_appends(
    golden_store: tuple[Path, dict[str, Any]],
) -> None:
    path, expected = golden_store
    segments = {p.name: p.read_bytes() for p in path.glob("*.seg")}
    with eventlog.open(path):  # recovery on a clean store changes no segment
        pass
    assert {p.name: p.read_bytes() for p in path.glob("*.seg")} == segments
    records = expected["records"]
    session, n = uuid.UUID(expected["session"]), len(records)
    context = next(
        r["event"]["id"]["$uuid"] for r in records if r["event"].get("kind") == "context"
    )
    deleted = next(
        r["event"]["node_id"]["$uuid"] for r in records if r["event"]["$tag"] == "node.deleted"
    )
    with eventlog.open(path, segment_bytes=4096) as log:
        # Retries find their keys, in the sealed segment and in the active one: nothing is written.
        again = log.create_session({"user": "42"}, ["golden"], idempotency_key="golden-session")
        assert again.id == session
        keyed = log.add_node("context", session_id=session, idempotency_key="golden-node")
        assert keyed == uuid.UUID(context)
        assert log.last_lsn() == n - 1
        # Nodes of the old segments are found and checked.
        log.add_prompt(session, "after the golden events", expect_store_lsn=n - 1)
        with pytest.raises(eventlog.DeletedNodeReference):
            log.complete_tool_invocation(uuid.UUID(deleted))
    assert index_tolerant(eventlog.verify(path)) == []


def test_golden_store_reads_back_after_a_writer_left_its_reserve(
    golden_store: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A writer of this version appends to the old store and is killed: the copy it leaves
    has a reserve of zeros after the old frames and its own; it reads, verifies, appends."""
    path, expected = golden_store
    n, session = len(expected["records"]), uuid.UUID(expected["session"])
    killed = tmp_path / "killed"
    with eventlog.open(path) as log:
        log.add_prompt(session, "appended by a writer that zero-fills ahead")
        shutil.copytree(path, killed)
    last = max(killed.glob("*.seg"))
    assert last.stat().st_size % _format.RESERVE_ALIGN == 0
    assert index_tolerant(eventlog.verify(killed)) == []
    with eventlog.open(killed) as log:
        log.add_prompt(session, "after the kill")
        records = list(log.read())
    assert [r.lsn for r in records] == list(range(n + 2))
    for record, want in zip(records, expected["records"], strict=False):
        assert_matches(want["event"], plain(record.event), f"LSN {record.lsn}")
    assert index_tolerant(eventlog.verify(killed)) == []


def index_tolerant(problems: list[eventlog.Problem]) -> list[eventlog.Problem]:
    """Problems but warnings about index files: those are derived, and a later release may
    change their format (they are rebuilt from the segments); segments are what is pinned."""
    return [p for p in problems if not (p.severity == "warning" and "index" in p.message)]


# -- upcasters -----------------------------------------------------------------------------------


@pytest.fixture
def register() -> Iterator[Callable[[str, int, ev.Upcaster], None]]:
    """Register test-only upcasters; every one is removed afterwards."""
    added: list[tuple[str, int]] = []

    def add(name: str, version: int, fn: ev.Upcaster) -> None:
        ev.upcaster(name, version)(fn)
        added.append((name, version))

    try:
        yield add
    finally:
        for key in added:
            ev._UPCASTERS.pop(key, None)


SESSION = uuid.UUID("018f0000-0000-7000-8000-000000000001")


def old_session(session: uuid.UUID = SESSION) -> dict[str, Any]:
    """``session.created@0``, a made-up earlier shape: `session` and `labels`, no `tags`."""
    return {"type": "session.created@0", "session": session.bytes, "labels": ["x"], "ts": TS}


def session_v0_to_v1(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "session.created",
        "id": raw["session"],
        "tags": raw["labels"],
        "ts": raw["ts"],
        "metadata": {"upcast": True},
    }


def body_of(*events: dict[str, Any] | bytes, key: str | None = None) -> bytes:
    return _ENCODE([[list(events), key]])


def test_an_old_version_decodes_into_the_current_class(
    register: Callable[[str, int, ev.Upcaster], None],
) -> None:
    with pytest.raises(msgspec.ValidationError):
        _format.decode_body(body_of(old_session()))  # no upcaster: not decodable
    register("session.created", 0, session_v0_to_v1)
    current = ev.SessionCreated(id=uuid.uuid4(), ts=TS)
    [request] = _format.decode_body(
        body_of(old_session(), msgspec.msgpack.decode(_ENCODE(current)), key="k")
    )
    assert request.key == "k"
    assert request.events == [
        ev.SessionCreated(id=SESSION, tags=["x"], ts=TS, metadata={"upcast": True}),
        current,
    ]


def test_upcasters_chain_in_order(register: Callable[[str, int, ev.Upcaster], None]) -> None:
    calls: list[int] = []

    def step(version: int) -> ev.Upcaster:
        def up(raw: dict[str, Any]) -> dict[str, Any]:
            calls.append(version)
            return {**raw, "type": f"test.thing@{version + 1}", f"v{version + 1}": True}

        return up

    register("test.thing", 1, step(1))
    register("test.thing", 2, step(2))
    assert ev.upcast({"type": "test.thing", "a": 1}) == {
        "type": "test.thing@3",
        "a": 1,
        "v2": True,
        "v3": True,
    }
    assert calls == [1, 2]
    assert ev.upcast({"type": "test.thing@2"}) == {"type": "test.thing@3", "v3": True}
    assert ev.upcast({"type": "test.thing@3"}) == {"type": "test.thing@3"}
    with pytest.raises(ValueError, match="already registered"):
        ev.upcaster("test.thing", 1)(step(1))
    assert ("test.thing", 1) in ev._UPCASTERS


def test_the_registry_is_clean_after_the_tests() -> None:
    assert not [k for k in ev._UPCASTERS if k[0] == "test.thing" or k == ("session.created", 0)]


def test_a_store_holding_an_old_version_reads_and_appends(
    tmp_path: Path, register: Callable[[str, int, ev.Upcaster], None]
) -> None:
    """A segment written by an older release: its events come out as the current classes, and
    the id index built from them works for new appends."""
    register("session.created", 0, session_v0_to_v1)
    path = tmp_path / "store"
    path.mkdir()
    (path / "LOCK").write_bytes(b"")
    segment = segment_header(0) + raw_frame(body_of(old_session()), first_lsn=0, count=1)
    (path / f"{0:020d}.seg").write_bytes(segment)
    assert eventlog.verify(path) == []
    with eventlog.open(path) as log:
        [record] = list(log.read())
        assert record.event == ev.SessionCreated(
            id=SESSION, tags=["x"], ts=TS, metadata={"upcast": True}
        )
        prompt = log.add_prompt(SESSION, "hello", expect_session_lsn=0)
        assert [r.event.id for r in log.read(1)] == [prompt]  # type: ignore[attr-defined]
        assert log.read(1).__next__().event.ts >= TS


if __name__ == "__main__":
    for written in write_golden():
        print(f"wrote {written}")
