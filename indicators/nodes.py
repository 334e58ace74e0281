"""SignalNode kinds: the executable halves of the artifact's node types.

A node receives its input values (in the order its artifact node declares them) and the current
bar, and returns its new value: a float (NaN while undefined) or a bool. Nodes marked `clocked`
keep state across bars and must see every bar of their stream; the others are pure functions
of their inputs and run only when an input changed (incremental evaluation).
State can be snapshotted and restored so recovery and hot-swap carry it over.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any, NamedTuple, Protocol

from indicators.streaming import make_stream

Value = float | bool


class BarValues(NamedTuple):
    """The bar a node sees: the one that just closed (no look-ahead)."""

    ts_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class SignalNode(Protocol):
    clocked: bool

    def update(self, args: Sequence[Value], bar: BarValues) -> Value: ...

    def snapshot(self) -> Any: ...

    def restore(self, state: Any) -> None: ...


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def compare(op: str, a: float, b: float) -> bool:
    """A comparison where an undefined (NaN) side is never true, not even for `!=`."""
    if math.isnan(a) or math.isnan(b):
        return False
    return _OPS[op](a, b)


class Stateless:
    clocked = False

    def snapshot(self) -> Any:
        return None

    def restore(self, state: Any) -> None:
        return None


class IndicatorSignal:
    """A streaming indicator; `input_slots` maps each declared input to o/h/l/c/v positions."""

    clocked = True
    _SLOTS = ("open", "high", "low", "close", "volume")

    def __init__(
        self, fn: str, params: dict[str, int | float], inputs: Sequence[str], output_index: int
    ) -> None:
        self.stream = make_stream(fn, dict(params))
        self.input_slots = [self._SLOTS.index(name) for name in inputs]
        self.output_index = output_index
        # one input (the common case: close) is placed without a loop
        self._single = self.input_slots[0] if len(self.input_slots) == 1 else -1

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        nan = math.nan
        if self._single == 3 and len(args) == 1:  # close only: no slot list to build
            out = self.stream.update_floats(nan, nan, nan, float(args[0]), nan)
            return float(out[self.output_index])
        slots = [nan] * 5
        for slot, value in zip(self.input_slots, args, strict=True):
            slots[slot] = float(value)
        return float(self.stream.update_floats(*slots)[self.output_index])

    def snapshot(self) -> Any:
        return self.stream.snapshot()

    def restore(self, state: Any) -> None:
        self.stream.restore(state)


class Threshold(Stateless):
    def __init__(self, op: str, value: float | None) -> None:
        self.op = op
        self.value = value  # None: the second input is a node

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        rhs = float(args[1]) if self.value is None else self.value
        lhs = float(args[0])
        if lhs != lhs or rhs != rhs:  # compare(): an undefined (NaN) side is never true
            return False
        return _OPS[self.op](lhs, rhs)


class Cross:
    """True on the bar `a` crosses `b`: above = prev a <= prev b and a > b (below mirrored)."""

    clocked = True

    def __init__(self, direction: str, value: float | None) -> None:
        self.above = direction == "above"
        self.value = value
        self.prev: tuple[float, float] = (math.nan, math.nan)

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        a = float(args[0])
        b = float(args[1]) if self.value is None else self.value
        pa, pb = self.prev
        self.prev = (a, b)
        # plain float comparisons: <, <=, >, >= are already false when a side is NaN (= compare())
        if self.above:
            return pa <= pb and a > b
        return pa >= pb and a < b

    def snapshot(self) -> Any:
        return self.prev

    def restore(self, state: Any) -> None:
        self.prev = (float(state[0]), float(state[1]))


class AllOf(Stateless):
    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        return all(args)  # truth value of each input, as bool(a)


class AnyOf(Stateless):
    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        return any(args)


class Not(Stateless):
    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        return not bool(args[0])


class Rising:
    """True when the input moved strictly up (or down) on each of the last `bars` bars."""

    clocked = True

    def __init__(self, bars: int, rising: bool) -> None:
        self.window: deque[float] = deque(maxlen=bars + 1)
        self.rising = rising

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        self.window.append(float(args[0]))
        if len(self.window) < (self.window.maxlen or 0):
            return False
        w = self.window
        # each step strictly up (down); < and > are false when a side is NaN, like compare()
        return all(map(operator.lt if self.rising else operator.gt, w, islice(w, 1, None)))

    def snapshot(self) -> Any:
        return list(self.window)

    def restore(self, state: Any) -> None:
        self.window.clear()
        self.window.extend(float(x) for x in state)


class Lookback:
    """The input's value `bars` bars ago; NaN until that much history exists."""

    clocked = True

    def __init__(self, bars: int) -> None:
        self.window: deque[float] = deque(maxlen=bars + 1)

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        self.window.append(float(args[0]))
        return self.window[0] if len(self.window) == self.window.maxlen else math.nan

    def snapshot(self) -> Any:
        return list(self.window)

    def restore(self, state: Any) -> None:
        self.window.clear()
        self.window.extend(float(x) for x in state)


