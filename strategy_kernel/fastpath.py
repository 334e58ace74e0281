"""Backtest fast path: the vectorised DAG plus one numba loop, trade for trade the event-driven run.

`fast_backtest` computes every node over the whole bar array (`fastpath_dag.evaluate`), then
replays in one `@njit` loop what `run_backtest` does with the real kernels: per bar, first the
simulated venue matches the working orders (GTD expiry, market -> stops -> limits, fills with
slippage and ceil fees, reduce-only brackets `<id>.sl`/`<id>.tpN` placed by the entry's fill,
flat -> remaining reduce-only orders cancelled), then the strategy state machine decides on the
close (gates, the drawdown breaker, sizing, stop/targets, entry, invalid_if, timeout,
break-even/trailing, exit condition, time exit). All money is integer ticks/lots/notional units, as in the kernels.

The bracket-activation rule is the order kernel's: `bracket_same_bar()` probes the real kernel
once (are children live in the parent's fill bar?) and the loop follows the answer.

Also replayed: `one_shot` (no entry decided at/after `expires_at`, a working entry cancelled at
the first decision from then on, at most `max_entries` opened trades), `data:` inputs (other
symbols' columns aligned point-in-time by `fastpath_dag.align_data`, on clocks of their own) and
scale-in/scale-out (market adds/outs; the stop and take-profit legs resized by amend; the
commands the strategy sends in answer to fills are queued and delivered after the bar, as
`BarLoop` delivers them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import polars as pl
from numba import njit

from artifacts.graph import SignalGraph
from artifacts.schema import Artifact, Condition
from feeds.schema import timeframe_to_ns
from indicators.streaming import make_stream, run_stream
from strategy_kernel.backtest import trade_stats
from strategy_kernel.engine import Trade
from strategy_kernel.errors import BacktestError
from strategy_kernel.fastpath_dag import (
    FastPathUnsupported,
    align_data,
    compare_arrays,
    evaluate,
    load_data,
)
from strategy_kernel.metrics import Metrics, compute
from strategy_kernel.risk import sizing_warmup
from strategy_kernel.volatility import periods_per_year, rolling_realized_vol

__all__ = ["FastPathUnsupported", "FastResult", "bracket_same_bar", "fast_backtest"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

NS_PER_DAY = 86_400_000_000_000
MAX_TICKS = 2**48

# phases (strategy_kernel.state.Phase values)
PH_IDLE, PH_LOOKING, PH_ENTERED, PH_MANAGING, PH_EXITED = 0, 1, 2, 3, 4
# order types / tif / roles
OT_MARKET, OT_LIMIT, OT_STOP = 0, 1, 2
TIF_GTC, TIF_IOC, TIF_FOK, TIF_GTD = 0, 1, 2, 3
ROLE_ENTRY, ROLE_SL, ROLE_EXIT, ROLE_TIME = 0, 1, 1000, 1001  # tp k -> 1 + k
ROLE_ADD, ROLE_OUT = 2000, 3000  # scale-in / scale-out order number n of the trade -> base + n
# order record columns
(
    O_TYPE,
    O_SIDE,
    O_QTY,
    O_FILLED,
    O_PRICE,
    O_TRIG,
    O_TIF,
    O_EXPIRE,
    O_REDUCE,
    O_ROLE,
    O_LIVE,
    O_START,
    O_RESTING,
    O_TRIGGERED,
    O_BRACKET,
    O_AT_OPEN,
) = range(16)
O_NCOLS = 16
# scalar state
(
    S_POS,
    S_COST,
    S_REAL,
    S_FEES,
    S_PHASE,
    S_ENTRY_LIVE,
    S_ENTRY_SLOT,
    S_DEADLINE,
    S_EXIT_SENT,
    S_HAS_TRADE,
    S_COUNTER,
    S_NORD,
    S_TRADED,
    S_CONSEC,
    S_PAUSED_DAY,
    S_COOLDOWN,
    S_DAY,
    S_HAVE_DAY,
    S_NSAME,
    S_CLOSED,
    S_ENTRIES,
    S_FIRST_FILL,
    S_SL_QTY,
    S_SCALE_SLOT,
    S_SCALE_N,
    S_NLEGS,
    S_NPEND,
    S_FUND,
    S_DD_TRIPPED,
) = range(29)
S_N = 29
# trade record columns (then targets, then exit-reason roles)
(
    T_COUNTER,
    T_ENTRY_TS,
    T_ENTRY_QTY,
    T_ENTRY_COST,
    T_EXIT_TS,
    T_EXIT_QTY,
    T_EXIT_COST,
    T_FEES,
    T_HAS_STOP,
    T_STOP,
    T_RISK_UNITS,
    T_PLANNED,
    T_REF,
    T_INIT_STOP,
    T_BEST,
    T_ENTRY_BAR,
    T_EXIT_BAR,
    T_NTP,
    T_NREASON,
) = range(19)
T_BASE = 19
# integer parameters
(
    P_SIGN,
    P_OTYPE,
    P_OFFSET,
    P_TIF,
    P_TIMEOUT,
    P_TF,
    P_WARMUP,
    P_SL_KIND,
    P_SL_TICKS,
    P_NTP,
    P_SIZING,
    P_MAX_CONSEC,
    P_COOLDOWN,
    P_TE_BARS,
    P_BE,
    P_BE_OFFSET,
    P_TR_KIND,
    P_TR_TICKS,
    P_MAKER_NUM,
    P_MAKER_DEN,
    P_TAKER_NUM,
    P_TAKER_DEN,
    P_SLIP,
    P_SAME_BAR,
    P_SHOT,
    P_EXPIRES,
    P_MAX_ENTRIES,
    P_SCALE,
    P_NIN,
    P_NOUT,
) = range(30)
P_N = 30
# after the S_N scalars, `st` holds the scale bookkeeping: legs[ntp], legs_filled[ntp],
# adds[n_in], outs[n_out], then the queue of commands the strategy sends in answer to fills
# (delivered after the bar, as BarLoop does): (kind, slot, qty) triplets
PQ_AMEND, PQ_CANCEL = 0, 1
# float parameters
(
    Q_SL_VAL,
    Q_TICK,
    Q_LOT,
    Q_SIZING,
    Q_MAX_POS,
    Q_DAILY,
    Q_BE_R,
    Q_TR_VAL,
    Q_TR_R,
    Q_EQ0,
    Q_UNIT,
    Q_MAX_DD,
) = range(12)
Q_N = 12
# float state: day-start equity, equity at the decision, peak equity (drawdown breaker)
F_DSE, F_REQ, F_PEAK = 0, 1, 2
F_N = 3


@dataclass
class FastResult:
    """What `fast_backtest` returns: the same trades, equity and metrics as `run_backtest`.

    `metrics` is computed on first access (strategy_kernel.metrics.compute costs more than the
    whole loop on long runs, and a sweep often ranks on a few numbers only).
    """

    artifact: Artifact
    ts_ns: I64
    close: F64
    equity: F64
    position: I64
    trades: list[Trade]
    unit_value: float
    price_increment: float
    timeframe_ns: int
    traded_units: int  # sum of qty*price over every fill, notional units
    fees_units: int  # fees paid, notional units
    funding_units: int = 0  # funding paid (received: < 0), notional units
    node_series: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.bool_]] = field(
        default_factory=dict
    )
    _metrics: Metrics | None = field(default=None, repr=False)

    @property
    def metrics(self) -> Metrics:
        if self._metrics is None:
            unit = self.unit_value
            stats = trade_stats(self.trades, unit)
            self._metrics = compute(
                equity=self.equity,
                ts_ns=self.ts_ns,
                timeframe_ns=self.timeframe_ns,
                in_position=self.position != 0,
                trades=stats,
                traded_notional=self.traded_units * unit,
                fees_paid=self.fees_units * unit,
                funding_paid=self.funding_units * unit,
            )
        return self._metrics


# ============================================================================ numba kernel


@njit(cache=True)
def _ceil_div(a: int, b: int) -> int:  # pragma: no cover - compiled
    return -((-a) // b)


@njit(cache=True)
def _funding_amount(notional: int, rate_ppb: int) -> int:  # pragma: no cover - compiled
    """SimVenue.funding_amount, ceil(notional x rate_ppb / 1e9), exact in int64: notional is
    split at 1e9 so no product exceeds 1e18 (|rate| <= 1e9 ppb)."""
    hi = notional // 1_000_000_000
    lo = notional - hi * 1_000_000_000
    return hi * rate_ppb + _ceil_div(lo * rate_ppb, 1_000_000_000)


@njit(cache=True)
def _to_ticks(x: F64, inc: float) -> I64:  # pragma: no cover - compiled
    """np.rint(x / inc) as int64 in one pass (what run_backtest hands the order kernel)."""
    out = np.empty(x.shape[0], dtype=np.int64)
    for i in range(x.shape[0]):
        out[i] = np.int64(np.rint(x[i] / inc))
    return out


@njit(cache=True)
def _entry_ended(st: I64) -> None:  # pragma: no cover - compiled
    """OrderCancelled/Expired/Denied for the working entry (StrategyKernel.on_event)."""
    st[S_ENTRY_LIVE] = 0
    st[S_DEADLINE] = -1
    if st[S_PHASE] == PH_ENTERED:
        st[S_HAS_TRADE] = 0
        st[S_PHASE] = PH_LOOKING


@njit(cache=True)
def _push(st: I64, pi: I64, kind: int, slot: int, qty: int) -> None:  # pragma: no cover
    """Queue a command (amend qty / cancel) the strategy sends in answer to an event."""
    base = 2 * pi[P_NTP] + pi[P_NIN] + pi[P_NOUT] + 3 * st[S_NPEND]
    st[S_N + base] = kind
    st[S_N + base + 1] = slot
    st[S_N + base + 2] = qty
    st[S_NPEND] += 1


@njit(cache=True)
def _role_slot(ords: I64, st: I64, role: int) -> int:  # pragma: no cover - compiled
    """The current trade's order with this role (client ids are unique per trade), or -1."""
    for j in range(st[S_NORD]):
        if ords[j, O_ROLE] == role:
            return j
    return -1


