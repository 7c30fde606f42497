"""The auth file of `lmg serve --auth`: bearer tokens stored as SHA-256 hashes.

    {"tokens": [{"name": "agent-a", "sha256": "<hex>", "scopes": ["append"],
                 "stores": ["default"]}]}

`add_token` (``lmg token add``) makes a random token, stores its hash and returns the token:
it is shown once and never stored. The file is private (0600), replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from ._files import create_file
from .errors import InvalidEvent

__all__ = ["add_token"]


def add_token(path: str | os.PathLike[str], name: str, scopes: list[str], stores: list[str]) -> str:
    """Add a token named `name` to the auth file at `path` (created if missing)."""
    file = Path(path)
    data: dict[str, list[dict[str, object]]] = {"tokens": []}
    if file.exists():
        try:
            data = json.loads(file.read_bytes())
            tokens = data["tokens"]
            assert isinstance(tokens, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise InvalidEvent(f"{file} is not an auth file") from None
    if any(t.get("name") == name for t in data["tokens"]):
        raise InvalidEvent(f"{file} already has a token named {name!r}")
    token = "lmg_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    data["tokens"].append({"name": name, "sha256": digest, "scopes": scopes, "stores": stores})
    temp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    with os.fdopen(create_file(temp, 0o600), "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, file)
    return token
