"""Streaming indicator kernels: ``update(state, o, h, l, c, v) -> tuple`` per indicator.

Each indicator has three pieces: ``init_<name>(kind, params) -> state`` (Python, builds the
float64 state array), ``update_<name>`` (numba, one bar) and ``run_<name>`` (numba, a whole
series through the same update, for backtest fast paths). Warm-up bars return NaN; a
non-finite input the indicator reads poisons the stream (NaN from then on), exactly like
`indicators.batch.compute`.

The first part of this file holds building blocks (running window sums, EMA, Wilder
smoothing, rolling variance, rolling max/min) that live in slices ``state[off : off + size]``
of the state array. They copy TA-Lib 0.8.1's arithmetic operation for operation (same running
sums, order, seeds, fused multiply-adds and re-anchoring), which is what makes the streaming
outputs bit-identical to TA-Lib's batch outputs rather than merely close.

Common header of every state: ``[kind, layout version, bars seen, poisoned flag]``.

Updates are O(1) (amortised for the blocks that re-anchor or rebuild once per window); CCI
recomputes its mean deviation over the window each bar (O(period)), as TA-Lib does.

Blocks and kernels share one file on purpose: numba's on-disk cache keys a function on its
own source file only, so a block edited in another file would leave stale inlined kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, cast

import llvmlite.ir as llvm_ir
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

H_KIND = 0
H_VERSION = 1
H_COUNT = 2
H_POISON = 3
HEADER = 4

# TA-Lib 0.8's TA_EPSILON (was 1e-8 before 0.8), used by TA_IS_ZERO / TA_IS_ZERO_SCALED.
TA_EPSILON = 0.00000000000001

NAN = np.nan


@intrinsic
def _fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """a * b + c with one rounding (LLVM llvm.fma.f64).

    TA-Lib 0.8 wheels are compiled with floating-point contraction, so some of its
    expressions (e.g. Wilder smoothing ``alpha*x + beta*prev``) round once where plain
    Python/numba arithmetic rounds twice; using the same fused form keeps us bit-exact.
    """
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        d = llvm_ir.DoubleType()
        fnty = llvm_ir.FunctionType(d, [d, d, d])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.f64")  # type: ignore[no-untyped-call]
        return builder.call(fn, args)

    return sig, codegen


# The intrinsic under a plain signature (numba resolves the same object inside @njit code).
fma = cast(Callable[[float, float, float], float], _fma)


@njit(cache=True, inline="always")
def ta_is_zero_scaled(v: float, scale: float) -> bool:
    """TA-Lib 0.8's TA_IS_ZERO_SCALED: |v| <= 1e-14 * scale (a flat-window test relative to price)."""
    return math.fabs(v) <= TA_EPSILON * scale


@njit(cache=True, inline="always")
def true_range(high: float, low: float, prev_close: float) -> float:
    """TA-Lib's TRUE_RANGE macro, comparisons in its order."""
    greatest = high - low
    val2 = math.fabs(prev_close - high)
    if val2 > greatest:
        greatest = val2
    val3 = math.fabs(prev_close - low)
    if val3 > greatest:
        greatest = val3
    return greatest


@njit(cache=True, inline="always")
def check_poison(state: np.ndarray, ok: bool) -> bool:
    """Mark the stream poisoned on the first non-finite input; True while it is poisoned."""
    if state[H_POISON] != 0.0 or not ok:
        state[H_POISON] = 1.0
        return True
    return False


# --- running-sum window (TA_INT_SMA / TA_SUM) ------------------------------------------
# layout: [period, count (capped at period - 1), total, pos, ring[period]]


def sum_size(period: int) -> int:
    return 4 + period


def sum_init(state: np.ndarray, off: int, period: int) -> None:
    state[off] = period


@njit(cache=True, inline="always")
def sum_step(s: np.ndarray, off: int, x: float) -> float:
    """Window sum as TA-Lib keeps it: add the newest, report, then subtract the oldest."""
    p = s[off]
    pos = s[off + 3]
    s[off + 4 + int(pos)] = x
    total = s[off + 2] + x
    npos = pos + 1.0
    if npos == p:
        npos = 0.0
    s[off + 3] = npos
    if s[off + 1] < p - 1.0:  # still filling the first window (count stops at period - 1)
        s[off + 1] += 1.0
        s[off + 2] = total
        return NAN
    s[off + 2] = total - s[off + 4 + int(npos)]
    return float(total)


@njit(cache=True, inline="always")
def sma_step(s: np.ndarray, off: int, x: float) -> float:
    """TA_INT_SMA: running window sum divided by the period."""
    total = sum_step(s, off, x)
    return float(total / s[off])


# --- rolling variance (TA-Lib 0.8 TA_VAR): sums of x - shift, re-anchored when stale -------
# layout: [period, count, pos, shift, total1, total2, barsSinceReseed, ring[period]]


def var_size(period: int) -> int:
    return 7 + period


def var_init(state: np.ndarray, off: int, period: int) -> None:
    state[off] = period
    state[off + 6] = 32 * period


