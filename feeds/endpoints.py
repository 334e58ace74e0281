"""ZeroMQ ipc endpoints that fit the operating system's socket-path limit.

A Unix socket path holds at most ~107 bytes (`sockaddr_un.sun_path`); run directories under
pytest, CI or a user's home easily exceed it, and the order kernel also binds `<path>.events`.
A path that is too long is replaced by a short one in the temp directory, named by a digest of
the full path, so the same run directory always gets the same endpoint.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

MAX_IPC_PATH = 90  # leaves room for suffixes such as ".events" under the 107-byte limit


def ipc_endpoint(path: Path) -> str:
    """`ipc://<path>`, or `ipc://<tmp>/stratagem-<digest>.sock` when `path` is too long."""
    full = str(path.resolve())
    if len(full.encode()) <= MAX_IPC_PATH:
        return f"ipc://{full}"
    digest = hashlib.sha256(full.encode()).hexdigest()[:20]
    short = Path(tempfile.gettempdir()).resolve() / f"stratagem-{digest}.sock"
    return f"ipc://{short}"
