"""Batch compute: TA-Lib equality, warm-ups, NaN policy, extras against plain formulas."""

from __future__ import annotations

import numpy as np
import pytest
import talib
from indicators_testkit import bars_from

from indicators.batch import compute
from indicators.errors import IndicatorInputError
from indicators.registry import get_indicator, list_indicators

RNG = np.random.default_rng(11)
N = 300
CLOSE = 100.0 * np.exp(np.cumsum(RNG.normal(0.0, 0.01, N)))
BARS = bars_from(CLOSE, RNG.uniform(0.0, 0.01, N), RNG.uniform(1.0, 100.0, N))


@pytest.mark.parametrize("name", list_indicators())
def test_every_indicator_warmup_is_leading_nans(name: str) -> None:
    spec = get_indicator(name)
    out = compute(name, BARS, {})
    w = spec.warmup()
    assert list(out) == list(spec.outputs)
    for key, arr in out.items():
        assert arr.dtype == np.float64 and arr.shape == (N,)
        assert np.isnan(arr[:w]).all(), key
        assert not np.isnan(arr[w:]).any(), key


def test_equals_talib() -> None:
    np.testing.assert_array_equal(compute("RSI", BARS, {"period": 9})["value"], talib.RSI(CLOSE, 9))
    m = compute("MACD", BARS, {})
    for got, want in zip(m.values(), talib.MACD(CLOSE), strict=True):
        np.testing.assert_array_equal(got, want)


def test_nan_input_poisons_forward_and_raise_policy() -> None:
    bars = {k: v.copy() for k, v in BARS.items()}
    bars["close"][100] = np.nan
    out = compute("SMA", bars, {"period": 5})["value"]
    assert not np.isnan(out[4:100]).any() and np.isnan(out[100:]).all()
    # a NaN in a column SMA does not read changes nothing
    vol_nan = {k: v.copy() for k, v in BARS.items()}
    vol_nan["volume"][10] = np.inf
    np.testing.assert_array_equal(
        compute("SMA", vol_nan, {})["value"], compute("SMA", BARS, {})["value"]
    )
    with pytest.raises(
        IndicatorInputError, match=r"column 'close' has a non-finite value nan at bar 100"
    ):
        compute("SMA", bars, {}, nan_policy="raise")


def test_input_errors() -> None:
    with pytest.raises(IndicatorInputError, match="missing"):
        compute("ATR", {"close": CLOSE}, {})
    with pytest.raises(IndicatorInputError, match="differ in length"):
        compute("ATR", {"high": CLOSE, "low": CLOSE[:-1], "close": CLOSE}, {})
    with pytest.raises(IndicatorInputError, match="one-dimensional"):
        compute("SMA", {"close": CLOSE.reshape(2, -1)}, {})


def test_short_and_empty_inputs_are_all_nan() -> None:
    assert np.isnan(compute("SMA", {"close": CLOSE[:5]}, {})["value"]).all()
    assert compute("SMA", {"close": CLOSE[:0]}, {})["value"].shape == (0,)


def test_vwap_default_is_talib_after_first_volume() -> None:
    np.testing.assert_array_equal(
        compute("VWAP", BARS, {})["value"],
        talib.VWAP(BARS["high"], BARS["low"], CLOSE, BARS["volume"]),
    )


def test_zscore_against_two_pass() -> None:
    z = compute("ZSCORE", BARS, {"period": 20})["value"]
    w = np.lib.stride_tricks.sliding_window_view(CLOSE, 20)
    ref = (CLOSE[19:] - w.mean(axis=1)) / w.std(axis=1)
    np.testing.assert_allclose(z[19:], ref, rtol=1e-7)


def test_realvol_against_formula() -> None:
    r = np.diff(np.log(CLOSE))
    out = compute("REALVOL", BARS, {"period": 10, "bars_per_year": 252.0})["value"]
    ref = np.sqrt(252.0 * np.convolve(r * r, np.ones(10), "valid") / 10)
    np.testing.assert_allclose(out[10:], ref, rtol=1e-9)


def test_pivots_use_previous_block() -> None:
    out = compute("PIVOTS", BARS, {"period": 24})
    h, lo, c = BARS["high"][:24].max(), BARS["low"][:24].min(), CLOSE[23]
    pp = (h + lo + c) / 3.0
    assert np.isnan(out["pp"][:24]).all()
    np.testing.assert_allclose(out["pp"][24:48], pp)
    np.testing.assert_allclose(out["r1"][24], 2 * pp - lo)
    np.testing.assert_allclose(out["s3"][24], lo - 2 * (h - pp))


def test_ichimoku_no_lookahead() -> None:
    """Changing bars after t never changes the outputs at t."""
    base = compute("ICHIMOKU", BARS, {})
    cut = 150
    later = {k: v.copy() for k, v in BARS.items()}
    later["high"][cut + 1 :] *= 3.0
    later["low"][cut + 1 :] *= 0.3
    moved = compute("ICHIMOKU", later, {})
    for key in base:
        np.testing.assert_array_equal(base[key][: cut + 1], moved[key][: cut + 1])
