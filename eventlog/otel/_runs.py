"""`session`, `agent` and `tool`: OpenTelemetry spans with GenAI attributes for code that no
library instruments, so hand-written agents go through the same mapping as instrumented ones.

Each is a context manager (``with agent("triage", input=q) as run: run.output = a``) and a
decorator (``@tool("search")`` records the call's arguments and its return value; an
exception marks the span as an error and propagates). Spans go to the tracer provider of the
latest `instrument` call, else to the global one.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, TracerProvider

__all__ = ["AgentRun", "ToolRun", "agent", "session", "tool", "use_provider"]

P = ParamSpec("P")
R = TypeVar("R")

_PROVIDER: list[TracerProvider] = []


def use_provider(provider: TracerProvider | None, replacing: TracerProvider | None = None) -> None:
    """Make `provider` the one runs use; None (with the provider being replaced) forgets it."""
    if provider is not None:
        _PROVIDER[:] = [provider]
    elif _PROVIDER and _PROVIDER[0] is replacing:
        _PROVIDER.clear()


def _tracer() -> trace.Tracer:
    provider = _PROVIDER[0] if _PROVIDER else trace.get_tracer_provider()
    return provider.get_tracer("eventlog.otel")


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=repr)


def _messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


class AgentRun:
    """An agent's span while it runs: set `input`, `output`, `model` and token counts."""

    def __init__(self, span: Span, input: str | None) -> None:
        self.span = span
        self.input = input
        self.output: str | None = None
        self.model: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def _finish(self) -> None:
        s = self.span
        if self.input is not None:
            s.set_attribute("gen_ai.input.messages", _messages("user", self.input))
        if self.output is not None:
            s.set_attribute("gen_ai.output.messages", _messages("assistant", self.output))
        if self.model is not None:
            s.set_attribute("gen_ai.request.model", self.model)
        if self.input_tokens is not None:
            s.set_attribute("gen_ai.usage.input_tokens", self.input_tokens)
        if self.output_tokens is not None:
            s.set_attribute("gen_ai.usage.output_tokens", self.output_tokens)


class ToolRun:
    """A tool call's span while it runs: set `result`."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.result: Any = None

    def _finish(self) -> None:
        if self.result is not None:
            self.span.set_attribute("gen_ai.tool.call.result", _json(self.result))


class _Scope:
    """A span as a context manager and a decorator; subclasses say what it records."""

    def _span(self) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _run(self, span: Span) -> Any:
        return None

    def _called(self, run: Any, arguments: dict[str, Any], result: Any) -> None:
        """What a decorated call's arguments and result say about the run."""

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        name, attributes = self._span()
        with _tracer().start_as_current_span(name, attributes=attributes) as span:
            run = self._run(span)
            try:
                yield run
            finally:
                if run is not None:
                    run._finish()

    def __enter__(self) -> Any:
        self._stack = getattr(self, "_stack", [])
        cm = self._open()
        self._stack.append(cm)
        return cm.__enter__()

    def __exit__(self, *exc: Any) -> bool | None:
        suppressed: bool | None = self._stack.pop().__exit__(*exc)
        return suppressed

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        def bound(*args: Any, **kwargs: Any) -> dict[str, Any]:
            call = signature.bind_partial(*args, **kwargs)
            return {k: v for k, v in call.arguments.items() if k not in ("self", "cls")}

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self._open() as run:
                    result = await fn(*args, **kwargs)
                    self._called(run, bound(*args, **kwargs), result)
                    return result

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run_sync(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._open() as run:
                result = fn(*args, **kwargs)
                self._called(run, bound(*args, **kwargs), result)
                return result

        return run_sync


class session(_Scope):  # noqa: N801 (used like a function: `with session("c-1"):`)
    """A conversation: every GenAI span inside belongs to the session `conversation_id`
    (a fresh one if None), recorded as ``gen_ai.conversation.id``."""

    def __init__(
        self,
        conversation_id: str | None = None,
        *,
        name: str = "session",
        user_id: str | None = None,
    ) -> None:
        self.conversation_id = conversation_id or uuid.uuid4().hex
        self.name = name
        self.user_id = user_id

    def _span(self) -> tuple[str, dict[str, Any]]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.conversation.id": self.conversation_id,
        }
        if self.user_id is not None:
            attributes["user.id"] = self.user_id
        return f"invoke_workflow {self.name}", attributes


class agent(_Scope):  # noqa: N801
    """An agent's run (``invoke_agent``): chat spans inside are its prompts and responses; a
    run with an `input` or `output` and no chat span inside is itself one turn."""

    def __init__(
        self,
        name: str,
        *,
        input: str | None = None,
        description: str | None = None,
        agent_id: str | None = None,
    ) -> None:
        self.name = name
        self.input = input
        self.description = description
        self.agent_id = agent_id

    def _span(self) -> tuple[str, dict[str, Any]]:
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self.name}
        if self.description is not None:
            attributes["gen_ai.agent.description"] = self.description
        if self.agent_id is not None:
            attributes["gen_ai.agent.id"] = self.agent_id
        return f"invoke_agent {self.name}", attributes

    def _run(self, span: Span) -> AgentRun:
        return AgentRun(span, self.input)

    def _called(self, run: AgentRun, arguments: dict[str, Any], result: Any) -> None:
        if run.input is None:
            run.input = _json(arguments)
        if run.output is None and result is not None:
            run.output = _json(result)


class tool(_Scope):  # noqa: N801
    """A tool call (``execute_tool``) with its arguments and result; `call_id` ties it to the
    model's tool call that asked for it."""

    def __init__(self, name: str, *, call_id: str | None = None, arguments: Any = None) -> None:
        self.name = name
        self.call_id = call_id
        self.arguments = arguments

    def _span(self) -> tuple[str, dict[str, Any]]:
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": self.name}
        if self.call_id is not None:
            attributes["gen_ai.tool.call.id"] = self.call_id
        if self.arguments is not None:
            attributes["gen_ai.tool.call.arguments"] = _json(self.arguments)
        return f"execute_tool {self.name}", attributes

    def _run(self, span: Span) -> ToolRun:
        return ToolRun(span)

    def _called(self, run: ToolRun, arguments: dict[str, Any], result: Any) -> None:
        if self.arguments is None:
            run.span.set_attribute("gen_ai.tool.call.arguments", _json(arguments))
        run.result = result
