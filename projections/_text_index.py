"""`TextIndex`: the prompts' and responses' text indexed by trigrams, beside the database, so
that a search for text that few sessions hold looks its rows up instead of reading every text.

What it keeps:

1. **It narrows a search, never decides it.** A lookup answers the LSNs of the rows whose text
   holds every trigram of the search text (both case-folded): a superset of the rows that
   hold the text. The search then reads only those rows' text in DuckDB and matches it as it
   matches any text, and reads the rows beyond the index's watermark (appended since it
   caught up) whole (`_browse`). So a search answers the same with the index, without it, and
   with it behind; the index only decides how much text is read.
2. **It is derived and disposable.** A SQLite file beside the database, ``<db>.text`` (and
   SQLite's ``-wal`` and ``-shm``), created with the store's file modes: an FTS5 table with
   the trigram tokenizer, contentless (the text is not stored twice, only which rows hold
   each trigram; about 0.8 times the text's size), ``detail=none`` (no positions: a third
   of the size and of the build time of ``detail=full``, and the verification in DuckDB
   makes positions unneeded). Missing, it is built again; damaged (SQLite says so), it is
   deleted and built again; a lookup that fails answers nothing and the search reads the text.
   A symbolic link at any of its files is never opened (nor removed: someone put it there):
   lookups answer nothing, and the service's log says why it is not kept (once until that
   changes), and when it is kept again.
   Backups and snapshots do not carry it.
3. **Erased text leaves with the database.** Whoever deletes the database for an erasure
   (`_erasure.apply_pending`), or empties it for another history, deletes this file too
   (`drop_index`), and it is built again from the new database, which holds no erased text.
4. **It is kept outside the fold.** The service's `Owner` catches it up in a thread of its
   own after each fold, in batches of `BATCH_EVENTS` read from a cursor of the committed
   projections (each batch and its watermark one SQLite transaction), resting as long as a
   batch took: the fold never waits for it, and a store that nobody searches through the
   service never has one.

Each row is a prompt's or a response's text (a deleted one's too: `_ROWS`), its rowid the
LSN of the event that added it (unique across both tables), with the node's id beside it (table
``node``): the search reads the rows it names by id, as literals (the tables declare no key
since schema 3, `Table`: DuckDB prunes row groups by the time-ordered ids' zone maps).
The watermark is the last LSN whose rows it holds.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from contextlib import closing, suppress
from pathlib import Path

import duckdb

from eventlog._files import Modes, create_file, refuse_link
from eventlog.errors import UnsafeStore

__all__ = ["BATCH_EVENTS", "MAX_CANDIDATES", "TextIndex", "drop_index", "index_path"]

BATCH_EVENTS = 10_000
"""The most events whose text one catch-up transaction indexes (1 to 2 s of work at a
million events under load: an erasure waits at most that for it)."""

MAX_CANDIDATES = 256
"""The most rows a lookup answers; more, and it answers nothing: the text is common, and the
search's steps (`_browse`) find a page of it sooner than reading so many scattered rows."""

MAX_GRAMS = 12
"""The most trigrams of a search text a lookup asks for (spread over it): each one more
narrows the rows less, and costs a posting list read."""

_VERSION = "2"  # 2: deleted rows too (a search at an earlier point reads them)
_SCHEMA = f"""
CREATE VIRTUAL TABLE IF NOT EXISTS text USING fts5(
    body, content='', tokenize='trigram', detail=none);
CREATE TABLE IF NOT EXISTS node (lsn INTEGER PRIMARY KEY, id BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('version', '{_VERSION}'), ('watermark', '-1');
"""

_ROWS = """
SELECT lsn, id, content FROM prompts WHERE lsn > $lo AND lsn <= $hi
UNION ALL
SELECT lsn, id, content FROM responses WHERE lsn > $lo AND lsn <= $hi
"""
"""Every row, deleted ones too: the index is the live store's, and a search at an earlier
point (the web view's time slider) reads the rows it names there, where a row deleted since
was live."""


def index_path(db: str | os.PathLike[str]) -> Path:
    """The index file of the database `db`."""
    return Path(f"{db}.text")


def drop_index(db: str | os.PathLike[str]) -> None:
    """Delete the index of `db` (with SQLite's side files): it is built again when needed."""
    path = index_path(db)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _grams(q: str) -> list[str]:
    """The distinct trigrams of `q` case-folded, at most `MAX_GRAMS` spread over it (the
    first and last kept); none when it has fewer than three characters."""
    folded = q.casefold()
    found = list(dict.fromkeys(folded[i : i + 3] for i in range(len(folded) - 2)))
    if len(found) <= MAX_GRAMS:
        return found
    last = len(found) - 1
    return [found[round(i * last / (MAX_GRAMS - 1))] for i in range(MAX_GRAMS)]


