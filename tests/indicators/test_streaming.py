"""Streaming kernels equal their batch twins (TA-Lib where it exists) on every bar."""

from __future__ import annotations

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st
from indicators_testkit import Bars, assert_same, bars_from, series, stream_params

from indicators.batch import compute
from indicators.errors import StreamingUnsupportedError, StreamStateError
from indicators.registry import STREAMING, get_indicator
from indicators.streaming import make_stream, run_stream, streaming_names

NAMES = streaming_names()


def _batch(name: str, bars: Bars, params: dict[str, int | float]) -> dict[str, np.ndarray]:
    return compute(name, bars, params)


def _run(name: str, bars: Bars, params: dict[str, int | float]) -> dict[str, np.ndarray]:
    return run_stream(
        name, params, bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"]
    )


def test_streaming_table_matches_registry() -> None:
    assert set(NAMES) == set(STREAMING)
    for name in NAMES:
        assert get_indicator(name).streaming


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60)
@given(data=st.data())
def test_run_stream_equals_batch(name: str, data: st.DataObject) -> None:
    bars = data.draw(series())
    params = data.draw(stream_params(name))
    want = _batch(name, bars, params)
    got = _run(name, bars, params)
    assert list(got) == list(want)
    for key in want:
        assert_same(name, key, got[key], want[key])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10)
@given(data=st.data())
def test_python_updates_equal_run_stream_and_warmup(name: str, data: st.DataObject) -> None:
    """Bar-by-bar `Stream.update` gives exactly run_stream's numbers; NaN for exactly `warmup` bars."""
    bars = data.draw(series(min_size=30, max_size=80))
    params = data.draw(stream_params(name))
    stream = make_stream(name, params)
    rows = [
        stream.update(*(bars[k][i] for k in ("open", "high", "low", "close", "volume")))
        for i in range(bars["close"].shape[0])
    ]
    got = np.array(rows).T
    ref = _run(name, bars, params)
    for j, key in enumerate(stream.outputs):
        np.testing.assert_array_equal(got[j], ref[key])
        if name != "VWAP":  # VWAP is also NaN until the first traded volume
            lead = np.flatnonzero(~np.isnan(got[j]))
            assert lead.size == 0 or lead[0] == stream.warmup


@pytest.mark.skipif(
    not talib.__ta_version__.startswith(b"0.8.1"),
    reason="bit-identity is pinned to the TA-Lib 0.8.1 build; other builds keep the 1e-9 contract",
)
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40)
@given(data=st.data())
def test_bit_identical_to_talib_081(name: str, data: st.DataObject) -> None:
    """Stronger than the 1e-9 contract: with TA-Lib 0.8.1 every value is the same double.

    The kernels copy TA-Lib's arithmetic, including where its build fuses a multiply-add
    (EMA, ATR/Wilder, the MACD signal, BBANDS' upper band), re-anchors running sums (WMA,
    VAR) or scales by 1/period (RSI); any drift in that copy shows up here first.
    """
    bars = data.draw(series())
    params = data.draw(stream_params(name))
    want = _batch(name, bars, params)
    got = _run(name, bars, params)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}.{key}")


@pytest.mark.parametrize("name", NAMES)
def test_long_series(name: str) -> None:
    """20k bars of a noisy walk with regime changes: no drift between streaming and batch."""
    rng = np.random.default_rng(7)
    n = 20_000
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    close[5_000:] *= 1e3
    close[12_000:] *= 1e-5
    spread = rng.uniform(0.0, 0.01, n)
    bars = bars_from(close, spread, rng.uniform(0.0, 1e3, n))
    want = _batch(name, bars, {})
    got = _run(name, bars, {})
    for key in want:
        assert_same(name, key, got[key], want[key])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10)
@given(data=st.data())
def test_snapshot_restore_continues_identically(name: str, data: st.DataObject) -> None:
    bars = data.draw(series(min_size=10, max_size=60))
    params = data.draw(stream_params(name))
    cut = data.draw(st.integers(0, bars["close"].shape[0]))
    cols = [bars[k] for k in ("open", "high", "low", "close", "volume")]
    a = make_stream(name, params)
    for i in range(cut):
        a.update(*(c[i] for c in cols))
    snap = a.snapshot()
    b = make_stream(name, params)
    b.restore(snap)
    for i in range(cut, bars["close"].shape[0]):
        np.testing.assert_array_equal(
            a.update(*(c[i] for c in cols)), b.update(*(c[i] for c in cols))
        )
    np.testing.assert_array_equal(a.snapshot(), b.snapshot())
    assert a.snapshot().shape == make_stream(name, params).snapshot().shape  # O(1) state


