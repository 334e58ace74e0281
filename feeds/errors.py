"""Exceptions of the ``feeds`` package.

Every error says what was wrong, where (file, row, column) and how to fix it, so the front
door can print ``str(exc)`` to the user and exit with code 2 without adding context.
"""

from __future__ import annotations

import os

__all__ = [
    "BarDataError",
    "BusError",
    "ColumnError",
    "DuplicateTimestampError",
    "EmptyDataError",
    "ExchangeDataError",
    "ExchangeError",
    "ExchangeRetryError",
    "FeedError",
    "FeedFileError",
    "GapError",
    "InstrumentError",
    "LakeError",
    "NonMonotonicError",
    "OhlcError",
    "ResampleError",
    "SourceError",
    "TimestampError",
    "UnknownTimeframeError",
    "UnstructuredError",
    "WebhookAuthError",
    "WebhookError",
]


class FeedError(Exception):
    """Base of every error raised by ``feeds``; carries the place of the problem as fields.

    ``path`` is the file (if any), ``row`` the 0-based data row (header excluded), ``column``
    the offending column and ``hint`` the suggested fix. ``str(exc)`` renders all of them.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        row: int | None = None,
        column: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.row = row
        self.column = column
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        where: list[str] = []
        if self.path is not None:
            where.append(self.path)
        if self.row is not None:
            row = f"row {self.row}"
            if self.path is not None and self.path.lower().endswith(".csv"):
                # 0-based data row -> 1-based file line, after the header line.
                row += f" (line {self.row + 2})"
            where.append(row)
        if self.column is not None:
            where.append(f"column {self.column!r}")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        if self.hint:
            text += f"; fix: {self.hint}"
        return text


class UnknownTimeframeError(FeedError, ValueError):
    """A timeframe string such as ``"7x"`` that :func:`feeds.schema.timeframe_to_ns` rejects."""


class InstrumentError(FeedError, ValueError):
    """Instrument metadata that is not usable (e.g. an increment that is not a positive decimal).

    A ``ValueError`` too, so msgspec turns it into a ``ValidationError`` with a path on decode.
    """


class FeedFileError(FeedError):
    """A data file that is missing, unreadable, corrupt or of an unsupported format."""


class ColumnError(FeedError):
    """Missing, ambiguous or mistyped columns in a data file or frame."""


class BarDataError(FeedError):
    """Bar values that break the canonical bar rules (base of the row-level errors)."""


class EmptyDataError(BarDataError):
    """A file or requested time range with no rows."""


class TimestampError(BarDataError):
    """Timestamps that cannot be parsed or are out of range."""


class NonMonotonicError(TimestampError):
    """A timestamp smaller than the one before it (data is never sorted silently)."""


class DuplicateTimestampError(TimestampError):
    """Two rows with the same timestamp while the duplicate policy is ``"error"``."""


class OhlcError(BarDataError):
    """Non-finite, non-positive or inconsistent open/high/low/close/volume values."""


class ResampleError(FeedError):
    """A resampling request that cannot be honoured (e.g. target not a multiple of source)."""


class LakeError(FeedError):
    """Problems in the parquet data lake: bad keys, corrupt partitions, schema mismatches."""


class SourceError(FeedError):
    """Unknown source names or bad source parameters in the feed registry."""


class ExchangeError(SourceError):
    """An exchange refused a request for a reason retrying cannot fix (bad symbol, bad timeframe,
    authentication, unsupported call). The message names the exchange, the call and the symbol."""


class ExchangeRetryError(ExchangeError):
    """A transient exchange failure (HTTP 429/418/5xx, timeout, reset, malformed JSON) that
    persisted through every retry attempt; re-running resumes from the last stored bar."""


class ExchangeDataError(ExchangeError):
    """An exchange answer with the wrong shape or values (e.g. a kline row without a close)."""


class BusError(FeedError):
    """Market-data bus problems: bad endpoints, undecodable messages, bad topics."""


class UnstructuredError(FeedError):
    """An RSS/Atom document, JSONL post or webhook item that cannot become an UnstructuredItem."""


class WebhookError(UnstructuredError):
    """A webhook request refused by the sink (wrong secret, oversize or malformed body)."""


class WebhookAuthError(WebhookError):
    """A webhook request with a wrong or missing shared secret (HTTP 401)."""


class GapError(FeedError):
    """A gap-filling or session request that cannot be honoured (unknown policy, bad hours, bad zone)."""
