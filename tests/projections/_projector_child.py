"""Workload and child processes for the projector tests (`test_projector.py`).

Imported by the tests for `Workload` (mixed, valid events) and run as a script in child
processes: ``python _projector_child.py MODE STORE ...``. Every line a child prints is one JSON
object, flushed at once, so a parent that SIGKILLs it can trust every complete line.

Modes:

- ``project STORE BATCH HOLD_S``: a `Projector` with a small batch folds the backlog; prints
  ``{"ready": true, "checkpoint": N}`` once the database is open, then
  ``{"checkpoint": N}`` after each committed batch, then ``{"done": N}``.
- ``append STORE SEED SLEEP_S``: appends mixed requests (durability NONE) until SIGTERM, then
  prints ``{"appended": N, "next_lsn": M}`` and exits 0. Prints ``{"ready": true}`` first.
- ``read STORE SECONDS PAUSE_S``: loops `projections.connect` + consistency queries for
  SECONDS (see `read_loop`), then prints one JSON summary.
"""

from __future__ import annotations

import faulthandler
import json
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import eventlog
import projections
from eventlog import events as ev

__all__ = ["CONSISTENCY", "Workload", "log_counts", "populate"]


def say(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


# -- the workload --------------------------------------------------------------------------------


@dataclass
class Workload:
    """Mixed, valid requests: what the log holds is learnt from what it stored."""

    rng: random.Random
    sessions: list[uuid.UUID] = field(default_factory=list)  # live
    prompts: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # live prompt -> session
    responses: list[uuid.UUID] = field(default_factory=list)  # live
    agents: list[uuid.UUID] = field(default_factory=list)
    templates: list[uuid.UUID] = field(default_factory=list)
    open_tools: list[uuid.UUID] = field(default_factory=list)  # invoked, not completed
    nodes: list[uuid.UUID] = field(default_factory=list)  # live generic nodes

    def learn(self, event: ev.EventBase) -> None:
        match event:
            case ev.SessionCreated(id=sid) | ev.SessionForked(id=sid):
                self.sessions.append(sid)
            case ev.PromptAdded(id=pid, session_id=sid):
                self.prompts[pid] = sid
            case ev.ResponseAdded(id=rid):
                self.responses.append(rid)
            case ev.AgentRegistered(id=aid):
                self.agents.append(aid)
            case ev.TemplateCreated(id=tid):
                self.templates.append(tid)
            case ev.ToolInvoked(id=tid):
                self.open_tools.append(tid)
            case ev.ToolCompleted(tool_id=tid):
                if tid in self.open_tools:
                    self.open_tools.remove(tid)
            case ev.NodeAdded(id=nid):
                self.nodes.append(nid)
            case ev.NodeDeleted(node_id=nid):
                self._forget(nid)
            case _:
                pass

    def _forget(self, node: uuid.UUID) -> None:
        if node in self.sessions:
            self.sessions.remove(node)
            # Its prompts stay live in the log, but new prompts may not go into the session.
        self.prompts.pop(node, None)
        for live in (self.responses, self.nodes, self.open_tools):
            if node in live:
                live.remove(node)

    def _text(self) -> str:
        return self.rng.choice(("hello", "what is rust?", "x" * 40, uuid.uuid4().hex))

    def _session(self) -> uuid.UUID:
        return self.rng.choice(self.sessions[-30:])

    def request(self) -> list[ev.EventBase]:
        """One random request (events that refer only to live nodes)."""
        rng = self.rng
        new = uuid.uuid4
        if len(self.sessions) < 3 or rng.random() < 0.06:
            sid, pid = new(), new()
            return [
                ev.SessionCreated(id=sid, metadata={"n": rng.randrange(100)}, tags=["t"]),
                ev.PromptAdded(id=pid, session_id=sid, content=self._text()),
                ev.ResponseAdded(
                    id=new(), prompt_id=pid, content=self._text(), usage=ev.TokenUsage(3, 4)
                ),
            ]
        if not self.agents or rng.random() < 0.02:
            return [ev.AgentRegistered(id=new(), name=f"agent{rng.randrange(9)}", role="r")]
        if not self.templates or rng.random() < 0.02:
            parent = rng.choice(self.templates) if self.templates and rng.random() < 0.5 else None
            return [
                ev.TemplateCreated(
                    id=new(),
                    name="t",
                    text="Answer {{q}}",
                    variables=[ev.VariableSpec(name="q")],
                    parent_id=parent,
                )
            ]
        prompts = list(self.prompts)[-60:]
        choice = rng.random()
        if choice < 0.30:
            events: list[ev.EventBase] = []
            for _ in range(rng.choice((1, 1, 2, 5, 12))):
                s = self._session()
                parent_prompt = next(
                    (p for p in reversed(prompts) if self.prompts[p] == s and rng.random() < 0.3),
                    None,
                )
                meta = ev.PromptMetadata(model="m", temperature=0.5) if rng.random() < 0.3 else None
                events.append(
                    ev.PromptAdded(
                        id=new(),
                        session_id=s,
                        content=self._text(),
                        parent_prompt_id=parent_prompt,
                        metadata=meta,
                    )
                )
            return events
        if choice < 0.50 and prompts:
            usage = ev.TokenUsage(rng.randrange(50), rng.randrange(50))
            return [
                ev.ResponseAdded(
                    id=new(),
                    prompt_id=rng.choice(prompts),
                    content=self._text(),
                    usage=usage,
                    model="m",
                    latency_ms=rng.random() * 100,
                )
            ]
        if choice < 0.55:
            return [ev.SessionUpdated(session_id=self._session(), metadata={"k": rng.random()})]
        if choice < 0.58:
            return [ev.SessionForked(id=new(), parent_session_id=self._session())]
        if choice < 0.62:
            return [ev.AgentUpdated(agent_id=rng.choice(self.agents), model=f"m{rng.random()}")]
        if choice < 0.66 and prompts:
            return [
                ev.AgentAssigned(
                    id=new(), prompt_id=rng.choice(prompts), agent_id=rng.choice(self.agents)
                )
            ]
        if choice < 0.69 and self.responses:
            return [
                ev.AgentHandoff(
                    id=new(),
                    response_id=rng.choice(self.responses[-60:]),
                    to_agent_id=rng.choice(self.agents),
                    from_agent_id=rng.choice(self.agents),
                    reason="why not",
                )
            ]
        if choice < 0.71:
            return [
                ev.TemplateUpdated(
                    template_id=rng.choice(self.templates),
                    text=f"Answer {{{{q}}}} v{rng.randrange(9)}",
                    variables=[ev.VariableSpec(name="q")],
                )
            ]
        if choice < 0.75:
            return [
                ev.PromptAdded(
                    id=new(),
                    session_id=self._session(),
                    content="",
                    template_id=rng.choice(self.templates),
                    variables={"q": self._text()},
                )
            ]
        if choice < 0.77 and prompts:
            return [
                ev.TemplateLinked(
                    id=new(),
                    prompt_id=rng.choice(prompts),
                    template_id=rng.choice(self.templates),
                    variables={"q": "linked"},
                )
            ]
        if choice < 0.82 and self.responses:
            return [
                ev.ToolInvoked(
                    id=new(),
                    response_id=rng.choice(self.responses[-60:]),
                    tool_name=rng.choice(("search", "sql")),
                    parameters={"q": rng.randrange(9)},
                )
            ]
        if choice < 0.86 and self.open_tools:
            failed = rng.random() < 0.3
            return [
                ev.ToolCompleted(
                    tool_id=self.open_tools[0],
                    result=None if failed else {"rows": rng.randrange(9)},
                    error="boom" if failed else None,
                    duration_ms=rng.random() * 10,
                )
            ]
        if choice < 0.89:
            return [
                ev.NodeAdded(
                    id=new(),
                    kind=rng.choice(("document", "feedback")),
                    content=self._text(),
                    data={"r": rng.randrange(5)},
                    session_id=self._session() if rng.random() < 0.5 else None,
                )
            ]
        if choice < 0.93 and prompts and (self.nodes or self.responses):
            target = rng.choice(self.nodes or self.responses)
            return [
                ev.EdgeAdded(
                    id=new(),
                    from_id=rng.choice(prompts),
                    to_id=target,
                    edge_type=rng.choice(("REFERENCES", "CUSTOM_LINK")),
                    properties={"w": rng.random()},
                )
            ]
        # Tombstones: prompts, responses, generic nodes, now and then a whole session.
        victims: list[uuid.UUID] = []
        if prompts and rng.random() < 0.6:
            victims.append(rng.choice(prompts))
        if self.responses and rng.random() < 0.5:
            victims.append(rng.choice(self.responses))
        if self.nodes and rng.random() < 0.5:
            victims.append(rng.choice(self.nodes))
        if len(self.sessions) > 10 and rng.random() < 0.2:
            victims.append(self.sessions[0])
        return [ev.NodeDeleted(node_id=v, reason="test") for v in victims] or [
            ev.SessionCreated(id=new())
        ]

    def step(self, log: eventlog.EventLog) -> int:
        """Append one request; returns how many events it stored."""
        appended = log.append(self.request())
        for event in appended.events:
            self.learn(event)
        return len(appended.events)


def populate(log: eventlog.EventLog, workload: Workload, events: int) -> int:
    """Append mixed requests until at least `events` more events are stored; returns them."""
    done = 0
    while done < events:
        done += workload.step(log)
    log.flush()
    return done


def learn_store(log: eventlog.EventLog, workload: Workload) -> int:
    """Teach `workload` what the store holds; returns the next LSN."""
    next_lsn = 0
    for record in log.read():
        workload.learn(record.event)
        next_lsn = record.lsn + 1
    return next_lsn


# -- consistency of one read -----------------------------------------------------------------------

CONSISTENCY = """
SELECT
  (SELECT min(lsn) FROM lmg_checkpoints) AS checkpoint,
  (SELECT max(lsn) FROM lmg_checkpoints) AS checkpoint_max,
  (SELECT count(*) FROM sessions s WHERE s.prompt_count <> (
     SELECT count(*) FROM prompts p WHERE p.session_id = s.id AND p.deleted_ts IS NULL))
    AS bad_prompt_counts,
  (SELECT count(*) FROM sessions s WHERE s.response_count <> (
     SELECT count(*) FROM responses r WHERE r.session_id = s.id AND r.deleted_ts IS NULL))
    AS bad_response_counts,
  (SELECT count(*) FROM sessions) AS sessions,
  (SELECT count(*) FROM prompts) AS prompts,
  (SELECT count(*) FROM responses) AS responses,
  (SELECT greatest(
     (SELECT coalesce(max(lsn), -1) FROM sessions),
     (SELECT coalesce(max(lsn), -1) FROM prompts),
     (SELECT coalesce(max(lsn), -1) FROM responses),
     (SELECT coalesce(max(lsn), -1) FROM edges))) AS max_row_lsn
"""
"""One query, so one snapshot: the checkpoint, invariants the fold keeps, and row counts."""

COUNTED = {
    "session.created": "sessions",
    "session.forked": "sessions",
    "prompt.added": "prompts",
    "response.added": "responses",
}


def log_counts(log: eventlog.EventLog, stop: int, since: int, counts: dict[str, int]) -> int:
    """Add to `counts` the rows events `since`..`stop` (excluded) make; returns `stop`."""
    for record in log.read(since, stop):
        table = COUNTED.get(ev.tag_of(record.event))
        if table is not None:
            counts[table] += 1
    return stop


def check_read(row: dict[str, Any], counts: dict[str, int]) -> list[str]:
    """What is wrong with one consistency read, given the log's counts up to its checkpoint."""
    problems = []
    if row["checkpoint"] != row["checkpoint_max"]:
        problems.append(f"projections at different checkpoints: {row}")
    if row["bad_prompt_counts"] or row["bad_response_counts"]:
        problems.append(f"session totals disagree with live rows: {row}")
    if row["max_row_lsn"] > row["checkpoint"]:
        problems.append(f"a row beyond the checkpoint is visible: {row}")
    for table, expected in counts.items():
        if row[table] != expected:
            problems.append(
                f"{table}: {row[table]} rows, the log up to the checkpoint makes {expected}"
            )
    return problems


def read_loop(store: Path, seconds: float, pause_s: float) -> dict[str, Any]:
    """Read for `seconds` (longer, up to 4x, until three checkpoints were seen), `pause_s`
    between reads; each read is checked. Returns a summary (waits in ms)."""
    waits: list[float] = []
    problems: list[str] = []
    errors: list[str] = []
    checkpoints: list[int] = []
    counts = dict.fromkeys(("sessions", "prompts", "responses"), 0)
    counted_to = 0
    began = time.monotonic()
    with eventlog.open(store, readonly=True) as log:
        while (elapsed := time.monotonic() - began) < seconds or (
            len(set(checkpoints)) < 3 and elapsed < 4 * seconds
        ):
            asked = time.monotonic()
            try:
                with projections.connect(store) as con:
                    waited = time.monotonic() - asked
                    cursor = con.execute(CONSISTENCY)
                    names = [d[0] for d in cursor.description or ()]
                    row = dict(zip(names, cursor.fetchall()[0], strict=True))
            except Exception as exc:  # reported to the parent, which fails the test
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            waits.append(waited * 1e3)
            if checkpoints and row["checkpoint"] < checkpoints[-1]:
                problems.append(f"checkpoint went back from {checkpoints[-1]} to {row}")
            checkpoints.append(row["checkpoint"])
            if row["checkpoint"] + 1 >= counted_to:
                counted_to = log_counts(log, row["checkpoint"] + 1, counted_to, counts)
                problems += check_read(row, counts)
            time.sleep(pause_s)
    waits.sort()
    return {
        "reads": len(waits),
        "errors": errors[:5],
        "error_count": len(errors),
        "problems": problems[:5],
        "problem_count": len(problems),
        "first_checkpoint": checkpoints[0] if checkpoints else None,
        "last_checkpoint": checkpoints[-1] if checkpoints else None,
        "distinct_checkpoints": len(set(checkpoints)),
        "max_wait_ms": waits[-1] if waits else None,
        "p95_wait_ms": waits[int(len(waits) * 0.95)] if waits else None,
        "median_wait_ms": waits[len(waits) // 2] if waits else None,
    }


# -- the modes -----------------------------------------------------------------------------------


def _project(store: str, batch: int, hold_s: float) -> None:
    with projections.Projector(store, batch_events=batch, hold_s=hold_s) as projector:
        say({"ready": True, "checkpoint": projector.checkpoint})
        done = projector.catch_up(on_progress=lambda p: say({"checkpoint": p.checkpoint}))
        say({"done": done})


def _append(store: str, seed: int, sleep_s: float) -> None:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    workload = Workload(random.Random(seed))
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        learn_store(log, workload)
        say({"ready": True})
        appended = 0
        while not stopping:
            appended += workload.step(log)
            time.sleep(sleep_s)
        log.flush()
        say({"appended": appended, "next_lsn": log.next_lsn()})


def main(argv: list[str]) -> None:
    faulthandler.register(signal.SIGUSR1)  # a parent that gives up on us asks where we hang
    mode, store = argv[0], argv[1]
    if mode == "project":
        _project(store, int(argv[2]), float(argv[3]))
    elif mode == "append":
        _append(store, int(argv[2]), float(argv[3]))
    elif mode == "read":
        say(read_loop(Path(store), float(argv[2]), float(argv[3])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
