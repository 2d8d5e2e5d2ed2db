"""Local folder or hub id: fail fast, in one line, when the hub cannot be reached (no minutes of retries)."""

from __future__ import annotations

import os
import re
import socket

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_hub_id(spec: str) -> bool:
    """``owner/name`` (or ``name``); paths (``/x``, ``./x``, ``a/b/c``) are not hub ids."""
    return bool(HUB_ID.match(str(spec)))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers at all (offline, hub loaders retry for minutes before failing)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False
