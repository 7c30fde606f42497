"""Instructions a span of each ingest stage, and of the SDK's own side, counted by callgrind.

    python -m tests.benchmarks.probe_ingest_cost                     # every stage, 1,400 spans
    python -m tests.benchmarks.probe_ingest_cost --stages mapping,sdk --spans 700

CPU time on a shared machine moves with the load by a third and more; the instructions a
piece of code runs do not. Each stage runs in its own process under Valgrind's callgrind
(about fifty times slower), counting only inside `operator.call`, through which the probe
calls the stage's function: `exporter` is the benchmark's timed part (`Exporter.export` of
the spans in batches of 512, then `force_flush`), each other ingest stage is the function
`profile_ingest --cpu` times, and `sdk` is the benchmark's SDK side (`SdkInMemory.run`). The
spans are made by the SDK beforehand and 700 more are exported first, untimed, so the store
and caches are warm. Instructions are not time: a path that moves more memory per
instruction (copies, hashing, compression) takes longer for the same count.
"""

from __future__ import annotations

import argparse
import gc
import operator
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_STAGES = {  # stage: (module, owner in it or "", function): called through operator.call
    "decode": ("eventlog.otel._exporter", "", "from_readable"),
    "mapping": ("eventlog._ingest", "Ingester", "_map"),
    "handoffs": ("eventlog._handoffs", "Handoffs", "after"),
    "plan": ("eventlog._ingest", "Ingester", "_plan"),
    "requests": ("eventlog._ingest", "", "_request"),
    "commit": ("eventlog._store", "Store", "commit"),
}
_ORDER = ["exporter", *_STAGES, "sdk"]


def measure(stage: str, spans: int) -> None:
    """Run `stage` over `spans` spans, counting only inside `operator.call` (the child)."""
    import importlib  # noqa: PLC0415

    import eventlog  # noqa: PLC0415
    from eventlog import otel  # noqa: PLC0415

    from ._otel import BATCH, SdkInMemory  # noqa: PLC0415
    from .profile_ingest import sdk_spans  # noqa: PLC0415

    gc.disable()  # the collector's share is `profile_ingest --cpu`'s to show
    if stage == "sdk":
        side = SdkInMemory(Path("."), spans)
        side.run(700)
        operator.call(side.run, spans)
        return
    made = sdk_spans(spans + 700)
    with tempfile.TemporaryDirectory() as tmp:
        log = eventlog.open(Path(tmp) / "s")
        exporter = otel.Exporter(log)

        def export(batch: list[Any]) -> None:
            for i in range(0, len(batch), BATCH):
                exporter.export(batch[i : i + BATCH])
            exporter.force_flush()

        export(made[:700])
        if stage == "exporter":
            operator.call(export, made[700:])
        else:
            module, name, function = _STAGES[stage]
            owner: Any = importlib.import_module(module)
            owner = getattr(owner, name) if name else owner
            original = getattr(owner, function)
            setattr(owner, function, lambda *a, **k: operator.call(original, *a, **k))
            try:
                export(made[700:])
            finally:
                setattr(owner, function, original)
        log.close()


def count(stage: str, spans: int) -> int:
    """Instructions `stage` ran, from a child process under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=_operator_call",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "tests.benchmarks.probe_ingest_cost",
                "--child",
                stage,
                "--spans",
                str(spans),
            ],
            check=True,
            capture_output=True,
        )
        found = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
        assert found is not None, f"no totals in callgrind's output for {stage}"
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=",".join(_ORDER), help=f"of {_ORDER}")
    parser.add_argument("--spans", type=int, default=1_400)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args.spans)
        return
    if shutil.which("valgrind") is None:
        sys.exit("this probe needs Valgrind (apt-get install valgrind)")
    for stage in args.stages.split(","):
        per_span = count(stage, args.spans) / args.spans
        print(f"  {stage:10} {per_span / 1000:8.1f} thousand instructions a span", flush=True)


if __name__ == "__main__":
    main()
