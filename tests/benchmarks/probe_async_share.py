"""The `concurrent` case's 64 asyncio agents: each thread's CPU per append, and an A/B.

    python -m tests.benchmarks.probe_async_share                  # this tree, 3 runs
    python -m tests.benchmarks.probe_async_share --against /tmp/base --runs 4

Each run is a process of its own: 64 agents (`_sides.LogAsyncAgents`, durable) append
`--slices` slices of 16,000 events after a warm-up, and the run prints its median rate, the
process's CPU per event, and the committer thread's (`time.thread_time` around it; the rest
is the event loop's). With `--against`, runs alternate between this tree and the checkout
named (its `eventlog` and benchmark sides imported instead, through ``PYTHONPATH``), so a
change to the append path is compared under the same load. Rates move with the disk's sync
times from run to run; CPU per event is the steadier measure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_SLICE = 64 * 250
_HERE = Path(__file__).resolve().parents[2]


def _one(slices: int) -> str:
    import eventlog.log as log_module  # noqa: PLC0415 (the tree PYTHONPATH names)
    from tests.benchmarks import _sides  # noqa: PLC0415

    committer = [0.0]
    commit_forever = log_module.AsyncEventLog._commit_forever

    def timed(self: log_module.AsyncEventLog) -> None:
        began = time.thread_time()
        try:
            commit_forever(self)
        finally:
            committer[0] += time.thread_time() - began

    log_module.AsyncEventLog._commit_forever = timed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(dir=os.environ.get("LMG_BENCH_DIR")) as tmp:
        side = _sides.LogAsyncAgents(Path(tmp), 0)
        side.run(64 * 100)  # warm-up
        committer[0] = 0.0
        began = time.process_time()
        rates = [_SLICE / side.run(_SLICE) for _ in range(slices)]
        cpu = time.process_time() - began
        side.close()
    events = _SLICE * slices
    return (
        f"{statistics.median(rates):,.0f} events/s, CPU {cpu / events * 1e6:.1f} us an event "
        f"(committer {committer[0] / events * 1e6:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.probe_async_share")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--against", type=Path, help="a checkout to alternate with")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(_one(args.slices))
        return
    trees = [_HERE] if args.against is None else [_HERE, args.against.resolve()]
    for run in range(args.runs):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            command = [sys.executable, __file__, "--child"]  # the sides of `tree`, this probe
            done = subprocess.run(
                [*command, "--slices", str(args.slices)],
                env=env,
                cwd=tree,
                capture_output=True,
                text=True,
                check=True,
            )
            print(f"run {run + 1}, {tree}: {done.stdout.strip()}", flush=True)


if __name__ == "__main__":
    if "--child" in sys.argv:
        del sys.path[0]  # run as a script: its own folder, not `PYTHONPATH`'s tree, came first
    main()
