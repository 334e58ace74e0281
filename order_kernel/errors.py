"""The order kernel's exception hierarchy (package-local base the front door maps to exit codes)."""

from __future__ import annotations


class OrderKernelError(Exception):
    """Base of every error the order kernel raises on purpose."""


class ConfigError(OrderKernelError):
    """A configuration file or constructor argument is invalid (names the file/field and the fix)."""


class StoreFullError(OrderKernelError):
    """The fixed-capacity order store has no free slot left."""


class LogIntegrityError(OrderKernelError):
    """An order log failed verification: torn tail, hash mismatch or undecodable record.

    `record_index` and `byte_offset` point at the first bad record so a user can inspect or
    quarantine the file; `problem` is one of "torn_tail", "hash_mismatch", "bad_record",
    "index_mismatch".
    """

    def __init__(self, path: str, record_index: int, byte_offset: int, problem: str, detail: str):
        self.path = path
        self.record_index = record_index
        self.byte_offset = byte_offset
        self.problem = problem
        super().__init__(
            f"{path}: {problem} at record {record_index} (byte offset {byte_offset}): {detail}. "
            "The log is quarantined: do not replay it; inspect the file, or restore from a copy "
            "(a torn tail may be cut off explicitly with OrderLog.truncate_torn_tail)."
        )


class RecoveryError(OrderKernelError):
    """Replaying a log did not reproduce the logged outbound events (non-determinism or tamper)."""