@njit(cache=True)
def _resize(
    before: int, after: int, ords: I64, st: I64, pi: I64, cur: I64
) -> None:  # pragma: no cover - compiled
    """StrategyKernel._resize_exits: stop to `after` lots, each working leg to its share."""
    if st[S_HAS_TRADE] == 0:
        return
    if cur[T_HAS_STOP] == 1 and after > 0 and after != st[S_SL_QTY]:
        _push(st, pi, PQ_AMEND, _role_slot(ords, st, ROLE_SL), after)
        st[S_SL_QTY] = after
    if before > 0:
        ntp = pi[P_NTP]
        for k in range(st[S_NLEGS]):
            q = st[S_N + k]
            if q <= 0:
                continue
            new = q * after // before
            if new == q:
                continue
            slot = _role_slot(ords, st, 2 + k)
            if new > 0:
                _push(st, pi, PQ_AMEND, slot, st[S_N + ntp + k] + new)
            else:
                _push(st, pi, PQ_CANCEL, slot, 0)
            st[S_N + k] = new


@njit(cache=True)
def _cancel(k: int, ords: I64, st: I64, pi: I64, cur: I64) -> None:  # pragma: no cover
    ords[k, O_LIVE] = 0
    if ords[k, O_ROLE] == ROLE_ENTRY and st[S_ENTRY_LIVE] == 1 and st[S_ENTRY_SLOT] == k:
        _entry_ended(st)
    elif st[S_SCALE_SLOT] == k and st[S_HAS_TRADE] == 1:  # an add/out that did not fill
        st[S_SCALE_SLOT] = -1
        if cur[T_HAS_STOP] == 1 and st[S_POS] != 0:
            _resize(0, abs(st[S_POS]), ords, st, pi, cur)


@njit(cache=True)
def _deliver(ords: I64, st: I64, pi: I64, cur: I64) -> None:  # pragma: no cover
    """Send the queued commands in order, with the kernel's checks (a dead order or a qty not
    above the filled qty is denied; a denial changes nothing)."""
    base = 2 * pi[P_NTP] + pi[P_NIN] + pi[P_NOUT]
    e = 0
    while e < st[S_NPEND]:  # a cancel may queue more (an add that did not fill)
        kind = st[S_N + base + 3 * e]
        slot = st[S_N + base + 3 * e + 1]
        qty = st[S_N + base + 3 * e + 2]
        e += 1
        if slot < 0 or ords[slot, O_LIVE] == 0:
            continue
        if kind == PQ_AMEND:
            if qty > ords[slot, O_FILLED]:
                ords[slot, O_QTY] = qty
        else:
            _cancel(slot, ords, st, pi, cur)
    st[S_NPEND] = 0


@njit(cache=True)
def _add_order(
    ords: I64,
    st: I64,
    typ: int,
    side: int,
    qty: int,
    price: int,
    trig: int,
    tif: int,
    expire: int,
    reduce: int,
    role: int,
    start: int,
    bracket: int,
) -> int:  # pragma: no cover - compiled
    k = st[S_NORD]
    st[S_NORD] = k + 1
    ords[k, :] = 0
    ords[k, O_TYPE] = typ
    ords[k, O_SIDE] = side
    ords[k, O_QTY] = qty
    ords[k, O_PRICE] = price
    ords[k, O_TRIG] = trig
    ords[k, O_TIF] = tif
    ords[k, O_EXPIRE] = expire
    ords[k, O_REDUCE] = reduce
    ords[k, O_ROLE] = role
    ords[k, O_LIVE] = 1
    ords[k, O_START] = start
    ords[k, O_BRACKET] = bracket
    return int(k)


