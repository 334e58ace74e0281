"""Canonical market-data schemas: the one place every package takes column names and dtypes from.

All timestamps are ``ts_ns``: int64 nanoseconds since the Unix epoch, UTC. Prices and sizes are
float64 here (analytics); the order kernel converts them to integer ticks/lots with an
:class:`Instrument`'s increments at its edge. Schemas are read-only mappings (column -> polars
dtype) in column order; pass them straight to ``pl.DataFrame(..., schema=BAR_SCHEMA)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Final, Literal

import msgspec
import polars as pl

from feeds.errors import InstrumentError, UnknownTimeframeError

__all__ = [
    "ASK",
    "BAR_COLUMNS",
    "BAR_SCHEMA",
    "BID",
    "BOOK_DELTA_SCHEMA",
    "FUNDING_SCHEMA",
    "NS_PER_DAY",
    "NS_PER_HOUR",
    "NS_PER_MINUTE",
    "NS_PER_SECOND",
    "OPEN_INTEREST_SCHEMA",
    "QUOTE_SCHEMA",
    "TIMEFRAMES",
    "TRADE_SCHEMA",
    "Bar",
    "Instrument",
    "InstrumentKind",
    "Schema",
    "UnstructuredItem",
    "empty_frame",
    "timeframe_to_ns",
]

Schema = Mapping[str, pl.DataType]
"""A canonical schema: column name -> polars dtype, in column order."""

NS_PER_SECOND: Final = 1_000_000_000
NS_PER_MINUTE: Final = 60 * NS_PER_SECOND
NS_PER_HOUR: Final = 60 * NS_PER_MINUTE
NS_PER_DAY: Final = 24 * NS_PER_HOUR

BID: Final = 1
"""``side`` value of a bid level in :data:`BOOK_DELTA_SCHEMA`; also a buyer-initiated trade."""
ASK: Final = -1
"""``side`` value of an ask level in :data:`BOOK_DELTA_SCHEMA`; also a seller-initiated trade."""

BAR_SCHEMA: Final[Schema] = MappingProxyType(
    {
        "ts_ns": pl.Int64(),  # bar OPEN time (left edge of the interval), ns UTC
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Float64(),  # base-currency units traded in the bar
    }
)
"""OHLCV bars. A bar labelled ``ts_ns`` covers ``[ts_ns, ts_ns + timeframe)``."""

BAR_COLUMNS: Final[tuple[str, ...]] = tuple(BAR_SCHEMA)

TRADE_SCHEMA: Final[Schema] = MappingProxyType(
    {
        "ts_ns": pl.Int64(),  # venue match time, ns UTC
        "price": pl.Float64(),
        "size": pl.Float64(),  # base-currency units, > 0
        "side": pl.Int8(),  # aggressor: BID (+1) buyer, ASK (-1) seller, 0 unknown
        "trade_id": pl.String(),  # venue trade id, unique per venue+symbol
    }
)
"""Trades (ticks)."""

QUOTE_SCHEMA: Final[Schema] = MappingProxyType(
    {
        "ts_ns": pl.Int64(),
        "bid_price": pl.Float64(),
        "bid_size": pl.Float64(),
        "ask_price": pl.Float64(),
        "ask_size": pl.Float64(),
    }
)
"""Level-1 top of book."""

BOOK_DELTA_SCHEMA: Final[Schema] = MappingProxyType(
    {
        "ts_ns": pl.Int64(),
        "seq": pl.Int64(),  # venue update id; gaps mean lost deltas -> resync from a snapshot
        "side": pl.Int8(),  # BID (+1) or ASK (-1)
        "price": pl.Float64(),
        "size": pl.Float64(),  # new total size at this level; 0.0 removes the level
        "is_snapshot": pl.Boolean(),  # True rows with one seq form a full snapshot (book reset)
    }
)
"""Level-2 order-book deltas; a snapshot is the run of rows with ``is_snapshot`` and one ``seq``."""

FUNDING_SCHEMA: Final[Schema] = MappingProxyType(
    {
        "ts_ns": pl.Int64(),  # funding settlement time
        "funding_rate": pl.Float64(),  # fraction per interval, e.g. 0.0001 = 1 bp; longs pay if > 0
        "interval_ns": pl.Int64(),  # length of the funding interval (8h on most venues)
        "mark_price": pl.Float64(),  # mark price at settlement; null if the venue omits it
    }
)
"""Perpetual-swap funding rates."""

OPEN_INTEREST_SCHEMA: Final[Schema] = MappingProxyType(
    {
        "ts_ns": pl.Int64(),
        "open_interest": pl.Float64(),  # in contracts / base units
        "open_interest_value": pl.Float64(),  # in quote currency; null if the venue omits it
    }
)
"""Open interest of derivatives."""


class Bar(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One row of :data:`BAR_SCHEMA` as a message (push sources, the market-data bus)."""

    ts_ns: int  # bar open time, ns UTC; the bar is final at ts_ns + timeframe
    open: float
    high: float
    low: float
    close: float
    volume: float