@njit(cache=True, inline="always")
def var_step(s: np.ndarray, off: int, x: float) -> float:
    """Population variance of the last `period` values, TA-Lib 0.8's algorithm step for step.

    The sums are of deviations from a shift (first value, then the window mean at each
    re-anchor), re-anchored when cancellation looms, when a far outlier leaves, or every
    32 windows: O(period) then, amortised O(1).
    """
    p = int(s[off])
    inv = 1.0 / p
    ring = off + 7
    pos = int(s[off + 2])
    s[ring + pos] = x
    npos = pos + 1
    if npos == p:
        npos = 0
    s[off + 2] = npos
    cnt = s[off + 1] + 1.0
    s[off + 1] = cnt
    if cnt == 1.0:
        s[off + 3] = x
    shift = s[off + 3]
    d = x - shift
    t1 = s[off + 4] + d
    t2 = s[off + 5] + d * d
    if cnt < p:
        s[off + 4] = t1
        s[off + 5] = t2
        return NAN
    m1 = t1 * inv
    var = t2 * inv - m1 * m1
    d = s[ring + npos] - shift  # the trailing value x[t - p + 1]
    t1 -= d
    d *= d
    t2 -= d
    bsr = s[off + 6] - 1.0
    if var < 0.000001 * (t2 * inv) or d > 1000000.0 * t2 or bsr <= 0.0:
        bsr = 32.0 * p
        acc = 0.0
        for k in range(p):
            j = npos + k
            if j >= p:
                j -= p
            acc += s[ring + j]
        shift = acc * inv
        t1 = 0.0
        t2 = 0.0
        for k in range(p):
            j = npos + k
            if j >= p:
                j -= p
            d = s[ring + j] - shift
            t1 += d
            t2 += d * d
        m1 = t1 * inv
        var = t2 * inv - m1 * m1
        if var < 0.000000000001 * (t2 * inv):
            var = 0.0
        d = s[ring + npos] - shift
        t1 -= d
        t2 -= d * d
    s[off + 3] = shift
    s[off + 4] = t1
    s[off + 5] = t2
    s[off + 6] = bsr
    return float(var)


# --- EMA seeded by the SMA of its first `period` inputs (TA_INT_EMA, default settings) -
# layout: [period, k, count, seed sum, value]

EMA_SIZE = 5


def ema_init(state: np.ndarray, off: int, period: int) -> None:
    state[off] = period
    state[off + 1] = 2.0 / float(period + 1)


@njit(cache=True, inline="always")
def ema_step(s: np.ndarray, off: int, x: float) -> float:
    p = s[off]
    if p == 1.0:  # TA-Lib: no smoothing, an exact copy (the recursion would round)
        return x
    cnt = s[off + 2] + 1.0
    s[off + 2] = cnt
    if cnt < p:
        s[off + 3] += x
        return NAN
    if cnt == p:
        v = (s[off + 3] + x) / p
        s[off + 4] = v
        return float(v)
    prev = s[off + 4]
    v = fma(x - prev, s[off + 1], prev)  # ((x - prev) * k) + prev, fused as TA-Lib's build
    s[off + 4] = v
    return float(v)


# --- Wilder average seeded by a plain mean (ATR's smoothing, TA-Lib 0.8 form) ----------
# v = beta * v + alpha * x with beta = (p-1)/p, alpha = 1 - beta, fused as TA-Lib's build does.
# layout: [period, count, seed sum, value, beta, alpha]

WILDER_SIZE = 6


def wilder_init(state: np.ndarray, off: int, period: int) -> None:
    state[off] = period
    beta = float(period - 1) / float(period)
    state[off + 4] = beta
    state[off + 5] = 1.0 - beta


@njit(cache=True, inline="always")
def wilder_step(s: np.ndarray, off: int, x: float) -> float:
    p = s[off]
    cnt = s[off + 1] + 1.0
    s[off + 1] = cnt
    if cnt < p:
        s[off + 2] += x
        return NAN
    if cnt == p:
        v = (s[off + 2] + x) / p
        s[off + 3] = v
        return float(v)
    v = fma(s[off + 4], s[off + 3], s[off + 5] * x)
    s[off + 3] = v
    return float(v)


# --- rolling max / min over the last `period` values ---------------------------------------
# Van Herk / Gil-Werman in streaming form: bars are grouped in blocks of `period` from the
# first bar; the window ending at offset m of the current block is the suffix (m+1 ..) of the
# previous block plus the prefix (.. m) of the current one. The previous block's suffix
# extrema are rebuilt once per block (O(period) every period bars: amortised O(1)), the
# current prefix extremum is one compare per bar, and nothing branches on the data, which
# is what makes it several times faster than a monotonic deque on real prices.
# layout: [period, offset m in block, prefix extremum, values ring[period], suffix[period]]


def minmax_size(period: int) -> int:
    return 3 + 2 * period


def minmax_init(state: np.ndarray, off: int, period: int) -> None:
    state[off] = period


@njit(cache=True, inline="always")
def max_step(s: np.ndarray, off: int, t: float, x: float) -> float:
    """Highest of the last `period` values; `t` is the 0-based index of `x` in its series."""
    p = int(s[off])
    m = int(s[off + 1])
    ring = off + 3
    suf = off + 3 + p
    if m == 0 and t > 0.0:  # the previous block is complete: rebuild its suffix maxima
        best = s[ring + p - 1]
        s[suf + p - 1] = best
        for k in range(p - 2, -1, -1):
            v = s[ring + k]
            best = v if v > best else best
            s[suf + k] = best
    s[ring + m] = x
    pre = s[off + 2]
    pre = x if (m == 0 or x > pre) else pre
    s[off + 2] = pre
    s[off + 1] = 0.0 if m + 1 == p else float(m + 1)
    if m + 1 == p:
        return float(pre)
    other = s[suf + m + 1]
    return float(other if other > pre else pre)


