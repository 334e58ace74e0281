"""Realised volatility for `sizing.method: vol_target`, one compiled function for both paths.

The event-driven kernel calls `realized_vol` on its window of recent closes when it sizes an
entry; the fast path calls the same compiled function on the same windows, so the two paths
size every trade with bit-identical floats.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from strategy_kernel.metrics import NS_PER_YEAR

F64 = npt.NDArray[np.float64]


def periods_per_year(timeframe_ns: int) -> float:
    """Bars per year (365.25 days, markets open around the clock), as in the metrics."""
    return NS_PER_YEAR / timeframe_ns


@njit(cache=True)
def _log_returns(closes: F64) -> F64:  # pragma: no cover - compiled
    """log(c[k+1] / c[k]); NaN where a close is not positive."""
    n = closes.shape[0] - 1
    out = np.empty(max(n, 0))
    for k in range(n):
        if closes[k] > 0.0 and closes[k + 1] > 0.0:
            out[k] = math.log(closes[k + 1] / closes[k])
        else:
            out[k] = math.nan
    return out


@njit(cache=True)
def _vol_of_returns(r: F64, per_year: float) -> float:  # pragma: no cover - compiled
    n = r.shape[0]
    if n < 2:
        return math.nan
    total = 0.0
    for k in range(n):
        if math.isnan(r[k]):
            return math.nan
        total += r[k]
    mean = total / n
    ss = 0.0
    for k in range(n):
        d = r[k] - mean
        ss += d * d
    return math.sqrt(ss / (n - 1)) * math.sqrt(per_year)


@njit(cache=True)
def realized_vol(closes: F64, per_year: float) -> float:  # pragma: no cover - compiled
    """Annualised sample stdev of close-to-close log returns over `closes` (a fraction, 0.6 = 60 %).

    NaN when there are fewer than two returns or a close is not positive: the caller refuses
    the entry with its rule instead of sizing on an undefined number.
    """
    return _vol_of_returns(_log_returns(closes), per_year)


@njit(cache=True)
def rolling_realized_vol(close: F64, lookback: int, per_year: float) -> F64:  # pragma: no cover
    """`realized_vol` of the `lookback` returns ending at each bar (NaN before enough history).

    The log returns are computed once; each window then sums the same floats in the same order
    as `realized_vol` on that window's closes, so the result is bit-identical.
    """
    out = np.full(close.shape[0], math.nan)
    r = _log_returns(close)
    for i in range(lookback, close.shape[0]):
        out[i] = _vol_of_returns(r[i - lookback : i], per_year)
    return out