@njit(cache=True)
def _fill(
    k: int,
    q: int,
    price: int,
    maker: bool,
    at_open: bool,
    i: int,
    ts_i: int,
    ords: I64,
    st: I64,
    pi: I64,
    pf: F64,
    cur: I64,
    plan_px: I64,
    plan_q: I64,
    same: I64,
) -> None:  # pragma: no cover - compiled
    """OrderKernel._fill + the strategy's reaction to OrderFilled and PositionUpdate."""
    if maker:
        fee = _ceil_div(q * price * pi[P_MAKER_NUM], pi[P_MAKER_DEN] * 10_000)
    else:
        fee = _ceil_div(q * price * pi[P_TAKER_NUM], pi[P_TAKER_DEN] * 10_000)
    side = ords[k, O_SIDE]
    # order_kernel.machine: average-cost position accounting in exact integers
    dq = q * side
    pq = st[S_POS]
    cost = st[S_COST]
    was_open = pq != 0
    st[S_FEES] += fee
    if pq == 0 or (pq > 0) == (dq > 0):
        st[S_POS] = pq + dq
        st[S_COST] = cost + dq * price
    else:
        sgn = 1 if pq > 0 else -1
        aq = pq * sgn
        adq = -dq if dq < 0 else dq
        closed = adq if adq < aq else aq
        removed = (cost * closed) // aq
        st[S_REAL] += sgn * closed * price - removed
        cost -= removed
        pq -= sgn * closed
        if adq > closed:
            pq = -sgn * (adq - closed)
            cost = pq * price
        st[S_POS] = pq
        st[S_COST] = cost
    ords[k, O_FILLED] += q
    leaves = ords[k, O_QTY] - ords[k, O_FILLED]
    st[S_TRADED] += q * price
    # strategy: OrderFilled
    if st[S_HAS_TRADE] == 1:
        cur[T_FEES] += fee
        role = ords[k, O_ROLE]
        scaling = pi[P_SCALE] == 1
        if st[S_ENTRY_LIVE] == 1 and st[S_ENTRY_SLOT] == k:
            if cur[T_ENTRY_QTY] == 0:
                cur[T_ENTRY_TS] = ts_i
                cur[T_ENTRY_BAR] = i
                st[S_ENTRIES] += 1  # one_shot.max_entries counts trades opened
            cur[T_ENTRY_QTY] += q
            cur[T_ENTRY_COST] += q * price
            if leaves == 0:
                st[S_ENTRY_LIVE] = 0
                st[S_DEADLINE] = -1
                if scaling:  # _bracket_placed: the legs the kernel places, cut to the fill
                    st[S_FIRST_FILL] = cur[T_ENTRY_QTY]
                    st[S_SL_QTY] = cur[T_ENTRY_QTY] if cur[T_HAS_STOP] == 1 else 0
                    left = cur[T_ENTRY_QTY]
                    nl = 0
                    for t in range(plan_q.shape[0]):
                        qq = plan_q[t] if plan_q[t] < left else left
                        if qq <= 0:
                            break
                        left -= qq
                        st[S_N + nl] = qq
                        st[S_N + pi[P_NTP] + nl] = 0
                        nl += 1
                    st[S_NLEGS] = nl
            st[S_PHASE] = PH_MANAGING
        elif scaling and ROLE_ADD < role < ROLE_OUT:
            open_before = cur[T_ENTRY_QTY] - cur[T_EXIT_QTY]
            cur[T_ENTRY_QTY] += q
            cur[T_ENTRY_COST] += q * price
            if leaves == 0:
                st[S_SCALE_SLOT] = -1
            _resize(open_before, open_before + q, ords, st, pi, cur)
        else:
            open_before = cur[T_ENTRY_QTY] - cur[T_EXIT_QTY]
            cur[T_EXIT_TS] = ts_i
            cur[T_EXIT_BAR] = i
            cur[T_EXIT_QTY] += q
            cur[T_EXIT_COST] += q * price
            base = T_BASE + pi[P_NTP]
            seen = False
            for r in range(cur[T_NREASON]):
                if cur[base + r] == role:
                    seen = True
            if not seen:
                cur[base + cur[T_NREASON]] = role
                cur[T_NREASON] += 1
            if scaling:
                if st[S_NLEGS] > 0 and 2 <= role < ROLE_EXIT:
                    leg = role - 2
                    if leg < st[S_NLEGS]:
                        st[S_N + leg] -= q
                        st[S_N + pi[P_NTP] + leg] += q
                    if open_before - q > 0:
                        _resize(0, open_before - q, ords, st, pi, cur)
                elif role == ROLE_SL:
                    st[S_SL_QTY] -= q
                if role > ROLE_OUT:
                    if leaves == 0:
                        st[S_SCALE_SLOT] = -1
                    if open_before - q > 0:
                        _resize(open_before, open_before - q, ords, st, pi, cur)
    # strategy: PositionUpdate
    if was_open and st[S_POS] == 0 and st[S_PHASE] == PH_MANAGING:
        gross = cur[T_EXIT_COST] - cur[T_ENTRY_COST]
        pnl = (gross if pi[P_SIGN] > 0 else -gross) - cur[T_FEES]
        if pnl * pf[Q_UNIT] < 0:
            st[S_CONSEC] += 1
            st[S_COOLDOWN] = ts_i + pi[P_COOLDOWN] * pi[P_TF]
        else:
            st[S_CONSEC] = 0
        st[S_CLOSED] = 1
        st[S_HAS_TRADE] = 0
        st[S_EXIT_SENT] = 0
        st[S_ENTRY_LIVE] = 0
        st[S_SCALE_SLOT] = -1
        st[S_NLEGS] = 0
        st[S_PHASE] = PH_EXITED
    if leaves == 0:
        ords[k, O_LIVE] = 0
        if ords[k, O_BRACKET] == 1:  # _place_bracket: children from the next bar (or this one)
            filled = ords[k, O_FILLED]
            exit_side = -side
            if cur[T_HAS_STOP] == 1:
                c = _add_order(
                    ords,
                    st,
                    OT_STOP,
                    exit_side,
                    filled,
                    0,
                    cur[T_STOP],
                    TIF_GTC,
                    0,
                    1,
                    ROLE_SL,
                    i + 1,
                    0,
                )
                if pi[P_SAME_BAR] == 1:
                    ords[c, O_AT_OPEN] = 1 if at_open else 0
                    same[st[S_NSAME]] = c
                    st[S_NSAME] += 1
            left = filled
            for t in range(plan_px.shape[0]):
                if plan_q[t] <= 0:
                    break
                qq = plan_q[t] if plan_q[t] < left else left
                if qq <= 0:
                    break
                left -= qq
                c = _add_order(
                    ords,
                    st,
                    OT_LIMIT,
                    exit_side,
                    qq,
                    plan_px[t],
                    0,
                    TIF_GTC,
                    0,
                    1,
                    1 + (t + 1),
                    i + 1,
                    0,
                )
                if pi[P_SAME_BAR] == 1:
                    ords[c, O_AT_OPEN] = 1 if at_open else 0
                    same[st[S_NSAME]] = c
                    st[S_NSAME] += 1
    if st[S_POS] == 0:
        for j in range(st[S_NORD]):
            if ords[j, O_LIVE] == 1 and ords[j, O_REDUCE] == 1:
                _cancel(j, ords, st, pi, cur)


@njit(cache=True)
def _match(
    k: int,
    intrabar: bool,
    i: int,
    ts_i: int,
    op: int,
    hi: int,
    lo: int,
    ords: I64,
    st: I64,
    pi: I64,
    pf: F64,
    cur: I64,
    plan_px: I64,
    plan_q: I64,
    same: I64,
) -> None:  # pragma: no cover - compiled
    """OrderKernel._match for one order against bar i (SimVenue rules 3-8 and 15)."""
    side = ords[k, O_SIDE]
    typ = ords[k, O_TYPE]
    first = ords[k, O_RESTING] == 0
    tif = ords[k, O_TIF]
    immediate = tif in (TIF_IOC, TIF_FOK)
    has_price = False
    price = 0
    maker = False
    at_open = False
    opportunity = first
    slip = pi[P_SLIP]
    if typ == OT_MARKET or (typ == OT_STOP and ords[k, O_TRIGGERED] == 1):
        price = op + slip if side > 0 else op - slip
        price = min(max(price, lo), hi)
        has_price = True
        at_open = True
    elif typ == OT_STOP:
        opportunity = False
        stop = ords[k, O_TRIG]
        if side > 0:
            if hi < stop:
                return
            tp = min(max(stop, lo), hi) if intrabar else max(op, stop)
        else:
            if lo > stop:
                return
            tp = max(min(stop, hi), lo) if intrabar else min(op, stop)
        opportunity = True
        at_open = tp == op and not intrabar
        ords[k, O_TRIGGERED] = 1
        price = tp + slip if side > 0 else tp - slip
        price = min(max(price, lo), hi)
        has_price = True
    else:
        limit = ords[k, O_PRICE]
        crosses = op <= limit if side > 0 else op >= limit
        if first and crosses:
            price = op
            has_price = True
            at_open = True
        elif not (immediate and first):
            if side > 0 and lo <= limit:
                price = min(op, limit)
                has_price = True
            elif side < 0 and hi >= limit:
                price = max(op, limit)
                has_price = True
            maker = True
            at_open = has_price and price == op
    if has_price:
        leaves = ords[k, O_QTY] - ords[k, O_FILLED]
        q = leaves
        if ords[k, O_REDUCE] == 1:
            pos = st[S_POS]
            if pos == 0 or (pos > 0) == (side > 0):
                _cancel(k, ords, st, pi, cur)
                return
            q = min(q, abs(pos))
        if tif == TIF_FOK and q < leaves:
            q = 0
        if q > 0:
            _fill(
                k,
                q,
                price,
                maker,
                at_open,
                i,
                ts_i,
                ords,
                st,
                pi,
                pf,
                cur,
                plan_px,
                plan_q,
                same,
            )
    if immediate and opportunity and ords[k, O_LIVE] == 1:
        _cancel(k, ords, st, pi, cur)


