"""A store's retention policy, and what it makes due; ``lmg erase --due`` applies it.

The policy lives in ``STORE/RETENTION.json``, written atomically and readable by its owner
only. It says how old content may get (`content_days`: events recorded longer ago lose
their content) and how long a session may stay idle (`session_days`: a session with no
event since is dropped whole). Ages are by ``ts``, when the store recorded an event (an
event imported into an existing store counts from its import). `due` reports what the
policy selects at a moment; an erasure (`projections.erase`, ``lmg erase --due``) applies
it, blanking the content of what is due and keeping its structure.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import msgspec

from . import events as ev
from ._erase import Selector
from ._index import write_atomically
from ._resolve import session_of
from ._store import check_store
from .errors import EventLogError, InvalidEvent
from .log import EventLog

__all__ = ["RETENTION_FILE", "Due", "RetentionPolicy", "due", "retention", "set_retention"]

RETENTION_FILE = "RETENTION.json"
_DAY_NS = 86_400 * 1_000_000_000
MAX_DAYS = (2**63 - 1) // _DAY_NS
"""The longest period a policy names (106,751 days): event times are signed 64-bit ns, so a
longer one would reach before any time the log can hold; it would only mean "forever"."""


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How long a store keeps data; None: forever."""

    content_days: int | None = None  # content of events recorded longer ago is erased
    session_days: int | None = None  # sessions idle longer (no event since) are dropped whole

    def __post_init__(self) -> None:
        for name in ("content_days", "session_days"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not 1 <= value <= MAX_DAYS):
                raise InvalidEvent(
                    f"{name} must be a number of days from 1 to {MAX_DAYS}, got {value!r}"
                )


class Due(msgspec.Struct, frozen=True, kw_only=True):
    """What a policy selects at time `now` (ns)."""

    now: int
    content_before: int | None  # events recorded before this time are past content_days
    content_before_lsn: int  # events before this LSN are past content_days (0: none)
    content_events: int  # of those, the events whose content is not erased yet
    sessions: list[uuid.UUID]  # idle past session_days, oldest activity first

    def selector(self) -> Selector | None:
        """The erasure that applies the policy (``lmg erase --due``, the erase route's
        ``due``, the service's schedule): the content recorded before `content_before` and
        the idle `sessions`. None if it can select nothing (no `content_days`, no session
        idle); with `content_days`, an erasure that finds nothing not erased yet does nothing.
        """
        if self.content_before is None and not self.sessions:
            return None
        return Selector(sessions=list(self.sessions), before=self.content_before)

    def is_empty(self) -> bool:
        """Nothing is due: no old content left unerased, no idle session."""
        return not self.content_events and not self.sessions


def retention(store: str | os.PathLike[str]) -> RetentionPolicy | None:
    """The store's policy; None if it has none (a path that is no store is an error, not a
    store without a policy)."""
    check_store(Path(store))
    path = Path(store) / RETENTION_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=RetentionPolicy)
    except FileNotFoundError:
        return None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EventLogError(f"{path} is unreadable: {exc}") from None


def set_retention(store: str | os.PathLike[str], policy: RetentionPolicy | None) -> None:
    """Set (or, with None, remove) the store's policy."""
    root = Path(store)
    check_store(root)
    if policy is None:
        (root / RETENTION_FILE).unlink(missing_ok=True)
        return
    write_atomically(root / RETENTION_FILE, msgspec.json.encode(policy))


def due(
    store: str | os.PathLike[str],
    *,
    now: int | None = None,
    policy: RetentionPolicy | None = None,
) -> Due:
    """What the store's policy (or `policy`, read by the caller) selects at `now` (default:
    the present). Content already erased is not due again: an erased event is not counted,
    and a session whose every event is erased is not listed. One scan of the log (of its old
    part, with `content_days` alone)."""
    at = time.time_ns() if now is None else now
    policy = policy or retention(store) or RetentionPolicy()
    content_cut = None if policy.content_days is None else at - policy.content_days * _DAY_NS
    session_cut = None if policy.session_days is None else at - policy.session_days * _DAY_NS
    before = count = 0
    idle: dict[uuid.UUID, int] = {}  # session -> its last event before the cutoff
    active: set[uuid.UUID] = set()  # sessions with an event since the cutoff: not idle
    kept: set[uuid.UUID] = set()  # sessions with content not erased yet
    with EventLog.open(store, readonly=True) as log:
        if content_cut is not None or session_cut is not None:
            stop_time = content_cut if session_cut is None else None
            for lsn, event in log.read(0, log.next_lsn(), stop_time=stop_time):
                unerased = event.erased_at is None and not isinstance(event, ev.ErasureApplied)
                if content_cut is not None and event.ts < content_cut:
                    before, count = lsn + 1, count + unerased
                session = None if session_cut is None else session_of(event)
                if session_cut is not None and session is not None:
                    if event.ts >= session_cut:
                        active.add(session)
                    else:
                        idle[session] = event.ts
                    if unerased:
                        kept.add(session)
    oldest_first = sorted(idle.items(), key=lambda item: item[1])
    sessions = [s for s, _ in oldest_first if s not in active and s in kept]
    return Due(
        now=at,
        content_before=content_cut,
        content_before_lsn=before,
        content_events=count,
        sessions=sessions,
    )
