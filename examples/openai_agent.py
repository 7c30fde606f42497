"""An OpenAI tool-calling agent, written into the store by its OpenTelemetry spans.

`eventlog.otel.instrument(graph, "openai")` is the only line the agent needs: the official
OpenAI instrumentation traces every call, and the spans land as a session, prompts,
responses with tokens and latency, a tool call and an agent. With OPENAI_API_KEY set this
talks to the real API (model $OPENAI_MODEL, default gpt-4o-mini); without it, to a small fake
server on 127.0.0.1 that answers like the API, so it runs with no network.

Run: .venv/bin/python examples/openai_agent.py [STORE]   (needs the otel extra and the openai SDK)
(STORE: default, a new temporary directory.) Then, from a shell:
  .venv/bin/lmg sql STORE "SELECT name, round(duration_ms, 1) AS ms FROM spans ORDER BY start_ns"
(`.venv` is what `make demo` and `make test` install into, with both; with `pip install
'.[otel]' openai` from the clone, run your environment's python and `lmg`.)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai

from eventlog import otel
from projections import MemoryGraph

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def get_weather(city: str) -> str:
    return f"sunny in {city}"


def run_agent(client: openai.OpenAI, model: str, question: str) -> str:
    """Ask, run the tools the model asks for, ask again, until it answers."""
    messages: list[Any] = [{"role": "user", "content": question}]
    while True:
        reply = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
        message = reply.choices[0].message
        if not message.tool_calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            if call.type != "function":
                continue
            result = get_weather(**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})


class _FakeOpenAI(BaseHTTPRequestHandler):
    """Chat completions: asks for get_weather first, answers once given its result."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        last = body["messages"][-1]
        if last["role"] == "tool":
            message: dict[str, Any] = {"role": "assistant", "content": f"It is {last['content']}."}
            finish, usage = "stop", (30, 8)
        else:
            call = {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_example_1", "type": "function", "function": call}],
            }
            finish, usage = "tool_calls", (20, 10)
        data = json.dumps(
            {
                "id": "chatcmpl-example",
                "object": "chat.completion",
                "created": 1_760_000_000,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": usage[0],
                    "completion_tokens": usage[1],
                    "total_tokens": sum(usage),
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def fake_openai() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def openai_client() -> Iterator[openai.OpenAI]:
    if os.environ.get("OPENAI_API_KEY"):
        yield openai.OpenAI()
        return
    with fake_openai() as url:
        yield openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0)


def main(path: str) -> None:
    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    with MemoryGraph.open(path) as g:
        with (
            otel.instrument(g, "openai"),
            openai_client() as client,
            otel.session("weather-1"),
            otel.agent("weather-agent"),
        ):
            print("The agent's answer:", run_agent(client, model, "What's the weather in Paris?"))
        print(f"\nWhat the store {path} holds:")
        print("(prompt, response, prompt tokens, completion tokens, latency ms):")
        for row in g.rows(
            "SELECT p.content, r.content, r.prompt_tokens, r.completion_tokens, "
            "round(r.latency_ms, 1) FROM prompts p JOIN responses r ON r.prompt_id = p.id "
            "ORDER BY p.occurred_at"
        ):
            print(" ", row)
        print("(tool, parameters, status, result):")
        print(" ", g.rows("SELECT tool_name, parameters, status, result FROM tool_invocations"))
        print("(agent, responses, tool calls):")
        print(" ", g.rows("SELECT name, responses, tool_calls FROM agent_stats"))
        print("(span, ms):")
        print(" ", g.rows("SELECT name, round(duration_ms, 1) FROM spans ORDER BY start_ns"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="lmg-"))
