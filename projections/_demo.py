"""The read half of `lmg demo`: what the projections make of the recorded conversation."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

from . import nodes as n
from ._reads import Hop
from .memory_graph import MemoryGraph

__all__ = ["lineage_tree", "show_projections"]


def show_projections(graph: MemoryGraph, session_id: uuid.UUID, say: Callable[[str], None]) -> None:
    """Print the session's totals, its context window, a lineage walk and agent stats."""
    s = graph.get_session(session_id)
    say("")
    say(
        f"The same session, folded into DuckDB ({graph.stats().checkpoint_lsn + 1} events "
        f"folded): {s.prompt_count} prompts, {s.response_count} responses, "
        f"{s.tool_count} tool calls, {s.prompt_tokens + s.completion_tokens} tokens."
    )
    window = graph.context_window(session_id, turns=2)
    say("Context window (last 2 turns):")
    for turn in window:
        say(f"  prompt:   {turn.prompt.content}")
        for r in turn.responses:
            say(f"  response: {r.content}")
    last = window[-1].responses[-1]
    say("Lineage of the last response (ancestors, depth 3; each edge leaves the node above it):")
    say(f"  {_label(last)}")
    for line in lineage_tree(last.id, graph.ancestors(last.id, depth=3)):
        say(f"  {line}")
    say("Agent stats (SQL: SELECT * FROM agent_stats):")
    header = ["name", "prompts", "responses", "handoffs in", "out", "tokens out", "mean ms"]
    header += ["tools", "failed"]
    rows = graph.rows(
        "SELECT name, prompts_handled, responses, handoffs_in, handoffs_out, tokens_out, "
        "round(mean_latency_ms)::BIGINT, tool_calls, tool_failures "
        "FROM agent_stats ORDER BY name"
    )
    widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    say(
        "  "
        + "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for row in rows:
        cells = [str(v) for v in row]
        say(
            "  "
            + "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )


def lineage_tree(root: uuid.UUID, hops: list[Hop], indent: str = "  ") -> Iterator[str]:
    """The hops of a walk as a tree: each under the node its edge starts from.

    A walk lists hops level by level; printed in that order, indented by depth, a hop would
    sit under whichever hop came last, not under its source. A walk reaches each node once,
    so the hops form a tree."""
    children: dict[uuid.UUID, list[Hop]] = {}
    for hop in hops:
        children.setdefault(_source(hop), []).append(hop)
    stack = [(hop, 1) for hop in reversed(children.get(root, []))]
    while stack:
        hop, level = stack.pop()
        yield f"{indent * level}{hop.edge.edge_type} -> {_label(hop.node)}"
        stack += [(child, level + 1) for child in reversed(children.get(hop.node_id, []))]


def _source(hop: Hop) -> uuid.UUID:
    """The node the hop leaves from: its edge's other end (a walk may cross an edge backwards)."""
    return hop.edge.from_id if hop.edge.to_id == hop.node_id else hop.edge.to_id


def _label(node: n.Node | None) -> str:
    match node:
        case n.Prompt():
            return f"prompt '{node.content[:50]}'"
        case n.Template():
            return f"template '{node.name}' v{node.version}"
        case n.Agent():
            return f"agent {node.name}"
        case n.Response():
            return f"response '{node.content[:50]}'"
        case None:
            return "(not a node)"
        case _:
            return node.__class__.__name__.lower()
