"""`eventlog.otel`: the exporter, `instrument`, and the session/agent/tool runs, through the
real OpenTelemetry SDK (the ``otel`` extra; CI installs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import eventlog
from eventlog import otel
from eventlog.events import SpanRecorded
from projections import MemoryGraph


def test_import_eventlog_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, eventlog, projections, replay\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry', 'eventlog.otel'))]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_the_extra_the_error_names_it() -> None:
    """Without OpenTelemetry installed (hidden here), `eventlog.otel` says which extra to
    install, not only which module it lacks."""
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if not installed\n"
        "try:\n"
        "    import eventlog.otel\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    said = done.stdout
    assert "needs the otel extra" in said and "llm-memory-graph[otel]" in said, said


def test_a_multi_agent_run_with_the_runs_shows_agents_handoffs_and_tools(tmp_path: Path) -> None:
    with MemoryGraph.open(tmp_path / "s") as g:
        with otel.instrument(g, batch=False):

            @otel.tool("search")
            def search(query: str) -> list[str]:
                return ["rust-lang.org"]

            @otel.agent("writer", description="writes answers")
            def write(topic: str) -> str:
                return f"An essay on {topic}."

            with otel.session("conversation-1", user_id="u-7"):
                with otel.agent("triage", input="Write about Rust.") as run:
                    search("rust")
                    run.output = "Passing to the writer."
                    run.input_tokens, run.output_tokens = 5, 4
                write("Rust")
                with pytest.raises(ValueError, match="offline"), otel.tool("fetch"):
                    raise ValueError("offline")
        assert g.rows(
            "SELECT name, role, responses, handoffs_out, handoffs_in, tool_calls, tool_failures "
            "FROM agent_stats ORDER BY name"
        ) == [
            ("triage", "agent", 1, 1, 0, 1, 0),
            ("writer", "writes answers", 1, 0, 1, 1, 1),
        ]
        assert g.rows(
            "SELECT tool_name, status, parameters, result, error FROM tool_invocations "
            "ORDER BY tool_name"
        ) == [
            ("fetch", "error", None, None, "ValueError: offline"),
            ("search", "success", '{"query":"rust"}', '["rust-lang.org"]', None),
        ]
        assert g.rows("SELECT metadata->>'user_id', prompt_count FROM sessions") == [("u-7", 2)]
        assert g.rows("SELECT count(*) FROM spans") == [(5,)]


def test_agents_in_traces_of_their_own_hand_off_within_their_session(tmp_path: Path) -> None:
    """Each agent run is its own trace; the runs share only the conversation id. The
    handoffs are the session's, not the trace's: triage -> writer -> triage."""
    with MemoryGraph.open(tmp_path / "s") as g:
        with otel.instrument(g, batch=False):
            for name, question in [("triage", "Rust?"), ("writer", "Write it."), ("triage", "Ok?")]:
                with otel.session("conversation-2"), otel.agent(name, input=question) as run:
                    run.output = f"{name} answered."
        assert g.rows("SELECT count(DISTINCT trace_id) FROM spans") == [(3,)]
        assert g.rows(
            "SELECT name, responses, handoffs_out, handoffs_in FROM agent_stats ORDER BY name"
        ) == [("triage", 2, 1, 1), ("writer", 1, 1, 1)]
        assert g.rows(
            "SELECT p.content, a.name FROM edges e JOIN responses r ON r.id = e.from_id "
            "JOIN prompts p ON p.id = r.prompt_id JOIN agents a ON a.id = e.to_id "
            "WHERE e.edge_type = 'TRANSFERS_TO' ORDER BY e.occurred_at"
        ) == [("Rust?", "writer"), ("Write it.", "triage")]


def test_instrument_reads_the_genai_events_an_instrumentation_emits_as_logs(
    tmp_path: Path,
) -> None:
    """What the older conventions do: the call's messages are log records naming its span,
    emitted through the logger provider `instrument` hands the instrumentors."""
    from opentelemetry._logs import LogRecord  # noqa: PLC0415
    from opentelemetry.util.types import AnyValue  # noqa: PLC0415

    with MemoryGraph.open(tmp_path / "s") as g:
        with otel.instrument(g) as handle:  # batched spans, as in production
            assert handle.logger_provider is not None
            logger = handle.logger_provider.get_logger("an.instrumentation")
            tracer = handle.provider.get_tracer("an.instrumentation")
            with tracer.start_as_current_span("chat gpt-4o") as span:
                span.set_attributes({"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"})
                logger.emit(LogRecord(event_name="gen_ai.user.message", body={"content": "Hi?"}))
                message: AnyValue = {"content": "Hello."}
                choice: AnyValue = {"index": 0, "finish_reason": "stop", "message": message}
                logger.emit(LogRecord(event_name="gen_ai.choice", body=choice))
        assert g.rows(
            "SELECT p.content, r.content, r.finish_reason FROM prompts p "
            "JOIN responses r ON r.prompt_id = p.id"
        ) == [("Hi?", "Hello.", "stop")]
        assert g.rows(
            "SELECT data->>'event_name', data->>'scope' FROM nodes WHERE kind = 'otel.log' "
            "ORDER BY occurred_at"
        ) == [
            ("gen_ai.user.message", "an.instrumentation"),
            ("gen_ai.choice", "an.instrumentation"),
        ]


def test_the_exporter_adds_nothing_when_the_sdk_exports_a_batch_again(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("child") as child:
        child.set_attribute("gen_ai.operation.name", "chat")
        child.set_attribute("gen_ai.usage.input_tokens", 3)
    with eventlog.open(tmp_path / "s") as log:
        exporter = otel.Exporter(log)
        spans = memory.get_finished_spans()
        assert exporter.export(spans).name == "SUCCESS"
        events = log.next_lsn()
        exporter.export(spans)  # a retry after a timeout
        exporter.export(list(reversed(spans)))
        assert log.next_lsn() == events
        assert exporter.stats.spans == 2
        assert exporter.stats.duplicates > 0


def test_a_trace_without_its_root_is_written_on_force_flush(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("child"):
        pass
    child = [s for s in memory.get_finished_spans() if s.name == "child"]
    with eventlog.open(tmp_path / "s") as log:
        exporter = otel.Exporter(log)
        exporter.export(child)
        assert log.next_lsn() == 0  # waiting for its root
        assert exporter.force_flush()
        assert log.next_lsn() == 1


def test_instrument_names_an_unknown_library(log: eventlog.EventLog) -> None:
    with pytest.raises(eventlog.EventLogError, match="unknown instrumentation 'cobol'"):
        otel.instrument(log, "cobol")


def test_a_span_whose_parent_is_remote_is_a_local_root(tmp_path: Path) -> None:
    """A server span continuing a caller's trace: its trace is written when it ends."""
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags  # noqa: PLC0415

    caller = SpanContext(0xAB, 0xCD, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    context = trace.set_span_in_context(NonRecordingSpan(caller))
    with eventlog.open(tmp_path / "s") as log:
        exporter = otel.Exporter(log)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("test").start_as_current_span("POST /chat", context=context):
            pass
        spans = [e for _, e in log.read() if isinstance(e, SpanRecorded)]
        assert [(s.name, s.parent_span_id) for s in spans] == [("POST /chat", f"{0xCD:016x}")]


def test_an_exporter_with_nothing_buffered_flushes_quietly_after_its_log_closes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK shuts its exporters down at exit, often after the app closed the log."""
    log = eventlog.open(tmp_path / "s")
    exporter = otel.Exporter(log)
    log.close()
    assert exporter.force_flush() is True
    exporter.shutdown()
    assert "spans not stored" not in caplog.text


def test_an_export_into_a_closed_log_fails_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("test").start_as_current_span("root"):
        pass
    log = eventlog.open(tmp_path / "s")
    exporter = otel.Exporter(log)
    log.close()
    assert exporter.export(memory.get_finished_spans()).name == "FAILURE"
    assert "spans not stored: " in caplog.text
