"""The OTLP routes' ingest process: spans decoded, mapped and appended beside the service.

`lmg serve` answers every route from one interpreter. While spans streamed in, decoding OTLP,
mapping spans to events and the store's per-request checks held that interpreter more than
half the time, and the fold and the reads waited for it (docs/benchmarks.md, "Reads while
ingesting, with the ingest process"). The
OTLP routes therefore hand each body, as received, to one child process, which holds an
`Ingester` per store on a log handle of its own and appends as any local process may (the
log's append lock keeps frames whole and LSNs dense; idempotency keys live in the log's id
index, which every handle reads under that lock). The service's own interpreter keeps the
HTTP, the fold and the reads, and the second core does the ingest. What the routes promise
is unchanged:

1. **One ingester per store, one call at a time, in arrival order**, as before (each call held
   the ingester's lock), so buffering, mapping, idempotency and partial success are the same.
2. **A 200 still means durable.** The child answers after its group commit's fsync, with the
   last LSN it wrote; a read after that waits for the fold to reach it (read your writes).
3. **The child lives as long as the service, no longer.** It ignores SIGINT and SIGTERM (a
   terminal or a service manager signals the whole group; the service drains it: every
   buffered trace is mapped, its logs closed), and on Linux it is killed with the service
   (the parent-death signal), so a kill -9 leaves no writer behind; what it acknowledged is
   durable, what it did not was never answered.
4. **It starts with the first OTLP request**: a service that receives none pays nothing. If
   it dies, the requests in flight are answered 503 and the next request starts a new one
   (spans of traces still waiting for their root are durable already; their mapping is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple, TypeVar

from ._http import ApiError
from ._ingest import Ingester
from ._logs import LogRecord, decode_logs_json_line, decode_logs_protobuf
from ._spans import Malformed, Span, decode_json_line, decode_protobuf
from ._wire import error_details, rebuilt
from .errors import EventLogError
from .log import EventLog
from .log import open as open_log

__all__ = ["JSON", "PROTOBUF", "WBITS", "Body", "IngestProcess", "Outcome", "Store", "failure"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_WHERE = "request"  # where a body that is no export request at all is reported
WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_PR_SET_PDEATHSIG = 1  # prctl(2)
T = TypeVar("T")


class Store(NamedTuple):
    """A served store as the child opens it, with its ingester's settings."""

    name: str
    path: str
    trace_timeout: float
    log_wait: float


class Body(NamedTuple):
    """One OTLP request's body as it came, and how to read it."""

    data: bytes
    kind: str  # `PROTOBUF` or `JSON`
    encoding: str  # ``identity``, ``gzip`` or ``deflate``
    limit: int  # the most bytes it may inflate to (`Limits.max_body_bytes`)
    logs: bool  # an ``ExportLogsServiceRequest``, else an ``ExportTraceServiceRequest``


class Failure(NamedTuple):
    """An error of the log's, as it crosses from the child: an exception pickles by its
    message alone, and most of the log's have constructors of their own."""

    cls: str  # its class: module and qualified name
    message: str
    details: dict[str, Any]  # its fields (`_wire.error_details`)

    @classmethod
    def of(cls, exc: EventLogError) -> Failure:
        return cls(_name(type(exc)), str(exc), error_details(exc))


class Outcome(NamedTuple):
    """What the child made of one OTLP body."""

    accepted: int  # spans or log records decoded and handed to the ingester
    rejected: list[Malformed]  # the malformed ones, each with why
    last_lsn: int  # the highest LSN the store's ingester was answered with (-1: none yet)
    failure: Failure | None = None  # the log's error, as `failure` makes it again
    refused: tuple[int, str, str] | None = None  # no export request: `ApiError`'s fields


# -- the parent's side --------------------------------------------------------------------


class IngestProcess:
    """The child process, started on first use; each call runs there, in submission order."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def receive(self, store: Store, body: Body) -> Outcome:
        """Decode `body` and hand its spans, or log records, to the store's ingester. Raises
        `ApiError` for a body that is no export request; a failure of the log is in the
        outcome (`failure`), beside what was decoded."""
        outcome = await self._call(_receive, store, body)
        if outcome.refused is not None:
            raise ApiError(*outcome.refused)
        return outcome

    async def each(self, op: str, stores: list[Store]) -> dict[str, tuple[int, str | None]]:
        """`op` (``expire``, ``flush`` or ``forget``) on the ingester of each of `stores` the
        child holds: the last LSN of each, and why the log failed, if it did."""
        if self._pool is None:
            return {}  # nothing was received: nothing is buffered
        return await self._call(_each, op, stores, start=False)

    def forget(self, store: Store) -> None:
        """`each("forget")` from synchronous code on the event loop (after an erasure): the
        child runs it before any request submitted after it."""
        pool = self._pool
        if pool is None:
            return
        try:  # submitted now: ahead of any request that follows
            done = asyncio.get_running_loop().run_in_executor(pool, _each, "forget", [store])
        except BrokenProcessPool:  # it died: the next one remembers nothing to forget
            self._discard(pool)
            return
        done.add_done_callback(_said)

    async def close(self, stores: list[Store]) -> dict[str, tuple[int, str | None]]:
        """Map every buffered trace, close the child's logs, and let the child exit."""
        if self._pool is None:
            return {}
        try:
            return await self.each("flush", stores)
        finally:
            pool, self._pool = self._pool, None  # None if it died while flushing
            if pool is not None:
                with contextlib.suppress(BrokenProcessPool):
                    await asyncio.get_running_loop().run_in_executor(pool, _close)
                await asyncio.to_thread(pool.shutdown)

    async def _call(self, fn: Callable[..., T], *args: Any, start: bool = True) -> T:
        """`fn(*args)` in the child. A child found dead before the call (it died between
        requests) is replaced when `start`: only the calls it held when it died are refused
        (503), never a request that came after."""
        loop = asyncio.get_running_loop()
        pool = self._started()
        try:
            done = loop.run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            self._discard(pool)
            if not start:
                raise _stopped() from None
            pool = self._started()
            done = loop.run_in_executor(pool, fn, *args)
        try:
            return await done
        except BrokenProcessPool:
            self._discard(pool)
            raise _stopped() from None

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # no fork of a threaded process
            self._pool = ProcessPoolExecutor(
                1, mp_context=context, initializer=_start, initargs=(os.getpid(),)
            )
        return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
            pool.shutdown(wait=False)