@njit(cache=True)
def _match_class(ords: I64, k: int) -> int:  # pragma: no cover - compiled
    typ = ords[k, O_TYPE]
    if typ == OT_MARKET or (typ == OT_STOP and ords[k, O_TRIGGERED] == 1):
        return 0
    if typ == OT_STOP:
        return 1
    return 2


@njit(cache=True)
def _equity(st: I64, close: int, pf: F64) -> float:  # pragma: no cover - compiled
    units = st[S_REAL] - st[S_FEES] - st[S_FUND] + (st[S_POS] * close - st[S_COST])
    return float(pf[Q_EQ0] + units * pf[Q_UNIT])


@njit(cache=True)
def _plan(
    ref: int,
    atr: float,
    vol: float,
    level: float,
    equity: float,
    ts_dec: int,
    st: I64,
    fs: F64,
    pi: I64,
    pf: F64,
    tp_is_r: npt.NDArray[np.bool_],
    tp_val: F64,
    tp_size: F64,
    tp_full: npt.NDArray[np.bool_],
    out: I64,
    plan_px: I64,
    plan_q: I64,
) -> bool:  # pragma: no cover - compiled
    """strategy_kernel.risk.plan_entry; out = [lots, has_stop, stop, risk_units]. False: refused."""
    # check_gates (with its side effect on the loss-streak pause)
    if st[S_DD_TRIPPED] == 1:
        return False
    if not math.isnan(pf[Q_DAILY]) and fs[F_DSE] > 0:
        loss_pct = (fs[F_DSE] - fs[F_REQ]) / fs[F_DSE] * 100
        if loss_pct >= pf[Q_DAILY]:
            return False
    if pi[P_MAX_CONSEC] >= 0:
        day = ts_dec // NS_PER_DAY
        if st[S_CONSEC] >= pi[P_MAX_CONSEC] and st[S_PAUSED_DAY] != day:
            st[S_PAUSED_DAY] = day
            st[S_CONSEC] = 0
        if st[S_PAUSED_DAY] == day:
            return False
    if ts_dec < st[S_COOLDOWN]:
        return False
    tick = pf[Q_TICK]
    sign = pi[P_SIGN]
    has_stop = 0
    stop = 0
    kind = pi[P_SL_KIND]
    if kind != 0:
        if kind == 1:
            if not math.isfinite(atr):
                return False
            dist = max(1, int(np.rint(pf[Q_SL_VAL] * atr / tick)))
        elif kind == 2:
            dist = max(1, int(np.rint(ref * pf[Q_SL_VAL] / 100)))
        elif kind == 3:
            dist = pi[P_SL_TICKS]
        else:
            if not math.isfinite(level):
                return False
            dist = sign * (ref - int(np.rint(level / tick)))
        stop = ref - sign * dist
        has_stop = 1
        if dist <= 0 or stop <= 0:
            return False
    price = ref * tick
    method = pi[P_SIZING]
    if method == 0:
        if has_stop == 0:
            return False
        qty = equity * pf[Q_SIZING] / 100 / (abs(ref - stop) * tick)
    elif method == 1:
        qty = equity * pf[Q_SIZING] / 100 / price
    elif method == 3:  # vol_target
        if not (math.isfinite(vol) and vol > 0):
            return False
        qty = equity * pf[Q_SIZING] / 100 / vol / price
    else:
        qty = pf[Q_SIZING]
    cap = equity * pf[Q_MAX_POS] / 100 / price
    if cap < qty:
        qty = cap
    lots = int(math.floor(qty / pf[Q_LOT] + 1e-9))  # noqa: RUF046 - an int64 in numba
    if lots <= 0:
        return False
    # place_targets
    left = lots
    m = 0
    for t in range(tp_val.shape[0]):
        if tp_is_r[t]:
            px = ref + sign * int(np.rint(tp_val[t] * abs(ref - stop)))
        else:
            px = ref + sign * int(np.rint(ref * tp_val[t] / 100))
        if tp_full[t]:
            qt = left
        else:
            qt = int(lots * tp_size[t] / 100)
            qt = qt if qt < left else left
        if sign * (px - ref) <= 0:
            return False
        if qt > 0:
            plan_px[m] = px
            plan_q[m] = qt
            m += 1
            left -= qt
    for t in range(m, plan_q.shape[0]):
        plan_px[t] = 0
        plan_q[t] = 0
    out[0] = lots
    out[1] = has_stop
    out[2] = stop
    out[3] = abs(ref - stop) * lots if has_stop == 1 else 0
    out[4] = m
    return True


