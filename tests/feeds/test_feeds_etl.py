"""Gap policies, time zones and sessions, and lake tiering."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from feeds.errors import GapError, LakeError
from feeds.gaps import GapSpan, fill_gaps
from feeds.lake import Lake
from feeds.resample import resample_bars
from feeds.schema import BAR_COLUMNS, NS_PER_DAY
from feeds.sessions import filter_session, local_time, session_mask
from feeds.synthetic import generate_bars

H = 3_600_000_000_000
M = 60_000_000_000
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00Z, a Monday
BARS = generate_bars(seed=9, start_ns=T0, n=72, timeframe="1h")


def _holes(rows: list[int]) -> pl.DataFrame:
    return BARS.filter(~pl.int_range(pl.len()).is_in(rows))


def test_none_reports_and_changes_nothing() -> None:
    bars = _holes([5, 6, 7, 30])
    result = fill_gaps(bars, "1h", "none")
    assert_frame_equal(result.bars, bars)
    assert result.report.gaps == (
        GapSpan(first_missing_ns=T0 + 5 * H, n_missing=3),
        GapSpan(first_missing_ns=T0 + 30 * H, n_missing=1),
    )
    assert result.report.missing_bars == 4
    assert "2 gap(s), 4 missing 1h bar(s); policy none" in result.report.summary()


def test_range_widens_the_grid() -> None:
    bars = BARS.slice(2, 10)  # bars 2..11
    report = fill_gaps(bars, "1h", "none", start_ns=T0, end_ns=T0 + 14 * H).report
    assert report.gaps == (
        GapSpan(first_missing_ns=T0, n_missing=2),
        GapSpan(first_missing_ns=T0 + 12 * H, n_missing=2),
    )
    filled = fill_gaps(bars, "1h", "ffill", start_ns=T0, end_ns=T0 + 14 * H)
    assert (filled.report.filled_bars, filled.report.unfilled_bars) == (2, 2)
    assert filled.bars["ts_ns"].to_list() == [T0 + i * H for i in range(2, 14)]


def test_ffill_flat_flagged_bars() -> None:
    result = fill_gaps(_holes([5, 6]), "1h", "ffill")
    out = result.bars
    assert out.columns == [*BAR_COLUMNS, "filled"]
    assert out["ts_ns"].to_list() == BARS["ts_ns"].to_list()
    invented = out.filter(pl.col("filled"))
    prev_close = BARS["close"][4]
    assert invented["ts_ns"].to_list() == [T0 + 5 * H, T0 + 6 * H]
    for col in ("open", "high", "low", "close"):
        assert invented[col].to_list() == [prev_close, prev_close]
    assert invented["volume"].to_list() == [0.0, 0.0]
    assert_frame_equal(out.filter(~pl.col("filled")).drop("filled"), _holes([5, 6]))
    assert result.report.filled_bars == 2


def test_drop_removes_incomplete_days() -> None:
    result = fill_gaps(_holes([30]), "1h", "drop")  # bar 30 is on day 2
    assert result.bars["ts_ns"].to_list() == [T0 + i * H for i in range(72) if not 24 <= i < 48]
    assert result.report.dropped_bars == 23
    with pytest.raises(GapError, match="not a multiple of 1h"):
        fill_gaps(BARS, "1h", "drop", drop_period="90m")


def test_bad_requests() -> None:
    with pytest.raises(GapError, match="unknown gap policy 'zero'"):
        fill_gaps(BARS, "1h", "zero")  # type: ignore[arg-type]
    with pytest.raises(GapError, match="off the grid"):
        fill_gaps(BARS.with_columns(pl.col("ts_ns") + 1), "1h", "none")
    with pytest.raises(GapError, match="strictly increase"):
        fill_gaps(pl.concat([BARS.head(3), BARS.head(1)]), "1h", "none")
    with pytest.raises(GapError, match="no bars and no range"):
        fill_gaps(BARS.head(0), "1h", "none")


@settings(max_examples=60)
@given(st.sets(st.integers(0, 71), max_size=40), st.sampled_from(["none", "ffill", "drop"]))
def test_policies_property(missing: set[int], policy: str) -> None:
    bars = _holes(sorted(missing))
    if bars.height == 0:
        return
    result = fill_gaps(bars, "1h", policy, start_ns=T0, end_ns=T0 + 72 * H)  # type: ignore[arg-type]
    report = result.report
    assert report.missing_bars == len(missing) == sum(g.n_missing for g in report.gaps)
    out = result.bars
    if policy == "none":
        assert_frame_equal(out, bars)
    elif policy == "ffill":
        real = out.filter(~pl.col("filled")).drop("filled")
        assert_frame_equal(real, bars)  # real bars untouched
        first_real = min(set(range(72)) - missing)
        assert out["ts_ns"].to_list() == [T0 + i * H for i in range(first_real, 72)]
        flat = out.filter(pl.col("filled"))
        assert (flat["open"] == flat["close"]).all() and (flat["volume"] == 0).all()
        assert report.filled_bars + report.unfilled_bars == len(missing)
        # no look-ahead: each invented bar repeats the close of the bar before it
        closes = out["close"].to_list()
        for i, is_filled in enumerate(out["filled"].to_list()):
            if is_filled:
                assert closes[i] == closes[i - 1]
    else:
        bad_days = {m // 24 for m in missing}
        assert {int(t - T0) // NS_PER_DAY for t in out["ts_ns"]} == {0, 1, 2} - bad_days
        assert out.height + report.dropped_bars == bars.height


def test_local_time_and_sessions() -> None:
    minutes = generate_bars(seed=2, start_ns=T0 + 14 * H, n=3 * 24 * 2, timeframe="30m")
    local = local_time(minutes.head(1), "America/New_York")["local_time"][0]
    assert (local.hour, local.minute, str(local.tzinfo)) == (9, 0, "America/New_York")
    nyse = filter_session(minutes, tz="America/New_York", start="09:30", end="16:00")
    hours = local_time(nyse, "America/New_York")["local_time"]
    assert nyse.height == 13 * 3  # 13 half-hours a day, Mon 1 .. Wed 3 January
    assert hours.dt.time().min().isoformat() == "09:30:00"  # type: ignore[union-attr]
    assert hours.dt.time().max().isoformat() == "15:30:00"  # type: ignore[union-attr]
    holiday = filter_session(
        minutes, tz="America/New_York", start="09:30", end="16:00", holidays=[date(2024, 1, 1)]
    )
    assert holiday.height == 13 * 2
    weekend = session_mask(minutes, tz="UTC", start="00:00", end="23:59", weekdays=(5, 6))
    assert not weekend.any()
    overnight = filter_session(minutes, tz="UTC", start="22:00", end="02:00")
    assert set(local_time(overnight, "UTC")["local_time"].dt.hour().to_list()) == {22, 23, 0, 1}


def test_session_follows_daylight_saving() -> None:
    # 2024-03-10: New York moves from UTC-5 to UTC-4; the open moves from 14:30Z to 13:30Z
    days = generate_bars(seed=3, start_ns=1_709_856_000_000_000_000, n=6 * 24 * 2, timeframe="30m")
    opens = (
        filter_session(days, tz="America/New_York", start="09:30", end="10:00")
        .select(pl.from_epoch("ts_ns", time_unit="ns").dt.strftime("%a %H:%M"))
        .to_series()
        .to_list()
    )
    assert opens == ["Fri 14:30", "Mon 13:30", "Tue 13:30", "Wed 13:30"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tz": "Mars/Base", "start": "09:30", "end": "16:00"}, "unknown time zone 'Mars/Base'"),
        ({"tz": "UTC", "start": "9:30", "end": "16:00"}, "bad session time '9:30'"),
        ({"tz": "UTC", "start": "10:00", "end": "10:00"}, "empty session"),
        ({"tz": "UTC", "start": "09:00", "end": "10:00", "weekdays": (7,)}, "bad weekdays"),
    ],
)
def test_session_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(GapError, match=message):
        session_mask(BARS, **kwargs)  # type: ignore[arg-type]


def test_tier_moves_old_fine_bars_to_the_coarse_series(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    start = T0 - 2 * NS_PER_DAY  # 2023-12-30: fine data spans two year files
    fine = generate_bars(seed=8, start_ns=start, n=5 * 24 * 60, timeframe="1m")
    lake.write("sim", "BTC/USDT", "1m", fine)
    now = start + 5 * NS_PER_DAY + 30 * M
    report = lake.tier("sim", "BTC/USDT", "1m", now_ns=now, keep_fine_days=2, coarse_tf="1h")
    cutoff = start + 3 * NS_PER_DAY  # now - 2 days, rounded down to the hour
    assert report.cutoff_ns == cutoff
    assert report.years_deleted == (2023,) and report.years_rewritten == (2024,)
    assert report.fine_removed == 3 * 24 * 60
    assert_frame_equal(lake.read("sim", "BTC/USDT", "1m"), fine.filter(pl.col("ts_ns") >= cutoff))
    coarse = lake.read("sim", "BTC/USDT", "1h")
    assert_frame_equal(coarse, resample_bars(fine.filter(pl.col("ts_ns") < cutoff), "1m", "1h"))
    assert not list(tmp_path.rglob("*.tmp"))
    # idempotent: nothing is old enough any more
    again = lake.tier("sim", "BTC/USDT", "1m", now_ns=now, keep_fine_days=2, coarse_tf="1h")
    assert again.coarse is None and again.fine_removed == 0
    assert_frame_equal(lake.read("sim", "BTC/USDT", "1h"), coarse)


def test_tier_interrupted_after_the_coarse_write_is_finished_by_a_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(tmp_path)
    fine = generate_bars(seed=8, start_ns=T0, n=3 * 24 * 60, timeframe="1m")
    lake.write("sim", "ETH/USDT", "1m", fine)
    now = T0 + 3 * NS_PER_DAY

    import feeds.lake

    real_write = feeds.lake.atomic_write
    calls: list[Path] = []

    def crash_on_fine(path: Path, write: object) -> None:
        calls.append(path)
        if "1m" in path.parts:  # the coarse write goes through, the fine rewrite dies
            raise OSError("disk gone")
        real_write(path, write)  # type: ignore[arg-type]

    monkeypatch.setattr(feeds.lake, "atomic_write", crash_on_fine)
    with pytest.raises(OSError, match="disk gone"):
        lake.tier("sim", "ETH/USDT", "1m", now_ns=now, keep_fine_days=1)
    assert [c.parent.name for c in calls] == ["1h", "1m"]
    monkeypatch.undo()
    # nothing lost: the fine data is still complete and the coarse data already written
    assert_frame_equal(lake.read("sim", "ETH/USDT", "1m"), fine)
    assert lake.read("sim", "ETH/USDT", "1h").height == 48
    report = lake.tier("sim", "ETH/USDT", "1m", now_ns=now, keep_fine_days=1)
    assert report.fine_removed == 2 * 24 * 60 and report.coarse is not None
    assert report.coarse.replaced == 48 and report.coarse.inserted == 0
    assert lake.read("sim", "ETH/USDT", "1m")["ts_ns"].min() == T0 + 2 * NS_PER_DAY


def test_tier_errors(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    with pytest.raises(LakeError, match="not coarser"):
        lake.tier("sim", "BTC/USDT", "1h", now_ns=T0, coarse_tf="1h")
    with pytest.raises(LakeError, match="keep_fine_days"):
        lake.tier("sim", "BTC/USDT", "1m", now_ns=T0, keep_fine_days=-1)
