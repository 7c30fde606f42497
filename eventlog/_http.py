"""What every route of `lmg serve` shares: served stores, tokens, limits, errors, metrics.

The service is assembled in `replay` (the top of the import chain); each package serves its
own routes, as it adds its own CLI commands. This module is the bottom layer of that: it
knows the log only, so `projections` and `replay` build on it. It imports Starlette and
prometheus-client (the ``serve`` extra): `import eventlog` never imports it.

Rules every route keeps (docs/service.md):

1. A store is named, never located: a token that may not use a store gets the same 404 as
   for a store that does not exist, and no error body carries a path.
2. Every input has a limit (`Limits`), checked before the work it bounds.
3. Errors are one JSON line, ``{"error": {"code": ..., "message": ...}}``, with a stable code.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import ipaddress
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import prometheus_client as prom
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._erase import ErasureRunning
from ._wire import error_code, error_details
from .errors import (
    AppendConflict,
    BrokenReference,
    EventLogError,
    IdempotencyKeyReused,
    InvalidEvent,
    LogClosed,
    LogFailed,
    StorageFull,
)
from .log import AsyncEventLog

__all__ = [
    "SCOPES",
    "ApiError",
    "Auth",
    "Limits",
    "Metrics",
    "ServedLog",
    "Service",
    "Token",
    "access_log",
    "browser_guard",
    "error_response",
    "hash_token",
    "is_loopback",
    "read_body",
    "service_of",
]

SCOPES = ("append", "read", "sql", "admin")
"""What a token may do: append events, read (the log and typed reads), run SQL, and admin
(every scope; `/metrics` too when auth is on)."""


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The service's limits: one per input, each with a default that protects the host."""

    max_body_bytes: int = 8 * 1024 * 1024
    """A request body larger than this is refused (413) as soon as it is known to be."""
    body_timeout_s: float = 30.0
    """A body not received in full within this time is refused (408): a slow client holds
    no worker for longer. A request's head (line and headers) has as long to arrive, from
    the connection or its first byte (`replay._service`), else 408 and the connection is
    closed. An answer, too: a client that takes none of the bytes waiting to be sent (past
    64 KiB) for this long has its connection closed."""
    max_bodies_bytes: int = 256 * 1024 * 1024
    """Bytes of request bodies the service holds at once, over every request in flight (a
    body is held until its request is answered); a body that would pass it is refused (503
    ``busy``, which clients and OTLP exporters retry): 1024 connections, each sending 8 MB of
    a body a little larger and then nothing, held 8 GB for `body_timeout_s`. It is at least
    `max_body_bytes`: a body alone is never busy."""
    max_batch_appends: int = 1_000
    """Appends one body of the batch route may carry (``events:batch``); more is refused
    (413) whole. Each append in it keeps the log's own limits."""
    max_rows: int = 10_000
    """SQL results are cut at this many rows (the response says ``"truncated": true``)."""
    max_answer_bytes: int = 64 * 1024 * 1024
    """SQL results are cut before their rows pass this many bytes (of JSON, or of Arrow
    buffers), as `max_rows` cuts them: rows are fetched a few hundred at a time, so an
    answer of huge rows holds no more than about this much (one value larger than it is
    still made whole before it is cut; `sql_time_s` bounds the time it takes)."""
    max_sql_bytes: int = 256 * 1024
    """A SQL text (the ``query`` of ``POST .../sql``, in UTF-8) longer than this is refused
    (413) before it is parsed: DuckDB's parse cannot be interrupted at `sql_time_s`, and
    takes seconds a megabyte (a 7 MB text held its query turn for 14 s)."""
    max_sql_params: int = 100_000
    """SQL parameter values a request may carry (``params`` of ``POST .../sql``: each item of
    a list or dict counts, and each list or dict), and fields of the STRUCTs DuckDB makes of
    its dicts (each dict of a list gets the keys of all of them); more is refused (413)
    before they are rebuilt or bound: DuckDB cannot interrupt a bind, and 8 MB of ``[{},
    {}, ...]`` held its query turn for 14 s and the service's event loop for 7 s, a list
    of 8,000 dicts of one key each, all different, its turn for 55 s."""
    sql_time_s: float = 5.0
    """A SQL statement or typed read running longer is interrupted (`interrupt`) and
    refused (422); its cursor is closed, never left running."""
    replay_time_s: float = 30.0
    """Building the replay view of SQL's ``at`` (or a web view route's), or a diff's two
    views, that takes longer is abandoned (checked after each folded batch; its temporary
    files go) and refused (422)."""
    max_queries: int = 4
    """SQL statements and typed reads running at once; more wait their turn."""
    max_follows: int = 64
    """Open follow streams (``follow=true``) at once; more are refused (429)."""
    otlp_trace_timeout_s: float = 30.0
    """A trace received over OTLP whose root span has not arrived within this time is
    mapped as it is (its spans are durable from the start; docs/service.md)."""
    otlp_log_wait_s: float = 2.0
    """Once a store has received OTLP log records naming a trace, a trace whose root span
    arrives waits this long for the log records of its calls (sent apart, on ``/v1/logs``)
    before it is mapped, so their content reaches its turns."""

    def __post_init__(self) -> None:
        if min(msgspec.structs.astuple(self)) <= 0:
            raise ValueError("every limit must be positive")


