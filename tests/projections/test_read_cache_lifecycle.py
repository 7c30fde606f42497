"""A MemoryGraph's cached reads answer as a fresh reader does across erasure and retention.

`test_read_cache` makes random interleavings of appends and reads; this adds the data
lifecycle to them, through the public API, while the graph has answers cached: erasures (of a
session, a node, a user's sessions by metadata, everything before a time) and retention
policies applied as ``lmg erase --due`` applies them. An erasure rewrites events the graph has
folded and read already, and the `erasure.applied` record names its sessions and nodes only in
lists, which `touched_ids` does not collect: the graph forgets instead because it drops its
database and folds the log again at its next hold (the file's checkpoint is not the one it
left, so every cache goes; and the new fold's batches touch every id anyway). Most erasures
are the log's part (`eventlog.erase`), which the graph's next read finishes; some are
`projections.erase` in a thread, and one per seed is ``lmg erase`` in another process beside
``lmg sql`` in a third, with the graph reading (letting go of the file, and taking it back)
meanwhile. After each, every watched read is compared with a fresh `GraphView`, as in
`test_read_cache`, and no answer may hold a text the erasure blanked (which would pass the
comparison if the graph kept its old database). One test more deletes thousands of nodes at
once. A mismatch names the seed and the step; ``LMG_TEST_SEED=<seed>`` replays a seed.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import eventlog
import projections
from eventlog import events as ev
from projections import MemoryGraph
from projections._fold import _FORGET_ALL_AFTER
from projections._text_index import drop_index
from tests._processes import LMG, WAIT_S
from tests.projections.test_read_cache import (
    FAST,
    WATCHED,
    Read,
    Store,
    append,
    check,
    new_read,
    outcome,
)

STEPS = 40  # appends per seed
READ_PHASES = 0.3  # the chance of a read phase after an append (as in test_read_cache)
LIFECYCLE = 0.1  # the chance of an erasure or a retention run after an append
SEEDS = [3]  # erases by every path: the log's part, in a thread, in another process
DAY_NS = 86_400 * 1_000_000_000
_NOBODY = uuid.UUID(int=1)  # an id the log never saw


def _texts(g: MemoryGraph, lsns: list[int]) -> list[str]:
    """The texts of the events at `lsns` that a read would show: prompts', responses' and
    generic nodes' content (unique per step: ``q12``, ``a12``, ``doc 12``)."""
    texts = []
    for lsn in lsns:
        for record in g.read(lsn, lsn + 1):
            event = record.event
            if isinstance(event, ev.PromptAdded | ev.ResponseAdded | ev.NodeAdded) and (
                event.content and not event.content.startswith("[erased ")  # (an erased
            ):  # template's marker, rendered into a prompt made from it since)
                texts.append(event.content)
    return texts


def _lsn_time(g: MemoryGraph, rng: random.Random) -> int:
    """The `ts` of a random event of the log so far."""
    lsn = rng.randrange(g.next_lsn())
    return next(iter(g.read(lsn, lsn + 1))).event.ts


def _selector(g: MemoryGraph, s: Store, rng: random.Random) -> tuple[str, Any]:
    """A random erasure (or retention run) of what the store holds so far: its description
    and its selector (None: nothing due)."""
    kinds = ["session", "session", "node", "metadata"] if s.sessions else []  # (none yet)
    kind = rng.choice([*kinds, "before", "retention"])
    match kind:
        case "session":
            picked = rng.choice(s.sessions[-4:] if rng.random() < 0.7 else s.sessions)
            return f"erase session {picked}", eventlog.Selector.of(sessions=[picked])
        case "node":
            pool = [*s.prompts, *s.responses, *s.tools, *s.nodes] or s.sessions
            picked = rng.choice(pool)
            return f"erase node {picked}", eventlog.Selector.of(nodes=[picked])
        case "metadata":
            user = rng.choice("ab")
            return f"erase user={user}", eventlog.Selector.of(metadata={"user": user})
        case "before":
            before = _lsn_time(g, rng)
            return f"erase before {before}", eventlog.Selector.of(before=before)
        case _:  # a policy, applied at a moment that makes part of the log old
            days = rng.choice([1, 30])
            policy = rng.choice(
                [
                    eventlog.RetentionPolicy(content_days=days),
                    eventlog.RetentionPolicy(session_days=days),
                    eventlog.RetentionPolicy(content_days=days, session_days=days),
                ]
            )
            eventlog.set_retention(g.path, policy)
            now = _lsn_time(g, rng) + days * DAY_NS
            due = eventlog.due(g.path, now=now)
            return f"retention {policy} at {now}: {due}", due.selector()


