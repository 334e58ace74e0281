"""Explicit gap policies for bar series: report, forward-fill (flagged) or drop whole periods.

A gap is a run of missing bars on the timeframe grid between two stored bars (and, when
``start_ns``/``end_ns`` are given, before the first or after the last bar). Nothing here fills or
drops silently: every call returns a :class:`GapReport` with each gap, and ``ffill`` marks the
bars it invented.

* ``"none"``: the bars are returned unchanged; the report lists the gaps.
* ``"ffill"``: each missing bar becomes a flat bar (open = high = low = close = the previous
  close, volume 0) and the output gains a ``filled`` bool column (True = invented). Missing bars
  before the first real bar cannot be filled from the past and stay missing (reported as
  ``unfilled``): no value is ever taken from the future.
* ``"drop"``: every ``drop_period`` bucket (default ``"1d"``, epoch-aligned: UTC days) that misses
  any bar is removed entirely, so downstream statistics only see complete periods.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
import polars as pl

from feeds.errors import ColumnError, GapError
from feeds.schema import BAR_COLUMNS, BAR_SCHEMA, NS_PER_DAY, timeframe_to_ns
from feeds.validate import format_ts, grid_violation

__all__ = ["GAP_POLICIES", "GapFill", "GapPolicy", "GapReport", "GapSpan", "fill_gaps"]

GapPolicy = Literal["none", "ffill", "drop"]
GAP_POLICIES: Final[tuple[str, ...]] = ("none", "ffill", "drop")


class GapSpan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``n_missing`` consecutive missing bars starting at ``first_missing_ns``."""

    first_missing_ns: int
    n_missing: int


class GapReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a gap policy found and did."""

    policy: str
    timeframe: str
    gaps: tuple[GapSpan, ...]
    missing_bars: int  # total missing bars on the grid
    filled_bars: int  # ffill: bars invented
    unfilled_bars: int  # ffill: leading bars that could not be filled from the past
    dropped_bars: int  # drop: real bars removed with their incomplete periods

    def summary(self) -> str:
        """One line for the CLI and logs."""
        head = (
            f"{len(self.gaps)} gap(s), {self.missing_bars} missing {self.timeframe} bar(s); "
            f"policy {self.policy}"
        )
        if self.policy == "ffill":
            head += f": filled {self.filled_bars}, unfilled {self.unfilled_bars}"
        elif self.policy == "drop":
            head += f": dropped {self.dropped_bars} bar(s) in incomplete periods"
        if self.gaps:
            first = ", ".join(
                f"{format_ts(g.first_missing_ns)} (+{g.n_missing})" for g in self.gaps[:5]
            )
            head += f"; first gaps at {first}"
        return head


class GapFill(msgspec.Struct, frozen=True, kw_only=True):
    """The bars after the policy and the report."""

    bars: pl.DataFrame
    report: GapReport


def _grid_check(ts: pl.Series, tf_ns: int, anchor: int) -> None:
    problem = grid_violation(ts, tf_ns, anchor)
    if problem is None:
        return
    kind, row = problem
    if kind == "order":
        raise GapError(
            f"timestamps must strictly increase; {format_ts(int(ts[row]))} follows "
            f"{format_ts(int(ts[row - 1]))}",
            row=row,
            hint="validate the bars first (feeds.validate.check_bars)",
        )
    raise GapError(
        f"bar at {format_ts(int(ts[row]))} is off the grid",
        row=row,
        hint="check the timeframe; gap filling needs bars on one grid",
    )


def fill_gaps(
    df: pl.DataFrame,
    timeframe: str,
    policy: GapPolicy,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    drop_period: str = "1d",
) -> GapFill:
    """Apply ``policy`` to canonical bars; ``[start_ns, end_ns)`` widens the expected grid."""
    if policy not in GAP_POLICIES:
        raise GapError(
            f"unknown gap policy {policy!r}", hint=f"use one of {', '.join(GAP_POLICIES)}"
        )
    missing_cols = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing_cols:
        raise ColumnError(
            f"missing columns {missing_cols} (have: {', '.join(df.columns)})",
            hint="pass canonical bars (feeds.files.read_bars returns them)",
        )
    tf_ns = timeframe_to_ns(timeframe)
    bars = df.select(BAR_COLUMNS).cast(dict(BAR_SCHEMA))  # type: ignore[arg-type]
    ts = bars["ts_ns"]
    if bars.height == 0 and (start_ns is None or end_ns is None):
        raise GapError("no bars and no range to check", hint="pass start_ns and end_ns")
    anchor = 0 if NS_PER_DAY % tf_ns == 0 else (int(ts[0]) if bars.height else start_ns or 0)
    _grid_check(ts, tf_ns, anchor)
    lo = int(ts[0]) if bars.height else None
    hi = int(ts[-1]) if bars.height else None
    if start_ns is not None:
        first_slot = anchor + -(-(start_ns - anchor) // tf_ns) * tf_ns  # first grid slot >= start
        lo = first_slot if lo is None else min(lo, first_slot)
    if end_ns is not None:
        last_slot = anchor + ((end_ns - 1 - anchor) // tf_ns) * tf_ns  # last grid slot < end
        hi = last_slot if hi is None else max(hi, last_slot)
    assert lo is not None and hi is not None
    grid = pl.DataFrame({"ts_ns": pl.int_range(lo, hi + 1, tf_ns, dtype=pl.Int64, eager=True)})
    full = grid.join(bars, on="ts_ns", how="left")
    is_missing = full["open"].is_null()
    gaps = _spans(full["ts_ns"], is_missing)
    missing = int(is_missing.sum())

    filled = unfilled = dropped = 0
    out = bars
    if policy == "ffill":
        leading = int(is_missing.arg_min() or 0) if bars.height else full.height
        unfilled = min(leading, missing)
        filled = missing - unfilled
        out = (
            full.with_columns(pl.col("open").is_null().alias("filled"))
            .with_columns(pl.col("close").forward_fill())
            .with_columns(
                *(pl.col(c).fill_null(pl.col("close")) for c in ("open", "high", "low")),
                pl.col("volume").fill_null(0.0),
            )
            .filter(pl.col("close").is_not_null())
            .select(*BAR_COLUMNS, "filled")
        )
    elif policy == "drop":
        period_ns = timeframe_to_ns(drop_period)
        if period_ns % tf_ns:
            raise GapError(
                f"drop period {drop_period} is not a multiple of {timeframe}",
                hint="use a period such as 1d or 1w",
            )
        bucket = (pl.col("ts_ns") // period_ns) * period_ns
        bad = full.filter(pl.col("open").is_null()).select(bucket.alias("b")).unique()
        out = (
            bars.with_columns(bucket.alias("b"))
            .join(bad, on="b", how="anti")
            .drop("b")
            .sort("ts_ns")
        )
        dropped = bars.height - out.height
    report = GapReport(
        policy=policy,
        timeframe=timeframe,
        gaps=gaps,
        missing_bars=missing,
        filled_bars=filled,
        unfilled_bars=unfilled,
        dropped_bars=dropped,
    )
    return GapFill(bars=out, report=report)


def _spans(ts: pl.Series, missing: pl.Series) -> tuple[GapSpan, ...]:
    runs = (
        pl.DataFrame({"ts_ns": ts, "m": missing})
        .with_columns((pl.col("m") != pl.col("m").shift(1)).fill_null(True).cum_sum().alias("run"))
        .filter(pl.col("m"))
        .group_by("run", maintain_order=True)
        .agg(pl.col("ts_ns").first().alias("first"), pl.len().alias("n"))
    )
    return tuple(
        GapSpan(first_missing_ns=int(f), n_missing=int(n))
        for f, n in runs.select("first", "n").iter_rows()
    )
