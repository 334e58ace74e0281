"""The service journal: what people asked the service to do (approvals, kill requests, webhooks).

It uses the strategy log's format (JSON lines, sorted keys, each line carrying the SHA-256 of the
previous one), so `strategy_kernel.log.read` verifies it and the read model can be rebuilt from
the journal plus the run directories at any time. Secrets are never written here.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import msgspec

from strategy_kernel.log import GENESIS, LogCorruptError, read

_encoder = msgspec.json.Encoder(order="sorted")


class Journal:
    """Append-only, hash-chained; reopening continues the chain after verifying what is there."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.head = GENESIS
        self.count = 0
        self._lock = threading.Lock()
        if self.path.exists():
            last = b""
            for _ in read(self.path):
                self.count += 1
            if self.count:
                last = self.path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
                self.head = hashlib.sha256(last).hexdigest()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()

    def append(self, kind: str, ts_ns: int, **fields: Any) -> dict[str, Any]:
        """Write one record (fsynced: a request we acknowledged must survive a crash)."""
        with self._lock:
            record = {"n": self.count, "ts_ns": ts_ns, "kind": kind, "prev": self.head, **fields}
            line = _encoder.encode(record)
            with self.path.open("ab") as fh:
                fh.write(line + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            self.head = hashlib.sha256(line).hexdigest()
            self.count += 1
            return record

    def records(self) -> list[dict[str, Any]]:
        return list(read(self.path))


__all__ = ["Journal", "LogCorruptError"]
