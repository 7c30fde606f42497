"""The child process of the `replay` benchmark: ``python -m tests.benchmarks._replay_child``.

    at STORE SCHEDULE OUT    time `replay.at(STORE, lsn=p, snapshots=s)` for every (p, s) of
                             SCHEDULE (a JSON list, in order; the first is a warm-up), and
                             write one result per call to OUT (JSON)

Each call is timed from the call to the view in hand (`perf_counter`); closing the view
(deleting its private database) is timed apart. The phases of a call are timed too, by
wrapping (not changing) the functions `replay.at` calls: resolving the point (the read-only
log's `next_lsn`), making the workspace (restoring the snapshot, or an empty schema), folding
forward, reopening the file read-only, and reading the last event's `ts`.
"""

from __future__ import annotations

import functools
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

_ENCODE = msgspec.json.Encoder().encode


def _peak_kb() -> int:
    """VmHWM of this process (see `_graph_child._peak_kb` for why not `ru_maxrss`)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def at(store: Path, schedule: Path, out: Path) -> None:
    began = time.perf_counter()
    import replay  # noqa: PLC0415 (timed: the first call should not pay for it)
    from replay import _workspace, view  # noqa: PLC0415

    imported_s = time.perf_counter() - began
    phases: dict[str, float] = {}

    def timed(name: str, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0

        return wrapper  # type: ignore[return-value]

    ws = _workspace.Workspace
    view.resolve = timed("resolve", view.resolve)  # type: ignore[attr-defined]
    view.event_ts = timed("event_ts", view.event_ts)  # type: ignore[attr-defined]
    ws.__init__ = timed("workspace", ws.__init__)  # type: ignore[method-assign]
    ws.fold_to = timed("fold", ws.fold_to)  # type: ignore[method-assign]
    ws.read_only = timed("reopen", ws.read_only)  # type: ignore[method-assign]

    results: list[dict[str, Any]] = []
    for lsn, snapshots in msgspec.json.decode(schedule.read_bytes()):
        phases.clear()
        gc.collect()
        t0 = time.perf_counter()
        v = replay.at(store, lsn=lsn, snapshots=snapshots)
        seconds = time.perf_counter() - t0
        started = -1 if v.snapshot is None else v.snapshot.lsn
        got = v.lsn
        t0 = time.perf_counter()
        v.close()
        close_s = time.perf_counter() - t0
        if got != lsn:
            raise RuntimeError(f"replay.at(lsn={lsn}) gave a view at LSN {got}")
        results.append(
            {
                "lsn": lsn,
                "snapshots": snapshots,
                "seconds": seconds,
                "close_s": close_s,
                "snapshot_lsn": started,
                "phases": dict(phases),
            }
        )
        print(
            f"    at({lsn:>9,}, snapshots={snapshots!s:<5}) {seconds:6.3f} s"
            f"  (from {'zero' if started < 0 else f'snapshot {started:,}'})",
            file=sys.stderr,
            flush=True,
        )
    out.write_bytes(_ENCODE({"imported_s": imported_s, "peak_kb": _peak_kb(), "calls": results}))


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "at":
        print(__doc__, file=sys.stderr)
        return 2
    at(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