class ApiError(Exception):
    """A refusal with an HTTP status, a stable code and a one-line message; `details` are the
    fields of the error the code names (`AppendConflict.actual`, ...), for the client."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    return JSONResponse(error_body(code, message, details), status_code=status)


MAX_MESSAGE_CHARS = 1_000
"""An error message longer than this keeps its head and its end, and says how much of it was
cut between them: messages quote what a request sent (a value that is not a UUID, an unknown
node type, a SQL text DuckDB could not bind), which was echoed whole, up to `max_body_bytes`
(8 MB of a session id answered 8 MB of error)."""


def bounded_message(message: str) -> str:
    """`message`, of at most about `MAX_MESSAGE_CHARS` characters."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    head, tail = MAX_MESSAGE_CHARS * 6 // 10, MAX_MESSAGE_CHARS * 3 // 10
    cut = len(message) - head - tail
    return f"{message[:head]}...[{cut} characters cut]...{message[-tail:]}"


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A refusal's JSON body, the same whether it answers a request or one append of a batch;
    its message bounded (`bounded_message`)."""
    error: dict[str, Any] = {"code": code, "message": bounded_message(message)}
    if details:
        error["details"] = details
    return {"error": error}


NOT_FOUND = ApiError(404, "unknown_store", "no such store")


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the auth file: who, its hash, what it may do, and where."""

    name: str
    sha256: str  # hex digest of the token; the token itself is never stored
    scopes: list[str]
    stores: list[str]  # store names, or ["*"] for every store served

    def allows(self, store: str) -> bool:
        return "*" in self.stores or store in self.stores

    def can(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


class _AuthFile(msgspec.Struct, forbid_unknown_fields=True):
    tokens: list[Token]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Auth:
    """Bearer tokens from an auth file (JSON: ``{"tokens": [{"name", "sha256", "scopes",
    "stores"}]}``). Compared by their SHA-256 in constant time."""

    def __init__(self, tokens: Iterable[Token]) -> None:
        self.tokens = list(tokens)
        for token in self.tokens:
            unknown = set(token.scopes) - set(SCOPES)
            if unknown:
                raise InvalidEvent(f"token {token.name}: unknown scope(s) {sorted(unknown)}")

    @classmethod
    def load(cls, path: str | Path) -> Auth:
        try:
            data = msgspec.json.decode(Path(path).read_bytes(), type=_AuthFile)
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"{path}: not an auth file ({exc})") from None
        return cls(data.tokens)

    def check(self, presented: str) -> Token | None:
        digest = hash_token(presented)
        found = None
        for token in self.tokens:  # every entry is compared: the time says nothing
            if hmac.compare_digest(digest, token.sha256.lower()):
                found = token
        return found


