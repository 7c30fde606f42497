"""Replay's routes of `lmg serve`: SQL at a point of history, the diff of two points, a fork.

``POST /v1/stores/{name}/sql`` with ``"at"`` (an LSN or an ISO 8601 time) runs on
`replay.at`'s view of that point, sandboxed and limited as the live SQL is.
``GET /v1/stores/{name}/diff?from=A&to=B`` answers `lmg diff --json`'s object.
``POST /v1/stores/{name}/fork`` ``{"at", "name"}`` (scope ``admin``) forks the store at a
point into a new store beside it, served at once under that name.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventlog import Origin
from eventlog._http import (
    ApiError,
    ServedLog,
    Service,
    handle_api_error,
    read_body,
    service_of,
)
from projections._routes import SqlRequest, json_response, run_read, sql_response

from ._points import Point
from .cli import _diff_json
from .diff import diff as run_diff
from .errors import BadPoint, ReplayError, ViewStorageFull
from .fork import fork as run_fork
from .view import at

__all__ = ["FORK_NAME", "ForkRequest", "exception_handlers", "routes", "sql_at"]

_ARROW = "application/vnd.apache.arrow.stream"
R = TypeVar("R")


def _point(value: int | str) -> dict[str, Any]:
    return {"lsn": value} if isinstance(value, int) else {"time": value}


class _OutOfTime(Exception):
    """Raised from a replay's progress report once its time is up: the fold stops there."""


def _deadline(limit_s: float) -> Callable[[int, int], None]:
    """A progress report (called after each folded batch) that stops a fold at `limit_s`."""
    end = time.monotonic() + limit_s

    def report(_done: int, _total: int) -> None:
        if time.monotonic() > end:
            raise _OutOfTime

    return report


async def _bounded(service: Service, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """`fn` (a replay: `at` or `diff`) in a worker thread, in a query turn, stopped once it
    has folded for `replay_time_s`: what it built is discarded, and the answer is a 422."""
    assert service.queries is not None
    limit = service.limits.replay_time_s
    async with service.queries:
        try:
            return await asyncio.to_thread(fn, *args, on_progress=_deadline(limit), **kwargs)
        except _OutOfTime:
            raise ApiError(
                422, "time_limit", f"replaying to the point took longer than {limit:g} s"
            ) from None


async def sql_at(request: Request, service: Service, body: SqlRequest) -> Response:
    """Build the view at ``body.at`` (in a query turn, within `replay_time_s`), then run the
    SQL on it in time."""
    served = service.stores[request.path_params["name"]]
    assert body.at is not None
    view = await _bounded(service, at, served.path, **_point(body.at))
    try:
        cursor = view.connection.cursor()
        arrow = _ARROW in request.headers.get("accept", "")
        return await run_read(service, cursor, sql_response(cursor, body, service.limits, arrow))
    finally:
        await asyncio.to_thread(view.close)


async def diff(request: Request) -> Response:
    """What changed between ``from`` and ``to`` (LSNs or times), table by table."""
    service = service_of(request)
    served = service.store(request, request.path_params["name"], "read")
    points: list[Point] = []
    for key in ("from", "to"):
        value = request.query_params.get(key)
        if value is None:
            raise ApiError(422, "bad_argument", f"{key} (an LSN or an ISO 8601 time) is required")
        points.append(
            int(value)
            if value.isascii() and value.lstrip("-").isdigit() and len(value) < 20
            else value
        )
    result = await _bounded(service, run_diff, served.path, points[0], points[1])
    return json_response(_diff_json(result))


FORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A fork's name: a store's name and its directory's, so one plain word (letters, digits,
``-``, ``_``; at most 64): no separator, no dot, so no way out of the directory."""


class ForkRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST .../fork``."""

    at: int | str  # an LSN or an ISO 8601 time: the fork holds the events up to it
    name: str  # the new store's name, and its directory's beside the forked store


async def fork(request: Request) -> Response:
    """Fork the store at a point into ``<the store's parent directory>/<name>``, and serve it
    as ``name`` from now on (scope ``admin``: it writes a new store on the host's disk).

    The name is checked first, and a directory or a served store of that name already there
    is refused (409), so a fork never writes into, or over, anything that exists. Only a
    token for every store may fork: the new store is one only such tokens may use, and a
    409 would tell a token of one store the names of the others."""
    service = service_of(request)
    served = service.store(request, request.path_params["name"], "admin")
    token = service.token(request)
    if token is not None and "*" not in token.stores:
        raise ApiError(403, "forbidden", "forking needs an admin token for every store ('*')")
    raw = await read_body(request, service.limits.max_body_bytes, service.limits.body_timeout_s)
    try:
        body = msgspec.json.decode(raw, type=ForkRequest)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ApiError(422, "bad_request", f"not a fork request: {exc}") from None
    if not FORK_NAME.fullmatch(body.name):
        raise ApiError(
            422, "bad_argument", "name must be 1 to 64 letters, digits, '-' or '_' (no dots)"
        )
    target = Path(served.path).absolute().parent / body.name
    forking: set[str] = request.app.state.forking
    if body.name in service.stores or body.name in forking or os.path.lexists(target):
        raise _name_taken(body.name)
    forking.add(body.name)  # no await since the check: a fork racing for it is a 409 too
    try:
        origin = await _make_fork(service, served, body, target)
        try:
            await request.app.state.open_store(body.name, target)
        except BaseException:  # the fork is not served: its directory must not keep the name
            shutil.rmtree(target, ignore_errors=True)
            raise
    finally:
        forking.discard(body.name)
    return json_response(
        {
            "store": body.name,
            "forked_from": served.name,
            "last_lsn": origin.last_lsn,
            "last_ts": origin.last_ts,
            "events": origin.last_lsn + 1,  # LSNs are dense from 0: an erasure keeps each
        }
    )


def _name_taken(name: str) -> ApiError:
    return ApiError(409, "name_taken", f"there is already a store or a file named {name}")


async def _make_fork(
    service: Service, served: ServedLog, body: ForkRequest, target: Path
) -> Origin:
    """`replay.fork` into `target`, in a query turn. A failure answers with the stores'
    names, not the host's paths; one because `target` appeared meanwhile (made by another
    process) is a 409, as if it had been there at the check."""
    assert service.queries is not None
    async with service.queries:
        try:
            return await asyncio.to_thread(run_fork, served.path, body.at, target)
        except BadPoint:
            raise
        except ReplayError:
            if os.path.lexists(target):
                raise _name_taken(body.name) from None
            raise ReplayError(f"cannot fork {served.name} into {body.name}") from None


async def _handle_replay_error(request: Request, exc: Exception) -> Response:
    """422 (`bad_point`, `replay_error`); 507 `storage_full` for a server disk with no room
    for the view, as for the store's own."""
    if isinstance(exc, ViewStorageFull):
        return await handle_api_error(request, ApiError(507, "storage_full", str(exc)))
    code = "bad_point" if isinstance(exc, BadPoint) else "replay_error"
    return await handle_api_error(request, ApiError(422, code, str(exc)))


def routes() -> list[Route]:
    return [
        Route("/v1/stores/{name}/diff", diff),
        Route("/v1/stores/{name}/fork", fork, methods=["POST"]),
    ]


exception_handlers = {ReplayError: _handle_replay_error}
