"""Registry: names, params, ranges, warm-ups and error messages."""

from __future__ import annotations

import numpy as np
import pytest
import talib

from indicators._talib_ranges import TALIB_PARAM_RANGES
from indicators.errors import IndicatorError, IndicatorParamError, UnknownIndicatorError
from indicators.registry import EXCLUDED_TALIB, get_indicator, list_indicators, validate_params


def test_registry_covers_talib_plus_extras() -> None:
    names = set(list_indicators())
    assert set(talib.get_functions()) - set(EXCLUDED_TALIB) <= names
    assert {
        "VWAP",
        "SUPERTREND",
        "KC",
        "DONCHIAN",
        "ICHIMOKU",
        "PIVOTS",
        "ZSCORE",
        "REALVOL",
    } <= names
    assert get_indicator("keltner").name == "KC"


def test_spec_shapes() -> None:
    macd = get_indicator("MACD")
    assert macd.outputs == ("macd", "macdsignal", "macdhist")
    assert get_indicator("RSI").outputs == ("value",)
    assert get_indicator("OBV").inputs == ("close", "volume")
    assert macd.warmup() == 33 and macd.warmup({"signalperiod": 1}) == 25
    assert get_indicator("CDLDOJI").group == "pattern"


@pytest.mark.parametrize("name", sorted(n for n in TALIB_PARAM_RANGES if n not in EXCLUDED_TALIB))
def test_integer_ranges_match_talib(name: str) -> None:
    """TA-Lib itself accepts each integer minimum and rejects one below it."""
    spec = get_indicator(name)
    x = np.linspace(1.0, 2.0, 300)
    args = [x * (1.1 if c == "high" else 0.9 if c == "low" else 1.0) for c in spec.inputs]
    fn = getattr(talib, name)
    for key, p in spec.params.items():
        if p.type is not int or "matype" in key:
            continue
        ta_key = spec.talib_params[key]
        fn(*args, **{ta_key: int(p.min)})
        with pytest.raises(Exception, match=r"Bad Parameter"):
            fn(*args, **{ta_key: int(p.min) - 1})


def test_unknown_indicator_suggests() -> None:
    with pytest.raises(UnknownIndicatorError, match="Did you mean RSI"):
        get_indicator("RSX")
    assert issubclass(UnknownIndicatorError, IndicatorError)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"period": 0}, r"RSI.period = 0 is out of range; allowed: int in \[2, 100000\]"),
        ({"period": -3}, "out of range"),
        ({"period": 14.0}, "expected int, got float"),
        ({"period": "14"}, "expected int, got str"),
        ({"period": True}, "got bool"),
        ({"timeperiod": 14}, "Did you mean 'period'"),
        ({"perod": 14}, "unknown parameter 'perod'"),
    ],
)
def test_validate_params_errors(params: dict[str, object], match: str) -> None:
    with pytest.raises(IndicatorParamError, match=match):
        validate_params("RSI", params)


def test_validate_params_fills_defaults_and_converts() -> None:
    assert validate_params("BBANDS", {"nbdevup": 1}) == {
        "period": 20,
        "nbdevup": 1.0,
        "nbdevdn": 2.0,
        "matype": 0,
    }
    with pytest.raises(IndicatorParamError, match="not a finite number"):
        validate_params("BBANDS", {"nbdevup": float("nan")})
