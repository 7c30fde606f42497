"""`lmg serve`: the app, assembled from each package's routes, and the process that runs it.

Starlette under uvicorn: Starlette keeps an application a list of routes plus middleware,
each handler a small async function, with streaming responses (NDJSON, Server-Sent Events)
built in; uvicorn is the well-kept ASGI server beside it (HTTP/1.1, TLS, graceful shutdown).
Both are small and pure Python; the ``serve`` extra adds the two C parts uvicorn uses when
installed, httptools (HTTP/1.1 parsing) and uvloop (the event loop), which halve the
service's CPU per request (docs/benchmarks.md).

Each package serves its own routes, in the layer whose imports they need (`eventlog._routes`:
the log; `eventlog._otlp_routes`: OTLP/HTTP traces; `projections._routes`: SQL and typed
reads; `replay._routes`: SQL at a point, diff), assembled here, at the top of the import
chain. SIGTERM drains: new requests get 503, follow streams end, requests in flight finish
(an append is acknowledged or refused, never lost), traces still waiting for their root span
are mapped, the log closes, the fold reaches the log's end, ``service.json`` goes, and the
process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import sys
import termios
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

import eventlog
from eventlog import _http
from eventlog import _routes as log_routes
from eventlog._advert import advertise, withdraw
from eventlog._http import ApiError, Auth, Limits, Service, service_of
from eventlog._otlp_routes import Receiver
from projections import _retention as retention
from projections import _routes as graph_routes
from projections._owner import Owner
from projections._routes import ServedGraph
from projections.errors import ProjectionError

from . import _routes as replay_routes
from . import _web as web_routes

__all__ = ["app", "serve"]


async def healthz(request: Request) -> Response:
    """The process answers (liveness)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Every store is open and folding (readiness): 503 while starting, draining, or if a
    fold stopped at an event it cannot apply."""
    service = service_of(request)
    if not service.ready or service.draining:
        return _http.error_response(503, "not_ready", "starting or shutting down")
    for served in service.stores.values():
        assert isinstance(served, ServedGraph) and served.owner is not None
        if served.owner.error is not None:
            return _http.error_response(503, "fold_stopped", "a store's fold stopped")
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus text; with auth on, an admin token is needed, and it reads the samples of
    the stores it may use only (they name their store)."""
    service = service_of(request)
    token = service.token(request)
    if token is not None and not token.can("admin"):
        raise ApiError(403, "forbidden", "this token may not read metrics")
    for served in service.stores.values():
        if served.lag is not None:
            events, seconds = served.lag()
            service.metrics.lag_events.labels(served.name).set(events)
            service.metrics.lag_seconds.labels(served.name).set(seconds)
    shown = None if token is None else token.allows
    return Response(service.metrics.text(shown), media_type="text/plain; version=0.0.4")