def realized_vol(returns: Sequence[float]) -> float:
    """Sample stdev (n - 1) of the returns, summed left to right (the fast path sums the same way)."""
    n = len(returns)
    total = 0.0
    for r in returns:
        total += r
    mean = total / n
    ss = 0.0
    for r in returns:
        d = r - mean
        ss += d * d
    return math.sqrt(ss / (n - 1))  # NaN in, NaN out (inf gives inf - inf = NaN)


class VolatilityRegime:
    """0 / 1 / 2 = low / normal / high realised volatility against its own recent history.

    rv = realized_vol of the last `lookback` log returns; the state ranks rv among the previous
    `window - 1` rv values (artifacts.schema.RegimeNode gives the exact rule). NaN until defined.
    """

    clocked = True

    def __init__(self, lookback: int, window: int, low_pct: float, high_pct: float) -> None:
        self.window, self.low_pct, self.high_pct = window, low_pct, high_pct
        self.prev = math.nan
        self.returns: deque[float] = deque(maxlen=lookback)
        self.rvs: deque[float] = deque(maxlen=window)

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        x = float(args[0])
        prev, self.prev = self.prev, x
        # a non-positive or undefined price (or a ratio underflowing to 0) has no log return
        q = x / prev if x > 0 and prev > 0 else math.nan
        self.returns.append(math.log(q) if q > 0 else math.nan)
        rv = math.nan
        if len(self.returns) == self.returns.maxlen:
            rv = realized_vol(self.returns)
        self.rvs.append(rv)
        if len(self.rvs) < self.window or any(v != v for v in self.rvs):
            return math.nan
        below = sum(1 for v in islice(self.rvs, self.window - 1) if v < rv)
        pr = 100.0 * below / (self.window - 1)
        return 0.0 if pr <= self.low_pct else 2.0 if pr >= self.high_pct else 1.0

    def snapshot(self) -> Any:
        return (self.prev, list(self.returns), list(self.rvs))

    def restore(self, state: Any) -> None:
        self.prev = float(state[0])
        self.returns.clear()
        self.returns.extend(float(x) for x in state[1])
        self.rvs.clear()
        self.rvs.extend(float(x) for x in state[2])


class TrendRegime:
    """1 / 0 / -1 = up / range / down from Kaufman's efficiency ratio over `lookback` steps.

    er = |x[t] - x[t-lookback]| / sum of |x[i] - x[i-1]| (0 when that path is 0); a trend needs
    er >= threshold, its sign is the change's. NaN while any value in the window is undefined.
    """

    clocked = True

    def __init__(self, lookback: int, threshold: float) -> None:
        self.threshold = threshold
        self.window: deque[float] = deque(maxlen=lookback + 1)

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        self.window.append(float(args[0]))
        w = self.window
        if len(w) < (w.maxlen or 0):
            return math.nan
        change = w[-1] - w[0]
        path = 0.0
        for a, b in zip(w, islice(w, 1, None), strict=False):
            path += abs(b - a)
        if change != change or path != path:
            return math.nan
        er = abs(change) / path if path > 0 else 0.0
        if er >= self.threshold and change > 0:
            return 1.0
        if er >= self.threshold and change < 0:
            return -1.0
        return 0.0

    def snapshot(self) -> Any:
        return list(self.window)

    def restore(self, state: Any) -> None:
        self.window.clear()
        self.window.extend(float(x) for x in state)


