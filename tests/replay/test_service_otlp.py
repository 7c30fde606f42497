"""OTLP/HTTP into `lmg serve`, a real process on 127.0.0.1: the real OpenTelemetry exporter,
curl with JSON and gzip, malformed spans, retries, tokens, a gzip bomb, kill -9 and drain."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

import eventlog
from eventlog import events as ev
from eventlog._spans import Span
from projections import MemoryGraph
from tests._processes import WAIT_S
from tests.eventlog._traces import genai_trace
from tests.replay.test_service import Service, _token

pytestmark = (
    pytest.mark.slow
)  # real server or CLI processes: `make test` runs them, `make test-fast` not

_JSON = {"Content-Type": "application/json"}
_TABLES = {
    "prompts": "SELECT id, session_id, content, model, occurred_at FROM prompts",
    "responses": "SELECT id, prompt_id, content, prompt_tokens, completion_tokens, model, "
    "finish_reason, latency_ms, occurred_at FROM responses",
    "tool_invocations": "SELECT id, response_id, tool_name, parameters, status, result "
    "FROM tool_invocations",
    "agent_stats": "SELECT name, prompts_handled, responses, tool_calls, handoffs_out "
    "FROM agent_stats",
}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    eventlog.open(path).close()
    return path


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    return {"intValue": str(value)} if isinstance(value, int) else {"stringValue": str(value)}


def _body(spans: Sequence[Span], **override: Any) -> dict[str, Any]:
    """One OTLP JSON export request of neutral spans (`override` replaces the first's
    fields, to break it)."""
    raw = [
        {
            "traceId": s.trace_id,
            "spanId": s.span_id,
            "parentSpanId": s.parent_span_id or "",
            "name": s.name,
            "kind": 3 if s.kind == "client" else 1,
            "startTimeUnixNano": str(s.start_ns),
            "endTimeUnixNano": str(s.end_ns),
            "attributes": [{"key": k, "value": _value(v)} for k, v in s.attributes.items()],
        }
        for s in spans
    ]
    raw[0] |= override
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "agents"}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": raw}]}]}


def _sql(service: Service, query: str, token: str | None = None) -> list[list[Any]]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    answer = service.http.post("/v1/stores/default/sql", json={"query": query}, headers=headers)
    assert answer.status_code == 200, answer.text
    rows: list[list[Any]] = answer.json()["rows"]
    return rows


def _stored(store: Path) -> list[ev.EventBase]:
    with eventlog.open(store, readonly=True) as log:
        return [r.event for r in log.read()]


def _curl(url: str, body: Path, *headers: str) -> dict[str, Any]:
    args = ["curl", "-sS", "-X", "POST", url, "--data-binary", f"@{body}"]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run(args, capture_output=True, check=True, timeout=WAIT_S).stdout
    answer: dict[str, Any] = json.loads(out)
    return answer


def test_the_otlp_exporter_of_an_instrumented_conversation_lands_as_in_process(
    tmp_path: Path, served: Service
) -> None:
    pytest.importorskip("openai")
    pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    from opentelemetry.exporter.otlp.proto.http import Compression  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    from eventlog import otel  # noqa: PLC0415
    from tests._fake_llm import fake_llm  # noqa: PLC0415
    from tests.eventlog.test_otel_clients import _openai_sync  # noqa: PLC0415

    sender = OTLPSpanExporter(endpoint=f"{served.url}/v1/traces", compression=Compression.Gzip)
    with fake_llm() as llm, MemoryGraph.open(tmp_path / "in-process") as local:
        with otel.instrument(local, "openai-v2") as handle:
            handle.provider.add_span_processor(BatchSpanProcessor(sender))
            for conversation in ("first", "second"):
                with otel.session(conversation), otel.agent("assistant"):
                    _openai_sync(llm, stream=conversation == "second")
        for table, query in _TABLES.items():
            expected = [list(json.loads(json.dumps(r, default=str))) for r in local.rows(query)]
            assert expected, table
            assert sorted(_sql(served, query), key=str) == sorted(expected, key=str), table
        spans = local.rows("SELECT count(*) FROM spans")
    assert _sql(served, "SELECT count(*) FROM spans") == [list(spans[0])]


def test_curl_sends_json_and_gzip_and_a_retry_adds_nothing(
    tmp_path: Path, served: Service, store: Path
) -> None:
    first, second = genai_trace(random.Random(1)), genai_trace(random.Random(2))
    plain, packed = tmp_path / "plain.json", tmp_path / "packed.json.gz"
    plain.write_text(json.dumps(_body(first)))
    packed.write_bytes(gzip.compress(json.dumps(_body(second)).encode()))
    route = f"{served.url}/v1/stores/default/otlp/v1/traces"
    assert _curl(route, plain, "Content-Type: application/json") == {}
    gzipped = ("Content-Type: application/json", "Content-Encoding: gzip")
    assert _curl(f"{served.url}/v1/traces", packed, *gzipped) == {}
    stored = len(_stored(store))
    assert _curl(f"{served.url}/v1/traces", packed, *gzipped) == {}  # the exporter retries
    assert len(_stored(store)) == stored
    assert _sql(served, "SELECT count(*) FROM spans") == [[len(first) + len(second)]]
    assert _sql(served, "SELECT count(*) FROM prompts") == [[4]]  # two turns per trace


def test_malformed_spans_are_a_partial_success_beside_stored_ones(
    served: Service, store: Path
) -> None:
    spans = genai_trace(random.Random(3))
    body = _body(spans, traceId="not-hex")
    answer = served.http.post("/v1/traces", json=body)
    assert answer.status_code == 200
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "traceId" in partial["errorMessage"]
    recorded = {e.span_id for e in _stored(store) if isinstance(e, ev.SpanRecorded)}
    assert recorded == {s.span_id for s in spans[1:]}
    metrics = served.http.get("/metrics").text
    assert 'lmg_otlp_spans_rejected_total{store="default"} 1.0' in metrics
    assert f'lmg_otlp_spans_received_total{{store="default"}} {len(spans) - 1}.0' in metrics


@pytest.mark.parametrize("field", ["startTimeUnixNano", "endTimeUnixNano"])
def test_a_span_time_beyond_64_bits_is_rejected_not_lost(
    served: Service, store: Path, field: str
) -> None:
    """A time the log cannot store (beyond a signed 64-bit int) is a malformed span, rejected
    in the partial success: it was answered as accepted and then dropped, even its span."""
    spans = genai_trace(random.Random(4))
    answer = served.http.post("/v1/traces", json=_body(spans, **{field: str(2**70)}))
    assert answer.status_code == 200
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and field in partial["errorMessage"], partial
    recorded = {e.span_id for e in _stored(store) if isinstance(e, ev.SpanRecorded)}
    assert recorded == {s.span_id for s in spans[1:]}


def test_protobuf_partial_success_is_answered_in_protobuf(served: Service) -> None:
    pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    request = pb.ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x00" * 8, "zero span id"
    answer = served.http.post(
        "/v1/traces",
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-protobuf"
    response = pb.ExportTraceServiceResponse.FromString(answer.content)
    assert response.partial_success.rejected_spans == 1
    assert "all zeros" in response.partial_success.error_message


def test_a_body_that_is_no_export_request_is_refused(served: Service, store: Path) -> None:
    for body, headers, status in [
        (b"[1, 2]", _JSON, 400),
        (b"\x1f\x8b not gzip", {**_JSON, "Content-Encoding": "gzip"}, 400),
        (b"{}", {"Content-Type": "text/plain"}, 415),
        (b"{}", {**_JSON, "Content-Encoding": "br"}, 415),
    ]:
        answer = served.http.post("/v1/traces", content=body, headers=headers)
        assert answer.status_code == status, answer.text
        assert set(answer.json()["error"]) == {"code", "message"}
    assert _stored(store) == []


@pytest.mark.parametrize("route", ["/v1/traces", "/v1/logs"])
def test_a_body_nested_too_deep_is_refused(served: Service, store: Path, route: str) -> None:
    """JSON nested deeper than the decoder recurses is a bad request (400), not a 500 (or,
    deeper still, a connection dropped without an answer); the service keeps serving."""
    deep = b'{"x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"  # msgspec stops near 1,000
    answer = served.http.post(route, content=deep, headers=_JSON)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "bad_request"
    assert served.http.get("/readyz").status_code == 200
    assert _stored(store) == []


def test_a_gzip_bomb_is_cut_off(served: Service, store: Path) -> None:
    bomb = gzip.compress(b'{"resourceSpans": []' + b" " * 50_000_000 + b"}", 9)
    assert len(bomb) < 65536  # under the body limit: only inflating finds it
    answer = served.http.post(
        "/v1/traces", content=bomb, headers={**_JSON, "Content-Encoding": "gzip"}
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_large"
    assert _stored(store) == []


def test_otlp_routes_check_tokens_as_every_route(tmp_path: Path, store: Path) -> None:
    secret = tmp_path / "secret-store"
    eventlog.open(secret).close()
    auth = tmp_path / "tokens.json"
    reader = _token(auth, "reader", ["read"], ["default"])
    admin = _token(auth, "admin", ["admin"], ["default"])
    agent = _token(auth, "agent", ["append"], ["secret"])
    service = Service(tmp_path, [str(store), "--store", f"secret={secret}", "--auth", str(auth)])
    body = json.dumps(_body(genai_trace(random.Random(4)))).encode()

    def post(path: str, token: str | None) -> httpx.Response:
        headers = {**_JSON, **({} if token is None else {"Authorization": f"Bearer {token}"})}
        return service.http.post(path, content=body, headers=headers)

    try:
        for path in ("/v1/traces", "/v1/stores/default/otlp/v1/traces"):
            assert post(path, None).status_code == 401
            assert post(path, "lmg_wrong").status_code == 401
            assert post(path, reader).status_code == 403
        hidden = post("/v1/stores/secret/otlp/v1/traces", admin)
        unknown = post("/v1/stores/nowhere/otlp/v1/traces", admin)
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.content == unknown.content
        assert _stored(secret) == [] and _stored(store) == []
        assert post("/v1/traces", agent).json() == {}  # into the store its token names
        assert len(_stored(secret)) > 0 and _stored(store) == []
    finally:
        assert service.stop() == 0


def test_acknowledged_spans_of_an_incomplete_trace_survive_kill_9(
    tmp_path: Path, store: Path
) -> None:
    spans = genai_trace(random.Random(5))
    service = Service(tmp_path, [str(store)])
    answer = service.http.post("/v1/traces", json=_body(spans[1:]))  # the root never comes
    assert answer.status_code == 200 and answer.json() == {}
    service.child.kill()
    service.http.close()
    recorded = {e.span_id for e in _stored(store) if isinstance(e, ev.SpanRecorded)}
    assert recorded == {s.span_id for s in spans[1:]}


def test_a_trace_without_its_root_is_mapped_after_the_trace_timeout(
    tmp_path: Path, store: Path
) -> None:
    service = Service(tmp_path, [str(store), "--limit", "otlp_trace_timeout_s=0.2"])
    try:
        spans = genai_trace(random.Random(6))
        assert service.http.post("/v1/traces", json=_body(spans[1:])).status_code == 200
        deadline = time.monotonic() + WAIT_S
        while _sql(service, "SELECT count(*) FROM prompts") != [[2]]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        assert service.stop() == 0


def test_sigterm_maps_traces_still_waiting_for_their_root(tmp_path: Path, store: Path) -> None:
    service = Service(tmp_path, [str(store)])
    spans = genai_trace(random.Random(7))
    assert service.http.post("/v1/traces", json=_body(spans[1:])).status_code == 200
    assert not any(isinstance(e, ev.PromptAdded) for e in _stored(store))
    assert service.stop() == 0
    assert sum(isinstance(e, ev.PromptAdded) for e in _stored(store)) == 2


def test_log_records_sent_apart_reach_their_turns_and_are_kept(tmp_path: Path, store: Path) -> None:
    """OpenLLMetry's events path, as a Collector forwards it: the calls' messages are log
    records on /v1/logs, some before the trace, the rest after its root (within
    `otlp_log_wait_s`); a retry adds nothing; a malformed record is a partial success."""
    pytest.importorskip("opentelemetry.proto")
    from eventlog._logs import is_logs_json  # noqa: PLC0415
    from tests.eventlog.test_otel_golden import GOLDEN, TURNS  # noqa: PLC0415

    lines = (GOLDEN / "openllmetry-openai-events.jsonl").read_bytes().splitlines()
    logs = [json.loads(x) for x in lines if is_logs_json(x)]
    traces = [json.loads(x) for x in lines if not is_logs_json(x)]
    service = Service(tmp_path, [str(store), "--limit", "otlp_log_wait_s=1"])
    try:
        for batch, route in [(logs[:2], "logs"), (traces, "traces"), (logs[2:], "logs")] * 2:
            for body in batch:
                answer = service.http.post(f"/v1/stores/default/otlp/v1/{route}", json=body)
                assert (answer.status_code, answer.json()) == (200, {})
        query = "SELECT p.content, r.content, r.prompt_tokens, r.completion_tokens, "
        query += "r.finish_reason FROM prompts p JOIN responses r ON r.prompt_id = p.id "
        deadline = time.monotonic() + WAIT_S
        while len(_sql(service, query)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _sql(service, query + "ORDER BY p.occurred_at") == [list(t) for t in TURNS]
        assert _sql(service, "SELECT count(*) FROM nodes WHERE kind = 'otel.log'") == [[6]]
        bad = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}
        answer = service.http.post("/v1/logs", json=bad)
        assert answer.json()["partialSuccess"]["rejectedLogRecords"] == "1"
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as pb  # noqa: PLC0415

        request = pb.ExportLogsServiceRequest()
        records = request.resource_logs.add().scope_logs.add().log_records
        records.add(trace_id=b"\x01\x02\x03", event_name="short id")
        records.add(event_name="app.started", time_unix_nano=1)
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        body = gzip.compress(request.SerializeToString())
        answer = service.http.post("/v1/logs", content=body, headers=headers)
        reply = pb.ExportLogsServiceResponse.FromString(answer.content)
        assert (answer.status_code, reply.partial_success.rejected_log_records) == (200, 1)
        assert _sql(service, "SELECT count(*) FROM nodes WHERE kind = 'otel.log'") == [[7]]
    finally:
        assert service.stop() == 0


# -- the ingest process (eventlog/_ingest_process.py) -----------------------------------------

_LINUX = pytest.mark.skipif(sys.platform != "linux", reason="finds the child through /proc")


def _ingest_process(service: Service) -> int:
    """The pid of the service's OTLP ingest process (multiprocessing's resource tracker is a
    child of the service too)."""
    pid = service.child.pid
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise AssertionError("no ingest process")


def _gone(pid: int) -> bool:
    """Has process `pid` exited (a zombie nobody reaps counts: it runs no more)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@_LINUX
