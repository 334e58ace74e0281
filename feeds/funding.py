"""Perpetual funding-rate files: read and validate them, and the seeded synthetic sample.

A funding file holds one row per settlement (FUNDING_SCHEMA): `ts_ns` (or an ISO-8601
`timestamp`), `funding_rate` (a fraction per interval: 0.0001 = 1 bp, longs pay when > 0),
`interval_ns` and optionally `mark_price`. `stratagem data fetch funding` writes this format;
`stratagem run --funding FILE` charges it to a perp backtest through the simulated venue.

    python -m feeds.funding --seed 7 --start 2024-01-01 --end 2025-01-10 \
        --out examples/data/btcusdt-funding-synthetic.csv
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import polars as pl

from feeds.errors import ColumnError, EmptyDataError, TimestampError
from feeds.files import atomic_write, read_raw
from feeds.schema import FUNDING_SCHEMA, NS_PER_HOUR
from feeds.synthetic import parse_start
from feeds.validate import format_ts

__all__ = ["check_funding", "generate_funding", "rate_to_ppb", "read_funding"]

MAX_ABS_RATE = 1.0  # 100 % per interval: anything above is a unit error (percent vs fraction)


def rate_to_ppb(rate: float) -> int:
    """A fraction per interval as integer parts per billion (the order kernel's unit)."""
    return round(rate * 1_000_000_000)


def _column(df: pl.DataFrame, name: str, dtype: pl.DataType, path: Path) -> pl.Series:
    col = df[name]
    try:
        return col.cast(dtype, strict=True) if col.dtype != dtype else col
    except pl.exceptions.PolarsError:
        bad = col.cast(dtype, strict=False).is_null() & col.is_not_null()
        row = int(bad.arg_max() or 0)
        raise ColumnError(
            f"column {name!r}, row {row + 2}: {col[row]!r} is not a {dtype}",
            path=path,
            hint="fix or drop that row",
        ) from None


def read_funding(
    path: str | Path, *, start_ns: int | None = None, end_ns: int | None = None
) -> pl.DataFrame:
    """Read a funding file into validated FUNDING_SCHEMA rows, `start_ns <= ts_ns < end_ns`.

    Refused with the file and the row named: missing columns, unparsable values, times not
    strictly increasing, a non-finite rate or one above 100 % per interval (a percent written
    as a fraction), a non-positive or changing interval, a settlement not on its interval's
    UTC grid.
    """
    p = Path(path)
    df = read_raw(p, "funding")
    if "ts_ns" in df.columns:
        ts = _column(df, "ts_ns", pl.Int64(), p)
    elif "timestamp" in df.columns:
        parsed = df["timestamp"].str.to_datetime(time_zone="UTC", time_unit="ns", strict=False)
        bad = parsed.is_null()
        if bad.any():
            row = int(bad.arg_max() or 0)
            raise TimestampError(
                f"row {row + 2}: timestamp {df['timestamp'][row]!r} is not ISO-8601 with a zone",
                path=p,
                hint="write e.g. 2024-01-01T08:00:00Z, or an integer ts_ns column",
            )
        ts = parsed.dt.epoch("ns").cast(pl.Int64())
    else:
        raise ColumnError(
            "no time column: expected ts_ns (int ns UTC) or timestamp (ISO-8601)",
            path=p,
            hint="the columns of `stratagem data fetch funding` output: "
            + ", ".join(FUNDING_SCHEMA),
        )
    for name in ("funding_rate", "interval_ns"):
        if name not in df.columns:
            raise ColumnError(
                f"missing column {name!r}",
                path=p,
                hint="columns: " + ", ".join(FUNDING_SCHEMA),
            )
    rate = _column(df, "funding_rate", pl.Float64(), p)
    interval = _column(df, "interval_ns", pl.Int64(), p)
    mark = (
        _column(df, "mark_price", pl.Float64(), p)
        if "mark_price" in df.columns
        else pl.Series("mark_price", [None] * df.height, dtype=pl.Float64())
    )
    out = pl.DataFrame(
        {"ts_ns": ts, "funding_rate": rate, "interval_ns": interval, "mark_price": mark},
        schema=dict(FUNDING_SCHEMA),
    )
    if out.height == 0:
        raise EmptyDataError("no funding rows", path=p, hint="fetch a range that has settlements")
    check_funding(out, p)
    if start_ns is not None:
        out = out.filter(pl.col("ts_ns") >= start_ns)
    if end_ns is not None:
        out = out.filter(pl.col("ts_ns") < end_ns)
    return out


def check_funding(df: pl.DataFrame, path: Path | None = None) -> None:
    """Raise a FeedError naming the row when `df` (FUNDING_SCHEMA) breaks a funding rule."""
    missing = [c for c in ("ts_ns", "funding_rate", "interval_ns") if c not in df.columns]
    if missing:
        raise ColumnError(
            f"missing column(s) {', '.join(missing)}", path=path, hint="use FUNDING_SCHEMA"
        )
    if df.height == 0:
        raise EmptyDataError("no funding rows", path=path, hint="give at least one settlement")
    ts = df["ts_ns"].to_numpy()
    rate = df["funding_rate"].to_numpy()
    interval = df["interval_ns"].to_numpy()
    for what, mask in (
        ("a null value", df["ts_ns"].is_null() | df["interval_ns"].is_null()),
        ("a null or non-finite funding_rate", ~pl.Series(np.isfinite(rate))),
    ):
        if mask.any():
            row = int(mask.arg_max() or 0)
            raise ColumnError(f"row {row + 2}: {what}", path=path, hint="fix or drop that row")
    if len(ts) > 1 and bool(np.any(np.diff(ts) <= 0)):
        row = int(np.argmax(np.diff(ts) <= 0)) + 1
        raise TimestampError(
            f"row {row + 2}: settlement {format_ts(int(ts[row]))} is not after the previous one "
            f"({format_ts(int(ts[row - 1]))})",
            path=path,
            hint="sort the rows by time and drop duplicates",
        )
    big = np.abs(rate) > MAX_ABS_RATE
    if big.any():
        row = int(np.argmax(big))
        raise ColumnError(
            f"row {row + 2}: funding_rate {rate[row]!r} is more than 100 % per interval",
            path=path,
            hint="funding_rate is a fraction (0.0001 = 0.01 %), not a percent",
        )
    if bool(np.any(interval <= 0)) or len(np.unique(interval)) > 1:
        raise ColumnError(
            f"interval_ns must be one positive value for the whole file; found "
            f"{sorted({int(v) for v in np.unique(interval)})}",
            path=path,
            hint="split the file where the venue changed its funding interval",
        )
    off = ts % interval
    if bool(np.any(off != 0)):
        row = int(np.argmax(off != 0))
        raise TimestampError(
            f"row {row + 2}: settlement {format_ts(int(ts[row]))} is not on the "
            f"{int(interval[0]) / NS_PER_HOUR:g} h UTC grid the simulated venue settles on",
            path=path,
            hint="use the venue's settlement times (e.g. 00:00, 08:00, 16:00 UTC)",
        )


def generate_funding(
    *, seed: int, start_ns: int, end_ns: int, interval_ns: int = 8 * NS_PER_HOUR
) -> pl.DataFrame:
    """Seeded synthetic funding: a mean-reverting rate around 1 bp per 8 h, like BTC perps in
    calm markets (AR(1), occasional negative stretches). Not market data."""
    first = -(-start_ns // interval_ns) * interval_ns
    count = max(0, -(-(end_ns - first) // interval_ns))
    # integer steps: np.arange(first, end, step) sizes itself in float64, which drops or adds
    # the last settlement once the span passes 2**53 ns (~104 days)
    ts = first + np.arange(count, dtype=np.int64) * np.int64(interval_ns)
    rng = np.random.Generator(np.random.PCG64(seed))
    shocks = rng.normal(0.0, 0.00004, len(ts))
    rate = np.empty(len(ts))
    level = 0.0001
    for k, e in enumerate(shocks):
        level = 0.0001 + 0.9 * (level - 0.0001) + e
        rate[k] = level
    rate = np.round(rate, 8)
    return pl.DataFrame(
        {
            "ts_ns": ts,
            "funding_rate": rate,
            "interval_ns": np.full(len(ts), interval_ns, dtype=np.int64),
            "mark_price": [None] * len(ts),
        },
        schema=dict(FUNDING_SCHEMA),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a seeded synthetic funding-rate file.")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--start", required=True, help="first settlement at or after, ISO date")
    ap.add_argument("--end", required=True, help="last settlement before, ISO date")
    ap.add_argument("--hours", type=float, default=8.0, help="funding interval in hours")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    interval = round(args.hours * NS_PER_HOUR)
    if interval <= 0 or not math.isfinite(args.hours):
        ap.error("--hours must be positive")
    df = generate_funding(
        seed=args.seed,
        start_ns=parse_start(args.start),
        end_ns=parse_start(args.end),
        interval_ns=interval,
    )
    out = Path(args.out)
    atomic_write(out, lambda tmp: df.drop("mark_price").write_csv(tmp))
    print(f"wrote {df.height} settlements to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