class Level:
    """A price band evaluated with the level modes (touch/above/below/break_up/break_down/retest).

    `band(bar)` gives (lo, hi) for the bar, or None where the drawing does not exist. Breaks arm
    a retest: the first later bar that touches the band and closes beyond it on the broken side.
    """

    clocked = True

    def __init__(self, mode: str, band: Callable[[BarValues], tuple[float, float] | None]) -> None:
        self.mode = mode
        self.band = band
        self.prev_pos: int | None = None  # -1 below, 0 inside, +1 above the band at the last close
        self.armed = 0  # direction of the last unretested break

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        band = self.band(bar)
        if band is None:
            self.prev_pos = None
            return False
        lo, hi = band
        pos = 1 if bar.close > hi else -1 if bar.close < lo else 0
        touch = bar.low <= hi and bar.high >= lo
        prev, self.prev_pos = self.prev_pos, pos
        broke_up = prev is not None and prev <= 0 and pos == 1
        broke_down = prev is not None and prev >= 0 and pos == -1
        retest = False
        if broke_up or broke_down:
            self.armed = 1 if broke_up else -1
        elif self.armed and touch and pos == self.armed:
            retest, self.armed = True, 0
        elif self.armed and pos == -self.armed:
            self.armed = 0  # the break failed: back through the band
        if self.mode == "touch":
            return touch
        if self.mode == "above":
            return pos == 1
        if self.mode == "below":
            return pos == -1
        if self.mode == "break_up":
            return broke_up
        if self.mode == "break_down":
            return broke_down
        return retest

    def snapshot(self) -> Any:
        return (self.prev_pos, self.armed)

    def restore(self, state: Any) -> None:
        self.prev_pos, self.armed = state[0], int(state[1])


def fixed_band(price: float, tolerance_bps: float) -> Callable[[BarValues], tuple[float, float]]:
    half = price * tolerance_bps / 10_000.0
    return lambda bar: (price - half, price + half)


def zone_band(low: float, high: float) -> Callable[[BarValues], tuple[float, float]]:
    return lambda bar: (low, high)


def line_band(
    t1: int, p1: float, t2: int, p2: float, tolerance_bps: float, extend: str
) -> Callable[[BarValues], tuple[float, float] | None]:
    """The line through (t1, p1) and (t2, p2) at each bar's open time, ± tolerance."""
    slope = (p2 - p1) / (t2 - t1)

    def band(bar: BarValues) -> tuple[float, float] | None:
        t = bar.ts_ns
        if (extend in ("right", "none") and t < t1) or (extend == "none" and t > t2):
            return None
        price = p1 + slope * (t - t1)
        if price <= 0:
            return None
        half = price * tolerance_bps / 10_000.0
        return (price - half, price + half)

    return band


class TimeWindow(Stateless):
    """True while the bar's open time is inside the session (hours may wrap past midnight)."""

    clocked = True

    def __init__(self, hours: str, weekdays: Sequence[str], tz: str) -> None:
        from zoneinfo import ZoneInfo

        start, end = (int(x[:2]) * 60 + int(x[3:]) for x in hours.split("-"))
        self.start, self.end = start, end
        names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        self.days = frozenset(names.index(d) for d in weekdays)
        self.tz = ZoneInfo(tz)

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        from datetime import datetime

        local = datetime.fromtimestamp(bar.ts_ns / 1e9, tz=self.tz)
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= minute < self.end
        # wraps past midnight: the part after midnight belongs to the previous day's session
        if minute >= self.start:
            return local.weekday() in self.days
        return minute < self.end and (local.weekday() - 1) % 7 in self.days


_WEEK_NS = 7 * 86_400_000_000_000
_MONDAY_ORIGIN_NS = 4 * 86_400_000_000_000  # 1970-01-05 was a Monday


