"""The order log: an append-only, hash-chained file of msgpack records.

File format (version 1): a sequence of frames `u32 big-endian length || record || digest`, where
record is the msgpack array `[index, direction, seq, prev_sha256, message]`: `index` counts
records from 0, `direction` is IN (a command as received, possibly undecodable bytes) or OUT (an
event we sent), `seq` is the message's seq (-1 for undecodable input), `prev_sha256` is the
previous frame's digest (the first record chains to SHA-256 of `GENESIS`), `message` is the
message's msgpack bytes, and `digest` = SHA-256(prev_sha256 || length || record) (32 bytes).
Any edit, reordering, insertion or truncation breaks a digest, the chain or the framing, and
`verify` names the first bad record and its byte offset. (A hash chain detects corruption and
edits by anyone who does not recompute every later digest; anchor the last digest elsewhere,
e.g. in the run's artifact commit, to detect a full rewrite.)
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

import msgspec

from order_kernel import messages as m
from order_kernel.errors import ConfigError, LogIntegrityError

IN: Final = 0
OUT: Final = 1
GENESIS: Final = b"stratagem-order-log/v1"
GENESIS_HASH: Final = hashlib.sha256(GENESIS).digest()
_LEN = struct.Struct(">I")
MAX_RECORD: Final = 64 * 1024 * 1024

FsyncPolicy = Literal["always", "batch", "never"]


class LogRecord(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    index: int
    direction: int
    seq: int
    prev: bytes
    message: bytes


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(LogRecord)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One verified record: `message` is None for inbound bytes that never decoded."""

    index: int
    offset: int
    direction: int
    seq: int
    raw: bytes
    message: m.AnyMessage | None


@dataclass(frozen=True, slots=True)
class LogSummary:
    records: int
    size: int
    last_hash: bytes


def _frames(path: Path, fh: BinaryIO) -> Iterator[tuple[int, int, bytes, LogRecord]]:
    """Yield (offset, frame_len, frame_hash, record) and raise at the first bad byte."""
    prev = GENESIS_HASH
    offset = 0
    index = 0
    while True:
        head = fh.read(4)
        if not head:
            return
        if len(head) < 4:
            raise LogIntegrityError(
                str(path), index, offset, "torn_tail", f"{len(head)} of 4 length bytes"
            )
        (n,) = _LEN.unpack(head)
        if n > MAX_RECORD:
            raise LogIntegrityError(
                str(path), index, offset, "bad_record", f"record length {n} exceeds {MAX_RECORD}"
            )
        body = fh.read(n)
        stored = fh.read(32)
        if len(body) < n or len(stored) < 32:
            raise LogIntegrityError(
                str(path),
                index,
                offset,
                "torn_tail",
                f"{len(body)} of {n} record bytes, {len(stored)} of 32 digest bytes",
            )
        frame_hash = hashlib.sha256(prev + head + body).digest()
        if frame_hash != stored:
            raise LogIntegrityError(
                str(path),
                index,
                offset,
                "hash_mismatch",
                "the record's digest does not match its bytes",
            )
        try:
            rec = _dec.decode(body)
        except (msgspec.MsgspecError, ValueError) as exc:
            raise LogIntegrityError(
                str(path), index, offset, "bad_record", f"undecodable record: {exc}"
            ) from exc
        if rec.prev != prev:
            raise LogIntegrityError(
                str(path),
                index,
                offset,
                "hash_mismatch",
                "prev_sha256 does not match the previous record",
            )
        if rec.index != index:
            raise LogIntegrityError(
                str(path), index, offset, "index_mismatch", f"record says index {rec.index}"
            )
        yield offset, 4 + n + 32, frame_hash, rec
        prev = frame_hash
        offset += 4 + n + 32
        index += 1


def verify(path: str | Path) -> LogSummary:
    """Check framing and the hash chain of the whole file; raise LogIntegrityError at the first fault."""
    p = Path(path)
    count = 0
    size = 0
    last = GENESIS_HASH
    with p.open("rb") as fh:
        for offset, n, h, _rec in _frames(p, fh):
            count += 1
            size = offset + n
            last = h
    return LogSummary(count, size, last)


