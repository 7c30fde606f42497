"""Quick start: record a conversation with the append API, then read it back.

Run: .venv/bin/python examples/quickstart.py [STORE]   (default: a new temporary directory)
(`.venv` is what `make demo` installs into; with `pip install`, run your environment's python.)
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile

import eventlog


def main(path: str) -> None:
    with eventlog.open(path) as log:  # creates the store if needed
        s = log.create_session(metadata={"user": "42"}, tags=["quickstart"])
        p = log.add_prompt(s.id, "What is Rust?")
        r = log.add_response(p, "A systems language.", eventlog.TokenUsage(5, 30), model="m-1")
        tool = log.add_tool_invocation(r, "web_search", {"q": "rust language"})
        log.complete_tool_invocation(tool, result={"hits": 3}, duration_ms=41.0)

        for record in log.read():  # ts is int nanoseconds since the epoch, UTC
            when = dt.datetime.fromtimestamp(record.event.ts / 1e9, dt.UTC).isoformat()
            print(record.lsn, type(record.event).__name__, record.event.ts, when)
        print(log.stats().events_by_type)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="lmg-"))
