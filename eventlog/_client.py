"""A client of `lmg serve`: `EventLog`'s appends and log reads over HTTP, sync and async.

``eventlog.connect(url)`` is to a served store what ``eventlog.open(path)`` is to a local
one. The typed helpers are `Appends`' (the same `_commands` build and check each request);
only `_submit` differs: it sends the request's events as JSON, all-or-nothing, with its
idempotency key and expected LSNs, and builds the `Appended` the helper reads its result
from out of the records the service stored (``Prefer: return=representation``). So a helper
returns what it returns embedded, and an error comes back as the class it is embedded: the
service answers each with a stable code (`_wire.ERRORS`), raised here again with its fields.
Both clients coalesce (`_coalesce`): appends their tasks or threads make while others are
in flight go together to the batch route (``POST .../events:batch``), each with its own
outcome.

The transports are the ``serve`` extra's, never imported by ``import eventlog``: httpx2 for
`RemoteLog` (imported with this module, on first use of `eventlog.connect`), aiohttp for
`AsyncRemoteLog` (imported by its first request, so a sync agent never loads it). aiohttp
because the async client is the one many concurrent agents share: its C HTTP parser and
single-write requests cost about a fifth of httpx2's CPU per append (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self
from urllib.parse import quote, urlsplit
from urllib.request import getproxies, proxy_bypass

import httpx2
import msgspec

from . import events as ev
from ._coalesce import Bounds, Coalescer, Outcome, ThreadCoalescer
from ._erase import Erasure, ErasureRunning, Selected, Selector
from ._reader import Record
from ._store import Appended, PendingRequest
from ._time import TimeLike, iso_time, to_ns
from ._wire import ERRORS, rebuilt
from .errors import InvalidEvent, LogClosed, ServiceError
from .log import Appends, AsyncAppends

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

__all__ = ["LIMITS", "AsyncRemoteLog", "Http", "RemoteLog", "Reply", "connect", "connect_async"]

_JSON = msgspec.json.Encoder()

LIMITS = httpx2.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=2.0)
"""Connections kept open between requests are let go after 2 s idle, before the service's
5 s (uvicorn's ``timeout_keep_alive``): a connection the service closes just as a request
is sent on it would fail that request with no answer (an unknown outcome for an append)."""
_EVENT = msgspec.json.Decoder(ev.Event)
_REPRESENTATION = {"Prefer": "return=representation", "Content-Type": "application/json"}


class _Answer(msgspec.Struct):
    lsn: int
    duplicate: bool
    events: list[ev.Event]


class _Lsn(msgspec.Struct):
    lsn: int


class _Position(msgspec.Struct):
    last_lsn: int | None
    next_lsn: int


class _Error(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any] = {}


class _ErrorBody(msgspec.Struct):
    error: _Error


def _error_of(status: int, reason: str | None, content: bytes) -> _Error:
    """The error an unsuccessful answer's body holds; ``http_{status}`` if it holds none of
    the service's (a proxy's page, or a route the service does not have)."""
    try:
        return msgspec.json.decode(content, type=_ErrorBody).error
    except msgspec.DecodeError:
        return _Error(f"http_{status}", reason or "no answer")


class _Outcome(msgspec.Struct):
    """One append's outcome in the batch route's answer."""

    status: int
    lsn: int = 0
    duplicate: bool = False
    events: list[ev.Event] = []
    error: _Error | None = None


class _Outcomes(msgspec.Struct):
    appends: list[_Outcome]


class Http:
    """What every request to one served store shares: where, who, and the errors to raise."""

    def __init__(
        self,
        url: str,
        store: str,
        token: str | None,
        errors: Mapping[str, type[Exception]] = ERRORS,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidEvent(f"url must be an http:// or https:// URL, got {url!r}")
        if not isinstance(store, str) or not store:
            raise InvalidEvent("store must be a non-empty str")
        self.url = url.rstrip("/")
        self.base = f"{self.url}/v1/stores/{quote(store, safe='')}"
        token = token if token is not None else os.environ.get("LMG_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.errors = {**errors, "erasure_running": ErasureRunning}

    def check(self, response: httpx2.Response) -> httpx2.Response:
        """The response if it is a success; else the error it names, raised as its class."""
        if not response.is_success:
            self.refuse(response.status_code, response.reason_phrase, response.read())
        return response

    def refuse(self, status: int, reason: str | None, content: bytes) -> None:
        """Raise the error an unsuccessful answer names, as its class."""
        raise self.error(status, reason, content)

    def error(self, status: int, reason: str | None, content: bytes) -> Exception:
        """The error an unsuccessful answer names, as its class."""
        return self.named(status, _error_of(status, reason, content))

    def named(self, status: int, error: _Error) -> Exception:
        """The exception for an error body's code: its class, or `ServiceError`."""
        cls = self.errors.get(error.code)
        if cls is None:
            return ServiceError(status, error.code, error.message)
        return rebuilt(cls, error.message, error.details)

    def closed(self) -> LogClosed:
        """What a closed client raises, as a closed embedded log does."""
        return LogClosed(f"the client of {self.url} is closed")

    def unreachable(self, exc: Exception, appending: bool = False) -> ServiceError:
        outcome = " (the append's outcome is unknown: retry it with its idempotency_key)"
        reason = str(exc) or type(exc).__name__  # a transport's errors may have no message
        message = f"no answer from {self.url}: {reason}" + (outcome if appending else "")
        return ServiceError(0, "unreachable", message)


