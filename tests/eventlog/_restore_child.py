"""A child for the kill tests of `lmg restore --force`: runs it in this process and SIGKILLs
itself at the first moment the store it replaces has left STORE's name.

Run as ``python -m tests.eventlog._restore_child BACKUP STORE [fallback]``. The kill comes
right after a rename moves STORE aside (the two-rename swap), or, if none does, right
before the old store is deleted (after the one-step exchange). ``fallback`` makes the
exchange unavailable, as on a system without ``renameat2``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import eventlog._copy
from replay.cli import main as lmg


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    backup, store = argv[0], os.path.abspath(argv[1])
    rename, rmtree = os.rename, shutil.rmtree

    def renaming(src: Any, dst: Any, **kwargs: Any) -> None:
        rename(src, dst, **kwargs)
        if os.path.abspath(src) == store:
            _die()  # the old store moved aside, the new one not yet in

    def removing(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).is_dir() and ".restoring-" in Path(path).name:
            _die()  # the old store under the building's name: the exchange is done
        rmtree(path, *args, **kwargs)

    os.rename = renaming
    shutil.rmtree = removing  # type: ignore[assignment]
    if argv[2:] == ["fallback"]:
        eventlog._copy._exchange = lambda _a, _b: False  # type: ignore[assignment]
    lmg(["restore", backup, store, "--force"])


if __name__ == "__main__":
    main(sys.argv[1:])
