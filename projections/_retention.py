"""Retention on the service's schedule: ``lmg serve --retention-every DURATION``.

Once the service is ready, and then every period, it applies the retention policy of each
store it serves (``RETENTION.json``, read afresh each time: `lmg retention` may change it
while the service runs), as ``lmg erase --due`` would: `eventlog.due` says what the policy
makes due, and the erasure goes through the erase route's own path (`erase_served`: the
owner erases through the service's handle on the log, folds into a new database, and the
service forgets what it remembered of the store), recorded in the log as by ``retention``.

1. Runs never overlap: one task runs them, store after store, and waits a whole period
   after the last. An erasure already running on a store (the erase route, or ``lmg erase``
   from another process) holds its erasure lock: the run is skipped (``busy``) and the next
   period tries again.
2. Nothing due, nothing written: a store whose policy makes nothing due (its old content is
   erased already) costs one scan of its log's old part, and no erasure is recorded.
3. Each run of a store is one JSON line on stderr (``"event": "retention"``) and counts in
   the metrics (`Schedule`); a failed run (say, a fold that stopped) is logged and counted,
   and the schedule goes on.
4. Draining stops the schedule: a run in progress finishes (an erasure is never cut short
   by the service's own exit), and no new one starts.

``GET /v1/stores/{name}/retention`` (admin) shows a store's policy, what it makes due now,
the schedule's period and its last run there, with or without a schedule (`status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time

import msgspec
import prometheus_client as prom
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import eventlog
from eventlog._http import Service, service_of

from ._routes import ServedGraph, erase_served, json_response
from .errors import BadArgument

__all__ = ["BY", "MAX_EVERY_S", "MIN_EVERY_S", "Run", "Schedule", "parse_every", "routes"]

BY = "retention"
"""Who the log records as having erased (`ErasureApplied.actor`) on the schedule."""
MIN_EVERY_S = 1.0
"""The shortest period: each run scans the old part of every served store's log."""
MAX_EVERY_S = 366 * 86_400.0
"""The longest: a year and a day (a longer one would be "never"; leave the option out)."""
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
_DURATION = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)([smhd])")


def parse_every(text: str) -> float:
    """A period such as ``90s``, ``15m``, ``6h`` or ``1d``, in seconds; BadArgument if it is
    not one, or lies outside `MIN_EVERY_S`..`MAX_EVERY_S`."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise BadArgument(
            f"--retention-every {text[:40]!r}: give a number and a unit (s, m, h, d), e.g. 6h"
        )
    seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if not MIN_EVERY_S <= seconds <= MAX_EVERY_S:
        raise BadArgument(f"--retention-every {text[:40]!r}: give from 1s to 366d")
    return seconds


class Run(msgspec.Struct, kw_only=True):
    """One run of the schedule on one store: its log line (the fields are documented in
    docs/service.md, Retention)."""

    ts: float  # when it ended, Unix seconds
    event: str = "retention"
    store: str
    outcome: str  # erased, nothing_due, no_policy, busy or failed
    events: int = 0  # events whose content it erased
    sessions: int = 0  # idle sessions it dropped (their content erased whole)
    first_lsn: int | None = None
    last_lsn: int | None = None
    seconds: float = 0.0
    error: str | None = None  # why it failed (one line, without paths)


_LINE = msgspec.json.Encoder()


class Schedule:
    """Applies each served store's retention policy every `every_s` seconds (`start`, then
    `close` when draining), with its metrics on the service's registry."""

    def __init__(self, service: Service, every_s: float) -> None:
        self.service = service
        self.every_s = every_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_runs: dict[str, Run] = {}  # store -> its last run
        r = service.metrics.registry
        self.runs = prom.Counter(
            "lmg_retention_runs",
            "Scheduled retention runs, by outcome (erased, nothing_due, no_policy, busy, failed)",
            ["store", "outcome"],
            registry=r,
        )
        self.erased = prom.Counter(
            "lmg_retention_events_erased",
            "Events whose content scheduled retention erased",
            ["store"],
            registry=r,
        )
        self.last = prom.Gauge(
            "lmg_retention_last_run_timestamp_seconds",
            "When the last scheduled retention run on the store ended (Unix time)",
            ["store"],
            registry=r,
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="lmg-retention")

    async def close(self) -> None:
        """Stop: a run in progress finishes first. Never raises: the drain goes on to close
        the stores whatever became of the schedule (a run's own errors are caught and
        logged; only a failed write of its line could have ended the task)."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            for served in list(self.service.stores.values()):
                if self._stop.is_set() or self.service.draining:
                    return
                assert isinstance(served, ServedGraph)
                self._record(await self.apply(served))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every_s)

    async def apply(self, served: ServedGraph) -> Run:
        """One run on one store: what its policy makes due now, erased."""
        began = time.monotonic()
        run = Run(ts=0.0, store=served.name, outcome="nothing_due")
        try:
            _policy, due = await asyncio.to_thread(_due_now, served)
            selector = None if due is None or due.is_empty() else due.selector()
            if due is None:
                run.outcome = "no_policy"
            elif selector is not None:
                done = await erase_served(self.service, served, selector, BY)
                record = done.record
                run.events, run.sessions = record.events, len(selector.sessions)
                run.first_lsn, run.last_lsn = record.first_lsn, record.last_lsn
                run.outcome = "erased" if record.events else "nothing_due"
        except eventlog.ErasureRunning:
            run.outcome = "busy"
        except Exception as exc:  # logged and counted; the next period tries again
            run.outcome = "failed"
            first = str(exc).splitlines()[0] if str(exc) else ""
            run.error = self.service.scrub(f"{type(exc).__name__}: {first}")
        run.seconds = round(time.monotonic() - began, 3)
        run.ts = time.time()
        return run

    def _record(self, run: Run) -> None:
        self.last_runs[run.store] = run
        self.runs.labels(run.store, run.outcome).inc()
        self.erased.labels(run.store).inc(run.events)
        self.last.labels(run.store).set(run.ts)
        sys.stderr.write(_LINE.encode(run).decode() + "\n")
        sys.stderr.flush()


def _due_now(
    served: ServedGraph,
) -> tuple[eventlog.RetentionPolicy | None, eventlog.Due | None]:
    """The store's policy, read once, and what it makes due now (None without a policy)."""
    policy = eventlog.retention(served.path)
    return policy, None if policy is None else eventlog.due(served.path, policy=policy)


async def status(request: Request) -> Response:
    """``GET .../retention`` (admin): ``{"policy", "due", "every_s", "last_run"}``; `due` is
    what the policy makes due now (null without one), `every_s` and `last_run` null when the
    service has no schedule (or has not run it on this store yet)."""
    service = service_of(request)
    served = service.store(request, request.path_params["name"], "admin")
    assert isinstance(served, ServedGraph)
    schedule: Schedule | None = getattr(request.app.state, "retention", None)
    policy, due = await asyncio.to_thread(_due_now, served)
    return json_response(
        {
            "policy": policy,
            "due": None if due is None else _shown(due),
            "every_s": None if schedule is None else schedule.every_s,
            "last_run": None if schedule is None else schedule.last_runs.get(served.name),
        }
    )


def _shown(due: eventlog.Due) -> dict[str, object]:
    return {
        "content_before": due.content_before,
        "content_events": due.content_events,
        "sessions": len(due.sessions),
    }


def routes() -> list[Route]:
    return [Route("/v1/stores/{name}/retention", status)]
