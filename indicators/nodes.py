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

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        slots = [math.nan] * 5
        for slot, value in zip(self.input_slots, args, strict=True):
            slots[slot] = float(value)
        return float(self.stream.update(*slots)[self.output_index])

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
        return compare(self.op, float(args[0]), rhs)


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
        if self.above:
            return compare("<=", pa, pb) and compare(">", a, b)
        return compare(">=", pa, pb) and compare("<", a, b)

    def snapshot(self) -> Any:
        return self.prev

    def restore(self, state: Any) -> None:
        self.prev = (float(state[0]), float(state[1]))


class AllOf(Stateless):
    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        return all(bool(a) for a in args)


class AnyOf(Stateless):
    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        return any(bool(a) for a in args)


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
        w = list(self.window)
        op = "<" if self.rising else ">"
        return all(compare(op, w[i], w[i + 1]) for i in range(len(w) - 1))

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


class DrawingLevel:
    """A horizontal level: `touch` when [low, high] reaches the band, `above`/`below` on the close."""

    clocked = True

    def __init__(self, price: float, tolerance_bps: float, mode: str) -> None:
        band = price * tolerance_bps / 10_000.0
        self.lo, self.hi, self.mode = price - band, price + band, mode

    def update(self, args: Sequence[Value], bar: BarValues) -> Value:
        if self.mode == "touch":
            return bar.low <= self.hi and bar.high >= self.lo
        if self.mode == "above":
            return bar.close > self.hi
        return bar.close < self.lo

    def snapshot(self) -> Any:
        return None

    def restore(self, state: Any) -> None:
        return None
