"""Replay's routes of `lmg serve`: SQL at a point of history, and the diff of two points.

``POST /v1/stores/{name}/sql`` with ``"at"`` (an LSN or an ISO 8601 time) runs on
`replay.at`'s view of that point, sandboxed and limited as the live SQL is.
``GET /v1/stores/{name}/diff?from=A&to=B`` answers `lmg diff --json`'s object.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventlog._http import ApiError, Service, handle_api_error, service_of
from projections._routes import SqlRequest, json_response, run_read, sql_response

from ._points import Point
from .cli import _diff_json
from .diff import diff as run_diff
from .errors import BadPoint, ReplayError
from .view import at

__all__ = ["exception_handlers", "routes", "sql_at"]

_ARROW = "application/vnd.apache.arrow.stream"


def _point(value: int | str) -> dict[str, Any]:
    return {"lsn": value} if isinstance(value, int) else {"time": value}


async def sql_at(request: Request, service: Service, body: SqlRequest) -> Response:
    """Build the view at ``body.at`` (in a query turn), then run the SQL on it in time."""
    served = service.stores[request.path_params["name"]]
    assert body.at is not None
    assert service.queries is not None
    async with service.queries:
        view = await asyncio.to_thread(at, served.path, **_point(body.at))
    try:
        cursor = view.connection.cursor()
        arrow = _ARROW in request.headers.get("accept", "")
        return await run_read(
            service, cursor, sql_response(cursor, body, service.limits.max_rows, arrow)
        )
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
        points.append(int(value) if value.lstrip("-").isdigit() and len(value) < 20 else value)
    assert service.queries is not None
    async with service.queries:
        result = await asyncio.to_thread(run_diff, served.path, points[0], points[1])
    return json_response(_diff_json(result))


async def _handle_replay_error(request: Request, exc: Exception) -> Response:
    code = "bad_point" if isinstance(exc, BadPoint) else "replay_error"
    return await handle_api_error(request, ApiError(422, code, str(exc)))


def routes() -> list[Route]:
    return [Route("/v1/stores/{name}/diff", diff)]


exception_handlers = {ReplayError: _handle_replay_error}