@njit(cache=True)
def _run(
    ts: I64,
    op: I64,
    hi: I64,
    lo: I64,
    cl: I64,
    when: npt.NDArray[np.bool_],
    invalid: npt.NDArray[np.bool_],
    exit_when: npt.NDArray[np.bool_],
    level: F64,
    atr: F64,
    vol: F64,
    pi: I64,
    pf: F64,
    tp_is_r: npt.NDArray[np.bool_],
    tp_val: F64,
    tp_size: F64,
    tp_full: npt.NDArray[np.bool_],
    in_when: npt.NDArray[np.bool_],
    in_pct: F64,
    in_max: I64,
    out_when: npt.NDArray[np.bool_],
    out_pct: F64,
    fund_idx: I64,
    fund_ppb: I64,
) -> tuple[I64, int, F64, I64, I64]:  # pragma: no cover - compiled
    """The whole backtest: returns (trade rows, n trades, equity, position,
    [traded, fees, funding]). Bar i is charged the settlements fund_ppb[fund_idx[i]:fund_idx[i+1]]
    after its matching, as the order kernel charges funding."""
    n = ts.shape[0]
    ntp = tp_val.shape[0]
    n_in = in_pct.shape[0]
    n_out = out_pct.shape[0]
    cap_orders = ntp + 4 + int(in_max.sum()) + n_out
    ords = np.zeros((cap_orders, O_NCOLS), dtype=np.int64)
    st = np.zeros(  # scalars, then the scale bookkeeping and its command queue
        S_N + 2 * ntp + n_in + n_out + 3 * (ntp + 2) * (2 * cap_orders + 2), dtype=np.int64
    )
    fs = np.zeros(F_N, dtype=np.float64)
    fs[F_PEAK] = pf[Q_EQ0]
    width = T_BASE + ntp + ntp + 3 + n_out
    cur = np.zeros(width, dtype=np.int64)
    trades = np.zeros((64, width), dtype=np.int64)
    plan_px = np.zeros(max(ntp, 1), dtype=np.int64)  # zero qty ends the ladder
    plan_q = np.zeros(max(ntp, 1), dtype=np.int64)
    plan_out = np.zeros(5, dtype=np.int64)
    same = np.zeros(cap_orders, dtype=np.int64)
    eligible = np.zeros(cap_orders, dtype=np.int64)
    ordered = np.zeros(cap_orders, dtype=np.int64)
    live_kids = np.zeros(cap_orders, dtype=np.int64)
    equity = np.empty(n, dtype=np.float64)
    position = np.empty(n, dtype=np.int64)
    st[S_DEADLINE] = -1
    st[S_SCALE_SLOT] = -1
    st[S_PAUSED_DAY] = -(2**62)
    st[S_PHASE] = PH_IDLE
    n_trades = 0
    sign = pi[P_SIGN]
    tf = pi[P_TF]
    for i in range(n):
        ts_i = ts[i]
        o_i, h_i, l_i = op[i], hi[i], lo[i]
        # ---------------------------------------------------------- order kernel: MarketBar
        ne = 0
        for k in range(st[S_NORD]):
            if ords[k, O_LIVE] == 1 and ords[k, O_START] <= i:
                eligible[ne] = k
                ne += 1
        for e in range(ne):  # GTD expiry at the start of the bar
            k = eligible[e]
            if ords[k, O_LIVE] == 1 and ords[k, O_TIF] == TIF_GTD and ords[k, O_EXPIRE] <= ts_i:
                _cancel(k, ords, st, pi, cur)
        no = 0
        for cls in range(3):
            for e in range(ne):
                k = eligible[e]
                if ords[k, O_LIVE] == 1 and _match_class(ords, k) == cls:
                    ordered[no] = k
                    no += 1
        st[S_NSAME] = 0
        st[S_CLOSED] = 0
        for e in range(no):
            k = ordered[e]
            if ords[k, O_LIVE] == 1:
                _match(
                    k,
                    False,
                    i,
                    ts_i,
                    o_i,
                    h_i,
                    l_i,
                    ords,
                    st,
                    pi,
                    pf,
                    cur,
                    plan_px,
                    plan_q,
                    same,
                )
        nl = 0
        if st[S_NSAME] > 0:  # rule 15: children live in the parent's fill bar
            nk = st[S_NSAME]
            kids = np.empty(nk, dtype=np.int64)
            m = 0
            for cls in range(3):
                for e in range(nk):
                    if _match_class(ords, same[e]) == cls:
                        kids[m] = same[e]
                        m += 1
            for e in range(nk):
                k = kids[e]
                if ords[k, O_LIVE] == 0:
                    continue
                if ords[k, O_AT_OPEN] == 1:
                    live_kids[nl] = k
                    nl += 1
                    _match(
                        k,
                        False,
                        i,
                        ts_i,
                        o_i,
                        h_i,
                        l_i,
                        ords,
                        st,
                        pi,
                        pf,
                        cur,
                        plan_px,
                        plan_q,
                        same,
                    )
                elif _match_class(ords, k) == 1:
                    _match(
                        k,
                        True,
                        i,
                        ts_i,
                        o_i,
                        h_i,
                        l_i,
                        ords,
                        st,
                        pi,
                        pf,
                        cur,
                        plan_px,
                        plan_q,
                        same,
                    )
        for e in range(ne):
            k = eligible[e]
            if ords[k, O_LIVE] == 1:
                ords[k, O_RESTING] = 1
        for e in range(nl):
            k = live_kids[e]
            if ords[k, O_LIVE] == 1:
                ords[k, O_RESTING] = 1
        for e in range(fund_idx[i], fund_idx[i + 1]):  # SimVenue rule 12, after matching
            st[S_FUND] += _funding_amount(st[S_POS] * cl[i], fund_ppb[e])
        if st[S_NPEND] > 0:  # the strategy's answers to this bar's fills
            _deliver(ords, st, pi, cur)
        if st[S_CLOSED] == 1:
            if n_trades == trades.shape[0]:
                bigger = np.zeros((2 * n_trades, width), dtype=np.int64)
                bigger[:n_trades] = trades
                trades = bigger
            trades[n_trades] = cur
            n_trades += 1
        # ---------------------------------------------------------- strategy kernel: on_bar
        close = cl[i]
        ts_dec = ts_i + tf
        eq = _equity(st, close, pf)
        day = ts_dec // NS_PER_DAY
        if st[S_HAVE_DAY] == 0 or day != st[S_DAY]:
            st[S_HAVE_DAY] = 1
            st[S_DAY] = day
            fs[F_DSE] = eq
        fs[F_REQ] = eq
        if eq > fs[F_PEAK]:
            fs[F_PEAK] = eq
        if (  # RiskState.check_drawdown: trips once, on this bar's equity and peak
            st[S_DD_TRIPPED] == 0
            and not math.isnan(pf[Q_MAX_DD])
            and eq <= fs[F_PEAK] * (1 - pf[Q_MAX_DD] / 100)
        ):
            st[S_DD_TRIPPED] = 1
        if st[S_PHASE] == PH_EXITED:
            st[S_PHASE] = PH_LOOKING
        go = True
        if st[S_PHASE] == PH_IDLE:
            if i >= pi[P_WARMUP]:
                st[S_PHASE] = PH_LOOKING
            else:
                go = False
        if go:
            inv = invalid[i]
            ph = st[S_PHASE]
            if ph == PH_LOOKING and when[i]:
                shot_ok = pi[P_SHOT] == 0 or (
                    ts_dec < pi[P_EXPIRES] and st[S_ENTRIES] < pi[P_MAX_ENTRIES]
                )
                if not inv and shot_ok:
                    ref = close + pi[P_OFFSET] if pi[P_OTYPE] != OT_MARKET else close
                    if _plan(
                        ref,
                        atr[i],
                        vol[i],
                        level[i],
                        eq,
                        ts_dec,
                        st,
                        fs,
                        pi,
                        pf,
                        tp_is_r,
                        tp_val,
                        tp_size,
                        tp_full,
                        plan_out,
                        plan_px,
                        plan_q,
                    ):
                        st[S_COUNTER] += 1
                        lots = plan_out[0]
                        cur[:] = 0
                        cur[T_COUNTER] = st[S_COUNTER]
                        cur[T_HAS_STOP] = plan_out[1]
                        cur[T_STOP] = plan_out[2]
                        cur[T_RISK_UNITS] = plan_out[3]
                        cur[T_PLANNED] = lots
                        cur[T_REF] = ref
                        cur[T_INIT_STOP] = plan_out[2] if plan_out[1] == 1 else 0
                        cur[T_ENTRY_BAR] = i
                        cur[T_NTP] = plan_out[4]
                        for t in range(plan_out[4]):
                            cur[T_BASE + t] = plan_px[t]
                        st[S_HAS_TRADE] = 1
                        st[S_PHASE] = PH_ENTERED
                        timeout = pi[P_TIMEOUT]
                        tif = pi[P_TIF]
                        st[S_DEADLINE] = i + timeout if timeout > 0 and tif != TIF_GTD else -1
                        st[S_NORD] = 0
                        st[S_SCALE_SLOT] = -1
                        st[S_SCALE_N] = 0
                        st[S_NLEGS] = 0
                        st[S_N + 2 * ntp : S_N + 2 * ntp + n_in + n_out] = 0
                        otype = pi[P_OTYPE]
                        expire = ts_dec + timeout * tf if tif == TIF_GTD else 0
                        bracket = 1 if (plan_out[1] == 1 or plan_out[4] > 0) else 0
                        k = _add_order(
                            ords,
                            st,
                            otype,
                            sign,
                            lots,
                            ref if otype == OT_LIMIT else 0,
                            ref if otype == OT_STOP else 0,
                            tif,
                            expire,
                            0,
                            ROLE_ENTRY,
                            i + 1,
                            bracket,
                        )
                        st[S_ENTRY_LIVE] = 1
                        st[S_ENTRY_SLOT] = k
                        if otype != OT_MARKET and not 0 < ref <= MAX_TICKS:
                            _cancel(k, ords, st, pi, cur)  # OrderDenied(INVALID_PRICE)
            elif (
                ph == PH_ENTERED
                and st[S_ENTRY_LIVE] == 1
                and (st[S_DD_TRIPPED] == 1 or inv or (pi[P_SHOT] == 1 and ts_dec >= pi[P_EXPIRES]))
            ):  # drawdown breaker, invalid_if, one_shot (at the first decision from expiry on)
                _cancel(st[S_ENTRY_SLOT], ords, st, pi, cur)
                st[S_DEADLINE] = -1
            elif ph == PH_ENTERED:
                if st[S_DEADLINE] >= 0 and i >= st[S_DEADLINE] and st[S_ENTRY_LIVE] == 1:
                    _cancel(st[S_ENTRY_SLOT], ords, st, pi, cur)
                    st[S_DEADLINE] = -1
            elif ph == PH_MANAGING and st[S_EXIT_SENT] == 0:
                # _manage_stop: break-even and trailing
                if (
                    (pi[P_BE] == 1 or pi[P_TR_KIND] != 0)
                    and cur[T_HAS_STOP] == 1
                    and st[S_ENTRY_LIVE] == 0
                ):
                    if cur[T_BEST] == 0 or sign * (close - cur[T_BEST]) > 0:
                        cur[T_BEST] = close
                    best = cur[T_BEST]
                    risk = abs(cur[T_REF] - cur[T_INIT_STOP])
                    gain = sign * (best - cur[T_REF])
                    stop_now = cur[T_STOP]
                    have_new = False
                    new_stop = 0
                    if pi[P_BE] == 1 and risk != 0 and gain >= pf[Q_BE_R] * risk:
                        c = cur[T_REF] + sign * pi[P_BE_OFFSET]
                        if sign * (c - stop_now) > 0 and sign * (close - c) > 0:
                            have_new, new_stop = True, c
                    trk = pi[P_TR_KIND]
                    if trk != 0 and gain >= pf[Q_TR_R] * risk:
                        dist = 0
                        if trk == 1:
                            if math.isfinite(atr[i]):
                                dist = int(np.rint(pf[Q_TR_VAL] * atr[i] / pf[Q_TICK]))
                        elif trk == 2:
                            dist = int(np.rint(best * pf[Q_TR_VAL] / 100))
                        else:
                            dist = pi[P_TR_TICKS]
                        if dist != 0:
                            c = best - sign * dist
                            if (
                                sign * (c - stop_now) > 0
                                and sign * (close - c) > 0
                                and (not have_new or sign * (c - new_stop) > 0)
                            ):
                                have_new, new_stop = True, c
                    if have_new and new_stop != stop_now:
                        cur[T_STOP] = new_stop
                        for j in range(st[S_NORD]):
                            if ords[j, O_LIVE] == 1 and ords[j, O_ROLE] == ROLE_SL:
                                ords[j, O_TRIG] = new_stop
                why = 0
                if exit_when[i]:
                    why = ROLE_EXIT
                held = i - cur[T_ENTRY_BAR]
                if why == 0 and pi[P_TE_BARS] > 0 and held >= pi[P_TE_BARS]:
                    why = ROLE_TIME
                if why != 0:
                    st[S_EXIT_SENT] = 1
                    qty = abs(st[S_POS])
                    if qty > 0:
                        _add_order(
                            ords,
                            st,
                            OT_MARKET,
                            -1 if st[S_POS] > 0 else 1,
                            qty,
                            0,
                            0,
                            TIF_GTC,
                            0,
                            1,
                            why,
                            i + 1,
                            0,
                        )
                elif (
                    pi[P_SCALE] == 1
                    and st[S_ENTRY_LIVE] == 0
                    and st[S_SCALE_SLOT] < 0
                    and st[S_POS] != 0
                ):  # StrategyKernel._scale: scale-out rules first, then scale-in
                    held_q = abs(st[S_POS])
                    done = False
                    for r in range(n_out):
                        if st[S_N + 2 * ntp + n_in + r] == 1 or not out_when[r, i]:
                            continue
                        st[S_N + 2 * ntp + n_in + r] = 1
                        lots = int(math.floor(held_q * out_pct[r] / 100))  # noqa: RUF046
                        if lots <= 0:
                            continue
                        st[S_SCALE_N] += 1
                        st[S_SCALE_SLOT] = _add_order(
                            ords,
                            st,
                            OT_MARKET,
                            -sign,
                            lots,
                            0,
                            0,
                            TIF_GTC,
                            0,
                            1,
                            ROLE_OUT + st[S_SCALE_N],
                            i + 1,
                            0,
                        )
                        done = True
                        break
                    for r in range(n_in):
                        if done:
                            break
                        if st[S_N + 2 * ntp + r] >= in_max[r] or not in_when[r, i]:
                            continue
                        if st[S_DD_TRIPPED] == 1:  # refused: no new risk, the add is not used
                            continue
                        st[S_N + 2 * ntp + r] += 1
                        lots = int(math.floor(st[S_FIRST_FILL] * in_pct[r] / 100))  # noqa: RUF046
                        cap = int(  # noqa: RUF046
                            math.floor(
                                eq * pf[Q_MAX_POS] / 100 / (close * pf[Q_TICK]) / pf[Q_LOT] + 1e-9
                            )
                        )
                        if held_q + lots > cap:
                            lots = cap - held_q
                        if lots <= 0:
                            continue
                        st[S_SCALE_N] += 1
                        st[S_SCALE_SLOT] = _add_order(
                            ords,
                            st,
                            OT_MARKET,
                            sign,
                            lots,
                            0,
                            0,
                            TIF_GTC,
                            0,
                            0,
                            ROLE_ADD + st[S_SCALE_N],
                            i + 1,
                            0,
                        )
                        if cur[T_HAS_STOP] == 1:  # cover the add before it can fill
                            _resize(0, held_q + lots, ords, st, pi, cur)
                        done = True
        if st[S_NPEND] > 0:
            _deliver(ords, st, pi, cur)
        equity[i] = _equity(st, close, pf)
        position[i] = st[S_POS]
    totals = np.zeros(3, dtype=np.int64)
    totals[0] = st[S_TRADED]
    totals[1] = st[S_FEES]
    totals[2] = st[S_FUND]
    return trades, n_trades, equity, position, totals


