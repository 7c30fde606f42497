"""Node ids: UUIDv7, strictly increasing in a process, and never sharing random bits with a
forked child (whose copy of the unused random words is dropped at fork)."""

from __future__ import annotations

import itertools
import os
import uuid

from eventlog._ids import new_id

_RANDOM = (1 << 62) - 1


def test_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]  # many per millisecond: the counter orders them
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert all(a.int < b.int for a, b in itertools.pairwise(ids))
    assert len({i.int & _RANDOM for i in ids}) == len(ids)


def test_a_forked_child_draws_other_random_bits_than_its_parent() -> None:
    new_id()  # the parent holds unused random words when it forks
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        try:
            os.write(write, b"".join((i.int & _RANDOM).to_bytes(8) for i in _ids(100)))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(child, 0)
    theirs = {int.from_bytes(data[k : k + 8]) for k in range(0, len(data), 8)}
    ours = {i.int & _RANDOM for i in _ids(100)}
    assert len(theirs) == 100 and not theirs & ours


def _ids(n: int) -> list[uuid.UUID]:
    return [new_id() for _ in range(n)]
