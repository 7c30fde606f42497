"""The text index of the sessions list's search (`projections._text_index`), through
`sessions_page`, the function the web view's sessions route answers with: with the index, a
search finds exactly what reading every text finds, whatever the index holds."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import eventlog
import projections
from projections import DATABASE_FILE, MemoryGraph
from projections._browse import SessionFilter, sessions_page
from projections._text_index import MAX_CANDIDATES, TextIndex

# quotes, wildcards, and letters whose case folds oddly (sharp s, sigma, the Kelvin sign)
_LETTERS = "abcAB \"'%_.*ßẞ\u03c3\u03c2\u03a3kKK\u212aéÉ"


def _fold(store: Path) -> Path:
    with MemoryGraph.open(store) as g:
        g.sql("SELECT 1").fetchall()  # a read folds the log
    return store / DATABASE_FILE


@pytest.fixture
def corpus(
    tmp_path: Path, rng: random.Random
) -> Iterator[tuple[Path, duckdb.DuckDBPyConnection, list[str]]]:
    """A store of 40 sessions of random text (seed printed), folded; its texts."""
    texts: list[str] = []
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        for _ in range(40):
            session = log.create_session()
            for _ in range(rng.randrange(1, 4)):
                text = "".join(rng.choices(_LETTERS, k=rng.randrange(1, 30)))
                prompt = log.add_prompt(session.id, text)
                reply = "".join(rng.choices(_LETTERS, k=rng.randrange(1, 30)))
                log.add_response(prompt, reply, eventlog.TokenUsage(1, 1))
                texts += [text, reply]
    con = duckdb.connect(_fold(store))
    yield store, con, texts
    con.close()


def _page(con: duckdb.DuckDBPyConnection, q: str, index: TextIndex | None) -> dict[str, Any]:
    return sessions_page(con.cursor(), SessionFilter(q=q, sort="started", limit=200), index)


def _build(index: TextIndex, con: duckdb.DuckDBPyConnection) -> None:
    while index.catch_up(con.cursor(), batch=7):  # small batches: several transactions
        pass


def test_a_search_through_the_index_finds_what_reading_every_text_finds(
    corpus: tuple[Path, duckdb.DuckDBPyConnection, list[str]],
) -> None:
    store, con, texts = corpus
    index = TextIndex(store / DATABASE_FILE)
    _build(index, con)
    rng = random.Random(len(texts))
    queries = ["", "zzz", "Kelvin", '"', '"""', "%_%"]
    queries += [text.upper() for text in rng.sample(texts, 5)]  # long: trigrams picked
    for text in rng.sample(texts, 30):
        start = rng.randrange(len(text))
        piece = text[start : start + rng.randrange(1, 8)]
        queries += [piece, piece.upper(), piece.swapcase(), piece.casefold()]
    looked_up = 0
    for q in queries:
        looked_up += index.lookup(q) is not None
        assert _page(con, q, index) == _page(con, q, None), repr(q)
    assert looked_up > len(queries) // 3  # the index answered most (long enough, rare)


def test_a_search_of_one_or_two_characters_or_common_text_reads_the_text(
    corpus: tuple[Path, duckdb.DuckDBPyConnection, list[str]],
) -> None:
    """The index narrows only texts of three characters or more that few rows hold: the
    rest are searched as before, and find the same."""
    store, con, _ = corpus
    index = TextIndex(store / DATABASE_FILE)
    _build(index, con)
    for q in ("a", "Ab", "ẞ"):
        assert index.lookup(q) is None
        page = _page(con, q, index)
        assert page == _page(con, q, None) and page["total"] > 0, q
    with eventlog.open(store) as log:
        session = log.create_session()
        log.add_prompts_batch([(session.id, "common text")] * (MAX_CANDIDATES + 1))
    con.close()
    con = duckdb.connect(_fold(store))
    _build(index, con)
    assert index.lookup("COMMON") is None
    assert _page(con, "COMMON", index)["sessions"][0]["id"] == session.id
    con.close()


