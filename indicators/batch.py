"""Batch indicators: whole columns in, whole columns out (TA-Lib where it has the function).

NaN / inf rule (the same in the streaming kernels, so batch and streaming always agree):
the first bar at which any *input the indicator reads* is not finite poisons the indicator:
every output from that bar on is NaN. TA-Lib would propagate NaN through some functions
and silently skip it in others (MAX, VWAP), so we never hand it a non-finite value: the
finite prefix is computed and the rest is NaN. ``nan_policy="raise"`` turns the same
situation into an `IndicatorInputError` naming the column and the bar.

Outputs are float64; integer TA-Lib outputs (candlestick patterns, index functions,
SUPERTREND's trend) are converted, and the first ``warmup`` bars of every output are NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt

from indicators.errors import IndicatorInputError
from indicators.registry import IndicatorSpec, ParamValue, get_indicator, validate_params

FloatArray = npt.NDArray[np.float64]
NanPolicy = Literal["propagate", "raise"]


def compute(
    name: str,
    columns: Mapping[str, npt.ArrayLike],
    params: Mapping[str, object] | None = None,
    *,
    nan_policy: NanPolicy = "propagate",
) -> dict[str, FloatArray]:
    """Compute indicator `name` over whole columns; returns {output name: float64 array}."""
    spec = get_indicator(name)
    p = validate_params(spec.name, params)
    arrays = _input_arrays(spec, columns)
    n = arrays[0].shape[0]
    if nan_policy not in ("propagate", "raise"):
        raise IndicatorInputError(f"nan_policy must be 'propagate' or 'raise', got {nan_policy!r}")
    first_bad = _first_non_finite(arrays)
    if first_bad < n and nan_policy == "raise":
        col = next(
            c for c, a in zip(spec.inputs, arrays, strict=True) if not np.isfinite(a[first_bad])
        )
        raise IndicatorInputError(
            f"{spec.name}: column {col!r} has a non-finite value {float(arrays[spec.inputs.index(col)][first_bad])!r} "
            f"at bar {first_bad}; fill or drop the gap upstream, or pass nan_policy='propagate' to "
            f"get NaN from that bar on."
        )
    warmup = spec.warmup(p)
    out = {k: np.full(n, np.nan) for k in spec.outputs}
    m = first_bad  # bars [0, m) are finite
    if m > warmup:
        prefix = [a[:m] for a in arrays]
        raw = (
            _compute_talib(spec, prefix, p)
            if spec.source == "talib"
            else _EXTRAS[spec.name](prefix, p)
        )
        for key in spec.outputs:
            values = raw[key]
            out[key][warmup:m] = values[warmup:m]
    return out


def _input_arrays(spec: IndicatorSpec, columns: Mapping[str, npt.ArrayLike]) -> list[FloatArray]:
    missing = [c for c in spec.inputs if c not in columns]
    if missing:
        raise IndicatorInputError(
            f"{spec.name} needs columns {list(spec.inputs)}; missing {missing} (given: "
            f"{sorted(columns)}). Pass every input column by that name."
        )
    arrays: list[FloatArray] = []
    for col in spec.inputs:
        try:
            a = np.ascontiguousarray(columns[col], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise IndicatorInputError(
                f"{spec.name}: column {col!r} cannot be read as float64 ({exc}); pass numbers."
            ) from exc
        if a.ndim != 1:
            raise IndicatorInputError(
                f"{spec.name}: column {col!r} must be one-dimensional, got shape {a.shape}."
            )
        arrays.append(a)
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) > 1:
        shapes = {c: a.shape[0] for c, a in zip(spec.inputs, arrays, strict=True)}
        raise IndicatorInputError(
            f"{spec.name}: input columns differ in length {shapes}; align them on the same bars."
        )
    return arrays


def _first_non_finite(arrays: list[FloatArray]) -> int:
    n = arrays[0].shape[0]
    bad = np.zeros(n, dtype=bool)
    for a in arrays:
        bad |= ~np.isfinite(a)
    idx = np.flatnonzero(bad)
    return int(idx[0]) if idx.size else n


def _compute_talib(
    spec: IndicatorSpec, arrays: list[FloatArray], p: Mapping[str, ParamValue]
) -> dict[str, FloatArray]:
    import talib

    fn = getattr(talib, spec.name)
    kwargs = {spec.talib_params[k]: v for k, v in p.items()}
    result = fn(*arrays, **kwargs)
    results = result if isinstance(result, tuple) else (result,)
    return {
        key: np.asarray(r, dtype=np.float64) for key, r in zip(spec.outputs, results, strict=True)
    }


# --- extras: indicators TA-Lib lacks, or that we extend -------------------------------------


def _vwap(arrays: list[FloatArray], p: Mapping[str, ParamValue]) -> dict[str, FloatArray]:
    """TA-Lib's VWAP per session slice (its documented way to anchor), NaN before any volume."""
    import talib

    high, low, close, volume = arrays
    n = close.shape[0]
    step = int(p["anchor_bars"]) or n
    out = np.full(n, np.nan)
    for start in range(0, n, step):
        sl = slice(start, min(start + step, n))
        vwap = talib.VWAP(high[sl], low[sl], close[sl], volume[sl])
        traded = np.cumsum(volume[sl]) > 0.0
        out[sl] = np.where(traded, vwap, np.nan)
    return {"value": out}