class Metrics:
    """The service's Prometheus metrics, on a registry of its own (docs/service.md)."""

    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        self._children: dict[tuple[Any, ...], Any] = {}
        r = self.registry
        self.appends = prom.Counter(
            "lmg_appends", "Append requests acknowledged", ["store"], registry=r
        )
        self.events = prom.Counter(
            "lmg_events_appended", "Events appended, by type", ["store", "type"], registry=r
        )
        self.bytes = prom.Counter(
            "lmg_request_bytes_appended", "Bytes of append bodies acknowledged", ["store"],
            registry=r,
        )  # fmt: skip
        self.requests = prom.Histogram(
            "lmg_request_seconds",
            "Request latency, by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.sql = prom.Histogram("lmg_sql_seconds", "SQL statement time", ["store"], registry=r)
        self.follows = prom.Gauge(
            "lmg_follow_streams", "Open follow streams", ["store"], registry=r
        )
        self.bodies = prom.Gauge(
            "lmg_request_body_bytes", "Bytes of request bodies held now", registry=r
        )
        self.lag_events = prom.Gauge(
            "lmg_fold_lag_events", "Events in the log not yet folded", ["store"], registry=r
        )
        self.lag_seconds = prom.Gauge(
            "lmg_fold_lag_seconds",
            "Age of the oldest event not yet folded (0 when caught up)",
            ["store"],
            registry=r,
        )

        self.fsync = prom.Histogram(
            "lmg_fsync_seconds", "fsync of one group commit", ["store"], registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
        )  # fmt: skip
        self.group = prom.Histogram(
            "lmg_commit_group_requests", "Append requests committed together (one write, one "
            "fsync)", ["store"], registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )  # fmt: skip

    def appended(self, store: str, body_bytes: int, types: Iterable[str]) -> None:
        """Count one acknowledged append: the request, its body's bytes, its events by type.
        Each label set's child is looked up once (`labels` costs more than the count)."""
        self._child(self.appends, store).inc()
        self._child(self.bytes, store).inc(body_bytes)
        for tag in types:
            self._child(self.events, store, tag).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def committed(self, store: str) -> Callable[[int, int, float | None], None]:
        """The log's `on_commit` hook for `store`: group size and fsync time."""
        group, fsync = self.group.labels(store), self.fsync.labels(store)

        def observe(requests: int, _events: int, fsync_s: float | None) -> None:
            group.observe(requests)
            if fsync_s is not None:
                fsync.observe(fsync_s)

        return observe

    def text(self, shown: Callable[[str], bool] | None = None) -> bytes:
        """The Prometheus text; with `shown`, only the samples of the stores it allows (and
        those of no store): a token of some stores never reads another's name."""
        if shown is None:
            return prom.generate_latest(self.registry)
        return prom.generate_latest(_Shown(self.registry, shown))


class _Shown:
    """A registry's metrics without the samples labelled with a store `shown` refuses."""

    def __init__(self, registry: prom.CollectorRegistry, shown: Callable[[str], bool]) -> None:
        self._registry, self._shown = registry, shown

    def collect(self) -> Iterator[Any]:
        for metric in self._registry.collect():
            kept = copy.copy(metric)
            kept.samples = [
                s
                for s in metric.samples
                if "store" not in s.labels or self._shown(s.labels["store"])
            ]
            yield kept


@dataclass
class ServedLog:
    """One served store as the log's routes see it. The projections' owner sets `lag` (how
    far the fold is behind: events, seconds)."""

    name: str
    path: Path
    log: AsyncEventLog
    lag: Callable[[], tuple[int, float]] | None = None
    acknowledged: int = -1  # the last LSN an append through the service was answered with


@dataclass
class Service:
    """The state every route reads (``request.app.state.service``)."""

    stores: Mapping[str, ServedLog]
    auth: Auth | None = None
    limits: Limits = field(default_factory=Limits)
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
    ready: bool = False
    stops: set[asyncio.Event] = field(default_factory=set)  # one per open follow stream
    bodies: int = 0  # bytes of request bodies held now (`read_body`; `Limits.max_bodies_bytes`)
    queries: asyncio.Semaphore | None = None
    erased: list[Callable[[str], None]] = field(default_factory=list)
    """Called with a store's name after an erasure on it: each drops what the service keeps
    in memory of that store's content (the OTLP receiver's remembered traces)."""

    def store(self, request: Request, name: str, scope: str) -> ServedLog:
        """The store `name`, if the request's token may use it for `scope`.

        401 without a valid token; 404 for a store that is not served *or* not allowed to
        this token (the same answer: a token never learns another store exists); 403 for a
        store it may use, but not for this."""
        if self.draining:
            raise ApiError(503, "shutting_down", "the service is shutting down")
        token = self.token(request)
        if token is not None and not token.allows(name):
            raise NOT_FOUND
        served = self.stores.get(name)
        if served is None:
            raise NOT_FOUND
        if token is not None and not token.can(scope):
            raise ApiError(403, "forbidden", f"this token may not {scope} here")
        return served

    def token(self, request: Request) -> Token | None:
        """The request's token (None when auth is off); 401 if it has none or a wrong one."""
        if self.auth is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        token = self.auth.check(presented.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise ApiError(401, "unauthorized", "a valid bearer token is required")
        request.scope["lmg.token"] = token.name
        return token

    def scrub(self, message: str) -> str:
        """A message with every served store's path replaced by its name (defence in depth:
        errors are worded without paths, and this keeps any that slipped through out)."""
        for served in self.stores.values():
            message = message.replace(str(served.path.resolve()), f"<{served.name}>")
            if len(served.path.parts) > 1:  # a one-word relative path is a word, too
                message = message.replace(str(served.path), f"<{served.name}>")
        return message


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused (413) once it passes `limit` bytes and (408) if it takes longer than
    `timeout_s` to arrive; a declared Content-Length over the limit is refused unread. Its
    bytes count in `Service.bodies` until the request is answered (`access_log` gives them
    back), and one that would pass `Limits.max_bodies_bytes` is refused (503)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    service = service_of(request)
    # Room for one body of `max_body_bytes` at least: one raised past `max_bodies_bytes` (a
    # bulk import) made every body between the two 503 busy forever, alone too.
    budget = max(service.limits.max_bodies_bytes, service.limits.max_body_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                if service.bodies + len(chunk) > budget:
                    raise ApiError(503, "busy", _BUSY)
                service.bodies += len(chunk)
                service.metrics.bodies.set(service.bodies)
                request.scope[_HELD] = request.scope.get(_HELD, 0) + len(chunk)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"the body took longer than {timeout_s:g} s") from None
    return b"".join(chunks)


_HELD = "lmg.body_bytes"  # the bytes of its body a request holds in `Service.bodies`
_BUSY = "the service holds as many request bodies as it may (max_bodies_bytes); retry shortly"


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the body is larger than {limit} bytes")


def log_error(exc: EventLogError) -> ApiError:
    """The log's errors as HTTP: bad input 422, conflicts 409, a full disk 507, a closed or
    failed log 503; damage is 500 without its message (it names files)."""
    match exc:
        case BrokenReference() | InvalidEvent():
            return ApiError(422, error_code(exc), str(exc), error_details(exc))
        case AppendConflict():
            return ApiError(409, "append_conflict", str(exc), error_details(exc))
        case IdempotencyKeyReused():
            return ApiError(409, "idempotency_key_reused", str(exc))
        case ErasureRunning():
            return ApiError(409, "erasure_running", "an erasure is already running on this store")
        case StorageFull():
            return ApiError(507, "storage_full", "the store's disk is full")
        case LogClosed():
            return ApiError(503, "shutting_down", "the service is shutting down")
        case LogFailed():
            return ApiError(503, "log_failed", "the log failed; the service must be restarted")
    return ApiError(500, "internal", "the store could not answer (see the service's log)")


def refusal(exc: BaseException, where: str) -> ApiError:
    """How `exc` is answered: an `ApiError` as it is, the log's errors as `log_error` says,
    anything else 500 without a word of it. What is answered 500 is logged in full on stderr
    (`where`: the request's path), for the operator."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, EventLogError):
        api = log_error(exc)
        if api.status == 500:
            print(f"lmg serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return api
    print(f"lmg serve: {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return ApiError(500, "internal", "the service could not answer (see its log)")


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """Any exception a route raised, answered as `refusal` says (its message scrubbed)."""
    api = refusal(exc, request.url.path)
    message = service_of(request).scrub(api.message)
    return error_response(api.status, api.code, message, api.details)


exception_handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    ApiError: handle_api_error,
    EventLogError: handle_api_error,
    Exception: handle_api_error,
}
"""The log's errors as responses (the assembled app adds each package's)."""


class _Line(msgspec.Struct):
    """One line of the access log."""

    ts: float
    method: str
    route: str
    path: str
    status: int
    ms: float
    token: str | None


_LINE = msgspec.json.Encoder()
_NO_STORE = (b"cache-control", b"no-store")


def access_log(app: ASGIApp, metrics: Metrics, service: Service | None = None) -> ASGIApp:
    """ASGI middleware: one JSON line per request on stderr (time, method, route, status,
    milliseconds, token name), and the request's latency in `metrics` by route and status;
    an answer that says nothing of caching is sent with ``Cache-Control: no-store``. Once a
    request is answered, the bytes of its body go out of `service`'s count (`read_body`).
    The route is its template (``/v1/stores/{name}/sql``), so labels stay few: the one
    Starlette's router dispatched to (``scope["route"]``), not a second search of the routes.

    Lines are written once per turn of the event loop, together: the requests that end in
    one turn (many, under load) cost one write, and one release of the interpreter's lock
    to the fold's thread instead of one each.
    """
    pending: list[bytes] = []

    def write() -> None:
        lines = b"".join(pending).decode()
        pending.clear()  # first: a failed write must not stop the next turn's
        sys.stderr.write(lines)
        sys.stderr.flush()

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        began = time.monotonic()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                if not any(name == b"cache-control" for name, _ in headers):
                    # The stores' content, errors too: kept by no cache, not even the
                    # browser's own on disk after the tab (and its token) is gone.
                    message["headers"] = [*headers, _NO_STORE]
            await send(message)

        try:
            await app(scope, receive, sending)
        finally:
            held = scope.get(_HELD, 0)
            if held and service is not None:
                service.bodies -= held
                metrics.bodies.set(service.bodies)
            elapsed = time.monotonic() - began
            route = getattr(scope.get("route"), "path", "<unknown>")
            method = scope["method"]
            metrics._child(metrics.requests, route, method, str(status)).observe(elapsed)
            ms, token = round(elapsed * 1e3, 3), scope.get("lmg.token")
            line = _Line(time.time(), method, route, scope["path"], status, ms, token)
            if not pending:
                asyncio.get_running_loop().call_soon(write)
            pending.append(_LINE.encode(line) + b"\n")

    return middleware


def is_loopback(host: str) -> bool:
    """Is `host` (a name or an IP literal, IPv6 with or without brackets) this host only?"""
    host = host.lower().removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(authority: str) -> str:
    """The host of a ``host[:port]`` authority (``[::1]:8420`` gives ``::1``)."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    return authority.rpartition(":")[0] if ":" in authority else authority


def browser_guard(app: ASGIApp) -> ASGIApp:
    """ASGI middleware for a service without auth, which trusts whoever can reach loopback.
    A web browser on this host reaches it too, on behalf of any page it shows, so:

    - a request whose ``Origin`` is not the service's own (any page of another site, or a
      sandboxed one: ``null``) is refused (403 ``cross_origin``): a cross-site form or
      ``fetch(..., {mode: "no-cors"})`` could otherwise append, erase or fork (CSRF), since
      the routes take a body of any content type and no token is asked for;
    - a request whose ``Host`` is no loopback name is refused (403 ``bad_host``): a page of
      a domain its owner points at 127.0.0.1 (DNS rebinding) is the service's own origin to
      the browser, and could otherwise read every store.

    Clients other than browsers (curl, the Python clients) send no ``Origin`` and a loopback
    ``Host``. With auth on, a page has no token to send, and this guard is not needed. A
    request with two ``Host`` (or ``Origin``) headers is refused (400): this guard read the
    last, Starlette the first."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            named = [k for k, _ in scope["headers"] if k in (b"host", b"origin")]
            if len(named) != len(set(named)):
                message = "a request has at most one Host and one Origin header"
                await error_response(400, "bad_request", message)(scope, receive, send)
                return
            headers = {k: v for k, v in scope["headers"] if k in (b"host", b"origin")}
            host = headers.get(b"host", b"").decode("latin-1").lower()
            if host and not is_loopback(_host_of(host)):
                refused = error_response(
                    403, "bad_host", "without --auth, Host must be 127.0.0.1, ::1 or localhost"
                )
                await refused(scope, receive, send)
                return
            origin = headers.get(b"origin")
            if origin is not None and urlsplit(origin.decode("latin-1").lower()).netloc != host:
                message = "without --auth, requests from another origin's web page are refused"
                await error_response(403, "cross_origin", message)(scope, receive, send)
                return
        await app(scope, receive, send)

    return middleware