@njit(cache=True, inline="always")
def min_step(s: np.ndarray, off: int, t: float, x: float) -> float:
    """Lowest of the last `period` values; `t` is the 0-based index of `x` in its series."""
    p = int(s[off])
    m = int(s[off + 1])
    ring = off + 3
    suf = off + 3 + p
    if m == 0 and t > 0.0:
        best = s[ring + p - 1]
        s[suf + p - 1] = best
        for k in range(p - 2, -1, -1):
            v = s[ring + k]
            best = v if v < best else best
            s[suf + k] = best
    s[ring + m] = x
    pre = s[off + 2]
    pre = x if (m == 0 or x < pre) else pre
    s[off + 2] = pre
    s[off + 1] = 0.0 if m + 1 == p else float(m + 1)
    if m + 1 == p:
        return float(pre)
    other = s[suf + m + 1]
    return float(other if other < pre else pre)


# =======================================================================================
# Indicator kernels
# =======================================================================================

LAYOUT_VERSION = 1.0
Params = Mapping[str, int | float]


def new_state(kind: int, size: int) -> np.ndarray:
    """A zeroed state with the common header filled in."""
    state = np.zeros(HEADER + size, dtype=np.float64)
    state[0] = float(kind)
    state[1] = LAYOUT_VERSION
    return state


@njit(cache=True, inline="always")
def _finite(x: float) -> bool:
    return math.isfinite(x)


# ---------------------------------------------------------------------------------------
# SMA: [sum block]
# ---------------------------------------------------------------------------------------


def init_sma(kind: int, p: Params) -> np.ndarray:
    period = int(p["period"])
    s = new_state(kind, sum_size(period))
    sum_init(s, HEADER, period)
    return s


@njit(cache=True, inline="always")
def update_sma(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(c)):
        return (NAN,)
    return (sma_step(s, HEADER, c),)


