"""A child for the kill tests of `lmg erase`: runs it in this process and SIGKILLs itself
right after it has rewritten a given number of sealed segments, mid-erasure.

Run as ``python -m tests.projections._erase_child COUNT LMG-ARGS...``.
"""

from __future__ import annotations

import os
import signal
import sys

from eventlog._store import Store
from replay.cli import main as lmg


def main(argv: list[str]) -> None:
    count, args = int(argv[0]), argv[1:]
    replace = Store.replace_sealed
    done: list[int] = []

    def replacing(self: Store, first_lsn: int, data: bytes) -> None:
        replace(self, first_lsn, data)
        done.append(first_lsn)
        if len(done) == count:
            os.kill(os.getpid(), signal.SIGKILL)  # the segment is new, the next ones old

    Store.replace_sealed = replacing  # type: ignore[method-assign]
    lmg(args)


if __name__ == "__main__":
    main(sys.argv[1:])