class _DryRun(msgspec.Struct):
    selected: list[Selected]


def _erase_body(selector: Selector, dry_run: bool, by: str | None) -> bytes:
    """The body of ``POST .../erase``: the selector's criteria, `dry_run` and `by`."""
    fields: dict[str, Any] = msgspec.structs.asdict(selector)
    fields = {k: v for k, v in fields.items() if v not in ([], {}, None)}
    fields["dry_run"] = dry_run
    if by is not None:
        fields["by"] = by
    return _JSON.encode(fields)


def _body(request: PendingRequest) -> bytes:
    options: dict[str, Any] = {"events": request.events}
    for name, value in (
        ("idempotency_key", request.key),
        ("expect_store_lsn", request.expect_store_lsn),
        ("expect_session_lsn", request.expect_session_lsn),
    ):
        if value is not None:
            options[name] = value
    return _JSON.encode(options)


def _appended(content: bytes) -> Appended:
    answer = msgspec.json.decode(content, type=_Answer)
    return Appended(answer.lsn, list(answer.events), answer.duplicate)


def _batch_body(bodies: list[bytes]) -> bytes:
    """The batch route's body around appends' bodies, each already JSON."""
    return b'{"appends":[' + b",".join(bodies) + b"]}"


def _record(line: bytes | str) -> Record:
    return Record(msgspec.json.decode(line, type=_Lsn).lsn, _EVENT.decode(line))


def _read_params(start: int, start_time: TimeLike | None, follow: bool) -> dict[str, str]:
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise InvalidEvent(f"start must be a non-negative int LSN, got {start!r}")
    origin = str(start) if start_time is None else iso_time(to_ns(start_time, "start_time"))
    return {"from": origin, "follow": "true" if follow else "false"}


def _stop_at(stop: int | None, stop_time: TimeLike | None) -> tuple[int | None, int | None]:
    if stop is not None and (not isinstance(stop, int) or isinstance(stop, bool) or stop < 0):
        raise InvalidEvent(f"stop must be a non-negative int LSN, got {stop!r}")
    return stop, None if stop_time is None else to_ns(stop_time, "stop_time")


def _past(record: Record, stop: int | None, stop_ts: int | None) -> bool:
    return (stop is not None and record.lsn >= stop) or (
        stop_ts is not None and record.event.ts >= stop_ts
    )