InstrumentKind = Literal["spot", "perp", "future"]


def _positive_decimal(field: str, value: str) -> Decimal:
    try:
        dec = Decimal(value)
    except InvalidOperation:
        dec = Decimal("NaN")
    if not dec.is_finite() or dec <= 0:
        raise InstrumentError(
            f"Instrument.{field} must be a positive decimal string, got {value!r}",
            hint="write it as the venue publishes it, e.g. '0.01' or '0.00001'",
        )
    return dec


class Instrument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a symbol is on a venue; the increments convert float prices/sizes to ticks/lots.

    Increments are decimal *strings* so no binary rounding sneaks in ("0.1" stays exact).
    """

    venue: str
    symbol: str  # venue-style symbol, e.g. "BTC/USDT"
    kind: InstrumentKind
    price_increment: str  # tick size
    size_increment: str  # lot size
    base_currency: str
    quote_currency: str

    def __post_init__(self) -> None:
        _positive_decimal("price_increment", self.price_increment)
        _positive_decimal("size_increment", self.size_increment)

    @property
    def price_increment_decimal(self) -> Decimal:
        """Tick size as an exact ``Decimal``."""
        return Decimal(self.price_increment)

    @property
    def size_increment_decimal(self) -> Decimal:
        """Lot size as an exact ``Decimal``."""
        return Decimal(self.size_increment)


class UnstructuredItem(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Envelope for news, posts and alerts, as consumed by the sentiment node."""

    source: str  # e.g. "rss:coindesk", "jsonl:posts.jsonl", "webhook:tradingview"
    ts_ns: int  # publication time, ns UTC
    text: str
    url: str | None = None
    symbols: tuple[str, ...] = ()
    metadata: dict[str, str | int | float | bool | None] = msgspec.field(default_factory=dict)


_TIMEFRAME_UNITS: Final[Mapping[str, int]] = MappingProxyType(
    {"s": NS_PER_SECOND, "m": NS_PER_MINUTE, "h": NS_PER_HOUR, "d": NS_PER_DAY, "w": 7 * NS_PER_DAY}
)
_TIMEFRAME_RE: Final = re.compile(r"([1-9][0-9]*)([smhdw])")

TIMEFRAMES: Final[tuple[str, ...]] = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "1w",
)
"""Common timeframes; any ``<positive int><s|m|h|d|w>`` is accepted by :func:`timeframe_to_ns`."""


def timeframe_to_ns(timeframe: str) -> int:
    """Length of a timeframe such as ``"1m"``, ``"4h"`` or ``"1d"`` in nanoseconds.

    ``m`` is minutes; months are rejected because their length varies. Raises
    :class:`~feeds.errors.UnknownTimeframeError` (also a ``ValueError``) for anything else.
    """
    match = _TIMEFRAME_RE.fullmatch(timeframe) if isinstance(timeframe, str) else None
    if match is None:
        hint = (
            "use <positive integer><unit> with unit s, m (minute), h, d or w, e.g. '1m', '4h', '1d'"
        )
        if isinstance(timeframe, str) and timeframe.endswith("M"):
            hint = "months have no fixed length; use '30d' or resample to '1d'/'1w' instead"
        elif isinstance(timeframe, str) and timeframe.lower() != timeframe:
            hint = f"timeframes are lower case: {timeframe.lower()!r}"
        raise UnknownTimeframeError(f"unknown timeframe {timeframe!r}", hint=hint)
    return int(match.group(1)) * _TIMEFRAME_UNITS[match.group(2)]


def empty_frame(schema: Schema) -> pl.DataFrame:
    """A zero-row frame with exactly ``schema``'s columns and dtypes."""
    return pl.DataFrame(schema=dict(schema))
