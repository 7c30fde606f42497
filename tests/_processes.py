"""Child processes for tests that break things with real processes: output to files, waits
that fail the test (not hang it), clean stops."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = ["LMG", "WAIT_S", "Child", "run_with_full_disk"]

LMG = Path(sys.executable).with_name("lmg")
"""The installed entry point (`replay.cli` has no ``__main__``, so ``python -m`` won't do)."""

ROOT = Path(__file__).resolve().parents[1]

WAIT_S = 60.0  # the longest any child may take to answer; a hang fails, it does not block


class Child:
    """A child process whose stdout and stderr go to files (no pipe to fill and block)."""

    def __init__(
        self, args: list[str], tmp: Path, name: str, *, file_size_limit: int | None = None
    ) -> None:
        """`file_size_limit`: once started, the child's writes past it fail with EFBIG, as
        on a full disk (a Python child ignores SIGXFSZ; see `run_with_full_disk`)."""
        self.args = args
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        with self.out.open("wb") as stdout, self.err.open("wb") as stderr:
            # From the repository's root, so ``python -m tests....`` children find `tests`.
            self.proc = subprocess.Popen(args, stdout=stdout, stderr=stderr, cwd=ROOT)
        if file_size_limit is not None:
            limit = (file_size_limit, file_size_limit)
            resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, limit)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def lines(self) -> list[dict[str, Any]]:
        """Complete JSON lines; a last line cut short by a kill was never said."""
        return [json.loads(line) for line in self.stdout().split("\n")[:-1]]

    def said_something(self) -> bool:
        return bool(self.lines())

    def wait_for(self, found: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while not found():
            if self.proc.poll() is not None and not found():
                pytest.fail(
                    f"{self.args[1:3]} exited ({self.proc.returncode}) before {what}:\n"
                    f"{self.stdout()}\n{self.stderr()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{self.args[1:3]}: no {what} within {timeout} s:\n{self.stderr()}")
            time.sleep(0.005)

    def wait_stderr(self, text: str) -> None:
        self.wait_for(lambda: text in self.stderr(), repr(text))

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if self.args[0] == sys.executable:  # our child: it dumps its stacks on SIGUSR1
                self.proc.send_signal(signal.SIGUSR1)
                time.sleep(0.5)
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.args[1:3]} did not exit within {timeout} s:\n{self.stderr()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = WAIT_S) -> int:
        """SIGTERM, then wait; a child that does not stop is killed and fails the test."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)


def run_with_full_disk(args: list[str], limit: int) -> subprocess.CompletedProcess[str]:
    """Run `args` to its end as a process whose writes past `limit` bytes of any file fail
    with EFBIG, as on a full disk (RLIMIT_FSIZE, with SIGXFSZ ignored or the kernel kills
    it: see tests/eventlog/test_disk_full.py). It writes no bytecode: Python would leave a
    module's ``.pyc`` cut at `limit`, and every later import of it would fail."""

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        args,
        preexec_fn=full_disk,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