# ============================================================================ python side


@lru_cache(maxsize=1)
def bracket_same_bar() -> bool:
    """Does the order kernel make bracket children live in the parent's fill bar?

    Probed on the real kernel (a market buy with a stop-loss bracket, filled at the open of a
    bar whose low reaches the stop), so the fast path follows the rule the code has today.
    """
    from order_kernel import messages as m
    from order_kernel.instruments import InstrumentSpec
    from order_kernel.kernel import OrderKernel
    from order_kernel.spec import OrderType, Side
    from order_kernel.venues.sim import SimVenue

    inst = InstrumentSpec("PROBE/USD", Decimal("1"), Decimal("1"))
    ok = OrderKernel("probe", {"PROBE/USD": inst}, SimVenue())

    def bar(ts: int, o: int, h: int, lo: int, c: int) -> None:
        ok.handle(
            m.MarketBar(
                session_id="probe",
                seq=0,
                ts_ns=ts,
                symbol="PROBE/USD",
                open=o,
                high=h,
                low=lo,
                close=c,
                volume=1,
                interval_ns=10,
            )
        )

    bar(0, 100, 100, 100, 100)
    ok.handle(
        m.SubmitOrder(
            session_id="probe",
            seq=1,
            ts_ns=10,
            client_order_id="p",
            symbol="PROBE/USD",
            side=Side.BUY,
            order_type=OrderType.MARKET,
            qty=1,
            bracket=m.Bracket(stop_loss=95, take_profits=()),
        )
    )
    bar(10, 100, 101, 90, 92)
    return ok.position("PROBE/USD").qty == 0