class TextIndex:
    """The index of one database's text. `catch_up` writes (one thread at a time: hold
    `lock`), `lookup` reads (any thread, each on a connection of its own)."""

    def __init__(self, db: str | os.PathLike[str]) -> None:
        self.db = Path(db)
        self.path = index_path(db)
        self.lock = threading.Lock()  # held by a catch-up, and by an erasure that drops it
        self._damaged = False  # a lookup found it damaged: the next catch-up starts again
        self.wanted = threading.Event()  # set by a lookup: whoever keeps it catches it up

    def watermark(self) -> int:
        """The last LSN whose rows the index holds; -1 when it holds none or cannot say."""
        try:
            with closing(self._connect(create=False)) as con:
                return max(-1, _watermark(con))
        except _UNUSABLE:
            return -1

    def lookup(self, q: str) -> tuple[int, list[uuid.UUID]] | None:
        """The watermark and the ids of the rows up to it whose text may hold `q`, or None
        when the index cannot narrow the search: `q` is shorter than three characters, the
        index is missing or damaged, or more than `MAX_CANDIDATES` rows may hold it."""
        terms = _grams(q)
        if not terms:
            return None
        self.wanted.set()
        match = " AND ".join('"' + t.replace('"', '""') + '"' for t in terms)
        try:
            with closing(self._connect(create=False)) as con:
                con.execute("BEGIN")  # the rows and the watermark of one transaction
                mark = _watermark(con)
                rows = con.execute(
                    "SELECT node.id FROM text JOIN node ON node.lsn = text.rowid "
                    "WHERE text MATCH ? LIMIT ?",
                    [match, MAX_CANDIDATES + 1],
                ).fetchall()
        except _UNUSABLE as exc:
            self._damaged |= _damage(exc)
            return None
        if mark < 0 or len(rows) > MAX_CANDIDATES:
            return None
        return mark, [uuid.UUID(bytes=row[0]) for row in rows]

    def catch_up(self, cursor: duckdb.DuckDBPyConnection, batch: int = BATCH_EVENTS) -> bool:
        """Index the text of up to `batch` events after the watermark, read on `cursor` (the
        committed projections), in one transaction with the new watermark. True if the
        projections hold more. A damaged index is deleted and started again. Hold `lock`."""
        (end,) = cursor.execute("SELECT min(lsn) FROM lmg_checkpoints").fetchone() or (-1,)
        end = -1 if end is None else int(end)
        if self._damaged:
            self._damaged = False
            drop_index(self.db)
        try:
            return self._catch_up(cursor, end, batch)
        except sqlite3.DatabaseError as exc:
            if not _damage(exc):
                raise
            drop_index(self.db)  # derived: start again
            return self._catch_up(cursor, end, batch)

    def _catch_up(self, cursor: duckdb.DuckDBPyConnection, end: int, batch: int) -> bool:
        with closing(self._connect(create=True)) as con:
            con.executescript(_SCHEMA)
            lo = _watermark(con)
            if lo > end or lo == _STALE:  # folded again from earlier, or an older format
                con.close()
                drop_index(self.db)
                return True
            hi = min(end, lo + batch)
            if hi <= lo:
                return False
            cursor.execute(_ROWS, {"lo": lo, "hi": hi})
            con.execute("BEGIN")  # one transaction: the rows and the watermark
            try:
                while rows := cursor.fetchmany(2048):
                    con.executemany(
                        "INSERT INTO text(rowid, body) VALUES (?, ?)",
                        [(lsn, text.casefold()) for lsn, _, text in rows],
                    )
                    con.executemany(
                        "INSERT INTO node VALUES (?, ?)", [(lsn, id.bytes) for lsn, id, _ in rows]
                    )
                con.execute("UPDATE meta SET value = ? WHERE key = 'watermark'", [str(hi)])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return hi < end

    def _connect(self, *, create: bool) -> sqlite3.Connection:
        """A connection to the index file (autocommit: transactions are explicit),
        creating the file with the store's file modes if `create` (the writer, which sets
        WAL mode; a reader needs no setting); never through a link."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            refuse_link(f"{self.path}{suffix}")
        if create:
            with suppress(FileExistsError):
                os.close(create_file(self.path, Modes.of(self.db.parent).file))
        # mode=rw: never created here (by SQLite, with the umask's modes), even when an
        # erasure or a rebuild deletes it between a check and the open
        uri = f"{self.path.absolute().as_uri()}?mode=rw"
        con = sqlite3.connect(uri, timeout=5.0, isolation_level=None, uri=True)
        if not create:  # a lookup: the file keeps the WAL mode its writer set
            return con
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # derived: a lost tail is caught up again
        except BaseException:
            con.close()
            raise
        return con


_UNUSABLE = (sqlite3.Error, OSError, UnsafeStore)  # UnsafeStore: a link planted at a file
_STALE = -2  # the watermark of an index in an older format: deleted and built again


def _damage(exc: BaseException) -> bool:
    """Does `exc` say the file is damaged (not a database, malformed), not merely busy?"""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def _watermark(con: sqlite3.Connection) -> int:
    try:
        rows = con.execute("SELECT key, value FROM meta").fetchall()
    except sqlite3.OperationalError:  # no such table: a new file
        return -1
    meta = dict(rows)
    if meta.get("version", _VERSION) != _VERSION:
        return _STALE
    return int(meta.get("watermark", -1))
