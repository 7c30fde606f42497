"""The ids the mapping derives are stored for good: a rewrite of their hashing must give the
same ids. The reference below is the first implementation's formula (9f21ca4), written out
again."""

from __future__ import annotations

import hashlib
import uuid

from hypothesis import given
from hypothesis import strategies as st

from eventlog import _genai


def _reference_timed_id(start_ns: int, name: str) -> uuid.UUID:
    rand = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=16).digest())
    rand &= (1 << 74) - 1
    ms = (max(start_ns, 0) // 1_000_000) & ((1 << 48) - 1)
    low62 = (1 << 62) - 1
    return uuid.UUID(int=ms << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | rand & low62)


_NAMES = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@given(st.integers(-(2**70), 2**70) | st.integers(0, 2**63), _NAMES)
def test_timed_ids_are_the_first_implementations(start_ns: int, name: str) -> None:
    assert _genai._timed_id(start_ns, name) == _reference_timed_id(start_ns, name)


@given(_NAMES)
def test_named_ids_are_uuid8_of_the_names_digest(name: str) -> None:
    digest = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=16).digest())
    expected = digest & ~(0xF << 76) | 0x8 << 76
    assert _genai._named_id(name) == uuid.UUID(int=expected & ~(0b11 << 62) | 0b10 << 62)
