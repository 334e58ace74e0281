"""Synthetic generator: deterministic, valid, and statistically the shape we claim."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from feeds.errors import FeedError, UnknownTimeframeError
from feeds.files import read_bars
from feeds.schema import BAR_SCHEMA, timeframe_to_ns
from feeds.synthetic import (
    DEFAULT_PARAMS,
    REGIME_NAMES,
    SyntheticParams,
    generate_bars,
    main,
    parse_start,
    simulate,
)
from feeds.validate import check_bars

T0 = 1_704_067_200_000_000_000


def test_same_inputs_same_bars_and_different_seed_differs() -> None:
    a = generate_bars(seed=1, start_ns=T0, n=500, timeframe="1h")
    b = generate_bars(seed=1, start_ns=T0, n=500, timeframe="1h")
    c = generate_bars(seed=2, start_ns=T0, n=500, timeframe="1h")
    assert_frame_equal(a, b)
    assert not a["close"].equals(c["close"])


def test_schema_and_bar_times_are_exact() -> None:
    bars = generate_bars(seed=3, start_ns=T0, n=100, timeframe="15m")
    assert dict(bars.schema) == dict(BAR_SCHEMA)
    step = timeframe_to_ns("15m")
    assert bars["ts_ns"].to_list() == [T0 + i * step for i in range(100)]


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 400),
    timeframe=st.sampled_from(["1m", "5m", "1h", "4h", "1d"]),
)
def test_every_generated_series_is_clean(seed: int, n: int, timeframe: str) -> None:
    bars = generate_bars(seed=seed, start_ns=T0, n=n, timeframe=timeframe)
    report = check_bars(bars, timeframe)
    assert report.clean, report.summary()
    # Continuous market: each open is the previous close.
    assert bars["open"][1:].to_list() == bars["close"][:-1].to_list()
    # Rounded to ticks and lots.
    assert np.allclose(bars["close"].to_numpy() * 100, np.round(bars["close"].to_numpy() * 100))


def test_statistics_look_like_the_model() -> None:
    path = simulate(seed=11, start_ns=T0, n=20_000, timeframe="1h")
    bars = path.bars
    close = bars["close"].to_numpy()
    ret = np.diff(np.log(close))
    vol = bars["volume"].to_numpy()[1:]
    # volume rises with |return|
    assert np.corrcoef(np.abs(ret), vol)[0, 1] > 0.3
    # every regime visited, and realised volatility is ordered ranging < trending < volatile
    assert set(np.unique(path.regime)) == {0, 1, 2}
    regime = path.regime[1:]
    realised = {name: ret[regime == i].std() for i, name in enumerate(REGIME_NAMES)}
    assert realised["ranging"] < realised["trending"] < realised["volatile"]
    # high/low come from an intrabar path: they usually extend beyond open/close
    body_hi = np.maximum(bars["open"].to_numpy(), close)
    assert (bars["high"].to_numpy() > body_hi).mean() > 0.5
    # the anchor keeps a long series in a plausible band
    assert close.min() > 10_000 and close.max() < 250_000


def test_params_change_the_output_and_are_validated() -> None:
    calm = msgspec.structs.replace(
        DEFAULT_PARAMS,
        regimes=tuple(msgspec.structs.replace(r, annual_vol=0.01) for r in DEFAULT_PARAMS.regimes),
    )
    base = generate_bars(seed=5, start_ns=T0, n=300, timeframe="1h")
    quiet = generate_bars(seed=5, start_ns=T0, n=300, timeframe="1h", params=calm)
    assert (
        np.diff(np.log(quiet["close"].to_numpy())).std()
        < np.diff(np.log(base["close"].to_numpy())).std()
    )
    with pytest.raises(FeedError, match="initial_regime"):
        SyntheticParams(initial_regime=9)
    with pytest.raises(FeedError, match="substeps"):
        SyntheticParams(substeps=0)
    with pytest.raises(FeedError, match="n must be >= 1"):
        generate_bars(seed=1, start_ns=T0, n=0, timeframe="1h")
    with pytest.raises(UnknownTimeframeError):
        generate_bars(seed=1, start_ns=T0, n=5, timeframe="1mo")


def test_parse_start() -> None:
    assert parse_start("2024-01-01") == T0
    assert parse_start("2024-01-01T00:00:00Z") == T0
    assert parse_start("2024-01-01T02:00:00+02:00") == T0
    assert parse_start("2024-01-01T00:00:00.000001") == T0 + 1000
    with pytest.raises(FeedError, match="cannot parse start"):
        parse_start("yesterday")


def test_cli_writes_csv_and_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "s.csv"
    pq = tmp_path / "s.parquet"
    args = ["--seed", "4", "--start", "2024-01-01", "--bars", "48", "--timeframe", "1h"]
    assert main([*args, "--out", str(csv)]) == 0
    assert main([*args, "--out", str(pq)]) == 0
    assert "wrote 48 bars" in capsys.readouterr().out
    assert csv.read_text().startswith("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,")
    assert_frame_equal(read_bars(csv), read_bars(pq))
    assert_frame_equal(read_bars(csv), generate_bars(seed=4, start_ns=T0, n=48, timeframe="1h"))
    assert main([*args[:-1], "7x", "--out", str(csv)]) == 2
    assert "unknown timeframe '7x'" in capsys.readouterr().err
    assert isinstance(read_bars(csv), pl.DataFrame)  # a failed run left the old file intact