class Resample:
    """Aggregates the input over coarse buckets; the value changes only when a bucket completes.

    A bucket is emitted on the bar whose close reaches the bucket end, and only if every fine bar
    of it was seen (like `feeds.resample` with incomplete="drop"): a bucket cut by the start of the
    data or by a gap is skipped, never emitted early or from part of its bars. Buckets align to the
    Unix epoch; weekly buckets start on Monday 00:00 UTC.
    """

    clocked = True

    def __init__(self, timeframe_ns: int, base_ns: int, agg: str) -> None:
        self.tf, self.base, self.agg = timeframe_ns, base_ns, agg
        self.ratio = timeframe_ns // base_ns
        self.origin = _MONDAY_ORIGIN_NS if timeframe_ns % _WEEK_NS == 0 else 0
        self.bucket: int | None = None
        self.acc: list[float] = []
        self.value = math.nan
        self.ticked = False

    def _aggregate(self) -> float:
        a = self.acc
        if self.agg == "last":
            return a[-1]
        if self.agg == "first":
            return a[0]
        if self.agg == "max":
            return max(a)
        if self.agg == "min":
            return min(a)
        total = math.fsum(a)
        return total if self.agg == "sum" else total / len(a)

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        self.ticked = False
        b = (bar.ts_ns - self.origin) // self.tf
        if b != self.bucket:
            self.bucket, self.acc = b, []
        self.acc.append(float(args[0]))
        if (bar.ts_ns + self.base - self.origin) % self.tf == 0:
            if len(self.acc) == self.ratio:
                self.value = float(self._aggregate())
                self.ticked = True
            self.bucket, self.acc = None, []
        return self.value

    def snapshot(self) -> Any:
        return (self.bucket, list(self.acc), self.value)

    def restore(self, state: Any) -> None:
        self.bucket, self.acc, self.value = state[0], [float(x) for x in state[1]], float(state[2])


class Conviction(Stateless):
    """Signed conviction in [-1, 1] from a float over [lo, hi] or a bool's fixed value."""

    def __init__(self, lo: float | None, hi: float | None, value: float, one_to_ten: bool) -> None:
        self.lo, self.hi, self.value, self.one_to_ten = lo, hi, value, one_to_ten

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        x = args[0]
        if self.lo is None or self.hi is None:
            c = self.value if x else 0.0
        else:
            xf = float(x)
            if math.isnan(xf):
                return math.nan
            c = max(-1.0, min(1.0, 2.0 * (xf - self.lo) / (self.hi - self.lo) - 1.0))
        return 1.0 + (c + 1.0) * 4.5 if self.one_to_ten else c


class Confluence(Stateless):
    """weighted_sum / k_of_n / veto over convictions; undefined (NaN) inputs are left out."""

    def __init__(
        self, method: str, n_inputs: int, weights: Sequence[float] | None, k: int, threshold: float
    ) -> None:
        self.method, self.n, self.k, self.threshold = method, n_inputs, k, threshold
        self.weights = list(weights) if weights is not None else [1.0] * n_inputs

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        values = [float(a) for a in args[: self.n]]
        if self.method == "k_of_n":
            return sum(1 for v in values if not math.isnan(v) and v >= self.threshold) >= self.k
        if self.method == "veto" and any(bool(v) for v in args[self.n :]):
            return 0.0
        pairs = [(w, v) for w, v in zip(self.weights, values, strict=True) if not math.isnan(v)]
        norm = math.fsum(abs(w) for w, _ in pairs)
        if not pairs or norm == 0:
            return math.nan
        return max(-1.0, min(1.0, math.fsum(w * v for w, v in pairs) / norm))


class PythonSignal:
    """User code loaded from a file whose sha256 was pinned in the artifact."""

    clocked = True

    def __init__(self, path: str, class_name: str, sha256: str, params: dict[str, Any]) -> None:
        import hashlib
        import importlib.util
        from pathlib import Path

        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ValueError(
                f"{path}: sha256 {digest} does not match the pinned {sha256}; refusing to run it"
            )
        spec = importlib.util.spec_from_file_location(f"stratagem_node_{sha256[:16]}", path)
        if spec is None or spec.loader is None:
            raise ValueError(f"{path}: cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cls = getattr(module, class_name, None)
        if cls is None:
            raise ValueError(f"{path}: no class {class_name!r}")
        self.impl = cls()
        for method in ("initialize", "update", "get_state", "load_state"):
            if not callable(getattr(self.impl, method, None)):
                raise ValueError(f"{path}: {class_name} must define {method}()")
        self.impl.initialize(dict(params))

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        value = self.impl.update(list(args), bar)
        return value if isinstance(value, bool) else float(value)

    def on_fill(self, fill: Any) -> None:
        hook = getattr(self.impl, "on_fill", None)
        if callable(hook):
            hook(fill)

    def snapshot(self) -> Any:
        return self.impl.get_state()

    def restore(self, state: Any) -> None:
        self.impl.load_state(state)
