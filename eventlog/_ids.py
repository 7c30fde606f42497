"""UUIDv7 node ids (RFC 9562): 48-bit ms time, a 12-bit counter, 62 random bits.

Ids sort by creation time, so the id index and DuckDB keys stay local. Within a process the
counter keeps ids strictly increasing even inside one millisecond; thread-safe.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["new_id", "uuid7_time_ms"]


class _Clock:
    """The last (ms, counter) handed out; ids never repeat or go back within a process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ms = 0
        self.counter = 0
        self._entropy = b""  # os.urandom read 4 KiB at a time: one syscall per 512 ids
        self._pid = os.getpid()

    def random62(self) -> int:
        with self.lock:
            if len(self._entropy) < 8 or self._pid != os.getpid():  # never share after fork
                self._entropy, self._pid = os.urandom(4096), os.getpid()
            chunk, self._entropy = self._entropy[:8], self._entropy[8:]
        return int.from_bytes(chunk) & 0x3FFF_FFFF_FFFF_FFFF

    def tick(self) -> tuple[int, int]:
        with self.lock:
            ms = time.time_ns() // 1_000_000
            if ms > self.ms:
                self.ms, self.counter = ms, int.from_bytes(os.urandom(2)) & 0x3FF  # room to count
            else:
                self.counter += 1
                if self.counter > 0xFFF:  # 4,096 ids in one ms: borrow the next ms
                    self.ms, self.counter = self.ms + 1, 0
            return self.ms, self.counter


_CLOCK = _Clock()


def new_id() -> uuid.UUID:
    ms, counter = _CLOCK.tick()
    rand = _CLOCK.random62()
    value = ms << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return uuid.UUID(int=value)


def uuid7_time_ms(value: uuid.UUID) -> int:
    return value.int >> 80