def app(
    stores: dict[str, Path],
    auth: Auth | None = None,
    limits: Limits | None = None,
    retention_every_s: float | None = None,
    on_startup_error: Callable[[str], None] | None = None,
) -> Any:
    """The ASGI app serving `stores` (name -> path): opened on start-up, drained on exit.
    With `retention_every_s`, each store's retention policy is applied on that schedule
    (`projections._retention`), from start-up on. `on_startup_error` hears the one-line
    message of a store that could not be opened; given, the start-up then completes with
    nothing served and the caller stops the server (uvicorn would print a traceback and
    exit the process), else the error is raised."""
    service = Service(stores={}, auth=auth, limits=limits or Limits())
    otlp = Receiver(service)
    schedule = None if retention_every_s is None else retention.Schedule(service, retention_every_s)

    opened: dict[str, ServedGraph] = {}

    async def open_store(name: str, path: Path) -> ServedGraph:
        """Open and serve the store at `path` as `name` (at start-up, and a new fork)."""
        log = await eventlog.open_async(path)
        try:
            log.on_commit = service.metrics.committed(name)
            served = ServedGraph(name, path, log)
            served.owner = await asyncio.to_thread(Owner, log)
        except BaseException:
            await log.close()
            raise
        served.lag = served.owner.lag
        opened[name] = served  # served from here on (with its owner), closed at exit
        if service.ready:
            otlp.add(name, served)
        return served

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        service.queries = asyncio.Semaphore(service.limits.max_queries)
        try:
            for name, path in stores.items():
                try:
                    await open_store(name, path)
                except (eventlog.EventLogError, ProjectionError) as exc:
                    if on_startup_error is None:
                        raise
                    on_startup_error(f"store {name!r}: {exc}" if len(stores) > 1 else str(exc))
                    yield  # not ready: the caller stops the server at once
                    return
            service.stores = opened
            otlp.start(opened)
            service.ready = True
            if schedule is not None:
                schedule.start()
            yield
        finally:
            service.draining = True
            if schedule is not None:
                await schedule.close()  # a run in progress finishes; no other starts
            await otlp.close()  # maps every trace still waiting for its root
            for served in opened.values():  # uvicorn has let every request finish
                if served.owner is not None:
                    await asyncio.to_thread(served.owner.close)  # folds to the log's end
                await served.log.close()

    routes: list[Route] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        *log_routes.routes,
        *graph_routes.routes(at=replay_routes.sql_at),
        *retention.routes(),  # the policy, what is due, the schedule
        *replay_routes.routes(),
        *otlp.routes,  # OTLP/HTTP traces, through the span-to-event mapping of ingest
        *web_routes.routes(),  # the web view (docs/web.md) and the JSON routes it reads
    ]
    handlers: dict[Any, Any] = {
        **_http.exception_handlers,
        **graph_routes.exception_handlers,
        **replay_routes.exception_handlers,
    }
    starlette = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    starlette.state.service = service
    starlette.state.open_store = open_store  # `replay._routes.fork` serves its new store
    starlette.state.forking = set()  # the names of the forks being made (`replay._routes`)
    starlette.state.retention = schedule
    # Without auth, loopback is the only protection, and a browser's pages cross it.
    guarded = starlette if auth is not None else _http.browser_guard(starlette)
    return _http.access_log(guarded, service.metrics, service), service


class _Server(uvicorn.Server):
    """uvicorn's server, told to drain first: on SIGTERM or SIGINT, new requests are refused
    (503) and follow streams end, so the in-flight requests uvicorn waits for do finish."""

    service: Service

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.service.draining = True
        for stop in list(self.service.stops):
            stop.set()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, without raising the signal again once drained: a drained service
        removes its ``service.json`` and exits 0, as a service manager expects."""
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


MAX_HEAD_BYTES = 64 * 1024
"""A request's line and headers; larger is refused (431) and the connection closed."""


