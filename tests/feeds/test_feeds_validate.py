"""check_bars: counts and first offending timestamps for every kind of problem."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeds.errors import ColumnError, UnknownTimeframeError
from feeds.schema import BAR_SCHEMA
from feeds.validate import IssueCount, check_bars, format_ts

T0 = 1_704_067_200_000_000_000
H = 3_600_000_000_000


def _frame(ts: list[int], **cols: list[float]) -> pl.DataFrame:
    n = len(ts)
    base: dict[str, list[float]] = {
        "open": [100.0] * n,
        "high": [101.0] * n,
        "low": [99.0] * n,
        "close": [100.5] * n,
        "volume": [1.0] * n,
    }
    return pl.DataFrame({"ts_ns": ts, **(base | cols)}, schema=dict(BAR_SCHEMA))


def test_clean_series() -> None:
    report = check_bars(_frame([T0 + i * H for i in range(24)]), "1h")
    assert report.ok and report.clean
    assert report.n_bars == 24
    assert (report.first_ts_ns, report.last_ts_ns) == (T0, T0 + 23 * H)
    assert "24 bars of 1h" in report.summary() and "OK" in report.summary()


def test_every_issue_is_counted_with_first_timestamps() -> None:
    ts = [T0, T0 + H, T0 + H, T0 + 4 * H, T0 + 3 * H, T0 + 5 * H + 60]
    report = check_bars(
        _frame(
            ts,
            high=[101.0, 101.0, 101.0, 100.0, 101.0, 101.0],  # row 3: high < close
            low=[99.0, 99.0, 99.0, 99.0, 99.0, -1.0],  # row 5: negative price
            volume=[1.0, 0.0, 1.0, 1.0, 0.0, 1.0],
        ),
        "1h",
    )
    assert report.duplicates == IssueCount(count=1, first_ts_ns=(T0 + H,))
    assert report.non_monotonic == IssueCount(count=1, first_ts_ns=(T0 + 3 * H,))
    assert report.bad_ohlc == IssueCount(count=1, first_ts_ns=(T0 + 4 * H,))
    assert report.bad_values == IssueCount(count=1, first_ts_ns=(T0 + 5 * H + 60,))
    assert report.zero_volume == IssueCount(count=2, first_ts_ns=(T0 + H, T0 + 3 * H))
    assert report.off_grid == IssueCount(count=1, first_ts_ns=(T0 + 5 * H + 60,))
    # gaps: H -> 4H (2H, 3H missing), 3H -> 5H+60 (4H, 5H grid points missing)
    assert report.gaps == IssueCount(count=2, first_ts_ns=(T0 + 2 * H, T0 + 4 * H))
    assert report.missing_bars == 4
    assert not report.ok and not report.clean
    text = report.summary()
    assert "ERRORS" in text and format_ts(T0 + H) in text


def test_nan_is_a_bad_value_not_bad_ohlc() -> None:
    report = check_bars(_frame([T0, T0 + H], close=[float("nan"), 100.0]), "1h")
    assert report.bad_values.count == 1 and report.bad_ohlc.count == 0


def test_gaps_only_is_ok_but_not_clean() -> None:
    report = check_bars(_frame([T0, T0 + 3 * H]), "1h")
    assert report.ok and not report.clean
    assert report.missing_bars == 2
    assert "with warnings" in report.summary()


def test_empty_frame_and_errors() -> None:
    report = check_bars(pl.DataFrame(schema=dict(BAR_SCHEMA)), "1m")
    assert report.n_bars == 0 and report.first_ts_ns is None and report.ok
    assert "empty" in report.summary()
    with pytest.raises(UnknownTimeframeError):
        check_bars(_frame([T0]), "1x")
    with pytest.raises(ColumnError, match="volume"):
        check_bars(_frame([T0]).drop("volume"), "1h")


@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_gap_accounting_matches_removed_bars(keep: list[bool]) -> None:
    keep[0] = True
    kept = [T0 + i * H for i, k in enumerate(keep) if k]
    last = max(i for i, k in enumerate(keep) if k)
    removed_inside = sum(1 for k in keep[:last] if not k)
    runs = sum(1 for i in range(1, last) if not keep[i] and keep[i - 1])
    report = check_bars(_frame(kept), "1h")
    assert report.missing_bars == removed_inside
    assert report.gaps.count == runs
    assert report.ok
