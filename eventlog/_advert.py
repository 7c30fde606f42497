"""A store's ``service.json``: how other local processes find the service that owns it.

`lmg serve` writes it (mode 0600, never through a link: it names the service's URL and pid,
no secret) and deletes it on exit. A file whose pid is no longer running is stale (the
service was killed) and is ignored, so `lmg sql` falls back to opening the database itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._files import create_file, read_bytes

__all__ = ["SERVICE_FILE", "advertise", "find", "withdraw"]

SERVICE_FILE = "service.json"


def advertise(store: Path, url: str, name: str, auth: bool) -> None:
    """Say that this process serves `store` as `name` at `url` (replacing a stale file)."""
    temp = store / f".{SERVICE_FILE}.{os.getpid()}.tmp"
    temp.unlink(missing_ok=True)
    fd = create_file(temp, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "store": name, "pid": os.getpid(), "auth": auth}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, store / SERVICE_FILE)


def withdraw(store: Path) -> None:
    """Remove the file, if it is this process's."""
    found = find(store)
    if found is not None and found.get("pid") == os.getpid():
        (store / SERVICE_FILE).unlink(missing_ok=True)


def find(store: Path) -> dict[str, Any] | None:
    """The live service of `store`, or None (no file, a damaged one, or a dead pid)."""
    try:
        data = json.loads(read_bytes(store / SERVICE_FILE))
        pid = int(data["pid"])  # a dict with these fields, or a damaged file
        str(data["url"]), str(data["store"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return dict(data)
