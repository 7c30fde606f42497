"""The web view of `lmg serve`: a static page under ``/ui/`` and the JSON routes it reads.

The page is one HTML shell and two assets shipped in this package (``replay/web/``); its
script builds every view in the browser from the service's public JSON routes, with the
token the person gives (kept in the tab's ``sessionStorage``, sent as a bearer token). So
the HTML holds no data and needs no auth, the routes enforce auth as every route does, and a
script can fetch anything the page shows. The routes added here for the page:

- ``GET /v1/stores``: the stores this token may use, and its scopes.
- ``GET /v1/stores/{name}/position``: the log's end, the fold's checkpoint (the slider) and
  the text index's watermark.
- ``GET /v1/stores/{name}/sessions``: the sessions list (search, filters, sort, page).
- ``GET /v1/stores/{name}/sessions/{id}/view``: a session's turns, tools, handoffs, spans.
- ``GET /v1/stores/{name}/nodes/{id}/lineage?depth=``: ancestors and descendants.
- ``GET /v1/stores/{name}/agents``: ``agent_stats`` and series over time.
- ``GET /v1/stores/{name}/templates`` and ``.../templates/{id}/diff?from=&to=``.

Each takes ``?at=LSN|TIME`` and then answers from `replay.at`'s view of that point (folded
for the request, in one of the query turns), as ``POST .../sql`` with ``at`` does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

import duckdb
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from eventlog._http import SCOPES, ApiError, service_of
from eventlog._time import to_ns
from projections import _browse
from projections._routes import ServedGraph, json_response, run_read

from ._routes import _bounded
from .view import at as view_at

__all__ = ["SECURITY_HEADERS", "routes"]

R = TypeVar("R")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
"""Sent with the page and its assets: scripts only from ``/ui/static/``, no inline script or
style, no frames, and requests only to this origin."""

_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
}


def _asset(name: str) -> bytes:
    return (resources.files(__package__) / "web" / name).read_bytes()


async def shell(request: Request) -> Response:
    """The page: the same HTML shell for every ``/ui/...`` path; its script routes."""
    return Response(
        _asset("index.html"), media_type=_ASSETS["index.html"], headers=SECURITY_HEADERS
    )


async def asset(request: Request) -> Response:
    name = request.path_params["file"]
    if name not in _ASSETS:
        raise ApiError(404, "not_found", "no such file")
    return Response(_asset(name), media_type=_ASSETS[name], headers=SECURITY_HEADERS)


async def home(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=302)


async def stores(request: Request) -> Response:
    """The names of the stores this token may use (every store when auth is off), and its
    scopes (every scope when auth is off): what the page offers (the SQL console, "fork
    from here") follows them; the routes still check each request."""
    service = service_of(request)
    token = service.token(request)
    names = [name for name in service.stores if token is None or token.allows(name)]
    scopes = [s for s in SCOPES if token is None or token.can(s)]
    return json_response({"stores": sorted(names), "scopes": scopes})


async def position(request: Request) -> Response:
    """How far the log, the fold and the text index are: the slider's range."""
    service = service_of(request)
    served = service.store(request, request.path_params["name"], "read")
    assert isinstance(served, ServedGraph) and served.owner is not None
    end = await served.log.next_lsn()
    indexed = await asyncio.to_thread(served.owner.index.watermark)
    return json_response(
        {"next_lsn": end, "folded_lsn": served.owner.checkpoint, "indexed_lsn": indexed}
    )


async def _on_point(request: Request, fn: Callable[[duckdb.DuckDBPyConnection], R]) -> Response:
    """`fn` on a cursor of the live projections, or of the replay view at ``?at=``."""
    service = service_of(request)
    served = service.store(request, request.path_params["name"], "read")
    assert isinstance(served, ServedGraph) and served.owner is not None
    point = request.query_params.get("at", "")
    if not point:
        await served.owner.reach(served.acknowledged, service.limits.sql_time_s)
        cursor = served.owner.cursor()
        return json_response(await run_read(service, cursor, lambda: fn(cursor)))
    lsn = point.isascii() and point.lstrip("-").isdigit() and len(point) < 20
    where: dict[str, Any] = {"lsn": int(point)} if lsn else {"time": point}
    # Within `replay_time_s`, as SQL's `at` and a diff: this fold was not bounded, so a few
    # requests at a point of a big store held every query turn for as long as they took.
    view = await _bounded(service, view_at, served.path, **where)
    try:
        cursor = view.connection.cursor()
        return json_response(await run_read(service, cursor, lambda: fn(cursor)))
    finally:
        await asyncio.to_thread(view.close)


def _uuid(request: Request) -> uuid.UUID:
    value = request.path_params["id"]
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(422, "bad_argument", f"id must be a UUID, got {value[:40]!r}") from None


def _int(request: Request, key: str, default: int) -> int:
    value = request.query_params.get(key) or str(default)
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise ApiError(422, "bad_argument", f"{key} must be a non-negative int")
    return int(value)


def _time(request: Request, key: str) -> int | None:
    value = request.query_params.get(key, "")
    if not value:
        return None
    return int(value) if value.isascii() and value.isdigit() else to_ns(value, key)


async def sessions(request: Request) -> Response:
    q = request.query_params
    spec = _browse.SessionFilter(
        q=q.get("q", ""),
        user=q.get("user", ""),
        agent=q.get("agent", ""),
        model=q.get("model", ""),
        since=_time(request, "since"),
        until=_time(request, "until"),
        sort=q.get("sort", "last_activity"),
        order=q.get("order", "desc"),
        limit=_int(request, "limit", 50),
        offset=_int(request, "offset", 0),
    )
    served = service_of(request).store(request, request.path_params["name"], "read")
    assert isinstance(served, ServedGraph) and served.owner is not None
    index = served.owner.index  # the live store's: a search at a point reads only its rows
    return await _on_point(request, lambda cursor: _browse.sessions_page(cursor, spec, index))


async def session(request: Request) -> Response:
    session_id = _uuid(request)
    offset, limit = _int(request, "offset", 0), _int(request, "limit", _browse.MAX_TURNS)
    return await _on_point(
        request, lambda cursor: _browse.session_view(cursor, session_id, offset, limit)
    )


async def lineage(request: Request) -> Response:
    node_id = _uuid(request)
    depth = max(1, min(_int(request, "depth", 3), 10))
    return await _on_point(request, lambda cursor: _browse.lineage(cursor, node_id, depth))


async def agents(request: Request) -> Response:
    return await _on_point(request, _browse.agents_view)


async def templates(request: Request) -> Response:
    return await _on_point(request, _browse.templates_view)


async def template_diff(request: Request) -> Response:
    template_id = _uuid(request)
    old, new = _int(request, "from", 1), _int(request, "to", 2)
    return await _on_point(
        request, lambda cursor: _browse.template_diff(cursor, template_id, old, new)
    )


def routes() -> list[Route]:
    base = "/v1/stores/{name}"
    return [
        Route("/", home),
        Route("/ui/static/{file}", asset),
        Route("/ui", shell),
        Route("/ui/{path:path}", shell),
        Route("/v1/stores", stores),
        Route(f"{base}/position", position),
        Route(f"{base}/sessions", sessions),
        Route(f"{base}/sessions/{{id}}/view", session),
        Route(f"{base}/nodes/{{id}}/lineage", lineage),
        Route(f"{base}/agents", agents),
        Route(f"{base}/templates", templates),
        Route(f"{base}/templates/{{id}}/diff", template_diff),
    ]