class Lifecycle:
    """Erasures applied to the graph's store, each by one of three paths, and the texts they
    blanked (no answer may hold one after)."""

    def __init__(self, store: Path, tmp: Path) -> None:
        self.store = store
        self.tmp = tmp
        self.erased: list[str] = []
        self.processes = 0

    def apply(
        self, g: MemoryGraph, s: Store, rng: random.Random, watched: list[Read], step: int
    ) -> str:
        what, selector = _selector(g, s, rng)
        if selector is None:
            return f"{what}: nothing due"
        try:
            chosen = eventlog.select(self.store, selector)
        except eventlog.EventLogError as exc:  # an unknown id (say, an edge's)
            return f"{what}: refused ({type(exc).__name__})"
        self.erased += _texts(g, [c.lsn for c in chosen])
        if not self.processes and step >= STEPS // 3:  # once a seed: the slowest path
            how = "process"
            self.processes += 1
            self._in_another_process(g, selector, watched)
        elif rng.random() < 0.25:
            how = "thread"
            self._in_a_thread(g, selector, watched)
        else:  # the log's part only: the graph's next read does the projections' part
            how = "log"
            eventlog.erase(self.store, selector)
        return f"{what} ({how}): {len(chosen)} events"

    def _in_a_thread(self, g: MemoryGraph, selector: Any, watched: list[Read]) -> None:
        """`projections.erase` waits for the graph to drop its database at its next read: the
        graph reads (caching answers from the old file, then the new) until it has."""
        errors: list[BaseException] = []

        def erase() -> None:
            try:
                projections.erase(self.store, selector, wait_s=WAIT_S)
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        eraser = threading.Thread(target=erase)
        eraser.start()
        _read_while(g, watched, eraser.is_alive)
        eraser.join()
        assert not errors, errors

    def _in_another_process(self, g: MemoryGraph, selector: Any, watched: list[Read]) -> None:
        """``lmg erase`` in another process, which waits for the graph to drop its database,
        beside ``lmg sql`` in a third, a reader that makes the graph let go of the file (and
        take it back at its next read) while the erasure is under way."""
        args = [str(LMG), "erase", str(self.store), "--wait", str(WAIT_S)]
        for session in selector.sessions:
            args += ["--session", str(session)]
        for node in selector.nodes:
            args += ["--node", str(node)]
        for key, value in selector.metadata.items():
            args += ["--metadata", f"{key}={value}"]
        if selector.before is not None:
            args += ["--before", str(selector.before)]
        sql = [str(LMG), "sql", str(self.store), "SELECT count(*) FROM prompts"]
        out = [self.tmp / "erase.out", self.tmp / "sql.out"]
        with out[0].open("w") as erase_out, out[1].open("w") as sql_out:
            children = [
                subprocess.Popen(args, stdout=erase_out, stderr=subprocess.STDOUT),
                subprocess.Popen(sql, stdout=sql_out, stderr=subprocess.STDOUT),
            ]
            _read_while(g, watched, lambda: any(c.poll() is None for c in children))
            for child, said in zip(children, out, strict=True):
                assert child.wait(WAIT_S) == 0, said.read_text()

    def leaked(self, g: MemoryGraph, watched: list[Read]) -> str | None:
        """The first watched read whose answer (from the graph's caches) holds erased text."""
        quoted = [repr(text) for text in self.erased]
        for what, read in watched:
            shown = repr(outcome(read, g))
            for text in quoted:
                if (at := shown.find(text)) >= 0:
                    return f"{what} answered erased text {text}: ...{shown[at - 200 : at + 40]}"
        return None


def _read_while(g: MemoryGraph, watched: list[Read], going: Any) -> None:
    """Ask the watched reads of the graph (nothing compared: the erasure is under way, and
    a fresh reader asked a moment later may see it further on) until `going()` is False."""
    deadline = time.monotonic() + WAIT_S
    while going() and time.monotonic() < deadline:
        g.get_node(_NOBODY)  # a read, with none watched yet: the fold that drops the database
        for _what, read in watched:
            outcome(read, g)
        time.sleep(0.01)


def run(store: Path, tmp: Path, seed: int) -> None:
    rng = random.Random(seed)
    s = Store()
    life = Lifecycle(store, tmp)
    watched: list[Read] = []
    history: list[str] = []
    with MemoryGraph.open(store, **FAST) as g:
        for step in range(STEPS + 1):
            lifecycle = False
            if step < STEPS:
                history.append(f"step {step}: {append(g, s, rng, step)}")
                lifecycle = rng.random() < LIFECYCLE
                if lifecycle:
                    if rng.random() < 0.7:  # mostly with every answer cached just before
                        _fail_on(check(g, seed, step, watched, 0), seed, history)
                    history.append(f"step {step}: {life.apply(g, s, rng, watched, step)}")
                elif rng.random() >= READ_PHASES:
                    continue
            new = rng.randint(1, 3)
            watched += [new_read(s, rng) for _ in range(new)]
            del watched[:-WATCHED]
            wrong = check(g, seed, step, watched, new)
            if wrong is None and lifecycle and (leak := life.leaked(g, watched)) is not None:
                wrong = f"seed {seed}, step {step}: {leak}"
            _fail_on(wrong, seed, history)