def test_a_search_finds_what_was_appended_after_the_index_caught_up(tmp_path: Path) -> None:
    """Rows beyond the index's watermark are read whole: an index behind the fold (its
    thread not yet run) never hides an append, and catching up leaves the answers as they
    are."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        first = log.create_session().id
        old = log.add_prompt(first, "an old Needle")
    con = duckdb.connect(_fold(store))
    index = TextIndex(store / DATABASE_FILE)
    _build(index, con)
    con.close()
    with eventlog.open(store) as log:
        second = log.create_session().id
        log.add_prompt(second, "a new needle")
        log.add_prompt(second, "nothing rare")
    con = duckdb.connect(_fold(store))
    behind = index.watermark()
    ids = [s["id"] for s in _page(con, "NEEDLE", index)["sessions"]]
    assert ids == [second, first] and index.lookup("needle") == (behind, [old])
    _build(index, con)
    assert index.watermark() > behind
    assert [s["id"] for s in _page(con, "needle", index)["sessions"]] == [second, first]
    assert _page(con, "no such text", index)["total"] == 0
    con.close()


@pytest.mark.parametrize("damage", ["flipped", "deleted", "emptied"])
def test_a_damaged_or_missing_index_is_built_again_and_searches_still_answer(
    corpus: tuple[Path, duckdb.DuckDBPyConnection, list[str]], damage: str
) -> None:
    store, con, texts = corpus
    index = TextIndex(store / DATABASE_FILE)
    _build(index, con)
    q = max(texts, key=len)[:5]
    want = _page(con, q, None)
    path = index.path
    if damage == "deleted":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        for at in range(0, 100 if damage == "flipped" else len(data)):
            data[at] ^= 0xFF if damage == "flipped" else data[at]
        path.write_bytes(bytes(data))
    assert index.lookup(q) is None and index.watermark() == -1
    assert _page(con, q, index) == want  # read the text instead
    _build(index, con)
    assert index.lookup(q) is not None and _page(con, q, index) == want


def test_the_index_file_is_as_private_as_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        log.add_prompt(log.create_session().id, "some words")
    con = duckdb.connect(_fold(store))
    os.umask(old := os.umask(0))  # whatever the umask
    try:
        index = TextIndex(store / DATABASE_FILE)
        _build(index, con)
    finally:
        os.umask(old)
    for path in store.glob(f"{DATABASE_FILE}.text*"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert [p.name for p in store.glob("*.text")] == [f"{DATABASE_FILE}.text"]
    con.close()


def test_an_erasure_deletes_the_index_with_the_database(tmp_path: Path) -> None:
    """The index held which rows had which trigrams of the erased text: the erasure deletes
    it with the database, and the index built again holds none of it."""
    store = tmp_path / "store"
    secret = "Xylophonequartz-secret"
    with eventlog.open(store) as log:
        gone = log.create_session().id
        prompt = log.add_prompt(gone, f"my {secret} words")
        log.add_prompt(log.create_session().id, "kept words")
    con = duckdb.connect(_fold(store))
    index = TextIndex(store / DATABASE_FILE)
    _build(index, con)
    assert index.lookup(secret) == (index.watermark(), [prompt])
    con.close()
    projections.erase(store, eventlog.Selector.of(sessions=[gone]))
    assert not index.path.exists()
    con = duckdb.connect(_fold(store))
    _build(index, con)
    assert index.lookup(secret) == (index.watermark(), [])
    assert _page(con, secret, index)["total"] == 0
    assert _page(con, "kept", index)["total"] == 1
    for path in store.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
            assert b"xylophonequartz" not in path.read_bytes(), path
    con.close()


def test_a_lookup_never_creates_the_index_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup or a watermark reads the index; if the file is deleted (an erasure, a
    rebuild) between any check of it and the open, nothing is created there: SQLite would
    create it with the umask's modes, and the next catch-up would keep that file."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        log.add_prompt(log.create_session().id, "some words")
    index = TextIndex(_fold(store))
    monkeypatch.setattr(Path, "exists", lambda _self: True)  # it was there when checked
    assert index.lookup("some words") is None
    assert index.watermark() == -1
    monkeypatch.undo()
    assert not index.path.exists()
    assert not Path(f"{index.path}-wal").exists()
