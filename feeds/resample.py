"""Resample bars to a coarser timeframe without look-ahead.

A coarse bar labelled ``L`` (its open time, left edge) aggregates exactly the fine bars with
``L <= ts_ns < L + to_tf`` and is final only at ``L + to_tf``. Buckets are aligned to
``origin_ns`` (default the Unix epoch, so "1h" starts on the hour and "1d" at 00:00 UTC; note
that epoch-aligned "1w" buckets start on Thursdays: pass ``origin_ns=WEEK_ORIGIN_MONDAY`` for
Monday weeks).

A bucket is *complete* when it holds all ``to_tf / from_tf`` fine bars. What happens to the
others is explicit (``incomplete=``):

* ``"drop"`` (default): only complete buckets are emitted. A coarse bar can never be built from
  a partial bucket, whether partial because data starts mid-bucket, has a gap, or ends before
  the bucket closes.
* ``"keep"``: leading and interior partial buckets are emitted (their time has passed; gaps in
  the fine data are real), but a trailing partial bucket is dropped: it may still be forming.
* ``"flag"``: every bucket is emitted with two extra columns, ``complete`` (bool) and
  ``bar_count`` (number of fine bars); the caller decides.
"""

from __future__ import annotations

from typing import Final, Literal

import polars as pl

from feeds.errors import ColumnError, ResampleError
from feeds.schema import BAR_COLUMNS, BAR_SCHEMA, NS_PER_DAY, timeframe_to_ns
from feeds.validate import format_ts, grid_violation

__all__ = ["WEEK_ORIGIN_MONDAY", "IncompletePolicy", "resample_bars"]

IncompletePolicy = Literal["drop", "keep", "flag"]

WEEK_ORIGIN_MONDAY: Final = 4 * NS_PER_DAY
"""1970-01-05T00:00Z, a Monday: origin for Monday-aligned weekly buckets."""


def resample_bars(
    df: pl.DataFrame,
    from_tf: str,
    to_tf: str,
    *,
    incomplete: IncompletePolicy = "drop",
    origin_ns: int = 0,
) -> pl.DataFrame:
    """Aggregate canonical ``from_tf`` bars into ``to_tf`` bars (open first, high max, low min,
    close last, volume sum), left-labelled; see the module docstring for partial buckets.
    """
    from_ns = timeframe_to_ns(from_tf)
    to_ns = timeframe_to_ns(to_tf)
    if to_ns < from_ns or to_ns % from_ns:
        raise ResampleError(
            f"cannot resample {from_tf} to {to_tf}: the target must be a whole multiple of the source",
            hint="choose a coarser target, e.g. 1m -> 5m/15m/1h/4h/1d",
        )
    if incomplete not in ("drop", "keep", "flag"):
        raise ResampleError(
            f"unknown incomplete policy {incomplete!r}", hint="use 'drop', 'keep' or 'flag'"
        )
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise ColumnError(
            f"missing columns {missing} (have: {', '.join(df.columns)})",
            hint="resample canonical bars (feeds.files.read_bars returns them)",
        )
    ratio = to_ns // from_ns
    ts = df["ts_ns"]
    problem = grid_violation(ts, from_ns, origin_ns)
    if problem is not None and problem[0] == "order":
        row = problem[1]
        raise ResampleError(
            f"timestamps must strictly increase; {format_ts(int(ts[row]))} follows "
            f"{format_ts(int(ts[row - 1]))}",
            row=row,
            hint="validate the bars first (feeds.validate.check_bars)",
        )
    if problem is not None:
        row = problem[1]
        raise ResampleError(
            f"bar at {format_ts(int(ts[row]))} is not on the {from_tf} grid",
            row=row,
            hint=f"check that the data really is {from_tf} bars (and origin_ns)",
        )
    out = (
        df.lazy()
        .select(BAR_COLUMNS)
        .with_columns(
            (((pl.col("ts_ns") - origin_ns) // to_ns) * to_ns + origin_ns).alias("bucket")
        )
        .group_by("bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.len().cast(pl.UInt32).alias("bar_count"),
        )
        .rename({"bucket": "ts_ns"})
        .with_columns((pl.col("bar_count") == ratio).alias("complete"))
        .collect()
    )
    canonical = [pl.col(c).cast(t) for c, t in BAR_SCHEMA.items()]
    if incomplete == "flag":
        return out.select(*canonical, "complete", "bar_count")
    keep = pl.col("complete")
    if incomplete == "keep":  # everything except a trailing partial bucket
        keep = keep | (pl.int_range(pl.len()) < pl.len() - 1)
    return out.filter(keep).select(canonical)