def _fee_fraction(bps: float) -> tuple[int, int]:
    """The fee rate as the order kernel sees it: Fraction(Decimal(str(bps)))."""
    f = Fraction(Decimal(str(bps)))
    return f.numerator, f.denominator


def _condition(
    cond: str | Condition | None,
    values: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.bool_]],
    n: int,
) -> npt.NDArray[np.bool_]:
    """StrategyKernel._cond over every bar."""
    if cond is None:
        return np.zeros(n, dtype=np.bool_)
    if isinstance(cond, str):
        v = values[cond]
        return np.asarray(v if v.dtype == np.bool_ else v != 0, dtype=np.bool_)
    rhs = (
        np.asarray(values[cond.value], dtype=np.float64)
        if isinstance(cond.value, str)
        else float(cond.value)
    )
    return compare_arrays(cond.op, np.asarray(values[cond.node], dtype=np.float64), rhs)


def _cond_nodes(cond: str | Condition | None) -> set[str]:
    if cond is None:
        return set()
    if isinstance(cond, str):
        return {cond}
    return {cond.node} | ({cond.value} if isinstance(cond.value, str) else set())


def _atr_period(artifact: Artifact) -> int | None:
    ex = artifact.exit
    if (ex.stop_loss and ex.stop_loss.atr_mult) or (ex.trailing and ex.trailing.atr_mult):
        return ex.stop_loss.atr_period if ex.stop_loss else 14
    return None


def _params(artifact: Artifact, graph: SignalGraph, tf_ns: int, atr_warmup: int) -> tuple[I64, F64]:
    a = artifact
    pi = np.zeros(P_N, dtype=np.int64)
    pf = np.zeros(Q_N, dtype=np.float64)
    tmpl = a.entry.order
    pi[P_SIGN] = 1 if a.entry.side == "long" else -1
    pi[P_OTYPE] = {"market": OT_MARKET, "limit": OT_LIMIT, "stop": OT_STOP}[tmpl.type]
    pi[P_OFFSET] = tmpl.offset_ticks
    pi[P_TIF] = {"GTC": TIF_GTC, "IOC": TIF_IOC, "FOK": TIF_FOK, "GTD": TIF_GTD}[tmpl.tif]
    pi[P_TIMEOUT] = tmpl.timeout.bars(tf_ns) if tmpl.timeout else 0
    pi[P_TF] = tf_ns
    pi[P_WARMUP] = max(graph.warmup, atr_warmup, sizing_warmup(a))
    sl = a.exit.stop_loss
    if sl is not None:
        if sl.atr_mult is not None:
            pi[P_SL_KIND], pf[Q_SL_VAL] = 1, sl.atr_mult
        elif sl.pct is not None:
            pi[P_SL_KIND], pf[Q_SL_VAL] = 2, sl.pct
        elif sl.ticks is not None:
            pi[P_SL_KIND], pi[P_SL_TICKS] = 3, sl.ticks
        else:
            pi[P_SL_KIND] = 4
    pi[P_NTP] = len(a.exit.take_profit)
    sizing = a.risk.effective_sizing()
    pi[P_SIZING] = {"risk_pct": 0, "pct_equity": 1, "fixed": 2, "vol_target": 3}[sizing.method]
    pf[Q_SIZING] = sizing.value
    pf[Q_MAX_POS] = a.risk.max_position_pct
    pf[Q_DAILY] = a.risk.max_daily_loss_pct if a.risk.max_daily_loss_pct is not None else math.nan
    pi[P_MAX_CONSEC] = a.risk.max_consecutive_losses or -1
    pi[P_COOLDOWN] = a.risk.cooldown_bars
    te = a.exit.time_exit
    pi[P_TE_BARS] = te.bars(tf_ns) if te is not None else 0
    be = a.exit.break_even
    if be is not None:
        pi[P_BE], pi[P_BE_OFFSET], pf[Q_BE_R] = 1, be.offset_ticks, be.after_r
    tr = a.exit.trailing
    if tr is not None:
        pf[Q_TR_R] = tr.activate_r
        if tr.atr_mult is not None:
            pi[P_TR_KIND], pf[Q_TR_VAL] = 1, tr.atr_mult
        elif tr.pct is not None:
            pi[P_TR_KIND], pf[Q_TR_VAL] = 2, tr.pct
        else:
            pi[P_TR_KIND], pi[P_TR_TICKS] = 3, tr.ticks or 0
    pi[P_MAKER_NUM], pi[P_MAKER_DEN] = _fee_fraction(a.backtest.maker_fee_bps)
    pi[P_TAKER_NUM], pi[P_TAKER_DEN] = _fee_fraction(a.backtest.taker_fee_bps)
    pi[P_SLIP] = a.backtest.slippage_ticks
    pi[P_SAME_BAR] = 1 if bracket_same_bar() else 0
    pi[P_NIN] = len(a.entry.scale_in or ())
    pi[P_NOUT] = len(a.exit.scale_out or ())
    pi[P_SCALE] = 1 if pi[P_NIN] or pi[P_NOUT] else 0
    if a.one_shot is not None:
        pi[P_SHOT] = 1
        pi[P_EXPIRES] = a.one_shot.expires_at
        pi[P_MAX_ENTRIES] = a.one_shot.max_entries
    inst = a.instrument
    pf[Q_TICK] = float(inst.price_increment)
    pf[Q_LOT] = float(inst.size_increment)
    pf[Q_EQ0] = a.backtest.initial_equity
    pf[Q_UNIT] = float(inst.price_increment * inst.size_increment)
    pf[Q_MAX_DD] = a.risk.max_drawdown_pct if a.risk.max_drawdown_pct is not None else math.nan
    return pi, pf


_ROLE_NAMES = {ROLE_SL: "sl", ROLE_EXIT: "exit", ROLE_TIME: "time"}