def _fail_on(wrong: str | None, seed: int, history: list[str]) -> None:
    if wrong is not None:
        recent = "\n  ".join(history[-12:])
        pytest.fail(
            f"{wrong}\nthe last steps (LMG_TEST_SEED={seed} replays):\n  {recent}",
            pytrace=False,
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_cached_reads_answer_as_a_fresh_reader_after_erasures(
    tmp_path: Path, store: Path, seed: int
) -> None:
    run(store, tmp_path, seed)


def test_cached_reads_answer_as_a_fresh_reader_after_erasures_random_seed(
    tmp_path: Path, store: Path, drawn_seed: int
) -> None:
    """One more seed, new on each run (printed; ``LMG_TEST_SEED`` replays it)."""
    run(store, tmp_path, drawn_seed)


def test_cached_reads_answer_as_a_fresh_reader_after_mass_tombstones(store: Path) -> None:
    """One `delete_nodes_batch` of thousands of nodes (past the size at which a batch's
    touched ids are no longer listed, and every cached answer goes), with answers about them,
    their sessions and their lineage cached just before (smaller ones: the random tests)."""
    victims = _FORGET_ALL_AFTER + 100
    rng = random.Random(victims)
    s = Store()
    with MemoryGraph.open(store, **FAST) as g:
        s.sessions = [g.create_session(metadata={"user": rng.choice("ab")}).id for _ in range(6)]
        s.of_session = {session: [] for session in s.sessions}
        asked = [(rng.choice(s.sessions), f"q{i}") for i in range(victims + 40)]
        s.prompts = g.add_prompts_batch(asked)
        answered = s.prompts[::2]
        usage = eventlog.TokenUsage(1, 1)
        s.responses = g.add_responses_batch([(p, f"a{i}", usage) for i, p in enumerate(answered)])
        for (session, _), prompt in zip(asked, s.prompts, strict=True):
            s.session_of[prompt] = session
            s.of_session[session].append(prompt)
        for prompt, response in zip(answered, s.responses, strict=True):
            s.prompt_of[response] = prompt
            s.of_session[s.session_of[prompt]].append(response)
        watched = [new_read(s, rng) for _ in range(WATCHED * 2)]
        _fail_on(check(g, victims, 0, watched, len(watched)), victims, [])  # all cached now
        everything = sorted([*s.prompts, *s.responses])
        s.deleted = [*everything[-victims:-1], s.sessions[-1]]  # the newest, and a session
        g.delete_nodes_batch(s.deleted)
        history = [f"delete_nodes_batch of {len(s.deleted)} nodes"]
        _fail_on(check(g, victims, 1, watched, 0), victims, history)
        watched = [new_read(s, rng) for _ in range(WATCHED * 2)]  # some on the deleted ids
        _fail_on(check(g, victims, 2, watched, len(watched)), victims, history)


def test_a_reader_waits_while_the_graph_makes_its_database_anew_after_an_erasure(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader (`projections.connect`, as ``lmg sql`` in another process; the gate's locks
    are per open file, so a thread here is as another process) that comes while the graph
    drops its database for an erasure and makes it anew waits its turn: it once looked for
    the file before the gate, found none, and failed (``does not exist yet``; seen by
    ``lmg sql`` beside the erasures above)."""
    dropping, go_on = threading.Event(), threading.Event()

    def slowly(db: Path) -> None:  # the graph is between deleting the file and making it
        drop_index(db)
        dropping.set()
        go_on.wait(WAIT_S)

    monkeypatch.setattr("projections._erasure.drop_index", slowly)
    with MemoryGraph.open(store, **FAST) as g:
        session = g.create_session().id
        g.add_prompt(session, "q0")
        g.get_session(session)
        eventlog.erase(store, eventlog.Selector.of(sessions=[session]))
        found: list[Any] = []  # what the reader read, or its error
        folding = threading.Thread(target=g.get_session, args=(session,))
        folding.start()
        assert dropping.wait(WAIT_S)

        def read() -> None:
            try:
                with projections.connect(store, wait_s=WAIT_S) as con:
                    found.append(con.execute("SELECT content FROM prompts").fetchall())
            except projections.ProjectionError as exc:
                found.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.05)  # (the reader fails at once, or waits at the gate)
        go_on.set()
        folding.join(WAIT_S)
        reader.join(WAIT_S)
    assert len(found) == 1 and isinstance(found[0], list), found
    assert found[0][0][0].startswith("[erased "), found