def test_the_ingest_process_dies_with_a_killed_service(tmp_path: Path, store: Path) -> None:
    """kill -9 of the service leaves no second writer on the store behind."""
    spans = genai_trace(random.Random(8))
    service = Service(tmp_path, [str(store)])
    assert service.http.post("/v1/traces", json=_body(spans[1:])).status_code == 200
    child = _ingest_process(service)
    service.child.kill()
    service.http.close()
    deadline = time.monotonic() + WAIT_S
    while not _gone(child):
        assert time.monotonic() < deadline, "the ingest process outlived the service"
        time.sleep(0.02)


@_LINUX
def test_sigterm_to_the_whole_group_still_maps_waiting_traces(tmp_path: Path, store: Path) -> None:
    """A service manager signals every process of the service at once; the ingest process
    waits for the service to drain it, so the trace waiting for its root is still mapped."""
    service = Service(tmp_path, [str(store)])
    spans = genai_trace(random.Random(9))
    assert service.http.post("/v1/traces", json=_body(spans[1:])).status_code == 200
    child = _ingest_process(service)
    service.child.signal(signal.SIGTERM)
    os.kill(child, signal.SIGTERM)
    service.http.close()
    assert service.child.wait() == 0
    assert sum(isinstance(e, ev.PromptAdded) for e in _stored(store)) == 2


