"""Vectorised signal DAG: every node of a checked graph over the whole bar array at once.

The values equal what `strategy_kernel.dag.DagEvaluator` holds after each bar, node by node:
- clocked nodes (indicators, cross, rising/falling, lookback, levels, time windows, resample,
  regime)
  step only on the bars where one of their clocks ticks (the base clock every bar, a resample
  clock when its bucket completes) and hold their value in between;
- pure nodes (threshold, all/any/not, conviction, confluence) are functions of their inputs on
  every bar (the event-driven evaluator runs them on the first bar and whenever an input
  changes, which gives the same values);
- comparisons with NaN are false, `!=` included; cross compares with the previous step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt
import polars as pl

from artifacts.graph import SignalGraph
from artifacts.schema import (
    PRICE_COLUMNS,
    AllNode,
    AnyNode,
    Artifact,
    ConfluenceNode,
    ConvictionNode,
    CrossNode,
    DrawingLevelNode,
    FibLevelNode,
    IndicatorNode,
    LookbackNode,
    NotNode,
    RegimeNode,
    ResampleNode,
    RisingNode,
    ThresholdNode,
    TimeWindowNode,
    TrendLineNode,
    ZoneNode,
)
from feeds.schema import timeframe_to_ns
from indicators.registry import get_indicator
from indicators.streaming import run_stream
from strategy_kernel.errors import BacktestError, StrategyError
from strategy_kernel.multidata import checked_inputs

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Series = FloatArray | BoolArray

_WEEK_NS = 7 * 86_400_000_000_000
_MONDAY_ORIGIN_NS = 4 * 86_400_000_000_000
_LEVEL_MODES = ("touch", "above", "below", "break_up", "break_down", "retest")
_AGGS = ("last", "first", "max", "min", "sum", "mean")
_PURE = (ThresholdNode, AllNode, AnyNode, NotNode, ConvictionNode, ConfluenceNode)


class FastPathUnsupported(StrategyError):  # noqa: N818 - the name the API promises
    """The artifact uses something the fast path cannot replay exactly; run the event-driven path."""


# ----------------------------------------------------------------------------- numba helpers


@numba.njit(cache=True)
def _fsum(xs: FloatArray, n: int) -> float:  # pragma: no cover - compiled
    """CPython's math.fsum (Shewchuk partials, correctly rounded) over xs[:n], finite inputs."""
    partials = np.empty(n + 1, dtype=np.float64)
    m = 0
    special = 0.0
    for k in range(n):
        x = xs[k]
        if not math.isfinite(x):
            special += x
            continue
        i = 0
        for j in range(m):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        m = i
        partials[m] = x
        m += 1
    if special != 0.0 or math.isnan(special):
        return special
    hi = 0.0
    if m > 0:
        m -= 1
        hi = partials[m]
        lo = 0.0
        while m > 0:
            x = hi
            m -= 1
            y = partials[m]
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                break
        if m > 0 and ((lo < 0.0 and partials[m - 1] < 0.0) or (lo > 0.0 and partials[m - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            yr = x - hi
            if y == yr:
                hi = x
    return float(hi)


@numba.njit(cache=True)
def _level_loop(
    lo: FloatArray, hi: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray, mode: int
) -> BoolArray:  # pragma: no cover - compiled
    """indicators.nodes.Level over every bar; NaN band = the drawing does not exist there."""
    n = close.shape[0]
    out = np.zeros(n, dtype=np.bool_)
    have_prev = False
    prev = 0
    armed = 0
    for i in range(n):
        if math.isnan(lo[i]):
            have_prev = False
            continue
        c = close[i]
        pos = 1 if c > hi[i] else (-1 if c < lo[i] else 0)
        touch = low[i] <= hi[i] and high[i] >= lo[i]
        broke_up = have_prev and prev <= 0 and pos == 1
        broke_down = have_prev and prev >= 0 and pos == -1
        have_prev, prev = True, pos
        retest = False
        if broke_up or broke_down:
            armed = 1 if broke_up else -1
        elif armed != 0 and touch and pos == armed:
            retest = True
            armed = 0
        elif armed != 0 and pos == -armed:
            armed = 0
        if mode == 0:
            out[i] = touch
        elif mode == 1:
            out[i] = pos == 1
        elif mode == 2:
            out[i] = pos == -1
        elif mode == 3:
            out[i] = broke_up
        elif mode == 4:
            out[i] = broke_down
        else:
            out[i] = retest
    return out


@numba.njit(cache=True)
def _resample_loop(
    x: FloatArray, ts: npt.NDArray[np.int64], tf: int, base: int, origin: int, ratio: int, agg: int
) -> tuple[FloatArray, BoolArray]:  # pragma: no cover - compiled
    """indicators.nodes.Resample over its step bars: (value after each step, ticked)."""
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    ticked = np.zeros(n, dtype=np.bool_)
    acc = np.empty(max(ratio, 1) + n, dtype=np.float64)
    k = 0
    have_bucket = False
    bucket = 0
    value = np.nan
    for i in range(n):
        b = (ts[i] - origin) // tf
        if not have_bucket or b != bucket:
            have_bucket, bucket, k = True, b, 0
        acc[k] = x[i]
        k += 1
        if (ts[i] + base - origin) % tf == 0:
            if k == ratio:
                if agg == 0:
                    value = acc[k - 1]
                elif agg == 1:
                    value = acc[0]
                elif agg == 2:
                    cur = acc[0]
                    for j in range(1, k):
                        if acc[j] > cur:
                            cur = acc[j]
                    value = cur
                elif agg == 3:
                    cur = acc[0]
                    for j in range(1, k):
                        if acc[j] < cur:
                            cur = acc[j]
                    value = cur
                else:
                    total = _fsum(acc, k)
                    value = total if agg == 4 else total / k
                ticked[i] = True
            have_bucket, k = False, 0
        out[i] = value
    return out, ticked


@numba.njit(cache=True)
def _confluence_loop(
    vals: FloatArray, vetoes: BoolArray, weights: FloatArray, method: int, k: int, thr: float
) -> FloatArray:  # pragma: no cover - compiled
    """weighted_sum (0) / veto (2) per bar over rows of `vals` (bars x inputs)."""
    n, m = vals.shape
    out = np.empty(n, dtype=np.float64)
    wv = np.empty(m, dtype=np.float64)
    aw = np.empty(m, dtype=np.float64)
    for i in range(n):
        if method == 2 and vetoes[i]:
            out[i] = 0.0
            continue
        c = 0
        for j in range(m):
            v = vals[i, j]
            if not math.isnan(v):
                wv[c] = weights[j] * v
                aw[c] = abs(weights[j])
                c += 1
        norm = _fsum(aw, c)
        if c == 0 or norm == 0:
            out[i] = np.nan
            continue
        r = _fsum(wv, c) / norm
        r = r if r < 1.0 else 1.0
        out[i] = r if r > -1.0 else -1.0
    return out


@numba.njit(cache=True)
def _vol_regime_loop(
    x: FloatArray, lookback: int, window: int, low_pct: float, high_pct: float
) -> FloatArray:  # pragma: no cover - compiled
    """indicators.nodes.VolatilityRegime over its step values, the same float operations in order."""
    n = x.shape[0]
    r = np.empty(n, dtype=np.float64)
    for i in range(n):
        prev = x[i - 1] if i > 0 else np.nan
        q = x[i] / prev if x[i] > 0 and prev > 0 else np.nan
        r[i] = math.log(q) if q > 0 else np.nan
    rv = np.full(n, np.nan)
    for i in range(lookback - 1, n):
        total = 0.0
        for j in range(i - lookback + 1, i + 1):
            total += r[j]
        mean = total / lookback
        ss = 0.0
        for j in range(i - lookback + 1, i + 1):
            d = r[j] - mean
            ss += d * d
        rv[i] = math.sqrt(ss / (lookback - 1))
    out = np.full(n, np.nan)
    for i in range(window - 1, n):
        defined = True
        below = 0
        for j in range(i - window + 1, i + 1):
            if math.isnan(rv[j]):
                defined = False
                break
            if j < i and rv[j] < rv[i]:
                below += 1
        if not defined:
            continue
        pr = 100.0 * below / (window - 1)
        out[i] = 0.0 if pr <= low_pct else (2.0 if pr >= high_pct else 1.0)
    return out


@numba.njit(cache=True)
def _trend_regime_loop(
    x: FloatArray, lookback: int, threshold: float
) -> FloatArray:  # pragma: no cover - compiled
    """indicators.nodes.TrendRegime (efficiency ratio) over its step values."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    for i in range(lookback, n):
        change = x[i] - x[i - lookback]
        path = 0.0
        for j in range(i - lookback + 1, i + 1):
            path += abs(x[j] - x[j - 1])
        if math.isnan(change) or math.isnan(path):
            continue
        er = abs(change) / path if path > 0 else 0.0
        if er >= threshold and change > 0:
            out[i] = 1.0
        elif er >= threshold and change < 0:
            out[i] = -1.0
        else:
            out[i] = 0.0
    return out


# ----------------------------------------------------------------------------- numpy helpers


def compare_arrays(op: str, a: Series, b: Series | float) -> BoolArray:
    """indicators.nodes.compare over arrays: a NaN side is never true (not even for `!=`)."""
    a = np.asarray(a, dtype=np.float64)
    bb = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if op == "<":
            r = a < bb
        elif op == "<=":
            r = a <= bb
        elif op == ">":
            r = a > bb
        elif op == ">=":
            r = a >= bb
        elif op == "==":
            r = a == bb
        else:
            r = (a != bb) & ~np.isnan(a) & ~np.isnan(bb)
    return np.asarray(r, dtype=np.bool_)


def _hold(step_vals: Series, mask: BoolArray, initial: float | bool) -> Series:
    """Values computed on the step bars (mask), held in between, `initial` before the first step."""
    n = mask.shape[0]
    idx = np.where(mask, np.arange(n), -1)
    np.maximum.accumulate(idx, out=idx)
    full = np.empty(n, dtype=step_vals.dtype)
    pos = np.cumsum(mask) - 1
    seen = idx >= 0
    full[seen] = step_vals[pos[seen]]
    full[~seen] = initial
    return full  # type: ignore[return-value]


def _local_fields(ts: npt.NDArray[np.int64], tz: str) -> tuple[npt.NDArray[np.int64], ...]:
    """(weekday Monday=0, minute of day) of each bar's open time in `tz`."""
    if np.all(ts % 1000 == 0):
        if tz == "UTC":
            local = ts
        else:
            import pandas as pd

            idx = pd.DatetimeIndex(ts.astype("datetime64[ns]"), tz="UTC").tz_convert(tz)
            local = ts + np.asarray(idx.tz_localize(None).asi8 - ts, dtype=np.int64)
        days = local // 86_400_000_000_000
        minute = (local % 86_400_000_000_000) // 60_000_000_000
        return (days + 3) % 7, minute
    from datetime import datetime
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    wd = np.empty(len(ts), dtype=np.int64)
    mi = np.empty(len(ts), dtype=np.int64)
    for i, t in enumerate(ts.tolist()):
        local_dt = datetime.fromtimestamp(t / 1e9, tz=zone)
        wd[i], mi[i] = local_dt.weekday(), local_dt.hour * 60 + local_dt.minute
    return wd, mi


# ----------------------------------------------------------------------------- data inputs


@dataclass(frozen=True)
class DataStream:
    """One `data:` input's bars as arrays (what `strategy_kernel.multidata.DataFeed` delivers)."""

    name: str
    symbol: str
    timeframe: str
    tf_ns: int
    on_missing: str
    ts: npt.NDArray[np.int64]
    cols: dict[str, FloatArray]


@dataclass(frozen=True)
class AlignedData:
    """Data inputs on the instrument's bars: `values` of `<input>.<column>` after each bar (held,
    NaN before the input's first visible bar) and `ticks` of each clock `data:<input>`."""

    values: dict[str, FloatArray]
    ticks: dict[str, BoolArray]


def load_data(artifact: Artifact, frames: Mapping[str, pl.DataFrame] | None) -> list[DataStream]:
    """Check and read the frames of the artifact's `data:` inputs, in delivery (name) order.

    Same checks and messages as `DataFeed` (BacktestError); FastPathUnsupported when the artifact
    has data inputs but no frames were passed at all (the caller then runs the event path).
    """
    inputs = artifact.data or {}
    if not inputs:
        return []
    if frames is None:
        raise FastPathUnsupported(
            f"data inputs ({', '.join(sorted(inputs))}: other symbols' bars) need their bars: "
            "pass data_bars={symbol: frame} to fast_backtest (as to run_backtest)"
        )
    return [
        DataStream(
            name,
            spec.symbol,
            spec.timeframe,
            tf_ns,
            spec.on_missing,
            ts,
            {c: np.asarray(frame[c].to_numpy(), dtype=np.float64) for c in PRICE_COLUMNS},
        )
        for name, spec, frame, ts, tf_ns in checked_inputs(artifact, frames)
    ]


def align_data(streams: list[DataStream], ts: npt.NDArray[np.int64], base_ns: int) -> AlignedData:
    """`DataFeed.due` over every instrument bar at once (instrument ts strictly increasing).

    At decision D = ts + timeframe the input bars closed by D are visible; the newest is delivered
    when it is new (its clock ticks), else the columns hold. A decision on the input's grid with no
    input bar closing exactly then is missing: `hold` keeps the values, `error` raises the
    BacktestError the event path raises at the first such bar (inputs in name order).
    """
    decision = ts + base_ns
    values: dict[str, FloatArray] = {}
    ticks: dict[str, BoolArray] = {}
    first_error: tuple[int, str] | None = None
    for s in streams:
        n_aux = s.ts.shape[0]
        closes = s.ts + s.tf_ns
        seen = np.searchsorted(closes, decision, side="right")  # input bars closed by D
        last = np.maximum(seen - 1, 0)
        prev = np.concatenate((np.zeros(1, dtype=seen.dtype), seen[:-1]))
        ticks[f"data:{s.name}"] = np.asarray(seen > prev, dtype=np.bool_)
        for c in PRICE_COLUMNS:
            col = s.cols[c]
            values[f"{s.name}.{c}"] = (
                np.where(seen > 0, col[last], np.nan) if n_aux else np.full(ts.shape[0], np.nan)
            )
        if s.on_missing == "error" and n_aux:
            on_grid = (decision - s.ts[0]) % s.tf_ns == 0
            missing = on_grid & (seen > 0) & (closes[last] != decision)
            if missing.any():
                i = int(np.argmax(missing))
                d = int(decision[i])
                msg = (
                    f"data.{s.name}: no {s.symbol} {s.timeframe} bar closes at ts {d} (open ts "
                    f"{d - s.tf_ns}); fill the gap in the data or set data.{s.name}.on_missing: hold"
                )
                if first_error is None or i < first_error[0]:
                    first_error = (i, msg)
    if first_error is not None:
        raise BacktestError(first_error[1])
    return AlignedData(values, ticks)


# ----------------------------------------------------------------------------- the evaluator


def unsupported_node(artifact: Artifact, graph: SignalGraph) -> str | None:
    """The first node (in topological order) the fast path cannot vectorise, as 'id (kind)'."""
    for nid in graph.order:
        node = artifact.nodes[nid]
        if node.kind in ("python", "sentiment"):
            return f"{nid} (kind {node.kind})"
    return None


def evaluate(
    artifact: Artifact,
    graph: SignalGraph,
    bars: pl.DataFrame,
    *,
    only: set[str] | None = None,
    data: AlignedData | None = None,
) -> dict[str, Series]:
    """Every node's value after each bar, as arrays (float64 or bool) keyed by node id
    (the price columns are included, as the DAG's values are, and `<input>.<column>` of data
    inputs).

    Raises FastPathUnsupported for python and sentiment nodes (they need the event loop) and for
    data inputs without `data` (`align_data(load_data(...))`). `only` limits the work to these
    nodes and what they depend on.
    """
    bad = unsupported_node(artifact, graph)
    if bad is not None:
        raise FastPathUnsupported(
            f"node {bad} cannot run on the fast path (python and sentiment nodes need the "
            "event-driven loop); use strategy_kernel.backtest.run_backtest for this artifact"
        )
    base_ns = timeframe_to_ns(artifact.instrument.timeframe)
    ts = np.asarray(bars["ts_ns"].to_numpy(), dtype=np.int64)
    cols = {c: np.asarray(bars[c].to_numpy(), dtype=np.float64) for c in PRICE_COLUMNS}
    n = len(ts)
    values: dict[str, Series] = dict(cols)
    clocks: dict[str, frozenset[str]] = {c: frozenset({"base"}) for c in PRICE_COLUMNS}
    ticks: dict[str, BoolArray] = {"base": np.ones(n, dtype=np.bool_)}
    if artifact.data:  # other symbols' columns tick on clocks of their own
        if data is None:
            raise FastPathUnsupported(
                f"data inputs ({', '.join(sorted(artifact.data))}) need their bars: pass "
                "data=align_data(load_data(artifact, data_bars), ts, timeframe_ns)"
            )
        for name in artifact.data:
            for c in PRICE_COLUMNS:
                values[f"{name}.{c}"] = data.values[f"{name}.{c}"]
                clocks[f"{name}.{c}"] = frozenset({f"data:{name}"})
            ticks[f"data:{name}"] = data.ticks[f"data:{name}"]
    order = graph.order
    if only is not None:
        need: set[str] = set()
        stack = [x for x in only if x in artifact.nodes]
        while stack:
            nid = stack.pop()
            if nid in need:
                continue
            need.add(nid)
            stack.extend(r for _, r, _ in artifact.nodes[nid].refs() if r in artifact.nodes)
        order = tuple(x for x in order if x in need)
    for nid in order:
        node = artifact.nodes[nid]
        inputs = _inputs_of(node, graph, nid)
        own = frozenset().union(*(clocks[i] for i in inputs)) if inputs else frozenset({"base"})
        clocks[nid] = frozenset({nid}) if isinstance(node, ResampleNode) else own
        if isinstance(node, _PURE):
            values[nid] = _pure(node, [values[i] for i in inputs], graph.types[nid] == "float")
            continue
        every_bar = own == frozenset({"base"})
        mask = ticks["base"]
        if not every_bar:
            mask = np.zeros(n, dtype=np.bool_)
            for c in own:
                mask |= ticks[c]
        steps = [
            np.asarray(values[i]) if every_bar else np.asarray(values[i])[mask] for i in inputs
        ]
        step_ts = ts if every_bar else ts[mask]
        initial: float | bool = math.nan if graph.types[nid] == "float" else False
        if isinstance(node, ResampleNode):
            tf = timeframe_to_ns(node.timeframe)
            origin = _MONDAY_ORIGIN_NS if tf % _WEEK_NS == 0 else 0
            x = np.ascontiguousarray(steps[0], dtype=np.float64)
            v, tk = _resample_loop(
                x, step_ts, tf, base_ns, origin, tf // base_ns, _AGGS.index(node.agg)
            )
            tick_full = np.zeros(n, dtype=np.bool_)
            tick_full[np.flatnonzero(mask)[tk]] = True
            ticks[nid] = tick_full
            values[nid] = v if every_bar else _hold(v, mask, initial)
            continue
        step_vals = _clocked(node, nid, graph, steps, step_ts, cols, mask)  # type: ignore[arg-type]
        values[nid] = step_vals if every_bar else _hold(step_vals, mask, initial)
    return values  # node ids and the price columns


def _inputs_of(node: object, graph: SignalGraph, nid: str) -> tuple[str, ...]:
    """The node's inputs in the order strategy_kernel.dag passes them."""
    if isinstance(node, IndicatorNode):
        return graph.indicators[nid].inputs
    if isinstance(node, ThresholdNode):
        return (node.input,) if not isinstance(node.value, str) else (node.input, node.value)
    if isinstance(node, CrossNode):
        return (node.a,) if not isinstance(node.b, str) else (node.a, node.b)
    if isinstance(node, AllNode | AnyNode):
        return tuple(node.inputs)
    if isinstance(node, NotNode | RisingNode | LookbackNode | ResampleNode | RegimeNode):
        return (node.input,)
    if isinstance(node, ConvictionNode):
        return (node.input,) if node.input is not None else (str(node.when),)
    if isinstance(node, ConfluenceNode):
        return (*node.inputs, *node.vetoes)
    return ()


def _pure(node: object, args: list[Series], is_float: bool) -> Series:
    """A pure node: f(inputs) on every bar."""
    n = len(args[0])
    if isinstance(node, ThresholdNode):
        rhs: Series | float = args[1] if len(args) > 1 else float(node.value)
        out: Series = compare_arrays(node.op, np.asarray(args[0], dtype=np.float64), rhs)
    elif isinstance(node, AllNode):
        out = np.logical_and.reduce([_truthy(a) for a in args])
    elif isinstance(node, AnyNode):
        out = np.logical_or.reduce([_truthy(a) for a in args])
    elif isinstance(node, NotNode):
        out = ~_truthy(args[0])
    elif isinstance(node, ConvictionNode):
        x = args[0]
        if node.lo is None or node.hi is None:
            c = np.where(_truthy(x), float(node.value), 0.0)
        else:
            xf = np.asarray(x, dtype=np.float64)
            raw = 2.0 * (xf - node.lo) / (node.hi - node.lo) - 1.0
            c = np.where(raw < 1.0, raw, 1.0)
            c = np.where(c > -1.0, c, -1.0)
            c = np.where(np.isnan(xf), np.nan, c)
        out = 1.0 + (c + 1.0) * 4.5 if node.scale == "one_to_ten" else c
    elif isinstance(node, ConfluenceNode):
        k = len(node.inputs)
        vals = np.column_stack([np.asarray(a, dtype=np.float64) for a in args[:k]])
        if node.method == "k_of_n":
            with np.errstate(invalid="ignore"):
                hits = (~np.isnan(vals)) & (vals >= node.threshold)
            out = hits.sum(axis=1) >= node.k
        else:
            vetoes = np.zeros(n, dtype=np.bool_)
            for a in args[k:]:
                vetoes |= _truthy(a)
            weights = np.asarray(node.weights if node.weights is not None else [1.0] * k)
            method = 2 if node.method == "veto" else 0
            out = _confluence_loop(
                np.ascontiguousarray(vals), vetoes, weights.astype(np.float64), method, 0, 0.0
            )
    else:  # pragma: no cover - _PURE lists exactly the kinds above
        raise FastPathUnsupported(f"no vectorised form for {type(node).__name__}")
    if out.dtype == np.bool_:
        return np.asarray(out, dtype=np.bool_)
    return np.asarray(out, dtype=np.float64)


def _truthy(a: Series) -> BoolArray:
    """Python truthiness: NaN is true, 0.0 is false."""
    if a.dtype == np.bool_:
        return np.asarray(a, dtype=np.bool_)
    return np.asarray(a != 0, dtype=np.bool_)


def _clocked(
    node: object,
    nid: str,
    graph: SignalGraph,
    steps: list[npt.NDArray[np.float64] | BoolArray],
    step_ts: npt.NDArray[np.int64],
    cols: dict[str, FloatArray],
    mask: BoolArray,
) -> Series:
    """A clocked node over its step bars (inputs already restricted to them)."""
    m = len(step_ts)
    if isinstance(node, IndicatorNode):
        b = graph.indicators[nid]
        spec = get_indicator(b.fn)
        unused = np.full(m, np.nan)  # columns the indicator does not read: NaN, as in the DAG
        slots = [unused] * 5
        for name, arr in zip(spec.inputs, steps, strict=True):
            slots[PRICE_COLUMNS.index(name)] = np.asarray(arr, dtype=np.float64)
        out = run_stream(b.fn, dict(b.params), *slots)
        return np.asarray(list(out.values())[b.output_index], dtype=np.float64)
    if isinstance(node, CrossNode):
        a = np.asarray(steps[0], dtype=np.float64)
        bb = np.asarray(steps[1], dtype=np.float64) if len(steps) > 1 else np.full(m, float(node.b))
        pa = np.concatenate(([np.nan], a[:-1]))
        pb = np.concatenate(([np.nan], bb[:-1]))
        if node.direction == "above":
            return compare_arrays("<=", pa, pb) & compare_arrays(">", a, bb)
        return compare_arrays(">=", pa, pb) & compare_arrays("<", a, bb)
    if isinstance(node, RisingNode):
        x = np.asarray(steps[0], dtype=np.float64)
        ok = compare_arrays("<" if node.kind == "rising" else ">", x[:-1], x[1:])
        run = np.zeros(m, dtype=np.int64)
        if m > 1:  # run[j] = consecutive strict moves ending at step j
            okp = np.concatenate(([False], ok))
            idx = np.arange(m)
            last_break = np.where(~okp, idx, 0)
            np.maximum.accumulate(last_break, out=last_break)
            run = idx - last_break
        return np.asarray(run >= node.bars, dtype=np.bool_)
    if isinstance(node, RegimeNode):
        x = np.ascontiguousarray(steps[0], dtype=np.float64)
        if node.method == "volatility":
            assert (
                node.window is not None and node.low_pct is not None and node.high_pct is not None
            )
            return _vol_regime_loop(x, node.lookback, node.window, node.low_pct, node.high_pct)
        assert node.threshold is not None
        return _trend_regime_loop(x, node.lookback, node.threshold)
    if isinstance(node, LookbackNode):
        x = np.asarray(steps[0], dtype=np.float64)
        out_f = np.full(m, np.nan)
        if m > node.bars:
            out_f[node.bars :] = x[: m - node.bars]
        return out_f
    if isinstance(node, TimeWindowNode):
        start, end = (int(x[:2]) * 60 + int(x[3:]) for x in node.hours.split("-"))
        names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        days = np.zeros(7, dtype=np.bool_)
        for d in node.weekdays:
            days[names.index(d)] = True
        wd, minute = _local_fields(step_ts, node.tz)
        if start < end:
            return np.asarray(days[wd] & (minute >= start) & (minute < end), dtype=np.bool_)
        return np.asarray(
            np.where(minute >= start, days[wd], (minute < end) & days[(wd - 1) % 7]),
            dtype=np.bool_,
        )
    if isinstance(node, DrawingLevelNode | ZoneNode | FibLevelNode | TrendLineNode):
        lo, hi = _band(node, step_ts)
        return np.asarray(
            _level_loop(
                lo,
                hi,
                cols["high"][mask],
                cols["low"][mask],
                cols["close"][mask],
                _LEVEL_MODES.index(node.mode),
            ),
            dtype=np.bool_,
        )
    raise FastPathUnsupported(f"node {nid} (kind {getattr(node, 'kind', '?')}) has no fast path")


def _band(node: object, ts: npt.NDArray[np.int64]) -> tuple[FloatArray, FloatArray]:
    """(lo, hi) of a level's band at each bar; NaN where the drawing does not exist."""
    m = len(ts)
    if isinstance(node, ZoneNode):
        return np.full(m, node.low), np.full(m, node.high)
    if isinstance(node, DrawingLevelNode | FibLevelNode):
        price = node.price if isinstance(node, DrawingLevelNode) else node.price()
        half = price * node.tolerance_bps / 10_000.0
        return np.full(m, price - half), np.full(m, price + half)
    assert isinstance(node, TrendLineNode)
    t1, p1, t2, p2 = node.p1.ts_ns(), node.p1.price, node.p2.ts_ns(), node.p2.price
    slope = (p2 - p1) / (t2 - t1)
    price_arr = p1 + slope * (ts - t1).astype(np.float64)
    half_arr = price_arr * node.tolerance_bps / 10_000.0
    lo, hi = price_arr - half_arr, price_arr + half_arr
    gone = price_arr <= 0
    if node.extend in ("right", "none"):
        gone |= ts < t1
    if node.extend == "none":
        gone |= ts > t2
    lo[gone] = np.nan
    hi[gone] = np.nan
    return lo, hi