class _Protocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), with the limits it lacks on a request's head
    (its line and headers), which it waited for without end and kept whole: 1024 connections
    sending nothing, or a header byte now and then, held every `limit_concurrency` slot (all
    other requests were answered 503), and a 300 MB header was kept in memory. A head must
    now arrive within `head_timeout_s` (the service's `body_timeout_s`) of the connection or
    of its first byte (else 408), and be at most `MAX_HEAD_BYTES` (else 431); the connection
    is then closed.

    An answer has the same time to be taken: once the connection's unsent bytes pass its
    high-water mark (64 KiB), a client that takes none of them for `head_timeout_s` has the
    connection closed (an answer is written whole: ten SQL answers of 60 MB that nobody read
    held 830 MB for as long as their connections stayed open). What the kernel holds
    unacknowledged counts too (`_waiting`): a slow but steady client is no stalled one."""

    head_timeout_s = 30.0
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _heads = 0  # heads received in full on this connection
    _send_timer: asyncio.TimerHandle | None = None
    _unsent = 0  # bytes waiting to be sent when the send timer was set

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._start_head()

    def on_headers_complete(self) -> None:
        self._stop_head()
        self._heads += 1
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head()
        self._stop_send()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._watch_send()

    def resume_writing(self) -> None:
        self._stop_send()
        super().resume_writing()

    def _watch_send(self) -> None:
        self._unsent = self._waiting()
        self._send_timer = self.loop.call_later(self.head_timeout_s, self._check_send)

    def _check_send(self) -> None:
        """Close the connection if its client took nothing since the last look."""
        self._send_timer = None
        if self._waiting() >= self._unsent:
            self.transport.abort()
        else:
            self._watch_send()

    def _waiting(self) -> int:
        """The bytes of answers the client has not taken: the transport's, and the kernel's
        not yet acknowledged (Linux). The transport's alone move only once the kernel's
        send buffer (up to 4 MB after a fast start) drained by a third, so a client taking
        its answer slowly but steadily (under 45 KB/s in 30 s) looked stalled, and was cut
        off."""
        waiting = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None and _OUTQ is not None:
            with contextlib.suppress(OSError, ValueError):  # not Linux's, or closed
                queued = fcntl.ioctl(sock.fileno(), _OUTQ, bytes(4))
                waiting += struct.unpack("i", queued)[0]
        return waiting

    def _stop_send(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def data_received(self, data: bytes) -> None:
        heads, in_head = self._heads, self._head_timer is not None
        super().data_received(data)  # httptools keeps a header whole until it ends: count here
        if in_head and self._heads == heads and self._head_timer is not None:
            self._head_bytes += len(data)  # all of `data` was head: no head ended in it
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(b"431 Request Header Fields Too Large")

    def _start_head(self) -> None:
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(
            self.head_timeout_s, self._refuse, b"408 Request Timeout"
        )

    def _stop_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: bytes) -> None:
        self._stop_head()
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % status
            )
            self.transport.close()


_OUTQ = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None
"""SIOCOUTQ (Linux's TIOCOUTQ): the bytes a socket's kernel send queue holds unacknowledged."""


def _retention_notice(stores: dict[str, Path], every_s: float | None) -> str:
    """One line saying whether the service applies retention, and to which stores: a store
    with a policy that nothing here applies is named, so that nobody believes it is."""
    kept = [name for name, path in stores.items() if _has_policy(path)]
    named = ", ".join(kept) if kept else "none yet"
    if every_s is not None:
        return f"lmg serve: retention every {every_s:g} s; stores with a policy: {named}"
    if kept:
        return (
            f"lmg serve: retention is not applied here (no --retention-every); stores with a "
            f"policy: {named} (give --retention-every to apply it)"
        )
    return "lmg serve: retention is not applied here (no --retention-every)"


def _has_policy(store: Path) -> bool:
    """Has `store` a retention policy? An unreadable one counts (each run then fails and
    says why, rather than the service failing to start)."""
    try:
        return eventlog.retention(store) is not None
    except eventlog.EventLogError:
        return True


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop if it is installed (the ``serve`` extra brings it, except on
    Windows): it runs the service's many small callbacks in C, asyncio's in Python."""
    try:
        import uvloop  # noqa: PLC0415 (optional)
    except ImportError:
        return None
    return uvloop.new_event_loop


def serve(
    stores: dict[str, Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8420,
    auth: Auth | None = None,
    tls: tuple[str, str] | None = None,
    limits: Limits | None = None,
    retention_every_s: float | None = None,
) -> None:
    """Serve `stores` until SIGTERM or SIGINT; advertise the service in each store meanwhile.
    With `retention_every_s`, apply each store's retention policy on that schedule."""
    if auth is None and not _http.is_loopback(host):
        raise eventlog.InvalidEvent(
            f"--host {host} is not loopback: give --auth FILE to serve beyond this host"
        )
    # A store that fails to open (an older schema, a lock another process holds, a damaged
    # log) is said in one line, exit 1, as other commands do, not as uvicorn's traceback.
    failures: list[str] = []
    chosen = limits or Limits()
    asgi, service = app(stores, auth, chosen, retention_every_s, failures.append)

    class Protocol(_Protocol):
        head_timeout_s = chosen.body_timeout_s

    config = uvicorn.Config(
        asgi,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # ours is structured (`_http.access_log`)
        lifespan="on",
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
        http=Protocol,  # limits on a request's head
        timeout_keep_alive=5,
        limit_concurrency=1024,
    )
    server = _Server(config)
    server.service = service
    scheme = "https" if tls else "http"

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started and failures:
            server.should_exit = True  # a store failed to open: nothing is served
        elif server.started:
            bound = port
            for s in server.servers:
                for sock in s.sockets:
                    bound = sock.getsockname()[1]
            url = f"{scheme}://{'localhost' if host == 'localhost' else host}:{bound}"
            for name, path in stores.items():
                advertise(path, url, name, auth is not None)
            print(f"lmg serve: {url} (pid {os.getpid()})", file=sys.stderr, flush=True)
            print(_retention_notice(stores, retention_every_s), file=sys.stderr, flush=True)
        try:
            await task
        finally:
            for path in stores.values():
                withdraw(path)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run())
    if failures:
        raise eventlog.EventLogError(failures[0])
    if not server.started:
        raise eventlog.EventLogError(f"could not serve on {host}:{port} (see above)")