def _stopped() -> ApiError:
    return ApiError(503, "ingest_stopped", "the OTLP ingest process stopped; retry the request")


def _said(done: asyncio.Future[dict[str, tuple[int, str | None]]]) -> None:
    """Report a failed `forget` on stderr (nothing waits for it)."""
    if done.cancelled():
        return
    exc = done.exception()
    if exc is not None:
        print(f"lmg serve: the OTLP ingest process did not forget: {exc}", file=sys.stderr)


def failure(reported: Failure) -> EventLogError:
    """The log's error the child reported, again as its class with its message and fields,
    so the service answers it as it answers the same error of an append (`_http.log_error`:
    each with its documented status); `EventLogError` if its class is unknown here."""
    found = next((c for c in _subclasses(EventLogError) if _name(c) == reported.cls), None)
    return rebuilt(found or EventLogError, reported.message, reported.details)


def _subclasses(cls: type[EventLogError]) -> list[type[EventLogError]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# -- the child's side ---------------------------------------------------------------------

_OPEN: dict[str, tuple[EventLog, Ingester]] = {}  # by store name, in the child


def _start(parent: int) -> None:
    """The child's set-up: the service drains it, signals do not (module docstring, 3)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the service died before the signal was armed
        os._exit(1)


def _ingester(store: Store) -> Ingester:
    opened = _OPEN.get(store.name)
    if opened is None:
        log = open_log(store.path)
        ingester = Ingester(
            log, trace_timeout=store.trace_timeout, record_first=True, log_wait=store.log_wait
        )
        opened = _OPEN[store.name] = (log, ingester)
    return opened[1]


def _receive(store: Store, body: Body) -> Outcome:
    try:
        items = _decode(body)
    except ApiError as exc:  # returned, not raised: an exception pickles by its message alone
        return Outcome(0, [], -1, refused=(exc.status, exc.code, exc.message))
    rejected = [i for i in items if isinstance(i, Malformed)]
    accepted = len(items) - len(rejected)
    try:
        ingester = _ingester(store)
        if body.logs:
            ingester.add_logs(items)  # type: ignore[arg-type]
        else:
            ingester.add(items)  # type: ignore[arg-type]
    except EventLogError as exc:
        return Outcome(accepted, rejected, -1, Failure.of(exc))
    return Outcome(accepted, rejected, ingester.last_lsn)


def _each(op: str, stores: list[Store]) -> dict[str, tuple[int, str | None]]:
    out: dict[str, tuple[int, str | None]] = {}
    for store in stores:
        opened = _OPEN.get(store.name)
        if opened is None:
            continue
        ingester = opened[1]
        try:
            getattr(ingester, op)()
        except EventLogError as exc:
            out[store.name] = (ingester.last_lsn, str(exc))
        else:
            out[store.name] = (ingester.last_lsn, None)
    return out


def _close() -> None:
    while _OPEN:
        with contextlib.suppress(EventLogError):  # a failed log: said when it failed
            _OPEN.popitem()[1][0].close()


def _decode(body: Body) -> list[Span | LogRecord | Malformed]:
    """The body's spans or log records, each decoded on its own; a body that is no export
    request is 400."""
    data = _inflate(body.data, body.encoding, body.limit)
    items: list[Span | LogRecord | Malformed]
    if body.kind == JSON:
        items = list((decode_logs_json_line if body.logs else decode_json_line)(data, _WHERE))
    else:
        protobuf = decode_logs_protobuf if body.logs else decode_protobuf
        try:
            items = list(protobuf(data, _WHERE, stream=False))
        except ImportError:
            raise ApiError(
                415, "unsupported_media_type", f"{PROTOBUF} needs the otel extra; send {JSON}"
            ) from None
    if len(items) == 1 and isinstance(items[0], Malformed) and items[0].where == _WHERE:
        raise ApiError(400, "bad_request", items[0].reason)
    return items


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decompressed, refused (413) once the output passes `limit` bytes: each member
    is inflated at most to what is left of the limit, so a bomb costs no more than that."""
    if encoding == "identity":
        return body
    out: list[bytes] = []
    size, data = 0, body
    while data:
        inflater = zlib.decompressobj(WBITS[encoding])
        try:
            chunk = inflater.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise ApiError(400, "bad_request", f"the body is not valid {encoding}: {exc}") from None
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body inflates past {limit} bytes")
        if not inflater.eof:
            raise ApiError(400, "bad_request", f"the body is cut short ({encoding})")
        out.append(chunk)
        data = inflater.unused_data if encoding == "gzip" else b""  # gzip members may follow
    return b"".join(out)
