"""Resampling: matches a plain-Python oracle, never uses a bar before it is complete."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from feeds.errors import ColumnError, ResampleError, UnknownTimeframeError
from feeds.resample import WEEK_ORIGIN_MONDAY, resample_bars
from feeds.schema import BAR_SCHEMA, timeframe_to_ns
from feeds.synthetic import generate_bars

T0 = 1_704_067_200_000_000_000  # a Monday, 00:00 UTC
M = 60_000_000_000


def _oracle(df: pl.DataFrame, to_ns: int, ratio: int, policy: str) -> pl.DataFrame:
    buckets: dict[int, list[tuple[float, ...]]] = {}
    for row in df.iter_rows():
        buckets.setdefault(row[0] // to_ns * to_ns, []).append(row)
    labels = list(buckets)
    rows = []
    for i, label in enumerate(labels):
        group = buckets[label]
        complete = len(group) == ratio
        if policy == "drop" and not complete:
            continue
        if policy == "keep" and not complete and i == len(labels) - 1:
            continue
        rows.append(
            (
                label,
                group[0][1],
                max(r[2] for r in group),
                min(r[3] for r in group),
                group[-1][4],
                sum(r[5] for r in group),
            )
        )
    return pl.DataFrame(rows, schema=dict(BAR_SCHEMA), orient="row")


@st.composite
def gappy_minutes(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(1, 300))
    offset = draw(st.integers(0, 59))
    bars = generate_bars(
        seed=draw(st.integers(0, 1000)), start_ns=T0 + offset * M, n=n, timeframe="1m"
    )
    keep = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    keep[0] = True
    return bars.filter(pl.Series(keep))


@settings(max_examples=60)
@given(
    bars=gappy_minutes(),
    to_tf=st.sampled_from(["2m", "5m", "15m", "1h"]),
    policy=st.sampled_from(["drop", "keep"]),
)
def test_matches_oracle(bars: pl.DataFrame, to_tf: str, policy: str) -> None:
    to_ns = timeframe_to_ns(to_tf)
    got = resample_bars(bars, "1m", to_tf, incomplete=policy)  # type: ignore[arg-type]
    assert_frame_equal(
        got, _oracle(bars, to_ns, to_ns // M, policy), check_exact=False, rel_tol=1e-12
    )


@settings(max_examples=40)
@given(bars=gappy_minutes(), to_tf=st.sampled_from(["5m", "15m"]), cut=st.integers(0, 400))
def test_no_look_ahead(bars: pl.DataFrame, to_tf: str, cut: int) -> None:
    """Seeing fine data up to time t never yields a coarse bar that closes after t, and every
    coarse bar seen then is already final (identical to the one computed from all data)."""
    to_ns = timeframe_to_ns(to_tf)
    now = T0 + cut * M  # everything with open time < now has closed by now + 1m
    visible = bars.filter(pl.col("ts_ns") < now)
    full = resample_bars(bars, "1m", to_tf)
    for policy in ("drop", "keep"):
        if visible.height == 0:
            continue
        early = resample_bars(visible, "1m", to_tf, incomplete=policy)
        assert (early["ts_ns"] + to_ns <= now).all()
        if policy == "drop":
            final = full.filter(pl.col("ts_ns").is_in(early["ts_ns"].implode()))
            assert_frame_equal(early, final)


def test_flag_policy_and_partial_tail() -> None:
    bars = generate_bars(seed=1, start_ns=T0 + 3 * M, n=9, timeframe="1m")  # 00:03 .. 00:11
    flagged = resample_bars(bars, "1m", "5m", incomplete="flag")
    assert flagged["ts_ns"].to_list() == [T0, T0 + 5 * M, T0 + 10 * M]
    assert flagged["complete"].to_list() == [False, True, False]
    assert flagged["bar_count"].to_list() == [2, 5, 2]
    assert resample_bars(bars, "1m", "5m")["ts_ns"].to_list() == [T0 + 5 * M]
    assert resample_bars(bars, "1m", "5m", incomplete="keep")["ts_ns"].to_list() == [T0, T0 + 5 * M]


def test_chained_resampling_equals_direct() -> None:
    bars = generate_bars(seed=2, start_ns=T0, n=3 * 24 * 60, timeframe="1m")
    direct = resample_bars(bars, "1m", "1h")
    chained = resample_bars(resample_bars(bars, "1m", "15m"), "15m", "1h")
    assert_frame_equal(direct, chained)
    daily = resample_bars(direct, "1h", "1d")
    assert daily.height == 3
    assert daily["volume"].sum() == pytest.approx(bars["volume"].sum())


def test_weekly_origin() -> None:
    bars = generate_bars(seed=3, start_ns=T0, n=14, timeframe="1d")
    epoch_weeks = resample_bars(bars, "1d", "1w", incomplete="flag")
    monday_weeks = resample_bars(bars, "1d", "1w", origin_ns=WEEK_ORIGIN_MONDAY)
    assert monday_weeks["ts_ns"].to_list() == [T0, T0 + 7 * 24 * 60 * M]
    assert epoch_weeks["ts_ns"][0] == T0 - 4 * 24 * 60 * M  # a Thursday


def test_errors() -> None:
    bars = generate_bars(seed=4, start_ns=T0, n=10, timeframe="5m")
    with pytest.raises(ResampleError, match="whole multiple"):
        resample_bars(bars, "5m", "7m")
    with pytest.raises(ResampleError, match="whole multiple"):
        resample_bars(bars, "5m", "1m")
    with pytest.raises(UnknownTimeframeError):
        resample_bars(bars, "5m", "1q")
    with pytest.raises(ResampleError, match="not on the 15m grid"):
        resample_bars(bars, "15m", "1h")
    with pytest.raises(ResampleError, match="strictly increase") as info:
        resample_bars(pl.concat([bars, bars.tail(1)]), "5m", "1h")
    assert info.value.row == 10
    with pytest.raises(ColumnError, match="close"):
        resample_bars(bars.drop("close"), "5m", "1h")
    with pytest.raises(ResampleError, match="policy"):
        resample_bars(bars, "5m", "1h", incomplete="maybe")  # type: ignore[arg-type]
    empty = resample_bars(bars.head(0), "5m", "1h", incomplete="keep")
    assert empty.height == 0 and dict(empty.schema) == dict(BAR_SCHEMA)