def read(path: str | Path) -> Iterator[LogEntry]:
    """Iterate the verified records of a log (raises LogIntegrityError where the chain breaks)."""
    p = Path(path)
    with p.open("rb") as fh:
        for offset, _n, _h, rec in _frames(p, fh):
            try:
                msg: m.AnyMessage | None = m.decode_any(rec.message)
            except (
                msgspec.MsgspecError,
                ValueError,
            ):  # garbled inbound bytes are logged as received
                msg = None
            yield LogEntry(rec.index, offset, rec.direction, rec.seq, rec.message, msg)


def truncate_torn_tail(path: str | Path) -> int:
    """Explicitly cut a torn tail (an interrupted last write); returns the bytes removed.

    A hash mismatch or bad record is never repaired: that log stays quarantined.
    """
    p = Path(path)
    try:
        verify(p)
        return 0
    except LogIntegrityError as exc:
        if exc.problem != "torn_tail":
            raise
        size = p.stat().st_size
        with p.open("r+b") as fh:
            fh.truncate(exc.byte_offset)
        return size - exc.byte_offset


class OrderLog:
    """Appends hash-chained records. Reopening an existing file verifies it and continues the chain.

    fsync: "always" syncs every record (crash loses nothing acknowledged), "batch" every
    `batch_records` records and on flush/close, "never" leaves it to the OS.
    """

    def __init__(
        self, path: str | Path, fsync: FsyncPolicy = "batch", batch_records: int = 256
    ) -> None:
        if fsync not in ("always", "batch", "never"):
            raise ConfigError(f"OrderLog(fsync={fsync!r}): use 'always', 'batch' or 'never'")
        if batch_records <= 0:
            raise ConfigError(f"OrderLog(batch_records={batch_records}): must be > 0")
        self.path = Path(path)
        self.fsync: FsyncPolicy = fsync
        self.batch_records = batch_records
        if self.path.exists() and self.path.stat().st_size > 0:
            summary = verify(self.path)
            self._index = summary.records
            self._prev = summary.last_hash
        else:
            self._index = 0
            self._prev = GENESIS_HASH
        self._fh: BinaryIO | None = self.path.open("ab")
        self._unsynced = 0

    @property
    def records(self) -> int:
        return self._index

    @property
    def unsynced(self) -> int:
        """Records appended since the last sync (the server fsyncs off the reply path)."""
        return self._unsynced

    def append_inbound(self, raw: bytes, seq: int) -> None:
        self._append(IN, seq, raw)

    def append_outbound(self, raw: bytes, seq: int) -> None:
        self._append(OUT, seq, raw)

    def _append(self, direction: int, seq: int, raw: bytes) -> None:
        if self._fh is None:
            raise ConfigError(f"{self.path}: the order log is closed")
        body = _enc.encode(LogRecord(self._index, direction, seq, self._prev, raw))
        head = _LEN.pack(len(body))
        digest = hashlib.sha256(self._prev + head + body).digest()
        self._fh.write(head + body + digest)
        self._prev = digest
        self._index += 1
        self._unsynced += 1
        if self.fsync == "always" or (
            self.fsync == "batch" and self._unsynced >= self.batch_records
        ):
            self.sync()

    def flush(self) -> None:
        """Hand buffered bytes to the OS (readers in this process then see them)."""
        if self._fh is not None:
            self._fh.flush()

    def sync(self) -> None:
        """Flush and fsync (unless the policy is "never")."""
        if self._fh is None:
            return
        self._fh.flush()
        if self.fsync != "never":
            os.fsync(self._fh.fileno())
        self._unsynced = 0

    def handoff_sync(self) -> int | None:
        """Flush to the OS and count every record so far as synced by the caller, who fsyncs
        the returned file descriptor (e.g. on a background thread: `os.fsync` releases the
        GIL). None when the log is closed."""
        if self._fh is None:
            return None
        self._fh.flush()
        self._unsynced = 0
        return self._fh.fileno()

    def close(self) -> None:
        if self._fh is not None:
            self.sync()
            self._fh.close()
            self._fh = None

    def __enter__(self) -> OrderLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m order_kernel.log verify PATH...`: 0 if every log verifies, 2 otherwise."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "verify":
        print("usage: python -m order_kernel.log verify PATH [PATH ...]", file=sys.stderr)
        return 2
    status = 0
    for path in args[1:]:
        try:
            summary = verify(path)
        except LogIntegrityError as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            status = 2
        except OSError as exc:
            print(f"FAIL {path}: {exc.strerror}", file=sys.stderr)
            status = 2
        else:
            print(
                f"ok   {path}: {summary.records} records, {summary.size} bytes, last sha256 {summary.last_hash.hex()}"
            )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
