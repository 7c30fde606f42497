"""What a first-seen session costs the handoff lookup after a restart, at a large store.

    python -m tests.benchmarks.probe_handoffs --events 1000000

Writes (Durability NONE, untimed) one conversation's first turn, then `--events` events of
other traces (plain spans, as an app's HTTP and database spans are), then opens the store
again (a restart), appends one span (untimed: the first append after opening builds the id
index of the last segment, whatever is appended) and times `Ingester.add` of a later turn of
that first conversation: the ingester has not seen the session, so its timeline is read from
the log (`_handoffs`). Its handoff from the stored turn is checked. Prints the time and the
store's size.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import eventlog
from eventlog import events as ev
from eventlog._ingest import Ingester
from eventlog._spans import Span
from tests.eventlog._traces import genai_trace

_BATCH = 5_000


def _filler(n: int, rng: random.Random) -> list[Span]:
    trace = f"{rng.getrandbits(128):032x}"
    return [
        Span(trace_id=trace, span_id=f"{i + 1:016x}", name="GET /", start_ns=10**18 + i)
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(3)
    start = 1_760_000_000_000_000_000
    first, later = (genai_trace(rng, start + i * 10**12, conversation="old") for i in range(2))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s"
        with eventlog.open(path, durability=eventlog.Durability.NONE) as log:
            ingester = Ingester(log)
            ingester.add(first)
            while log.next_lsn() < args.events:
                ingester.add(_filler(_BATCH, rng))
            size = log.next_lsn()
        with eventlog.open(path) as log:
            ingester = Ingester(log)
            ingester.add(_filler(1, rng))
            size = log.next_lsn()
            began = time.perf_counter()
            ingester.add(later)
            seconds = time.perf_counter() - began
            handoffs = [e for _, e in log.read(size) if isinstance(e, ev.AgentHandoff)]
        assert len(handoffs) == 2, "triage -> writer in the later trace, writer -> triage before"
    print(f"{size:,} events: a later turn of a session first seen after a restart took "
          f"{seconds * 1000:,.1f} ms to ingest")  # fmt: skip


if __name__ == "__main__":
    main()