@_LINUX
def test_a_dead_ingest_process_is_replaced(tmp_path: Path, store: Path) -> None:
    """A request in flight when the ingest process dies is refused (503, retry); the next
    starts a new one, and nothing acknowledged is lost."""
    service = Service(tmp_path, [str(store)])
    try:
        first, second = genai_trace(random.Random(10)), genai_trace(random.Random(11))
        assert service.http.post("/v1/traces", json=_body(first)).status_code == 200
        os.kill(_ingest_process(service), signal.SIGKILL)
        answer = service.http.post("/v1/traces", json=_body(second))
        if answer.status_code != 200:
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "ingest_stopped"
            answer = service.http.post("/v1/traces", json=_body(second))
        assert (answer.status_code, answer.json()) == (200, {})
        assert _sql(service, "SELECT count(*) FROM spans") == [[len(first) + len(second)]]
        assert _sql(service, "SELECT count(*) FROM prompts") == [[4]]
    finally:
        assert service.stop() == 0


@_LINUX
def test_a_request_after_the_ingest_process_died_is_not_refused(
    tmp_path: Path, store: Path
) -> None:
    """Only the requests the ingest process held when it died are answered 503: one that
    comes after its death starts a new one and is answered 200 at once."""
    service = Service(tmp_path, [str(store), "--limit", "otlp_trace_timeout_s=60"])
    try:
        first, second = genai_trace(random.Random(12)), genai_trace(random.Random(13))
        assert service.http.post("/v1/traces", json=_body(first)).status_code == 200
        child = _ingest_process(service)
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + WAIT_S
        while not _gone(child):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)  # the service has seen it die
        answer = service.http.post("/v1/traces", json=_body(second))
        assert (answer.status_code, answer.json()) == (200, {})
        assert _sql(service, "SELECT count(*) FROM spans") == [[len(first) + len(second)]]
    finally:
        assert service.stop() == 0


