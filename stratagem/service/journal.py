"""The service journal: what people asked the service to do (approvals, kill requests, webhooks).

It uses the strategy log's format (JSON lines, sorted keys, each line carrying the SHA-256 of the
previous one), so `strategy_kernel.log.read` verifies it and the read model can be rebuilt from
the journal plus the run directories at any time. Secrets are never written here.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import msgspec

from strategy_kernel.log import GENESIS, LogCorruptError, read

_encoder = msgspec.json.Encoder(order="sorted")


class Journal:
    """Append-only, hash-chained; reopening continues the chain after verifying what is there.

    Several processes may append (the API, the bot, the CLI): each append holds an exclusive
    `flock` on the file and first catches up with records another writer added (verified), so
    the chain never forks."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.head = GENESIS
        self.count = 0
        self._size = 0
        self._lock = threading.Lock()
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        self._catch_up()

    def _catch_up(self) -> None:
        """Re-read the chain if the file grew since our last look (another writer appended)."""
        size = self.path.stat().st_size
        if size == self._size:
            return
        count = sum(1 for _ in read(self.path))
        data = self.path.read_bytes()
        last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1] if count else b""
        self.head = hashlib.sha256(last).hexdigest() if count else GENESIS
        self.count, self._size = count, len(data)

    def append(self, kind: str, ts_ns: int, **fields: Any) -> dict[str, Any]:
        """Write one record (fsynced: a request we acknowledged must survive a crash)."""
        clash = sorted(set(fields) & {"n", "ts_ns", "kind", "prev"})
        if clash:
            raise ValueError(f"journal fields {clash} are set by the journal itself")
        with self._lock, self.path.open("ab") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                self._catch_up()
                record = {"n": self.count, "ts_ns": ts_ns, "kind": kind, "prev": self.head}
                record.update(fields)
                line = _encoder.encode(record)
                fh.write(line + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
                self.head = hashlib.sha256(line).hexdigest()
                self.count += 1
                self._size += len(line) + 1
                return record
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def records(self) -> list[dict[str, Any]]:
        return list(read(self.path))


__all__ = ["Journal", "LogCorruptError"]