class RemoteLog(Appends):
    """A store served by `lmg serve`, for appending and reading from threads: every typed
    helper of `EventLog`, `read`, `follow`, `last_lsn` and `next_lsn`. Use `eventlog.connect`.

    With `coalesce` (the default), appends other threads make while requests are in flight
    go together in one request to the batch route, as in `AsyncRemoteLog`."""

    FLIGHTS = 2
    """Coalesced requests in flight at once: while they are, appends queue for the next."""

    def __init__(
        self,
        url: str,
        store: str = "default",
        *,
        token: str | None = None,
        timeout: float = 30.0,
        coalesce: bool = True,
        errors: Mapping[str, type[Exception]] = ERRORS,
    ) -> None:
        self._http = Http(url, store, token, errors)
        self._client = httpx2.Client(headers=self._http.headers, timeout=timeout, limits=LIMITS)
        self._coalescer = ThreadCoalescer(self._send, flights=self.FLIGHTS) if coalesce else None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections. Idempotent."""
        self._client.close()

    def _request(
        self, method: str, path: str, appending: bool = False, **kw: Any
    ) -> httpx2.Response:
        return self._http.check(self._exchange(method, path, appending, **kw))

    def _exchange(
        self, method: str, path: str, appending: bool = False, **kw: Any
    ) -> httpx2.Response:
        """One request and its answer, whatever its status; `LogClosed` once closed, and
        the ``unreachable`` `ServiceError` if no answer came."""
        if self._client.is_closed:
            raise self._http.closed()
        try:
            return self._client.request(method, self._http.base + path, **kw)
        except httpx2.TransportError as exc:
            raise self._http.unreachable(exc, appending) from None

    def _submit(self, request: PendingRequest) -> Appended:
        if self._coalescer is None or not self._coalescer.batching:
            return self._append(_body(request))
        if self._client.is_closed:
            raise self._http.closed()
        return self._coalescer.submit(_body(request))

    def _append(self, body: bytes) -> Appended:
        response = self._request("POST", "/events", True, content=body, headers=_REPRESENTATION)
        return _appended(response.content)

    def _send(self, bodies: list[bytes]) -> list[Outcome]:
        """A flight of the coalescer, as `AsyncRemoteLog._send` (the parts it sends again
        after a 413 or a missing route, one after the other)."""
        if len(bodies) == 1:
            return [_outcome_of(self._append, bodies[0])]
        body = _batch_body(bodies)
        try:
            response = self._exchange(
                "POST", "/events:batch", True, content=body, headers=_REPRESENTATION
            )
        except (LogClosed, ServiceError) as exc:  # closed, or no answer: every append's
            return [exc] * len(bodies)
        status, reason, content = response.status_code, response.reason_phrase, response.content
        if self._coalescer is not None:
            parts = _again(self._coalescer, status, reason, content, body=body, bodies=bodies)
            if parts is not None:
                return [outcome for part in parts for outcome in self._send(part)]
        return _outcomes(self._http, status, reason, content, len(bodies))

    def last_lsn(self, session_id: uuid.UUID | None = None) -> int | None:
        """The last LSN of the log, or of a session's events (None: empty, or no such one)."""
        return self._position(session_id).last_lsn

    def next_lsn(self) -> int:
        """The LSN the next event will get."""
        return self._position(None).next_lsn

    def _position(self, session_id: uuid.UUID | None) -> _Position:
        params = {} if session_id is None else {"session_id": _session(session_id)}
        response = self._request("GET", "/lsn", params=params)
        return msgspec.json.decode(response.content, type=_Position)

    def select(self, selector: Selector) -> list[Selected]:
        """What `erase` would erase now (a dry run; an admin token): `eventlog.select` on
        the served store, cut at the service's `max_rows` events."""
        body = _erase_body(selector, True, None)
        response = self._request("POST", "/erase", content=body)
        return msgspec.json.decode(response.content, type=_DryRun).selected

    def erase(
        self, selector: Selector, *, by: str | None = None, timeout: float | None = None
    ) -> Erasure:
        """Erase what `selector` chooses from the served store's log, projections and
        snapshots (`projections.erase`, run by the service; an admin token). `by` is recorded
        as who erased (default: the token's name). `timeout` (default: none) bounds the
        request: an erasure rewrites segments and folds the projections again."""
        body = _erase_body(selector, False, by)
        response = self._request("POST", "/erase", content=body, timeout=timeout)
        return msgspec.json.decode(response.content, type=Erasure)

    def read(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        start_time: TimeLike | None = None,
        stop_time: TimeLike | None = None,
    ) -> Iterator[Record]:
        """Events from LSN `start` (or the first at/after `start_time`), up to but excluding
        `stop` (or the first at/after `stop_time`), as (lsn, event) records."""
        stop, stop_ts = _stop_at(stop, stop_time)
        for record in self._stream(_read_params(start, start_time, False), None):
            if _past(record, stop, stop_ts):
                return
            yield record

    def follow(
        self,
        start: int = 0,
        *,
        start_time: TimeLike | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Record]:
        """Like `read`, then new events as they are appended, until `stop` is set (looked at
        between records, and at least once a second)."""
        return self._stream(_read_params(start, start_time, True), stop)

    def _stream(self, params: dict[str, str], stop: threading.Event | None) -> Iterator[Record]:
        # Following with a stop to look at, a quiet stream is let go every second and
        # resumed after the last record, so `stop` is seen.
        if self._client.is_closed:
            raise self._http.closed()
        read = 1.0 if stop is not None else None if params["follow"] == "true" else 30.0
        timeout = httpx2.Timeout(self._client.timeout.connect, read=read)
        while stop is None or not stop.is_set():
            try:
                with self._client.stream(
                    "GET", self._http.base + "/events", params=params, timeout=timeout
                ) as response:
                    self._http.check(response)
                    for line in response.iter_lines():
                        if line:
                            record = _record(line)
                            params = {**params, "from": str(record.lsn + 1)}
                            yield record
                        if stop is not None and stop.is_set():
                            return
                if params["follow"] == "false":
                    return
            except httpx2.ReadTimeout:
                if params["follow"] == "false":
                    raise self._http.unreachable(TimeoutError("the read timed out")) from None
            except httpx2.TransportError as exc:
                raise self._http.unreachable(exc) from None