@njit(cache=True)
def run_sma(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_sma(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# EMA: [ema block]
# ---------------------------------------------------------------------------------------


def init_ema(kind: int, p: Params) -> np.ndarray:
    s = new_state(kind, EMA_SIZE)
    ema_init(s, HEADER, int(p["period"]))
    return s


@njit(cache=True, inline="always")
def update_ema(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(c)):
        return (NAN,)
    return (ema_step(s, HEADER, c),)


@njit(cache=True)
def run_ema(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_ema(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# WMA (TA-Lib 0.8): running periodSum/periodSub, rebuilt from the window every 8*period bars
# (amortised O(1)) so rounding residue cannot pile up.
# layout: [period, count (capped at period - 1), pos, periodSum, periodSub, trailingValue,
#          barsSinceReseed, divider, ring[period]]
# ---------------------------------------------------------------------------------------


def init_wma(kind: int, p: Params) -> np.ndarray:
    period = int(p["period"])
    s = new_state(kind, 8 + period)
    s[HEADER] = period
    s[HEADER + 6] = 8 * period
    s[HEADER + 7] = float(period) * (period + 1) / 2.0  # TA-Lib's divider, in double
    return s


@njit(cache=True, inline="always")
def update_wma(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(c)):
        return (NAN,)
    b = HEADER
    p = s[b]
    if p == 1.0:
        return (c,)
    ring = b + 8
    pos = s[b + 2]
    s[ring + int(pos)] = c
    npos = pos + 1.0
    if npos == p:
        npos = 0.0
    s[b + 2] = npos
    cnt = s[b + 1]
    if cnt < p - 1.0:  # still filling: weights 1, 2, ... as TA-Lib's priming scan
        cnt += 1.0
        s[b + 1] = cnt
        s[b + 4] += c
        s[b + 3] += c * cnt
        return (NAN,)
    inpos = int(npos)
    period_sub = s[b + 4] + c
    period_sub -= s[b + 5]
    period_sum = s[b + 3] + c * p
    bsr = s[b + 6] - 1.0
    if bsr <= 0.0:
        ip = int(p)
        bsr = 8.0 * p
        period_sub = 0.0
        period_sum = 0.0
        for k in range(ip):  # oldest first, weights 1..p, as TA-Lib's rebuild
            j = inpos + k
            if j >= ip:
                j -= ip
            x = s[ring + j]
            period_sub += x
            period_sum += x * (k + 1)
    s[b + 6] = bsr
    s[b + 5] = s[ring + inpos]  # x[t - p + 1], TA-Lib's next trailingValue
    out = period_sum / s[b + 7]
    s[b + 3] = period_sum - period_sub
    s[b + 4] = period_sub
    return (out,)


@njit(cache=True)
def run_wma(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_wma(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# DEMA / TEMA: chained EMA blocks
# ---------------------------------------------------------------------------------------


def init_dema(kind: int, p: Params) -> np.ndarray:
    s = new_state(kind, 2 * EMA_SIZE)
    ema_init(s, HEADER, int(p["period"]))
    ema_init(s, HEADER + EMA_SIZE, int(p["period"]))
    return s


@njit(cache=True, inline="always")
def update_dema(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(c)):
        return (NAN,)
    e1 = ema_step(s, HEADER, c)
    if math.isnan(e1):
        return (NAN,)
    e2 = ema_step(s, HEADER + EMA_SIZE, e1)
    if math.isnan(e2):
        return (NAN,)
    return ((2.0 * e1) - e2,)


@njit(cache=True)
def run_dema(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_dema(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


def init_tema(kind: int, p: Params) -> np.ndarray:
    s = new_state(kind, 3 * EMA_SIZE)
    for k in range(3):
        ema_init(s, HEADER + k * EMA_SIZE, int(p["period"]))
    return s


@njit(cache=True, inline="always")
def update_tema(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(c)):
        return (NAN,)
    e1 = ema_step(s, HEADER, c)
    if math.isnan(e1):
        return (NAN,)
    e2 = ema_step(s, HEADER + EMA_SIZE, e1)
    if math.isnan(e2):
        return (NAN,)
    e3 = ema_step(s, HEADER + 2 * EMA_SIZE, e2)
    if math.isnan(e3):
        return (NAN,)
    return (e3 + ((3.0 * e1) - (3.0 * e2)),)


@njit(cache=True)
def run_tema(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_tema(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# RSI (Wilder, TA-Lib classic): [period, prevValue, prevGain, prevLoss]
# ---------------------------------------------------------------------------------------

RSI_SIZE = 4


def rsi_init(s: np.ndarray, off: int, period: int) -> None:
    s[off] = period


@njit(cache=True, inline="always")
def rsi_step(s: np.ndarray, off: int, t: float, x: float) -> float:
    """One RSI bar; `t` is the 0-based index of this value in the RSI's input."""
    p = s[off]
    if t == 0.0:
        s[off + 1] = x
        return NAN
    diff = x - s[off + 1]
    s[off + 1] = x
    gain = s[off + 2]
    loss = s[off + 3]
    if t > p:
        loss *= p - 1.0
        gain *= p - 1.0
    if diff < 0.0:
        loss -= diff
    else:
        gain += diff
    if t < p:
        s[off + 2] = gain
        s[off + 3] = loss
        return NAN
    inv = 1.0 / p  # TA-Lib 0.8 scales by 1/period rather than dividing
    loss *= inv
    gain *= inv
    s[off + 2] = gain
    s[off + 3] = loss
    total = gain + loss
    if total > 0.0:  # TA-Lib 0.8 tests exact zero here (the classic 1e-8 guard is gone)
        return float(100.0 * (gain / total))
    return 0.0


def init_rsi(kind: int, p: Params) -> np.ndarray:
    s = new_state(kind, RSI_SIZE)
    rsi_init(s, HEADER, int(p["period"]))
    return s


@njit(cache=True, inline="always")
def update_rsi(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(c)):
        return (NAN,)
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    return (rsi_step(s, HEADER, t, c),)


@njit(cache=True)
def run_rsi(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_rsi(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# MACD (TA_INT_MACD): slow EMA from bar 0, fast EMA seeded over the `fast` bars ending at
# bar slow-1 (TA-Lib's alignment), signal EMA over the MACD line.
# layout: [slow, fast, slow ema, fast ema, signal ema]
# ---------------------------------------------------------------------------------------


def init_macd(kind: int, p: Params) -> np.ndarray:
    fast, slow = int(p["fastperiod"]), int(p["slowperiod"])
    if slow < fast:  # TA-Lib swaps them
        fast, slow = slow, fast
    s = new_state(kind, 2 + 3 * EMA_SIZE)
    s[HEADER] = slow
    s[HEADER + 1] = fast
    ema_init(s, HEADER + 2, slow)
    ema_init(s, HEADER + 2 + EMA_SIZE, fast)
    ema_init(s, HEADER + 2 + 2 * EMA_SIZE, int(p["signalperiod"]))
    return s


@njit(cache=True, inline="always")
def update_macd(
    s: np.ndarray, o: float, h: float, lo: float, c: float, v: float
) -> tuple[float, float, float]:
    if check_poison(s, _finite(c)):
        return (NAN, NAN, NAN)
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    slow_e = ema_step(s, HEADER + 2, c)
    if t < s[HEADER] - s[HEADER + 1]:
        return (NAN, NAN, NAN)
    fast_e = ema_step(s, HEADER + 2 + EMA_SIZE, c)
    if math.isnan(slow_e):
        return (NAN, NAN, NAN)
    macd = fast_e - slow_e
    sig = ema_step(s, HEADER + 2 + 2 * EMA_SIZE, macd)
    if math.isnan(sig):
        return (NAN, NAN, NAN)
    return (macd, sig, macd - sig)


@njit(cache=True)
def run_macd(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((3, n))
    for i in range(n):
        r = update_macd(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
        out[1, i] = r[1]
        out[2, i] = r[2]
    return out


# ---------------------------------------------------------------------------------------
# BBANDS (matype SMA): middle = TA-Lib's SMA; deviation = sqrt of TA-Lib 0.8's VAR (shifted,
# self-reseeding running sums, amortised O(1), exact after huge jumps).
# layout: [nbdevup, nbdevdn, sum block, var block]
# ---------------------------------------------------------------------------------------


def init_bbands(kind: int, p: Params) -> np.ndarray:
    period = int(p["period"])
    s = new_state(kind, 2 + sum_size(period) + var_size(period))
    s[HEADER] = float(p["nbdevup"])
    s[HEADER + 1] = float(p["nbdevdn"])
    sum_init(s, HEADER + 2, period)
    var_init(s, HEADER + 2 + sum_size(period), period)
    return s


@njit(cache=True, inline="always")
def update_bbands(
    s: np.ndarray, o: float, h: float, lo: float, c: float, v: float
) -> tuple[float, float, float]:
    if check_poison(s, _finite(c)):
        return (NAN, NAN, NAN)
    b = HEADER + 2
    p = int(s[b])
    total = sum_step(s, b, c)
    var = var_step(s, b + 4 + p, c)
    if math.isnan(total):
        return (NAN, NAN, NAN)
    ma = total / p
    std = math.sqrt(var)
    up = s[HEADER]
    dn = s[HEADER + 1]
    if up == dn:
        dev = std * up
        return (ma + dev, ma, ma - dev)
    # TA-Lib's build fuses the upper band's multiply-add in this branch (measured, bit-exact)
    return (fma(std, up, ma), ma, ma - std * dn)


@njit(cache=True)
def run_bbands(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((3, n))
    for i in range(n):
        r = update_bbands(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
        out[1, i] = r[1]
        out[2, i] = r[2]
    return out


# ---------------------------------------------------------------------------------------
# ATR / NATR: [prevClose, wilder block]; period 1 is TRANGE (as in TA-Lib)
# ---------------------------------------------------------------------------------------


def init_atr(kind: int, p: Params) -> np.ndarray:
    s = new_state(kind, 1 + WILDER_SIZE)
    wilder_init(s, HEADER + 1, int(p["period"]))
    return s


@njit(cache=True, inline="always")
def atr_step(s: np.ndarray, h: float, lo: float, c: float) -> float:
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    prev_close = s[HEADER]
    s[HEADER] = c
    if t == 0.0:
        return NAN
    tr = true_range(h, lo, prev_close)
    if s[HEADER + 1] == 1.0:
        return tr
    return wilder_step(s, HEADER + 1, tr)


@njit(cache=True, inline="always")
def update_atr(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c)):
        return (NAN,)
    return (atr_step(s, h, lo, c),)


@njit(cache=True)
def run_atr(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_atr(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


@njit(cache=True, inline="always")
def update_natr(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c)):
        return (NAN,)
    atr = atr_step(s, h, lo, c)
    if math.isnan(atr) or s[HEADER + 1] == 1.0:
        return (atr,)  # TA-Lib 0.8.1's NATR(period=1) is the raw true range (reproduced)
    if c != 0.0:  # TA-Lib 0.8 tests exact zero here
        return ((atr / c) * 100.0,)
    return (0.0,)


@njit(cache=True)
def run_natr(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_natr(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# ADX / PLUS_DI / MINUS_DI (Wilder DMI as in TA-Lib)
# layout: [period, prevHigh, prevLow, prevClose, plusDM, minusDM, TR, sumDX, ADX]
# ---------------------------------------------------------------------------------------

DMI_SIZE = 9


def init_dmi(kind: int, p: Params) -> np.ndarray:
    s = new_state(kind, DMI_SIZE)
    s[HEADER] = int(p["period"])
    return s


@njit(cache=True, inline="always")
def dmi_step(s: np.ndarray, h: float, lo: float, c: float) -> tuple[float, float, float, float]:
    """Advance one bar; returns (t, diffP, diffM, true range) with DM/TR sums updated."""
    b = HEADER
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    if t == 0.0:
        s[b + 1] = h
        s[b + 2] = lo
        s[b + 3] = c
        return (t, NAN, NAN, NAN)
    p = s[b]
    diff_p = h - s[b + 1]
    s[b + 1] = h
    diff_m = s[b + 2] - lo
    s[b + 2] = lo
    tr = true_range(h, lo, s[b + 3])
    s[b + 3] = c
    plus_dm = s[b + 4]
    minus_dm = s[b + 5]
    tr_sum = s[b + 6]
    if t < p:
        if diff_m > 0.0 and diff_p < diff_m:
            minus_dm += diff_m
        elif diff_p > 0.0 and diff_p > diff_m:
            plus_dm += diff_p
        tr_sum += tr
    else:
        minus_dm -= minus_dm / p
        plus_dm -= plus_dm / p
        if diff_m > 0.0 and diff_p < diff_m:
            minus_dm += diff_m
        elif diff_p > 0.0 and diff_p > diff_m:
            plus_dm += diff_p
        tr_sum = tr_sum - (tr_sum / p) + tr
    s[b + 4] = plus_dm
    s[b + 5] = minus_dm
    s[b + 6] = tr_sum
    return (t, diff_p, diff_m, tr)


@njit(cache=True, inline="always")
def update_plus_di(
    s: np.ndarray, o: float, h: float, lo: float, c: float, v: float
) -> tuple[float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c)):
        return (NAN,)
    t, diff_p, diff_m, tr = dmi_step(s, h, lo, c)
    p = s[HEADER]
    if p == 1.0:
        if t == 0.0:
            return (NAN,)
        if diff_p > 0.0 and diff_p > diff_m and tr != 0.0:
            return (diff_p / tr,)  # TA-Lib's period-1 DI is a fraction, not %
        return (0.0,)
    if t < p:
        return (NAN,)
    tr_sum = s[HEADER + 6]
    if tr_sum != 0.0:
        return (100.0 * (s[HEADER + 4] / tr_sum),)
    return (0.0,)


@njit(cache=True)
def run_plus_di(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_plus_di(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


@njit(cache=True, inline="always")
def update_minus_di(
    s: np.ndarray, o: float, h: float, lo: float, c: float, v: float
) -> tuple[float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c)):
        return (NAN,)
    t, diff_p, diff_m, tr = dmi_step(s, h, lo, c)
    p = s[HEADER]
    if p == 1.0:
        if t == 0.0:
            return (NAN,)
        if diff_m > 0.0 and diff_p < diff_m and tr != 0.0:
            return (diff_m / tr,)  # TA-Lib's period-1 DI is a fraction, not %
        return (0.0,)
    if t < p:
        return (NAN,)
    tr_sum = s[HEADER + 6]
    if tr_sum != 0.0:
        return (100.0 * (s[HEADER + 5] / tr_sum),)
    return (0.0,)


@njit(cache=True)
def run_minus_di(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_minus_di(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


@njit(cache=True, inline="always")
def update_adx(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c)):
        return (NAN,)
    t, _dp, _dm, _tr = dmi_step(s, h, lo, c)
    p = s[HEADER]
    if t < p:
        return (NAN,)
    tr_sum = s[HEADER + 6]
    dx = NAN
    if tr_sum != 0.0:
        minus_di = 100.0 * (s[HEADER + 5] / tr_sum)
        plus_di = 100.0 * (s[HEADER + 4] / tr_sum)
        total = minus_di + plus_di
        if total != 0.0:
            dx = 100.0 * (math.fabs(minus_di - plus_di) / total)
    if t < 2.0 * p - 1.0:
        if not math.isnan(dx):
            s[HEADER + 7] += dx
        return (NAN,)
    if t == 2.0 * p - 1.0:
        if not math.isnan(dx):
            s[HEADER + 7] += dx
        adx = s[HEADER + 7] / p
        s[HEADER + 8] = adx
        return (adx,)
    adx = s[HEADER + 8]
    if not math.isnan(dx):
        adx = ((adx * (p - 1.0)) + dx) / p
        s[HEADER + 8] = adx
    return (adx,)


@njit(cache=True)
def run_adx(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_adx(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# STOCH (slowk/slowd matype SMA): [max block, min block, slowk sum block, slowd sum block]
# ---------------------------------------------------------------------------------------


def _stoch_layout(fastk: int, slowk: int) -> tuple[int, int, int]:
    mx = HEADER
    mn = mx + minmax_size(fastk)
    sk = mn + minmax_size(fastk)
    sd = sk + sum_size(slowk)
    return mn, sk, sd


def init_stoch(kind: int, p: Params) -> np.ndarray:
    fastk, slowk, slowd = int(p["fastk_period"]), int(p["slowk_period"]), int(p["slowd_period"])
    mn, sk, sd = _stoch_layout(fastk, slowk)
    s = new_state(kind, sd - HEADER + sum_size(slowd))
    minmax_init(s, HEADER, fastk)
    minmax_init(s, mn, fastk)
    sum_init(s, sk, slowk)
    sum_init(s, sd, slowd)
    return s


@njit(cache=True, inline="always")
def stoch_fastk(s: np.ndarray, mx: int, mn: int, t: float, h: float, lo: float, c: float) -> float:
    """TA-Lib 0.8's fast %K: ((close - lowest) / (highest - lowest)) * 100; 0 for a window whose
    range is within 1e-14 of its extremes (TA_IS_ZERO_SCALED)."""
    highest = max_step(s, mx, t, h)
    lowest = min_step(s, mn, t, lo)
    if t < s[mx] - 1.0:
        return NAN
    diff = highest - lowest
    if not ta_is_zero_scaled(diff, math.fabs(highest) + math.fabs(lowest)):
        return ((c - lowest) / diff) * 100.0
    return 0.0


@njit(cache=True, inline="always")
def update_stoch(
    s: np.ndarray, o: float, h: float, lo: float, c: float, v: float
) -> tuple[float, float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c)):
        return (NAN, NAN)
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    mx = HEADER
    mn = mx + 3 + 2 * int(s[mx])
    sk = mn + 3 + 2 * int(s[mn])
    sd = sk + 4 + int(s[sk])
    fastk = stoch_fastk(s, mx, mn, t, h, lo, c)
    if math.isnan(fastk):
        return (NAN, NAN)
    slowk = sma_step(s, sk, fastk)
    if math.isnan(slowk):
        return (NAN, NAN)
    slowd = sma_step(s, sd, slowk)
    if math.isnan(slowd):
        return (NAN, NAN)
    return (slowk, slowd)


@njit(cache=True)
def run_stoch(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((2, n))
    for i in range(n):
        r = update_stoch(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
        out[1, i] = r[1]
    return out


# ---------------------------------------------------------------------------------------
# STOCHRSI (fastd matype SMA): STOCHF over the RSI series.
# layout: [rsi block, max block, min block, fastd sum block]
# ---------------------------------------------------------------------------------------


def init_stochrsi(kind: int, p: Params) -> np.ndarray:
    fastk, fastd = int(p["fastk_period"]), int(p["fastd_period"])
    mx = HEADER + RSI_SIZE
    mn = mx + minmax_size(fastk)
    fd = mn + minmax_size(fastk)
    s = new_state(kind, fd - HEADER + sum_size(fastd))
    rsi_init(s, HEADER, int(p["period"]))
    minmax_init(s, mx, fastk)
    minmax_init(s, mn, fastk)
    sum_init(s, fd, fastd)
    return s


@njit(cache=True, inline="always")
def update_stochrsi(
    s: np.ndarray, o: float, h: float, lo: float, c: float, v: float
) -> tuple[float, float]:
    if check_poison(s, _finite(c)):
        return (NAN, NAN)
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    rsi = rsi_step(s, HEADER, t, c)
    if math.isnan(rsi):
        return (NAN, NAN)
    mx = HEADER + RSI_SIZE
    mn = mx + 3 + 2 * int(s[mx])
    fd = mn + 3 + 2 * int(s[mn])
    t_rsi = t - s[HEADER]  # index within the RSI series
    fastk = stoch_fastk(s, mx, mn, t_rsi, rsi, rsi, rsi)
    if math.isnan(fastk):
        return (NAN, NAN)
    fastd = sma_step(s, fd, fastk)
    if math.isnan(fastd):
        return (NAN, NAN)
    return (fastk, fastd)


@njit(cache=True)
def run_stochrsi(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((2, n))
    for i in range(n):
        r = update_stochrsi(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
        out[1, i] = r[1]
    return out


# ---------------------------------------------------------------------------------------
# CCI: [period, slot, ring[period]] (slot = bar index mod period, summed in slot order like TA-Lib)
# ---------------------------------------------------------------------------------------


def init_cci(kind: int, p: Params) -> np.ndarray:
    period = int(p["period"])
    s = new_state(kind, 2 + period)
    s[HEADER] = period
    return s


@njit(cache=True, inline="always")
def update_cci(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c)):
        return (NAN,)
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    p = int(s[HEADER])
    last = (h + lo + c) / 3.0
    ring = HEADER + 2
    slot = int(s[HEADER + 1])
    s[ring + slot] = last
    slot += 1
    s[HEADER + 1] = 0.0 if slot == p else float(slot)
    if t < p - 1:
        return (NAN,)
    avg = 0.0
    for j in range(p):
        avg += s[ring + j]
    avg /= p
    dev = 0.0
    for j in range(p):
        dev += math.fabs(s[ring + j] - avg)
    dev /= p
    num = last - avg
    scale = math.fabs(avg)
    if not ta_is_zero_scaled(num, scale) and not ta_is_zero_scaled(dev, scale):
        return (num / (0.015 * dev),)
    return (0.0,)


@njit(cache=True)
def run_cci(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_cci(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# MFI (TA-Lib 0.8): a typical-price move within 1e-14 of the two prices carries no flow; a
# whole period of no-flow bars resets the running sums to exact zero; the numerator is
# clamped into [0, total].
# layout: [period, prevTP, posSum, negSum, nullRun, slot, pos ring[period], neg ring[period]]
# ---------------------------------------------------------------------------------------


def init_mfi(kind: int, p: Params) -> np.ndarray:
    period = int(p["period"])
    s = new_state(kind, 6 + 2 * period)
    s[HEADER] = period
    return s


@njit(cache=True, inline="always")
def update_mfi(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c) and _finite(v)):
        return (NAN,)
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    b = HEADER
    p = int(s[b])
    tp = (h + lo + c) / 3.0
    if t == 0.0:
        s[b + 1] = tp
        return (NAN,)
    slot = int(s[b + 5])  # (t - 1) mod period
    s[b + 5] = 0.0 if slot + 1 == p else float(slot + 1)
    pos_r = b + 6
    neg_r = b + 6 + p
    pos_sum = s[b + 2]
    neg_sum = s[b + 3]
    if t > p:
        pos_sum -= s[pos_r + slot]
        neg_sum -= s[neg_r + slot]
    prev = s[b + 1]
    diff = tp - prev
    scale = math.fabs(tp) + math.fabs(prev)
    s[b + 1] = tp
    flow = tp * v
    money = 0.0 if ta_is_zero_scaled(diff, scale) else flow
    pos_flow = 0.0 if diff < 0.0 else money
    neg_flow = money if diff < 0.0 else 0.0
    s[pos_r + slot] = pos_flow
    s[neg_r + slot] = neg_flow
    pos_sum += pos_flow
    neg_sum += neg_flow
    null_run = s[b + 4] + 1.0 if money == 0.0 else 0.0
    if null_run >= p:
        null_run = float(p)
        pos_sum = 0.0
        neg_sum = 0.0
    s[b + 4] = null_run
    s[b + 2] = pos_sum
    s[b + 3] = neg_sum
    if t < p:
        return (NAN,)
    total = pos_sum + neg_sum
    clamped = 0.0 if pos_sum < 0.0 else (total if pos_sum > total else pos_sum)
    if total <= 0.0:
        return (0.0,)
    return (100.0 * (clamped / total),)


@njit(cache=True)
def run_mfi(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_mfi(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# OBV: [prevClose, obv]
# ---------------------------------------------------------------------------------------


def init_obv(kind: int, p: Params) -> np.ndarray:
    return new_state(kind, 2)


@njit(cache=True, inline="always")
def update_obv(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(c) and _finite(v)):
        return (NAN,)
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    if t == 0.0:
        s[HEADER] = c
        s[HEADER + 1] = v
        return (v,)
    obv = s[HEADER + 1]
    prev = s[HEADER]
    if c > prev:
        obv += v
    elif c < prev:
        obv -= v
    s[HEADER] = c
    s[HEADER + 1] = obv
    return (obv,)


@njit(cache=True)
def run_obv(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_obv(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# ROC: [period, slot, count, ring[period]] (slot = t mod period holds close[t - period])
# ---------------------------------------------------------------------------------------


def init_roc(kind: int, p: Params) -> np.ndarray:
    period = int(p["period"])
    s = new_state(kind, 3 + period)
    s[HEADER] = period
    return s


@njit(cache=True, inline="always")
def update_roc(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(c)):
        return (NAN,)
    p = s[HEADER]
    k = s[HEADER + 1]  # t mod period: this slot holds close[t - period]
    slot = HEADER + 3 + int(k)
    prev = s[slot]
    s[slot] = c
    k += 1.0
    if k == p:
        k = 0.0
    s[HEADER + 1] = k
    if s[HEADER + 2] < p:  # bars seen, capped at period
        s[HEADER + 2] += 1.0
        return (NAN,)
    if prev != 0.0:
        return (((c / prev) - 1.0) * 100.0,)
    return (0.0,)


@njit(cache=True)
def run_roc(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_roc(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# WILLR / DONCHIAN: rolling highest high and lowest low
# layout: [max block, min block]
# ---------------------------------------------------------------------------------------


def init_hl_window(kind: int, p: Params) -> np.ndarray:
    period = int(p["period"])
    s = new_state(kind, 2 * minmax_size(period))
    minmax_init(s, HEADER, period)
    minmax_init(s, HEADER + minmax_size(period), period)
    return s


@njit(cache=True, inline="always")
def update_willr(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c)):
        return (NAN,)
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    mn = HEADER + 3 + 2 * int(s[HEADER])
    highest = max_step(s, HEADER, t, h)
    lowest = min_step(s, mn, t, lo)
    if t < s[HEADER] - 1.0:
        return (NAN,)
    diff = highest - lowest
    if not ta_is_zero_scaled(diff, math.fabs(highest) + math.fabs(lowest)):
        return (((highest - c) / diff) * -100.0,)
    return (0.0,)


@njit(cache=True)
def run_willr(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_willr(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


@njit(cache=True, inline="always")
def update_donchian(
    s: np.ndarray, o: float, h: float, lo: float, c: float, v: float
) -> tuple[float, float, float]:
    if check_poison(s, _finite(h) and _finite(lo)):
        return (NAN, NAN, NAN)
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    mn = HEADER + 3 + 2 * int(s[HEADER])
    highest = max_step(s, HEADER, t, h)
    lowest = min_step(s, mn, t, lo)
    if t < s[HEADER] - 1.0:
        return (NAN, NAN, NAN)
    return (highest, (highest + lowest) / 2.0, lowest)


@njit(cache=True)
def run_donchian(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((3, n))
    for i in range(n):
        r = update_donchian(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
        out[1, i] = r[1]
        out[2, i] = r[2]
    return out


# ---------------------------------------------------------------------------------------
# SUPERTREND (TA_SUPERTREND): [multiplier, prevClose, finalUpper, finalLower, isUptrend,
# wilder block]
# ---------------------------------------------------------------------------------------


def init_supertrend(kind: int, p: Params) -> np.ndarray:
    s = new_state(kind, 5 + WILDER_SIZE)
    s[HEADER] = float(p["multiplier"])
    wilder_init(s, HEADER + 5, int(p["period"]))
    return s


@njit(cache=True, inline="always")
def update_supertrend(
    s: np.ndarray, o: float, h: float, lo: float, c: float, v: float
) -> tuple[float, float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c)):
        return (NAN, NAN)
    b = HEADER
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    prev_close = s[b + 1]
    s[b + 1] = c
    if t == 0.0:
        return (NAN, NAN)
    atr = wilder_step(s, b + 5, true_range(h, lo, prev_close))
    if math.isnan(atr):
        return (NAN, NAN)
    median = (h + lo) / 2.0
    band = s[b] * atr
    if t == s[b + 5]:  # first output bar: unclamped bands, trend seeded long
        s[b + 2] = median + band
        s[b + 3] = median - band
        s[b + 4] = 1.0
        return (s[b + 3], 1.0)
    basic_upper = median + band
    basic_lower = median - band
    final_upper = s[b + 2]
    final_lower = s[b + 3]
    if basic_upper < final_upper or prev_close > final_upper:
        final_upper = basic_upper
    if basic_lower > final_lower or prev_close < final_lower:
        final_lower = basic_lower
    s[b + 2] = final_upper
    s[b + 3] = final_lower
    if s[b + 4] == 1.0:
        if c < final_lower:
            s[b + 4] = 0.0
    elif c > final_upper:
        s[b + 4] = 1.0
    if s[b + 4] == 1.0:
        return (final_lower, 1.0)
    return (final_upper, -1.0)


@njit(cache=True)
def run_supertrend(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((2, n))
    for i in range(n):
        r = update_supertrend(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
        out[1, i] = r[1]
    return out


# ---------------------------------------------------------------------------------------
# VWAP (anchored every `anchor_bars` bars, 0 = never): [anchor, sumPV, sumV]
# ---------------------------------------------------------------------------------------


def init_vwap(kind: int, p: Params) -> np.ndarray:
    s = new_state(kind, 3)
    s[HEADER] = float(p["anchor_bars"])
    return s


@njit(cache=True, inline="always")
def update_vwap(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(h) and _finite(lo) and _finite(c) and _finite(v)):
        return (NAN,)
    t = s[H_COUNT]
    s[H_COUNT] = t + 1.0
    anchor = s[HEADER]
    if anchor > 0.0 and t % anchor == 0.0:
        s[HEADER + 1] = 0.0
        s[HEADER + 2] = 0.0
    typ = (h + lo + c) / 3.0
    pv = typ * v
    sum_pv = s[HEADER + 1] + pv
    sum_v = s[HEADER + 2] + v
    s[HEADER + 1] = sum_pv
    s[HEADER + 2] = sum_v
    if sum_v > 0.0:
        return (sum_pv / sum_v,)
    return (NAN,)


@njit(cache=True)
def run_vwap(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_vwap(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out


# ---------------------------------------------------------------------------------------
# ZSCORE: (close - SMA) / sqrt(VAR) with TA-Lib's SMA and VAR arithmetic; 0 for a flat window.
# layout: [sum block, var block]
# ---------------------------------------------------------------------------------------


def init_zscore(kind: int, p: Params) -> np.ndarray:
    period = int(p["period"])
    s = new_state(kind, sum_size(period) + var_size(period))
    sum_init(s, HEADER, period)
    var_init(s, HEADER + sum_size(period), period)
    return s


@njit(cache=True, inline="always")
def update_zscore(s: np.ndarray, o: float, h: float, lo: float, c: float, v: float) -> tuple[float]:
    if check_poison(s, _finite(c)):
        return (NAN,)
    p = int(s[HEADER])
    total = sum_step(s, HEADER, c)
    var = var_step(s, HEADER + 4 + p, c)
    if math.isnan(total):
        return (NAN,)
    if var > 0.0:
        return ((c - total / p) / math.sqrt(var),)
    return (0.0,)


@njit(cache=True)
def run_zscore(
    s: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    n = c.shape[0]
    out = np.empty((1, n))
    for i in range(n):
        r = update_zscore(s, o[i], h[i], lo[i], c[i], v[i])
        out[0, i] = r[0]
    return out