def test_restore_refuses_foreign_snapshots() -> None:
    rsi = make_stream("RSI", {"period": 14})
    with pytest.raises(StreamStateError, match="shape"):
        rsi.restore(make_stream("SMA", {"period": 30}).snapshot())
    with pytest.raises(StreamStateError, match="kind/version"):
        rsi.restore(make_stream("EMA", {"period": 14}).snapshot()[: rsi.snapshot().shape[0]])


def test_reset_returns_to_initial_state() -> None:
    s = make_stream("EMA", {"period": 3})
    first = [s.update(1, 1, 1, x, 1) for x in (1.0, 2.0, 3.0, 4.0)]
    s.reset()
    again = [s.update(1, 1, 1, x, 1) for x in (1.0, 2.0, 3.0, 4.0)]
    assert first[2:] == again[2:] and first[2] == (2.0,)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_input_poisons_like_batch(name: str) -> None:
    """The first non-finite input the indicator reads makes every later output NaN, in both paths."""
    rng = np.random.default_rng(3)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 120)))
    bars = bars_from(close, rng.uniform(0, 0.01, 120), rng.uniform(1, 100, 120))
    for col in get_indicator(name).inputs:
        poisoned = {k: v.copy() for k, v in bars.items()}
        poisoned[col][90] = np.nan
        want = _batch(name, poisoned, {})
        got = _run(name, poisoned, {})
        for key in want:
            assert np.isnan(got[key][90:]).all() and np.isnan(want[key][90:]).all()
            assert_same(name, key, got[key], want[key])


def test_constant_series_rules() -> None:
    """TA-Lib's 0/0 rules are reproduced: RSI, STOCH, WILLR, CCI, ZSCORE give 0 on a flat series."""
    flat = np.full(60, 42.0)
    for name, key in (
        ("RSI", "value"),
        ("STOCH", "slowk"),
        ("WILLR", "value"),
        ("CCI", "value"),
        ("ZSCORE", "value"),
    ):
        out = run_stream(name, {}, flat, flat, flat, flat, flat)[key]
        w = get_indicator(name).warmup()
        assert np.all(out[w:] == 0.0), name
        assert_same(
            name,
            key,
            out,
            compute(name, dict.fromkeys(("open", "high", "low", "close", "volume"), flat))[key],
        )


def test_unsupported_streaming_raises_with_fix() -> None:
    with pytest.raises(StreamingUnsupportedError, match=r"batch\.compute"):
        make_stream("KAMA", {})
    with pytest.raises(StreamingUnsupportedError, match="matype=0"):
        make_stream("BBANDS", {"matype": 1})


def test_vwap_session_anchor_resets() -> None:
    h = np.array([10.0, 12, 14, 16, 18, 20])
    v = np.array([1.0, 1, 1, 1, 1, 1])
    out = run_stream("VWAP", {"anchor_bars": 3}, h, h, h, h, v)["value"]
    np.testing.assert_allclose(out, [10, 11, 12, 16, 17, 18])
    no_volume = run_stream("VWAP", {}, h, h, h, h, np.zeros(6))["value"]
    assert np.isnan(no_volume).all()


def test_rsi_on_tiny_prices_matches_talib() -> None:
    """RSI follows TA-Lib 0.8's exact-zero guard, so sub-1e-4 prices still give a real RSI."""
    close = 1e-6 * np.exp(np.cumsum(np.random.default_rng(1).normal(0.0, 0.02, 40)))
    ours = run_stream("RSI", {"period": 2}, close, close, close, close, close)["value"]
    talib = compute(
        "RSI", dict.fromkeys(("open", "high", "low", "close", "volume"), close), {"period": 2}
    )["value"]
    assert np.any(ours[2:] != 0.0)
    assert_same("RSI", "value", ours, talib)


@pytest.mark.parametrize("name", NAMES)
def test_unread_columns_may_be_nan(name: str) -> None:
    """Callers may pass NaN for columns an indicator does not read (the node layer does)."""
    rng = np.random.default_rng(5)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 80)))
    bars = bars_from(close, rng.uniform(0, 0.01, 80), rng.uniform(1, 100, 80))
    cols = ("open", "high", "low", "close", "volume")
    reads = set(get_indicator(name).inputs)
    masked = [bars[k] if k in reads else np.full(80, np.nan) for k in cols]
    want = _run(name, bars, {})
    got = run_stream(name, {}, *masked)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