_FAULT = '''"""Injected by test_service_otlp.py: the ingester raises the log's error named by
$LMG_TEST_INGEST_RAISES, in the ingest process (which imports this module as it starts)."""
import os
import uuid

if os.environ.get("LMG_TEST_INGEST_RAISES"):
    from eventlog import _ingest, errors

    _RAISED = {
        "unknown_node": errors.UnknownNode(uuid.UUID(int=7), "session"),
        "append_conflict": errors.AppendConflict("the store", 1, 2),
    }[os.environ["LMG_TEST_INGEST_RAISES"]]

    def _add(self, items):
        raise _RAISED

    _ingest.Ingester.add = _add
'''


_ANSWERED = {  # the status and details each injected error is answered with
    "unknown_node": (422, {"node_id": str(uuid.UUID(int=7)), "expected": "session"}),
    "append_conflict": (409, {"scope": "the store", "expected": 1, "actual": 2}),
}


@pytest.mark.parametrize("raised", list(_ANSWERED))
def test_a_log_error_in_the_ingest_process_has_its_documented_status(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch, raised: str
) -> None:
    """Any error of the log's that the ingest process meets (injected into its ingester
    here) is answered as the same error of an append is: its status, code and fields.
    Before, only a full disk and a failed or closed log had their statuses; any other
    was a 500."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_FAULT)
    monkeypatch.setenv("PYTHONPATH", str(inject))
    monkeypatch.setenv("LMG_TEST_INGEST_RAISES", raised)
    service = Service(tmp_path, [str(store)])
    try:
        answer = service.http.post("/v1/traces", json=_body(genai_trace(random.Random(14))))
        status, details = _ANSWERED[raised]
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == raised
        assert answer.json()["error"]["details"] == details
    finally:
        assert service.stop() == 0
