"""The first append after opening a store whose last segment is large, with and without its
tail file.

    python -m tests.benchmarks.probe_first_append --events 300000 --reps 5

Builds one segment of `--events` mixed events (`_graph_data.mixed_chunks`, Durability NONE,
a segment size that holds them all; untimed), closed cleanly, so it has a ``.tail``. Then, per
repetition and in alternating order: open the store and time its first append (a prompt to
the first session), with the tail file as the close left it, and with it moved aside (the
whole segment decoded, as before tail files). Prints the medians, the close that wrote the
tail, and the tail's size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import eventlog
from eventlog import events as ev
from tests.benchmarks._graph_data import mixed_chunks


def _first_append(store: Path) -> tuple[float, float]:
    """Seconds of the first append after open, and of the close after it."""
    log = eventlog.open(store, segment_bytes=1 << 30)  # no rotation: one segment
    session = next(r.event for r in log.read() if isinstance(r.event, ev.SessionCreated))
    began = time.perf_counter()
    log.add_prompt(session.id, "after reopening")
    took = time.perf_counter() - began
    began = time.perf_counter()
    log.close()
    return took, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "s"
        with eventlog.open(
            store, durability=eventlog.Durability.NONE, segment_bytes=1 << 30
        ) as log:
            left = args.events
            for chunk in mixed_chunks(20240501):
                if left <= 0:
                    break
                log.append(chunk[:left])
                left -= len(chunk[:left])
        (tail,) = store.glob("*.tail")
        aside = Path(tmp) / "aside.tail"
        with_tail: list[float] = []
        without: list[float] = []
        closes: dict[bool, list[float]] = {True: [], False: []}
        for rep in range(args.reps):
            for use_tail in (rep % 2 == 0, rep % 2 == 1):
                shutil.copy(tail if tail.exists() else aside, aside)
                if not use_tail:
                    tail.unlink()
                took, closing = _first_append(store)
                (with_tail if use_tail else without).append(took)
                closes[use_tail].append(closing)
                shutil.copy(aside, tail)  # the same tail for every repetition
        print(
            f"{args.events:,} events in {len(list(store.glob('*.seg')))} segment(s); tail "
            f"{tail.stat().st_size / 1e6:.1f} MB; load {os.getloadavg()}\n"
            f"first append with the tail: median {statistics.median(with_tail) * 1e3:.1f} ms "
            f"({', '.join(f'{t * 1e3:.0f}' for t in with_tail)})\n"
            f"without it (whole segment decoded): median "
            f"{statistics.median(without) * 1e3:.1f} ms "
            f"({', '.join(f'{t * 1e3:.0f}' for t in without)})\n"
            f"close after one append: median {statistics.median(closes[True]) * 1e3:.1f} ms "
            f"with the tail, {statistics.median(closes[False]) * 1e3:.1f} ms without (which "
            "writes a new one)"
        )


if __name__ == "__main__":
    main()
