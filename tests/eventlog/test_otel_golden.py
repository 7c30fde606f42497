"""Golden OTLP files: what the real instrumentations wrote once, and the events they map to.

``golden/otel/<source>.jsonl`` holds the spans of one two-turn conversation with a tool call
(the fake server of `tests._fake_llm`), recorded by the real instrumentation `<source>` as
OTLP JSON lines, the Collector file exporter's format; ``<source>.events.json`` holds the
events `lmg ingest` made of them (without `ts`). Both are frozen: a change to the mapping
or to a decoder that changes what these files become shows up here, whatever the installed
libraries now write. ``python -m tests.eventlog.test_otel_golden`` records any missing file
(each source in its own process); never run it to "update" one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

import eventlog
from eventlog._spans import Span, decode_json_line
from projections import MemoryGraph
from replay.cli import main

from ._otlp import json_line, json_logs_line, proto_stream

GOLDEN = Path(__file__).with_name("golden") / "otel"
SOURCES = [
    "openai-v2",
    "openinference-openai",
    "openllmetry-openai",
    "openinference-anthropic",
    "openllmetry-anthropic",
    "openinference-langchain",
    "runs",
    "openllmetry-openai-legacy",
    "openllmetry-openai-events",
]
LEGACY = {  # a source recorded under older packages, installed apart (`write_golden`)
    "openllmetry-openai-legacy": (
        "openllmetry-openai",
        [
            "opentelemetry-instrumentation-openai==0.38.12",
            "opentelemetry-semantic-conventions-ai==0.4.3",
        ],
    ),
}
TURNS = [
    ("What's the weather in Paris?", "", 20, 10, "tool_call"),
    ("sunny", "It is sunny in Paris.", 30, 8, "stop"),
]
_PLAIN = msgspec.json.Encoder(uuid_format="canonical")


def events_of(store: Path) -> list[Any]:
    with eventlog.open(store) as log:
        out = []
        for record in log.read():
            raw = msgspec.json.decode(_PLAIN.encode(record.event))
            raw.pop("ts", None)
            out.append(raw)
        return out


def lmg_ingest(store: Path, *files: Path) -> str:
    result = CliRunner().invoke(main, ["ingest", str(store), *map(str, files)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("source", SOURCES)
def test_a_golden_file_still_maps_to_its_events(tmp_path: Path, source: str) -> None:
    golden = GOLDEN / f"{source}.jsonl"
    expected = json.loads((GOLDEN / f"{source}.events.json").read_text())
    lmg_ingest(tmp_path / "s", golden)
    assert events_of(tmp_path / "s") == expected
    output = lmg_ingest(tmp_path / "s", golden)  # the same file again adds nothing
    assert " 0 spans and 0 events stored" in output
    assert events_of(tmp_path / "s") == expected


@pytest.mark.parametrize("source", [s for s in SOURCES if s != "runs"])
def test_every_instrumentation_gives_the_same_turns(tmp_path: Path, source: str) -> None:
    lmg_ingest(tmp_path / "s", GOLDEN / f"{source}.jsonl")
    with MemoryGraph.open(tmp_path / "s") as g:
        assert (
            g.rows(
                "SELECT p.content, r.content, r.prompt_tokens, r.completion_tokens, "
                "r.finish_reason FROM prompts p JOIN responses r ON r.prompt_id = p.id "
                "ORDER BY p.occurred_at"
            )
            == TURNS
        )
        assert g.rows(
            "SELECT tool_name, parameters->>'city', status, result FROM tool_invocations"
        ) == [("get_weather", "Paris", "success", '"sunny"')]


def test_the_legacy_convention_maps_to_prompts_responses_and_tokens(tmp_path: Path) -> None:
    """OpenLLMetry before the current conventions: ``gen_ai.system``, indexed
    ``gen_ai.prompt.N.*``/``gen_ai.completion.N.*``, ``gen_ai.usage.prompt_tokens``."""
    golden = GOLDEN / "openllmetry-openai-legacy.jsonl"
    assert '"gen_ai.prompt.0.content"' in golden.read_text()
    lmg_ingest(tmp_path / "s", golden)
    with MemoryGraph.open(tmp_path / "s") as g:
        assert g.rows(
            "SELECT p.content, p.tools_available, p.metadata->>'provider', "
            "json_array_length(p.metadata->'messages'), r.content, r.prompt_tokens, "
            "r.completion_tokens, r.finish_reason, r.model, r.metadata->'tool_calls'->0->>'id' "
            "FROM prompts p JOIN responses r ON r.prompt_id = p.id ORDER BY p.occurred_at"
        ) == [
            ("What's the weather in Paris?", ["get_weather"], "OpenAI", 1, "", 20, 10,
             "tool_call", "gpt-4o-2024-08-06", "call_1"),
            ("sunny", ["get_weather"], "OpenAI", 3, "It is sunny in Paris.", 30, 8, "stop",
             "gpt-4o-2024-08-06", None),
        ]  # fmt: skip
        assert g.rows(
            "SELECT tool_name, parameters->>'city', status, result FROM tool_invocations"
        ) == [("get_weather", "Paris", "success", '"sunny"')]


def test_a_protobuf_file_maps_like_its_json(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.proto")
    golden = GOLDEN / "openai-v2.jsonl"
    spans = [
        s
        for line in golden.read_bytes().splitlines()
        for s in decode_json_line(line)
        if isinstance(s, Span)
    ]
    pb = tmp_path / "traces.pb"
    pb.write_bytes(proto_stream([spans[:1], spans[1:]]))
    lmg_ingest(tmp_path / "s", pb)
    lmg_ingest(tmp_path / "j", golden)
    assert _without_scope(events_of(tmp_path / "s")) == _without_scope(events_of(tmp_path / "j"))


def _without_scope(events: list[Any]) -> list[Any]:
    """The proto writer of this test names one scope ("tests") for every span."""
    return [{k: v for k, v in e.items() if k != "scope"} for e in events]


# -- recording (run once per source, by hand) -----------------------------------------------


def record(source: str) -> str:
    """The OTLP JSON lines of the conversation under `source`, one span per line."""
    import tempfile  # noqa: PLC0415

    from opentelemetry.sdk._logs.export import (  # noqa: PLC0415
        InMemoryLogRecordExporter,
        SimpleLogRecordProcessor,
    )
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )

    from eventlog import otel  # noqa: PLC0415
    from tests._fake_llm import fake_llm  # noqa: PLC0415
    from tests.eventlog import test_otel_clients as clients  # noqa: PLC0415

    memory = InMemorySpanExporter()
    logs = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    with fake_llm() as url, eventlog.open(tempfile.mkdtemp()) as log:
        names = () if source in ("runs", EVENTS) else (LEGACY.get(source, (source,))[0],)
        with otel.instrument(log, *names, batch=False) as handle:
            handle.provider.add_span_processor(SimpleSpanProcessor(memory))
            assert handle.logger_provider is not None
            handle.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
            if source == EVENTS:
                _events_instrumentation(handle)
            with otel.session("golden"):
                if source == "runs":
                    _runs()
                elif source.endswith("langchain"):
                    clients._langchain(url)
                elif source.endswith("anthropic"):
                    clients._anthropic(url)
                else:
                    clients._openai_sync(url, stream=False)
    records = "".join(json_logs_line([r]) + "\n" for r in logs.get_finished_logs())
    return records + "".join(json_line([s]) + "\n" for s in memory.get_finished_spans())


EVENTS = "openllmetry-openai-events"


def _events_instrumentation(handle: Any) -> None:
    """OpenLLMetry's OpenAI instrumentation on its events path: the messages go through the
    logs API as ``gen_ai.*.message``/``gen_ai.choice`` records, not onto the spans."""
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor  # noqa: PLC0415

    instrumentor = OpenAIInstrumentor(use_attributes=False)
    instrumentor.instrument(tracer_provider=handle.provider, logger_provider=handle.logger_provider)
    handle.instrumentors.append(instrumentor)


def _runs() -> None:
    """The same conversation told through `eventlog.otel`'s agent and tool runs."""
    from eventlog import otel  # noqa: PLC0415

    with otel.agent("weather", input="What's the weather in Paris?") as run:
        with otel.tool("get_weather", arguments={"city": "Paris"}) as call:
            call.result = "sunny"
        run.output = "It is sunny in Paris."
        run.input_tokens, run.output_tokens = 20, 10


def write_golden() -> list[Path]:
    """Record every missing source, each in its own process; returns what was written."""
    GOLDEN.mkdir(parents=True, exist_ok=True)
    written = []
    for source in SOURCES:
        golden = GOLDEN / f"{source}.jsonl"
        if golden.exists():
            continue
        env = dict(os.environ)
        if source in LEGACY:
            packages = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                 str(packages), *LEGACY[source][1]],
                check=True,
            )  # fmt: skip
            env["PYTHONPATH"] = str(packages)
        lines = subprocess.run(
            [sys.executable, "-m", "tests.eventlog.test_otel_golden", "record", source],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        ).stdout
        golden.write_text(lines)
        store = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip()) / "s"
        lmg_ingest(store, golden)
        expected = GOLDEN / f"{source}.events.json"
        expected.write_text(json.dumps(events_of(store), indent=1, sort_keys=True) + "\n")
        written += [golden, expected]
    return written


if __name__ == "__main__":
    if sys.argv[1:2] == ["record"]:
        sys.stdout.write(record(sys.argv[2]))
    else:
        for path in write_golden():
            print(f"wrote {path}")
