"""Fixtures shared by every test: small and obvious."""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import eventlog

# The gate (`make test`, which CI runs, sets LMG_TEST_GATE=1) draws the same examples and
# seeds every run, so a landing is reproducible; every other run (`make test-fast`, a bare
# pytest) draws new ones, which is how a case such as a negative NaN is found, then pinned
# by a plain test.
GATE = os.environ.get("LMG_TEST_GATE") == "1"
settings.register_profile("gate", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile("gate" if GATE else "explore")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A path for a new store (not yet created)."""
    return tmp_path / "store"


@pytest.fixture
def log(store: Path) -> Iterator[eventlog.EventLog]:
    """An open log on a fresh store, closed after the test."""
    with eventlog.open(store) as opened:
        yield opened


@pytest.fixture
def drawn_seed(request: pytest.FixtureRequest) -> int:
    """A random test's seed, printed so a failing run can be replayed (LMG_TEST_SEED=N).
    New on each run; the gate's is the test's own (its id's CRC-32)."""
    drawn = zlib.crc32(request.node.nodeid.encode()) if GATE else random.randrange(2**32)
    seed = int(os.environ.get("LMG_TEST_SEED", drawn))
    print(f"{request.node.nodeid}: random seed {seed} (LMG_TEST_SEED={seed} to replay)")
    return seed


@pytest.fixture
def rng(drawn_seed: int) -> random.Random:
    """A random.Random of `drawn_seed`."""
    return random.Random(drawn_seed)


VICTIM = b"the victim's own bytes\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of someone else's that a planted symbolic link points at."""
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM)
    return path


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, whatever the test runner's is."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)
