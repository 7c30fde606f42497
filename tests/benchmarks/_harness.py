"""Side-by-side timing in interleaved slices: warm up, repeat, take medians of ratios.

A case has sides: the log, and the baselines it is compared with. fsync latency on this kind
of (virtual) disk swings by several times within seconds, and other work may share the CPUs,
so running one side for seconds and then the next would compare different weather. Instead,
every side of a case is opened at once (setup untimed, in its own fresh directory) and the
sides take turns running short slices (about `slice_seconds` each, sized from the warm-up),
in an order that rotates every slice (slice sizes are re-estimated after every repetition
from the rates seen so far). A side's rate in a repetition is its events over the
sum of its timed slices; the ratio of two sides is taken per repetition, and a row reports
the median of those ratios over the repetitions with their min and max.

The garbage collector stays on (each side pays for the objects it allocates), but the heap
built during setup (prebuilt events, texts, open stores) is moved out of its reach with
`gc.freeze()` before the timed slices: otherwise a full collection, triggered by whichever
side happens to be allocating, scans hundreds of thousands of fixture objects and stalls that
side for 50-100 ms, which showed up as ratios swinging between 0.6x and 1.6x.
"""

from __future__ import annotations

import contextlib
import gc
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = [
    "Plan",
    "Row",
    "Runner",
    "Sample",
    "Side",
    "Target",
    "remove_tree",
    "rows_for",
    "run_sides",
    "timer",
]


class Runner(Protocol):
    """An open side: `run(n)` times its next `n` events and returns the seconds taken."""

    def run(self, n: int) -> float: ...

    def close(self) -> dict[str, float]:
        """Release everything; return facts worth reporting (bytes per event, ...)."""
        ...


@dataclass
class Side:
    """One contender. `start(directory, total)` sets up (untimed) for `total` events."""

    name: str
    label: str
    start: Callable[[Path, int], Runner]
    unit: int = 1  # slices are multiples of this (a batch, one event per agent, a pass)
    warmup: int = 0  # events of the warm-up run (default: 2 units, at least 100 events)


@dataclass
class Sample:
    """One repetition of one side."""

    events: int
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.inf


@dataclass
class Plan:
    reps: int = 5
    slices: int = 8  # turns of each side per repetition
    slice_seconds: float = 0.12
    tmp_root: Path | None = None


@dataclass
class Target:
    """A row to report: subject side / baseline side, and the ratio it must reach."""

    subject: str
    baseline: str
    minimum: float | None  # None: reported for information, no target
    what: str  # the wording of the target


@dataclass
class Row:
    case: str
    what: str
    subject: str
    baseline: str
    minimum: float | None
    ratio: float
    ratio_min: float
    ratio_max: float
    subject_value: float
    baseline_value: float
    unit: str
    reps: int
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.minimum is None:
            return "info"
        return "pass" if self.ratio >= self.minimum else "MISS"

    @property
    def shortfall(self) -> float:
        """How far below the target, as a fraction of it (0 when met)."""
        if self.minimum is None or self.ratio >= self.minimum:
            return 0.0
        return 1 - self.ratio / self.minimum


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rounded(events: float, unit: int) -> int:
    return max(unit, round(events / unit) * unit)


def run_sides(case: str, sides: list[Side], plan: Plan) -> dict[str, list[Sample]]:
    """Warm up, size the slices, then `plan.reps` interleaved repetitions; samples by side."""
    base = Path(tempfile.mkdtemp(prefix=f"lmg-bench-{case}-", dir=plan.tmp_root))
    try:
        slice_n: dict[str, int] = {}
        for side in sides:  # warm-up: imports, caches, first files; also sizes the slices
            n = side.warmup or _rounded(max(100, 2 * side.unit), side.unit)
            runner = side.start(_fresh(base, f"warm-{side.name}"), n)
            try:
                seconds = runner.run(n)
            finally:
                runner.close()
            slice_n[side.name] = _rounded(n / seconds * plan.slice_seconds, side.unit)
        results: dict[str, list[Sample]] = {s.name: [] for s in sides}
        for rep in range(plan.reps):
            for side, sample in zip(
                sides, _repetition(base, rep, sides, slice_n, plan), strict=True
            ):
                results[side.name].append(sample)
                log(
                    f"  {case:<11} rep {rep + 1}/{plan.reps}  {side.name:<20}"
                    f"{sample.rate:>12,.0f} events/s  ({sample.events} events, "
                    f"{sample.seconds:.2f} s)"
                )
                # Re-size the slices from the rates seen so far: the warm-up's guess can be
                # off by several times when the disk is having a slow (or fast) moment.
                rate = statistics.median(x.rate for x in results[side.name])
                slice_n[side.name] = _rounded(rate * plan.slice_seconds, side.unit)
        return results
    finally:
        remove_tree(base)


def _repetition(
    base: Path, rep: int, sides: list[Side], slice_n: dict[str, int], plan: Plan
) -> list[Sample]:
    runners: list[Runner] = []
    try:
        for side in sides:
            total = slice_n[side.name] * plan.slices
            runners.append(side.start(_fresh(base, f"r{rep}-{side.name}"), total))
        seconds = [0.0] * len(sides)
        gc.collect()
        gc.freeze()  # see the module docstring
        for k in range(plan.slices):
            shift = (rep + k) % len(sides)
            for i in [*range(shift, len(sides)), *range(shift)]:
                seconds[i] += runners[i].run(slice_n[sides[i].name])
    finally:
        gc.unfreeze()
        extras = [r.close() for r in runners]
    return [
        Sample(slice_n[s.name] * plan.slices, secs, extra)
        for s, secs, extra in zip(sides, seconds, extras, strict=True)
    ]


def remove_tree(base: Path) -> None:
    """Delete a case's directory; retry once after a collection (an object still holding a
    connection may recreate a file while the tree is being removed), then say so."""
    shutil.rmtree(base, ignore_errors=True)
    if base.exists():
        gc.collect()
        shutil.rmtree(base, ignore_errors=True)
    if base.exists():
        log(f"warning: could not remove {base}")


def _fresh(base: Path, name: str) -> Path:
    path = base / name
    path.mkdir()
    return path


def rows_for(
    case: str,
    sides: list[Side],
    samples: dict[str, list[Sample]],
    targets: list[Target],
    unit: str = "events/s",
) -> list[Row]:
    """Per-repetition ratios of each target, summarised as median, min and max."""
    labels = {s.name: s.label for s in sides}
    rows = []
    for t in targets:
        subj, base = samples[t.subject], samples[t.baseline]
        ratios = [a.rate / b.rate for a, b in zip(subj, base, strict=True)]
        rows.append(
            Row(
                case=case,
                what=t.what,
                subject=labels[t.subject],
                baseline=labels[t.baseline],
                minimum=t.minimum,
                ratio=statistics.median(ratios),
                ratio_min=min(ratios),
                ratio_max=max(ratios),
                subject_value=statistics.median(s.rate for s in subj),
                baseline_value=statistics.median(s.rate for s in base),
                unit=unit,
                reps=len(ratios),
            )
        )
    return rows