def _rolling_max(a: FloatArray, period: int) -> FloatArray:
    out = np.full(a.shape[0], np.nan)
    if a.shape[0] >= period:
        out[period - 1 :] = np.lib.stride_tricks.sliding_window_view(a, period).max(axis=1)
    return out


def _rolling_min(a: FloatArray, period: int) -> FloatArray:
    out = np.full(a.shape[0], np.nan)
    if a.shape[0] >= period:
        out[period - 1 :] = np.lib.stride_tricks.sliding_window_view(a, period).min(axis=1)
    return out


def _shift(a: FloatArray, k: int) -> FloatArray:
    if k == 0:
        return a
    out = np.full(a.shape[0], np.nan)
    out[k:] = a[: a.shape[0] - k]
    return out


def _ichimoku(arrays: list[FloatArray], p: Mapping[str, ParamValue]) -> dict[str, FloatArray]:
    """Spans are shifted forward (value at bar t uses bars <= t - displacement): no look-ahead."""
    high, low = arrays

    def mid(period: int) -> FloatArray:
        return (_rolling_max(high, period) + _rolling_min(low, period)) / 2.0

    tenkan = mid(int(p["tenkan"]))
    kijun = mid(int(p["kijun"]))
    disp = int(p["displacement"])
    return {
        "tenkan": tenkan,
        "kijun": kijun,
        "senkou_a": _shift((tenkan + kijun) / 2.0, disp),
        "senkou_b": _shift(mid(int(p["senkou"])), disp),
    }


def _pivots(arrays: list[FloatArray], p: Mapping[str, ParamValue]) -> dict[str, FloatArray]:
    """Sessions are blocks of `period` bars from the first bar; each uses the previous block's H/L/C."""
    high, low, close = arrays
    n = close.shape[0]
    period = int(p["period"])
    starts = np.arange(0, n, period)
    h = np.maximum.reduceat(high, starts)
    lo = np.minimum.reduceat(low, starts)
    c = close[np.minimum(starts + period, n) - 1]
    pp = (h + lo + c) / 3.0
    levels = {
        "pp": pp,
        "r1": 2.0 * pp - lo,
        "s1": 2.0 * pp - h,
        "r2": pp + (h - lo),
        "s2": pp - (h - lo),
        "r3": h + 2.0 * (pp - lo),
        "s3": lo - 2.0 * (h - pp),
    }
    block = np.arange(n) // period
    out: dict[str, FloatArray] = {}
    for key, per_block in levels.items():
        values = np.full(n, np.nan)
        has_prev = block >= 1
        values[has_prev] = per_block[block[has_prev] - 1]
        out[key] = values
    return out


def _zscore(arrays: list[FloatArray], p: Mapping[str, ParamValue]) -> dict[str, FloatArray]:
    """(x - SMA) / sqrt(VAR) over `period` bars (TA-Lib's SMA and population VAR); 0 where flat."""
    import talib

    (close,) = arrays
    period = int(p["period"])
    mean = talib.SMA(close, timeperiod=period)
    var = talib.VAR(close, timeperiod=period, nbdev=1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(var > 0.0, (close - mean) / np.sqrt(np.where(var > 0.0, var, 1.0)), 0.0)
    z[np.isnan(mean)] = np.nan
    return {"value": z}


def _realvol(arrays: list[FloatArray], p: Mapping[str, ParamValue]) -> dict[str, FloatArray]:
    """sqrt(bars_per_year * mean of squared log returns over `period` bars); NaN for prices <= 0."""
    import talib

    (close,) = arrays
    n = close.shape[0]
    period = int(p["period"])
    out = np.full(n, np.nan)
    if n <= period:
        return {"value": out}
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log(close[1:] / close[:-1])
    total = talib.SUM(r * r, timeperiod=period)
    # A running sum of non-negative terms can dip below 0 by rounding after a huge value leaves.
    total = np.maximum(total, 0.0)
    out[1:] = np.sqrt(total * (float(p["bars_per_year"]) / period))
    return {"value": out}


_EXTRAS = {
    "VWAP": _vwap,
    "ICHIMOKU": _ichimoku,
    "PIVOTS": _pivots,
    "ZSCORE": _zscore,
    "REALVOL": _realvol,
}