class Reply(NamedTuple):
    """A successful answer of `AsyncRemoteLog._request`: what its readers use of it."""

    content: bytes
    headers: Mapping[str, str]


_UNSET: Any = object()


class AsyncRemoteLog(AsyncAppends):
    """The asyncio twin of `RemoteLog`: every append helper and read is awaited. Use
    `eventlog.connect_async`.

    Its transport is aiohttp: one session (its pool of keep-alive connections) made by the
    first request, in the event loop that makes it, and closed by `close`. Redirects are not
    followed (as httpx2 does not): an answer is the service's own.

    With `coalesce` (the default), appends made while others are in flight go together in
    one request to the batch route, at most `FLIGHTS` requests in flight (`_coalesce`): the
    same outcome for each caller, a fraction of the requests."""

    FLIGHTS = 2
    """Coalesced requests in flight at once: while they are, appends queue for the next."""

    def __init__(
        self,
        url: str,
        store: str = "default",
        *,
        token: str | None = None,
        timeout: float = 30.0,
        coalesce: bool = True,
        errors: Mapping[str, type[Exception]] = ERRORS,
    ) -> None:
        self._http = Http(url, store, token, errors)
        self._timeout = timeout
        self._aiohttp: aiohttp.ClientSession | None = None
        self._proxy: str | None = None
        self._closing = False  # appends are refused; those queued still go
        self._closed = False
        self._coalescer = Coalescer(self._send, flights=self.FLIGHTS) if coalesce else None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Let queued appends be answered, then close the connections. Idempotent."""
        self._closing = True
        if self._coalescer is not None:
            await self._coalescer.drain()
        self._closed = True
        if self._aiohttp is not None:
            await self._aiohttp.close()

    def _session(self) -> aiohttp.ClientSession:
        """The session, made on first use (aiohttp makes it in the running loop). Cookies are
        not kept (the service sets none), idle connections go as `LIMITS` says, and the proxy
        is the environment's (`_env_proxy`)."""
        import aiohttp  # noqa: PLC0415 (loaded by the first async request only)

        if self._closed:
            raise self._http.closed()
        if self._aiohttp is None:
            keepalive = LIMITS.keepalive_expiry
            connector = aiohttp.TCPConnector(
                limit=LIMITS.max_connections or 0, limit_per_host=0, keepalive_timeout=keepalive
            )
            self._aiohttp = aiohttp.ClientSession(
                connector=connector,
                headers=self._http.headers,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._limit(self._timeout),
            )
            self._proxy = _env_proxy(self._http.url)
        return self._aiohttp

    @staticmethod
    def _limit(seconds: float | None, read: float | None = _UNSET) -> aiohttp.ClientTimeout:
        """httpx's timeout in aiohttp's terms: each of connecting (a pooled connection
        included) and every read bounded by `seconds` (None: unbounded), not the whole."""
        import aiohttp  # noqa: PLC0415

        read = seconds if read is _UNSET else read
        return aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=read)

    async def _request(
        self,
        method: str,
        path: str,
        appending: bool = False,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = _UNSET,
    ) -> Reply:
        import aiohttp  # noqa: PLC0415

        try:
            status, reason, body, answered = await self._exchange(
                method, path, params=params, content=content, headers=headers, timeout=timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._http.unreachable(exc, appending) from None
        if status >= 300:
            self._http.refuse(status, reason, body)
        return Reply(body, answered)

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = _UNSET,
    ) -> tuple[int, str | None, bytes, Mapping[str, str]]:
        """One request and its whole answer, whatever its status: status, reason, body,
        headers. A transport's failure is raised as aiohttp raises it."""
        session = self._session()
        url = self._http.base + path
        # aiohttp takes timeout=None as no timeout at all, so the session's is passed itself
        limit = session.timeout if timeout is _UNSET else self._limit(timeout)
        async with session.request(
            method, _url(url), params=params, data=content, headers=headers, timeout=limit,
            proxy=self._proxy, allow_redirects=False,
        ) as response:  # fmt: skip
            body = await response.read()
        return response.status, response.reason, body, response.headers

    async def _submit(self, request: PendingRequest) -> Appended:
        if self._coalescer is None or not self._coalescer.batching:
            return await self._append(_body(request))
        if self._closing:
            raise self._http.closed()
        return await self._coalescer.submit(_body(request))

    async def _append(self, body: bytes) -> Appended:
        response = await self._request(
            "POST", "/events", True, content=body, headers=_REPRESENTATION
        )
        return _appended(response.content)

    async def _send(self, bodies: list[bytes]) -> list[Outcome]:
        """A flight of the coalescer: one append alone on the append route; more on the batch
        route, each with its own outcome; a failure of the whole request is every append's,
        one exception each. A batch the service finds too large (a limit set lower than the
        coalescer's), or that a service without the batch route cannot take, goes again in
        the parts `_again` says, at once."""
        import aiohttp  # noqa: PLC0415

        if len(bodies) == 1:
            return [await _outcome(self._append(bodies[0]))]
        body = _batch_body(bodies)
        try:
            status, reason, content, _ = await self._exchange(
                "POST", "/events:batch", content=body, headers=_REPRESENTATION
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return [self._http.unreachable(exc, True) for _ in bodies]
        if self._coalescer is not None:
            parts = _again(self._coalescer, status, reason, content, body=body, bodies=bodies)
            if parts is not None:
                sent = await asyncio.gather(*(self._send(part) for part in parts))
                return [outcome for part in sent for outcome in part]
        return _outcomes(self._http, status, reason, content, len(bodies))

    async def last_lsn(self, session_id: uuid.UUID | None = None) -> int | None:
        """The async twin of `RemoteLog.last_lsn`."""
        return (await self._position(session_id)).last_lsn

    async def next_lsn(self) -> int:
        """The async twin of `RemoteLog.next_lsn`."""
        return (await self._position(None)).next_lsn

    async def _position(self, session_id: uuid.UUID | None) -> _Position:
        params = {} if session_id is None else {"session_id": _session(session_id)}
        response = await self._request("GET", "/lsn", params=params)
        return msgspec.json.decode(response.content, type=_Position)

    async def select(self, selector: Selector) -> list[Selected]:
        """The async twin of `RemoteLog.select`."""
        response = await self._request("POST", "/erase", content=_erase_body(selector, True, None))
        return msgspec.json.decode(response.content, type=_DryRun).selected

    async def erase(
        self, selector: Selector, *, by: str | None = None, timeout: float | None = None
    ) -> Erasure:
        """The async twin of `RemoteLog.erase`."""
        body = _erase_body(selector, False, by)
        response = await self._request("POST", "/erase", content=body, timeout=timeout)
        return msgspec.json.decode(response.content, type=Erasure)

    async def read(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        start_time: TimeLike | None = None,
        stop_time: TimeLike | None = None,
    ) -> AsyncIterator[Record]:
        """The async twin of `RemoteLog.read`."""
        stop, stop_ts = _stop_at(stop, stop_time)
        async for record in self._stream(_read_params(start, start_time, False)):
            if _past(record, stop, stop_ts):
                return
            yield record

    def follow(
        self, start: int = 0, *, start_time: TimeLike | None = None
    ) -> AsyncIterator[Record]:
        """The async twin of `RemoteLog.follow`: stop by leaving the loop (or cancelling)."""
        return self._stream(_read_params(start, start_time, True))

    async def _stream(self, params: dict[str, str]) -> AsyncIterator[Record]:
        import aiohttp  # noqa: PLC0415

        following = params["follow"] == "true"
        limit = self._limit(self._timeout, None if following else self._timeout)
        url = _url(self._http.base + "/events")
        try:
            session = self._session()
            async with session.get(
                url, params=params, timeout=limit, proxy=self._proxy, allow_redirects=False
            ) as response:
                if response.status >= 300:
                    self._http.refuse(response.status, response.reason, await response.read())
                rest = b""
                async for chunk in response.content.iter_any():
                    *lines, rest = (rest + chunk).split(b"\n")
                    for line in lines:
                        if line:
                            yield _record(line)
                if rest:  # a last line without its newline (httpx's aiter_lines yields it)
                    yield _record(rest)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._http.unreachable(exc) from None


def _again(
    bounds: Bounds,
    status: int,
    reason: str | None,
    content: bytes,
    *,
    body: bytes,
    bodies: list[bytes],
) -> list[list[bytes]] | None:
    """The parts in which to send a batch's appends again, and `bounds` lowered for later
    ones, when the service could not take the batch as a whole; None if its answer stands.

    - 413 ``too_many_appends`` stating the service's `limit` (``details.limit``): later
      batches hold at most that many, and this one goes again in batches of it.
    - 413 otherwise (past `max_body_bytes`, or a service too old to state its limit): later
      batches half as large in the bytes or the appends, and this one goes append by append.
    - 404 or 405 with none of the service's errors in its body: a service older than the
      batch route. Every append goes alone from now on, as with ``coalesce=False``.
    """
    if status not in (404, 405, 413):
        return None
    error = _error_of(status, reason, content)
    singly = [[b] for b in bodies]
    if status != 413:
        if error.code != f"http_{status}":
            return None  # the service's own refusal (an unknown store): every append's
        bounds.batching, bounds.max_count = False, 1  # what is queued goes alone too
        return singly
    if error.code != "too_many_appends":
        bounds.max_bytes = max(1, len(body) // 2)
        return singly
    limit = error.details.get("limit")
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(bodies):
        bounds.max_count = limit
        return [bodies[i : i + limit] for i in range(0, len(bodies), limit)]
    bounds.max_count = max(1, len(bodies) // 2)
    return singly


def _outcomes(
    http: Http, status: int, reason: str | None, content: bytes, count: int
) -> list[Outcome]:
    """Each append's outcome from the batch route's answer: a refusal of the whole batch
    is every append's, one exception each."""
    if status >= 300:
        return [http.error(status, reason, content) for _ in range(count)]
    try:
        answer = msgspec.json.decode(content, type=_Outcomes).appends
    except msgspec.DecodeError as exc:
        answer, problem = [], str(exc)
    else:
        problem = f"{len(answer)} outcomes for {count} appends"
    if len(answer) != count:
        message = f"the batch's answer is not understood ({problem})"
        return [ServiceError(status, "bad_answer", message) for _ in range(count)]
    return [
        Appended(a.lsn, list(a.events), a.duplicate)
        if a.error is None
        else http.named(a.status, a.error)
        for a in answer
    ]


async def _outcome(append: Awaitable[Appended]) -> Outcome:
    """The append's result, or the exception it raised, as a value."""
    try:
        return await append
    except Exception as exc:
        return exc


def _outcome_of(append: Callable[[bytes], Appended], body: bytes) -> Outcome:
    """`append(body)`'s result, or the exception it raised, as a value."""
    try:
        return append(body)
    except Exception as exc:
        return exc


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``NO_PROXY``), as the sync client (httpx2) honours it. Looked up once: aiohttp's own
    ``trust_env`` looks again for every request (and reads ``~/.netrc``), which more than
    doubled the client's CPU per append."""
    parts = urlsplit(url)
    if proxy_bypass(parts.hostname or ""):
        return None
    return getproxies().get(parts.scheme)


def _url(url: str) -> URL:
    """`url` as aiohttp's URL type, taken as already encoded (the store's name is quoted
    once, by `Http`; a second quoting would change it)."""
    from yarl import URL  # noqa: PLC0415 (aiohttp's, loaded with it)

    return URL(url, encoded=True)


def _session(session_id: uuid.UUID) -> str:
    if not isinstance(session_id, uuid.UUID):
        raise InvalidEvent(f"session_id must be a UUID, not {type(session_id).__name__}")
    return str(session_id)


def connect(
    url: str,
    store: str = "default",
    *,
    token: str | None = None,
    timeout: float = 30.0,
    coalesce: bool = True,
) -> RemoteLog:
    """The store `store` of the `lmg serve` at `url`, with `EventLog`'s methods over HTTP.

    `token` is the bearer token (default: ``$LMG_TOKEN``, if set); `timeout` bounds each
    request, in seconds. Errors are the embedded ones (`UnknownNode`, `AppendConflict`, ...);
    the service's own refusals, and no answer, are `ServiceError`. With `coalesce` (the
    default), appends other threads make while requests are in flight travel together in one
    request, each with its own outcome (docs/service.md); False sends each alone."""
    return RemoteLog(url, store, token=token, timeout=timeout, coalesce=coalesce)


async def connect_async(
    url: str,
    store: str = "default",
    *,
    token: str | None = None,
    timeout: float = 30.0,
    coalesce: bool = True,
) -> AsyncRemoteLog:
    """The asyncio twin of `connect`: ``async with await eventlog.connect_async(url) as log``.

    With `coalesce` (the default), appends made while others are in flight travel together
    in one request, each with its own outcome (docs/service.md); False sends each alone."""
    return AsyncRemoteLog(url, store, token=token, timeout=timeout, coalesce=coalesce)
