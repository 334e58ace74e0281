"""Bar validation: the row rules the reader enforces and the report behind ``stratagem data check``.

Rules for a canonical bar (one place, shared by :func:`feeds.files.read_bars`, the lake and
:func:`check_bars`):

* prices (open, high, low, close) are finite and > 0; volume is finite and >= 0;
* ``high >= max(open, close)`` and ``low <= min(open, close)`` (so ``high >= low``);
* timestamps strictly increase (no duplicates, never sorted silently).

Gaps, zero volume and bars off the timeframe grid are legal (venues have outages, quiet hours
and odd listings) and only reported.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import msgspec
import polars as pl

from feeds.errors import ColumnError
from feeds.schema import BAR_COLUMNS, NS_PER_DAY, timeframe_to_ns

__all__ = [
    "BarReport",
    "IssueCount",
    "check_bars",
    "first_bad_ohlc_row",
    "first_bad_value_row",
    "format_ts",
]

_SAMPLES: Final = 5
_PRICE_COLUMNS: Final = ("open", "high", "low", "close")


def format_ts(ts_ns: int) -> str:
    """ISO-8601 UTC rendering of a ns timestamp for error messages and reports."""
    seconds, rem = divmod(ts_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rem:09d}Z" if rem else f"{stamp}Z"


def _first(mask: pl.Series) -> int | None:
    idx = mask.fill_null(True).arg_true()
    return None if idx.is_empty() else int(idx[0])


def _bad_value_mask(df: pl.DataFrame) -> pl.Series:
    """True where a price is non-finite or <= 0, or the volume is non-finite or < 0."""
    expr = pl.lit(False)
    for col in _PRICE_COLUMNS:
        expr = expr | ~pl.col(col).is_finite() | (pl.col(col) <= 0)
    expr = expr | ~pl.col("volume").is_finite() | (pl.col("volume") < 0)
    return df.select(expr.fill_null(True).alias("bad")).to_series()


def _bad_ohlc_mask(df: pl.DataFrame) -> pl.Series:
    """True where high/low do not bracket open and close (rows with bad values excluded)."""
    o, h, low, c = (pl.col(x) for x in _PRICE_COLUMNS)
    expr = (h < pl.max_horizontal(o, c)) | (low > pl.min_horizontal(o, c))
    bad = df.select(expr.fill_null(False).alias("bad")).to_series()
    return bad & ~_bad_value_mask(df)


def first_bad_value_row(df: pl.DataFrame) -> tuple[int, str] | None:
    """First row with a non-finite/non-positive price or a negative volume, and its column."""
    row = _first(_bad_value_mask(df))
    if row is None:
        return None
    for col in _PRICE_COLUMNS:
        v = df[col][row]
        if v is None or not (v == v and abs(v) != float("inf")) or v <= 0:
            return row, col
    return row, "volume"


def first_bad_ohlc_row(df: pl.DataFrame) -> int | None:
    """First row whose high/low do not bracket its open and close."""
    return _first(_bad_ohlc_mask(df))


class IssueCount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How often one kind of problem occurs and where it first occurs (bar open times)."""

    count: int = 0
    first_ts_ns: tuple[int, ...] = ()

    def describe(self) -> str:
        """``"3 (first at 2024-01-01T05:00:00Z, ...)"`` or ``"0"``."""
        if not self.count:
            return "0"
        return f"{self.count} (first at {', '.join(format_ts(t) for t in self.first_ts_ns)})"


class BarReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Result of :func:`check_bars`. Errors make the data unusable; warnings are informational."""

    timeframe: str
    n_bars: int
    first_ts_ns: int | None
    last_ts_ns: int | None
    # errors
    non_monotonic: IssueCount
    duplicates: IssueCount
    bad_values: IssueCount
    bad_ohlc: IssueCount
    # warnings
    gaps: IssueCount  # count = number of gaps; first_ts_ns = first missing bar time of each
    missing_bars: int  # total bars missing inside the gaps
    zero_volume: IssueCount
    off_grid: IssueCount  # ts_ns not a multiple of the timeframe (only for timeframes <= 1d)

    @property
    def ok(self) -> bool:
        """True when there are no errors (gaps, zero volume and off-grid bars are allowed)."""
        return not (
            self.non_monotonic.count
            or self.duplicates.count
            or self.bad_values.count
            or self.bad_ohlc.count
        )

    @property
    def clean(self) -> bool:
        """True when there are neither errors nor warnings."""
        return self.ok and not (self.gaps.count or self.zero_volume.count or self.off_grid.count)

    def summary(self) -> str:
        """Human-readable multi-line report for the CLI."""
        span = (
            f"{format_ts(self.first_ts_ns)} .. {format_ts(self.last_ts_ns)}"
            if self.first_ts_ns is not None and self.last_ts_ns is not None
            else "empty"
        )
        lines = [
            f"{self.n_bars} bars of {self.timeframe}, {span}: "
            + ("OK" if self.ok else "ERRORS")
            + ("" if self.clean or not self.ok else " (with warnings)"),
            f"  non-monotonic: {self.non_monotonic.describe()}",
            f"  duplicates:    {self.duplicates.describe()}",
            f"  bad values:    {self.bad_values.describe()}",
            f"  bad OHLC:      {self.bad_ohlc.describe()}",
            f"  gaps:          {self.gaps.describe()}; missing bars: {self.missing_bars}",
            f"  zero volume:   {self.zero_volume.describe()}",
            f"  off grid:      {self.off_grid.describe()}",
        ]
        return "\n".join(lines)


def _issue(ts: pl.Series, mask: pl.Series) -> IssueCount:
    hits = ts.filter(mask)
    return IssueCount(count=hits.len(), first_ts_ns=tuple(int(t) for t in hits.head(_SAMPLES)))


def check_bars(df: pl.DataFrame, timeframe: str) -> BarReport:
    """Inspect bars (canonical columns, any order) without raising on bad rows.

    Raises only for unusable input: an unknown timeframe (``UnknownTimeframeError``) or
    missing columns (``ColumnError``).
    """
    tf_ns = timeframe_to_ns(timeframe)
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise ColumnError(
            f"missing columns {missing} (have: {', '.join(df.columns)})",
            hint=f"pass a frame with columns {','.join(BAR_COLUMNS)} (see feeds.schema.BAR_SCHEMA)",
        )
    ts = df["ts_ns"].cast(pl.Int64)
    diff = ts.diff()
    n = df.height
    non_mono = (diff < 0).fill_null(False)
    dups = (diff == 0).fill_null(False)
    gap_mask = (diff > tf_ns).fill_null(False)
    prev = ts.shift(1)
    gap_starts = (prev + tf_ns).filter(gap_mask)
    missing_bars = int(((diff.filter(gap_mask) - 1) // tf_ns).sum()) if gap_mask.any() else 0
    gaps = IssueCount(
        count=gap_starts.len(),
        first_ts_ns=tuple(int(t) for t in gap_starts.head(_SAMPLES)),
    )
    off_grid = _issue(ts, ts % tf_ns != 0) if NS_PER_DAY % tf_ns == 0 else IssueCount()
    bad_values = _bad_value_mask(df)
    return BarReport(
        timeframe=timeframe,
        n_bars=n,
        first_ts_ns=int(ts[0]) if n else None,
        last_ts_ns=int(ts[-1]) if n else None,
        non_monotonic=_issue(ts, non_mono),
        duplicates=_issue(ts, dups),
        bad_values=_issue(ts, bad_values),
        bad_ohlc=_issue(ts, _bad_ohlc_mask(df)),
        gaps=gaps,
        missing_bars=missing_bars,
        zero_volume=_issue(ts, (df["volume"] == 0).fill_null(False) & ~bad_values),
        off_grid=off_grid,
    )


def grid_violation(ts: pl.Series, tf_ns: int, anchor_ns: int) -> tuple[str, int] | None:
    """The first bar that breaks strict time order ("order") or sits off the timeframe grid
    anchored at `anchor_ns` ("off_grid"), with its row; None when the series is clean."""
    bad = (ts.diff() <= 0).fill_null(False).arg_true()
    if not bad.is_empty():
        return "order", int(bad[0])
    off = ((ts - anchor_ns) % tf_ns != 0).arg_true()
    if not off.is_empty():
        return "off_grid", int(off[0])
    return None
