"""A fake model server on 127.0.0.1 answering like the OpenAI and Anthropic APIs.

It plays one scripted conversation: asked about the weather with tools offered, the model
calls ``get_weather`` (``{"city": "Paris"}``) with a fresh call id (``call_1``, ``call_2``,
..., unique per server as a provider's are); given the tool's result, it answers. Chat
completions stream as server-sent events when asked to. Token counts are fixed per turn,
so tests can check them whichever instrumentation recorded them.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ANSWER", "USAGE", "fake_llm"]

ANSWER = "It is sunny in Paris."
USAGE = {"ask": (20, 10), "answer": (30, 8)}  # (input, output) tokens per turn


def _answered(messages: list[dict[str, Any]]) -> bool:
    """Whether the last message carries a tool's result (OpenAI or Anthropic shape)."""
    last = messages[-1]
    if last.get("role") == "tool":
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


_CALLS = itertools.count(1)


def _openai(body: dict[str, Any]) -> dict[str, Any]:
    turn = "answer" if _answered(body["messages"]) or not body.get("tools") else "ask"
    message: dict[str, Any] = {"role": "assistant", "content": ANSWER}
    if turn == "ask":
        call = {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": f"call_{next(_CALLS)}", "type": "function", "function": call}],
        }
    inp, out = USAGE[turn]
    return {
        "id": f"chatcmpl-{turn}",
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if turn == "ask" else "stop",
            }
        ],
        "usage": {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out},
    }


def _openai_chunks(whole: dict[str, Any]) -> Iterator[dict[str, Any]]:
    choice = whole["choices"][0]
    message = choice["message"]
    base = {k: whole[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        yield chunk({"tool_calls": [{"index": 0, **call}]})
    else:
        for word in message["content"].split(" "):
            yield chunk({"content": word if word == "It" else f" {word}"})
    yield chunk({}, choice["finish_reason"])
    yield base | {"choices": [], "usage": whole["usage"]}


def _anthropic(body: dict[str, Any]) -> dict[str, Any]:
    turn = "answer" if _answered(body["messages"]) or not body.get("tools") else "ask"
    inp, out = USAGE[turn]
    content: list[dict[str, Any]] = [{"type": "text", "text": ANSWER}]
    if turn == "ask":
        content = [
            {
                "type": "tool_use",
                "id": f"call_{next(_CALLS)}",
                "name": "get_weather",
                "input": {"city": "Paris"},
            }
        ]
    return {
        "id": f"msg_{turn}",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": content,
        "stop_reason": "tool_use" if turn == "ask" else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": inp, "output_tokens": out},
    }


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("/chat/completions"):
            whole = _openai(body)
            if body.get("stream"):
                self._stream(_openai_chunks(whole))
                return
            self._json(whole)
        elif self.path.endswith("/messages"):
            self._json(_anthropic(body))
        else:
            self.send_error(404)

    def _json(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: Iterator[dict[str, Any]]) -> None:
        data = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
        data += b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def fake_llm() -> Iterator[str]:
    """A running fake server; yields its base URL (``http://127.0.0.1:PORT``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