def fast_backtest(
    artifact: Artifact,
    graph: SignalGraph,
    bars: pl.DataFrame,
    *,
    record_nodes: tuple[str, ...] = (),
    data_bars: Mapping[str, pl.DataFrame] | None = None,
    funding: pl.DataFrame | None = None,
) -> FastResult:
    """Run the artifact over `bars` on the fast path; same trades and equity as `run_backtest`.

    `data_bars` maps the symbols of the artifact's `data:` inputs to their bars, as for
    `run_backtest` (same alignment, same `hold`/`error` rule, same errors). Raises
    FastPathUnsupported (naming the node or field) when the artifact needs the event-driven loop
    (or has data inputs and no `data_bars` at all), and BacktestError for data that cannot run
    (as `run_backtest` does). `funding` (FUNDING_SCHEMA rows) is charged to a perp at each
    settlement exactly as `run_backtest(funding=...)` charges it.
    """
    tf_ns = timeframe_to_ns(artifact.instrument.timeframe)
    streams = load_data(artifact, data_bars)  # checked before the warm-up, as run_backtest does
    n = bars.height
    period = _atr_period(artifact)
    atr_warmup = make_stream("ATR", {"period": period}).warmup if period else 0
    warmup = max(graph.warmup, atr_warmup, sizing_warmup(artifact))
    if n < warmup + 1:
        raise BacktestError(
            f"{n} bars is not enough: the strategy needs {warmup} warm-up bars plus at least one to trade; "
            "give more data (--from earlier) or shorten indicator periods"
        )
    inst = artifact.instrument
    price_inc = float(inst.price_increment)
    ts = np.asarray(bars["ts_ns"].to_numpy(), dtype=np.int64)
    cols = {
        c: np.asarray(bars[c].to_numpy(), dtype=np.float64)
        for c in ("open", "high", "low", "close")
    }
    tk = {c: _to_ticks(cols[c], price_inc) for c in cols}
    bad = ~(
        (tk["low"] > 0)
        & (tk["low"] <= np.minimum(tk["open"], tk["close"]))
        & (np.maximum(tk["open"], tk["close"]) <= tk["high"])
        & (tk["high"] <= MAX_TICKS)
    )
    if bad.any() or (n > 1 and bool(np.any(np.diff(ts) <= 0))):
        where = int(np.argmax(bad)) if bad.any() else int(np.argmax(np.diff(ts) <= 0)) + 1
        raise FastPathUnsupported(
            f"bar {where} (ts {int(ts[where])}) would be refused by the order kernel (bad OHLC in "
            "ticks or a timestamp not after the previous bar); run_backtest skips such bars, the "
            "fast path does not: clean the data or use the event-driven path"
        )
    a = artifact
    scale_in = a.entry.scale_in or []
    scale_out = a.exit.scale_out or []
    need = (
        _cond_nodes(a.entry.when)
        | _cond_nodes(a.entry.invalid_if)
        | _cond_nodes(a.exit.when)
        | set(record_nodes)
    )
    for rule_in in scale_in:
        need |= _cond_nodes(rule_in.when)
    for rule_out in scale_out:
        need |= _cond_nodes(rule_out.when)
    sl = a.exit.stop_loss
    if sl is not None and sl.level is not None:
        need.add(sl.level)
    aux = align_data(streams, ts, tf_ns) if a.data else None
    values = evaluate(a, graph, bars, only=need, data=aux)
    when = _condition(a.entry.when, values, n)
    invalid = _condition(a.entry.invalid_if, values, n)
    exit_when = _condition(a.exit.when, values, n)
    in_when = np.zeros((len(scale_in), n), dtype=np.bool_)
    for r, rule_in in enumerate(scale_in):
        in_when[r] = _condition(rule_in.when, values, n)
    out_when = np.zeros((len(scale_out), n), dtype=np.bool_)
    for r, rule_out in enumerate(scale_out):
        out_when[r] = _condition(rule_out.when, values, n)
    level = (
        np.asarray(values[sl.level], dtype=np.float64)
        if sl is not None and sl.level is not None
        else np.full(n, math.nan)
    )
    if period:
        vol = np.asarray(bars["volume"].to_numpy(), dtype=np.float64)
        atr = run_stream(
            "ATR", {"period": period}, cols["open"], cols["high"], cols["low"], cols["close"], vol
        )
        atr_arr = np.asarray(next(iter(atr.values())), dtype=np.float64)
    else:
        atr_arr = np.full(n, math.nan)
    lookback = sizing_warmup(a)
    vol_arr = (
        rolling_realized_vol(cols["close"], lookback, periods_per_year(tf_ns))
        if lookback
        else np.full(n, math.nan)
    )
    pi, pf = _params(a, graph, tf_ns, atr_warmup)
    tps = a.exit.take_profit
    total = sum(tp.size_pct for tp in tps)
    tp_is_r = np.array([tp.r is not None for tp in tps], dtype=np.bool_)
    tp_val = np.array([tp.r if tp.r is not None else tp.pct for tp in tps], dtype=np.float64)
    tp_size = np.array([tp.size_pct for tp in tps], dtype=np.float64)
    tp_full = np.array(
        [k == len(tps) - 1 and abs(total - 100) < 1e-9 for k in range(len(tps))], dtype=np.bool_
    )
    rows, n_trades, equity, position, totals = _run(
        ts,
        tk["open"],
        tk["high"],
        tk["low"],
        tk["close"],
        when,
        invalid,
        exit_when,
        level,
        atr_arr,
        vol_arr,
        pi,
        pf,
        tp_is_r,
        tp_val,
        tp_size,
        tp_full,
        in_when,
        np.array([x.size_pct for x in scale_in], dtype=np.float64),
        np.array([x.max_adds for x in scale_in], dtype=np.int64),
        out_when,
        np.array([x.size_pct for x in scale_out], dtype=np.float64),
        *_funding_per_bar(a, bars, ts, tf_ns, funding),
    )
    ntp = len(tps)
    trades = [_trade(a, r, ntp) for r in rows[:n_trades].tolist()]
    return FastResult(
        artifact=a,
        ts_ns=ts,
        close=cols["close"],
        equity=equity,
        position=position,
        trades=trades,
        unit_value=float(pf[Q_UNIT]),
        price_increment=price_inc,
        timeframe_ns=tf_ns,
        traded_units=int(totals[0]),
        fees_units=int(totals[1]),
        funding_units=int(totals[2]),
        node_series={k: values[k] for k in record_nodes},
    )


def _funding_per_bar(
    artifact: Artifact, bars: pl.DataFrame, ts: I64, tf_ns: int, funding: pl.DataFrame | None
) -> tuple[I64, I64]:
    """(offsets per bar, rates in ppb) of the settlements each bar is charged: the order kernel
    charges every settlement before a bar's end that an earlier bar did not, at the rate the
    simulated venue gives it (the same `SimVenue.funding_rate_ppb`, fed the same schedule)."""
    n = ts.shape[0]
    if funding is None:
        return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    from order_kernel.venues.sim import SimVenue
    from strategy_kernel.backtest import funding_schedule

    sched = funding_schedule(artifact, bars, funding)
    symbol = artifact.instrument.symbol
    venue = SimVenue(funding_interval_ns=sched.interval_ns)
    sched.install(venue, symbol)
    due = np.fromiter(sched.due, dtype=np.int64, count=len(sched.due))
    ppb = np.fromiter(
        (venue.funding_rate_ppb(symbol, t) for t in sched.due), dtype=np.int64, count=len(due)
    )
    bar_of = np.searchsorted(ts + tf_ns, due, side="right")  # the first bar ending after it
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(bar_of, minlength=n)[:n])
    return offsets, ppb


@lru_cache(maxsize=256)
def _reason(roles: tuple[int, ...]) -> str:
    """Trade.exit_reason: the roles of the exit fills in order of first appearance, '+'-joined."""
    return "+".join(
        _ROLE_NAMES.get(x, f"out{x - ROLE_OUT}" if x > ROLE_OUT else f"tp{x - 1}") for x in roles
    )


def _trade(a: Artifact, r: list[int], ntp: int) -> Trade:
    n_targets = r[T_NTP]
    roles = tuple(r[T_BASE + ntp : T_BASE + ntp + r[T_NREASON]])
    reason = _reason(roles)
    return Trade(
        trade_id=f"{a.name}-{r[T_COUNTER]}",
        side=a.entry.side,
        entry_ts_ns=r[T_ENTRY_TS],
        entry_qty=r[T_ENTRY_QTY],
        entry_cost=r[T_ENTRY_COST],
        exit_ts_ns=r[T_EXIT_TS],
        exit_qty=r[T_EXIT_QTY],
        exit_cost=r[T_EXIT_COST],
        fees=r[T_FEES],
        stop_price=r[T_STOP] if r[T_HAS_STOP] else None,
        targets=r[T_BASE : T_BASE + n_targets],
        risk_units=r[T_RISK_UNITS],
        planned_qty=r[T_PLANNED],
        ref_price=r[T_REF],
        initial_stop=r[T_INIT_STOP],
        best_close=r[T_BEST],
        exit_reason=reason,
        entry_bar=r[T_ENTRY_BAR],
        exit_bar=r[T_EXIT_BAR],
    )
