"""Fixtures of the service's tests (``test_service*.py``): `lmg serve` on the test's store.

`store` is the root fixture's path (a store not yet made) unless the module makes it: the
modules that serve a store holding one session ask for `one_session` with
``pytest.mark.usefixtures``, which makes it before `served` starts the service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import eventlog

from .test_service import Service


@pytest.fixture
def one_session(store: Path) -> Path:
    """The test's `store`, made with one session (of user ``ada``): LSN 1."""
    with eventlog.open(store) as log:
        log.create_session(metadata={"user": "ada"})
    return store


@pytest.fixture
def served(tmp_path: Path, store: Path) -> Iterator[Service]:
    """`lmg serve` on the test's `store`, taking bodies of at most 64 KiB; stopped after the
    test, which must find it exiting 0."""
    service = Service(tmp_path, [str(store), "--limit", "max_body_bytes=65536"])
    yield service
    assert service.stop() == 0
