"""Backtest fast path against backtesting.py (baseline) and the event-driven path, same data.

Two strategies, on the same seeded synthetic hourly bars:
- SMA(20)/SMA(50) cross, long only, market entry, 3 % stop (examples/sma-cross.yaml);
- RSI(14) reversion, limit entry 2.00 below the close with a 3-bar timeout, 2 x ATR(14) stop,
  two take-profits at 1.5 R and 3 R, exit on RSI > 70 (examples/rsi-reversion.yaml).
backtesting.py runs the nearest equivalent of each (one bt.run(), stats included). The fast
path is timed twice: "core" (DAG + numba loop + trade list, metrics not asked for) and "full"
(metrics computed too). Numba compilation is excluded from the timings (a warm-up run first)
and reported on its own. Every repeat checks fast path == event-driven, trade for trade and
bar for bar (equity).

One more row per strategy, "strategy log alone": the same `bar` and `nodes` records the
event-driven run wrote (captured from it), appended to a `StrategyLog` with nothing else
running. It is the floor of any per-event path that keeps the log contract (every input and
every changed node value, one SHA-256-chained record each), however the kernels are built.

A second table splits the event-driven path's time per bar into its parts (order kernel,
DAG, strategy log, decisions, bar loop): each part's entry points are wrapped with a timer
(exclusive time, the timer's own cost per call subtracted) and the parts are scaled to the
uninstrumented run, so they add up to its microseconds per bar.

    python benchmarks/bench_fastpath.py [--bars 300000] [--repeat 3] [--breakdown-bars 100000]
"""

from __future__ import annotations

import argparse
import gc
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from artifacts.graph import check
from artifacts.io import load
from feeds.synthetic import generate_bars
from strategy_kernel.backtest import run_backtest
from strategy_kernel.fastpath import fast_backtest
from strategy_kernel.log import StrategyLog

ROOT = Path(__file__).resolve().parents[1]
#: The clock every timing uses: process CPU time by default, because on a shared machine wall
#: time mostly measures the other jobs; `--clock wall` for an idle machine.
CLOCK: Callable[[], float] = time.process_time


def _frame(bars: pl.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {c.capitalize(): bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")},
        index=pd.to_datetime(bars["ts_ns"].to_numpy()),
    )


def bt_sma(bars: pl.DataFrame) -> float:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.fast = self.I(SMA, self.data.Close, 20)
            self.slow = self.I(SMA, self.data.Close, 50)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                if not self.position:
                    self.buy(size=0.95, sl=self.data.Close[-1] * 0.97)
            elif crossover(self.slow, self.fast):
                self.position.close()

    bt = Backtest(_frame(bars), SmaCross, cash=1e12, commission=0.0005, finalize_trades=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = CLOCK()
        bt.run()
        return CLOCK() - t


def bt_rsi(bars: pl.DataFrame) -> float:
    import talib
    from backtesting import Backtest, Strategy

    class RsiReversion(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.rsi = self.I(talib.RSI, self.data.Close, 14)
            self.atr = self.I(talib.ATR, self.data.High, self.data.Low, self.data.Close, 14)

        def next(self) -> None:
            rsi, atr, close = self.rsi, self.atr[-1], self.data.Close[-1]
            if self.position and rsi[-1] > 70:
                self.position.close()
            elif not self.position and not self.orders and rsi[-2] < 30 and rsi[-1] > rsi[-2]:
                entry = close - 2.0
                stop = entry - 2 * atr
                for r in (1.5, 3.0):  # two half-size legs, one target each
                    self.buy(size=0.05, limit=entry, sl=stop, tp=entry + r * (entry - stop))

    bt = Backtest(_frame(bars), RsiReversion, cash=1e12, commission=0.0005, finalize_trades=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = CLOCK()
        bt.run()
        return CLOCK() - t


#: The parts of the event-driven path, each the exclusive time of the entry points listed in
#: `_instrumented` (what they call that is another part is counted there, not twice).
PARTS = {
    "ok_bar": "order kernel: a bar against the open orders (`handle(MarketBar)`)",
    "ok_cmd": "order kernel: commands (submit, cancel, amend) and their events",
    "dag": "strategy: signal DAG update (`DagEvaluator.on_bar`)",
    "log": "strategy log: build, JSON-encode and SHA-256-chain the records",
    "decide": "strategy: decisions on the close (`StrategyKernel.on_bar` itself)",
    "events": "strategy: fill and position events (`StrategyKernel.on_event`)",
    "loop": "bar loop: bar tuples, MarketBar message, equity/position series, setup, metrics",
}


@contextmanager
def _instrumented() -> Iterator[tuple[dict[str, int], dict[str, int]]]:
    """Wrap the parts' entry points with a timer; yields (exclusive ns, calls) per part."""
    from order_kernel import messages as m
    from order_kernel.kernel import OrderKernel
    from strategy_kernel.backtest import BarLoop
    from strategy_kernel.dag import DagEvaluator
    from strategy_kernel.engine import StrategyKernel
    from strategy_kernel.log import StrategyLog

    excl = dict.fromkeys(PARTS, 0)
    calls = dict.fromkeys(PARTS, 0)
    stack: list[list[int]] = []
    clock = time.perf_counter_ns
    saved: list[tuple[type, str, Any]] = []

    def wrap(owner: type, name: str, part: Callable[[tuple[Any, ...]], str]) -> None:
        fn = getattr(owner, name)
        saved.append((owner, name, fn))

        def timed(*a: Any, **kw: Any) -> Any:
            key = part(a)
            inner = [0]  # time spent in wrapped callees (another part)
            stack.append(inner)
            t0 = clock()
            try:
                return fn(*a, **kw)
            finally:
                dt = clock() - t0
                stack.pop()
                excl[key] += dt - inner[0]
                calls[key] += 1
                if stack:
                    stack[-1][0] += dt

        setattr(owner, name, timed)

    wrap(OrderKernel, "handle", lambda a: "ok_bar" if isinstance(a[1], m.MarketBar) else "ok_cmd")
    wrap(DagEvaluator, "on_bar", lambda a: "dag")
    for name in ("append", "append_bar", "append_nodes"):
        if hasattr(StrategyLog, name):  # older versions have `append` only
            wrap(StrategyLog, name, lambda a: "log")
    wrap(StrategyKernel, "on_bar", lambda a: "decide")
    wrap(StrategyKernel, "on_event", lambda a: "events")
    wrap(BarLoop, "step", lambda a: "loop")
    try:
        yield excl, calls
    finally:
        for owner, name, fn in reversed(saved):
            setattr(owner, name, fn)


def _timer_cost_ns() -> float:
    """What one timed wrapper adds to a call (measured on an empty method, best of 5)."""

    class Empty:
        def f(self) -> None:
            return None

    bare_f = Empty.f
    best = math.inf
    with _instrumented():
        pass
    stack: list[list[int]] = []
    clock = time.perf_counter_ns

    def timed(*a: Any) -> Any:
        inner = [0]
        stack.append(inner)
        t0 = clock()
        try:
            return bare_f(*a)
        finally:
            dt = clock() - t0
            stack.pop()
            if stack:
                stack[-1][0] += dt

    x, n = Empty(), 100_000
    for _ in range(5):
        t = time.perf_counter_ns()
        for _ in range(n):
            timed(x)
        wrapped = time.perf_counter_ns() - t
        t = time.perf_counter_ns()
        for _ in range(n):
            bare_f(x)
        best = min(best, (wrapped - (time.perf_counter_ns() - t)) / n)
    return max(best, 0.0)


def breakdown(name: str, bars: pl.DataFrame, repeat: int) -> tuple[float, dict[str, float]]:
    """Event-driven seconds (best of `repeat`) and microseconds per bar of each part."""
    art = load(ROOT / "examples" / f"{name}.yaml")
    graph = check(art)
    run_backtest(art, graph, bars.head(3000))
    total = math.inf
    for _ in range(repeat):
        dt, _ = _timed(lambda: run_backtest(art, graph, bars))
        total = min(total, dt)
    best = math.inf
    excl: dict[str, int] = {}
    calls: dict[str, int] = {}
    for _ in range(repeat):
        with _instrumented() as (e, c):  # wall time here: the parts are timed with perf_counter
            dt, _ = _timed(lambda: run_backtest(art, graph, bars), time.perf_counter)
        if dt < best:
            best, excl, calls = dt, dict(e), dict(c)
    excl["loop"] += max(int(best * 1e9) - sum(excl.values()), 0)  # outside every wrapper
    cost = _timer_cost_ns()
    net = {k: max(excl[k] - cost * calls[k], 0.0) for k in PARTS}
    scale = total * 1e9 / sum(net.values())
    return total, {k: net[k] * scale / bars.height / 1000 for k in PARTS}


def log_records(art: Any, graph: Any, bars: pl.DataFrame) -> list[tuple[bool, tuple[Any, ...]]]:
    """The (is_bar, arguments) of every per-bar strategy-log append the event-driven run makes."""
    calls: list[tuple[bool, tuple[Any, ...]]] = []
    bar_fn, nodes_fn = StrategyLog.append_bar, StrategyLog.append_nodes

    def rec_bar(self: StrategyLog, *a: Any) -> None:
        calls.append((True, a))
        bar_fn(self, *a)

    def rec_nodes(self: StrategyLog, *a: Any) -> None:
        calls.append((False, a))
        nodes_fn(self, *a)

    setattr(StrategyLog, "append_bar", rec_bar)  # noqa: B010 - patched for this one run
    setattr(StrategyLog, "append_nodes", rec_nodes)  # noqa: B010
    try:
        run_backtest(art, graph, bars)
    finally:
        setattr(StrategyLog, "append_bar", bar_fn)  # noqa: B010
        setattr(StrategyLog, "append_nodes", nodes_fn)  # noqa: B010
    return calls


def log_alone(calls: list[tuple[bool, tuple[Any, ...]]]) -> str:
    """Append the captured records to an in-memory log (no file), nothing else; its head."""
    log = StrategyLog(None)
    bar, nodes = log.append_bar, log.append_nodes
    for is_bar, a in calls:
        if is_bar:
            bar(*a)
        else:
            nodes(*a)
    return log.head


def _timed(fn: Callable[[], Any], clock: Callable[[], float] | None = None) -> tuple[float, Any]:
    c = clock or CLOCK
    gc.collect()  # garbage of the previous run is not charged to this one
    t = c()
    out = fn()
    return c() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bars", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--breakdown-bars",
        type=int,
        default=100_000,
        help="bars for the per-bar cost table (0: skip)",
    )
    ap.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time or wall time"
    )
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    bars = generate_bars(seed=11, start_ns=1_704_067_200_000_000_000, n=args.bars, timeframe="1h")
    cases = {
        "SMA cross": ("sma-cross", bt_sma),
        "RSI + ATR stop + 2 TPs": ("rsi-reversion", bt_rsi),
    }
    t0 = time.perf_counter()
    for name, _ in cases.values():  # numba compilation (or loading the on-disk cache), imports
        art = load(ROOT / "examples" / f"{name}.yaml")
        fast_backtest(art, check(art), bars.head(2000)).metrics  # noqa: B018
    compile_s = time.perf_counter() - t0
    print(
        f"\n{args.bars:,} synthetic 1h bars, median of {args.repeat}, {args.clock} time; first fast-path calls "
        f"(numba compile or cache load, excluded below): {compile_s:.2f} s\n"
    )
    print(
        "| strategy | engine | seconds | bars/s | x backtesting.py | trades | identical to event-driven |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for label, (name, baseline) in cases.items():
        art = load(ROOT / "examples" / f"{name}.yaml")
        graph = check(art)
        times: dict[str, list[float]] = {
            "base": [],
            "event": [],
            "log": [],
            "core": [],
            "full": [],
        }
        records = log_records(art, graph, bars)
        same = True
        n_trades = 0
        for _ in range(args.repeat):
            times["base"].append(baseline(bars))
            dt, ev = _timed(lambda: run_backtest(art, graph, bars))  # noqa: B023
            times["event"].append(dt)
            dt, _ = _timed(lambda: log_alone(records))  # noqa: B023
            times["log"].append(dt)
            dt, fp = _timed(lambda: fast_backtest(art, graph, bars))  # noqa: B023
            times["core"].append(dt)
            dt, _ = _timed(lambda: fast_backtest(art, graph, bars).metrics)  # noqa: B023
            times["full"].append(dt)
            same = same and ev.trades == fp.trades and np.array_equal(ev.equity, fp.equity)
            n_trades = len(fp.trades)
        base = float(np.median(times["base"]))
        rows = [
            ("backtesting.py (baseline)", "base", "-", "-"),
            ("stratagem event-driven", "event", str(n_trades), "(reference)"),
            ("strategy log alone (its records, no kernels)", "log", "-", "-"),
            ("stratagem fast path, core", "core", str(n_trades), str(same)),
            ("stratagem fast path, full (+ metrics)", "full", str(n_trades), str(same)),
        ]
        for engine, key, tr, ident in rows:
            med = float(np.median(times[key]))
            ratio = base / med
            print(
                f"| {label} | {engine} | {med:.3f} | {args.bars / med:,.0f} "
                f"| {ratio:.2f} | {tr} | {ident} |"
                if ratio < 10
                else f"| {label} | {engine} | {med:.3f} | {args.bars / med:,.0f} "
                f"| {ratio:.1f} | {tr} | {ident} |"
            )
    if args.breakdown_bars:
        _print_breakdown(cases, bars.head(args.breakdown_bars), args.repeat)


def _print_breakdown(cases: dict[str, tuple[str, Any]], bars: pl.DataFrame, repeat: int) -> None:
    results = {label: breakdown(name, bars, repeat) for label, (name, _) in cases.items()}
    print(
        f"\nEvent-driven path, where the time goes per bar ({bars.height:,} bars, best of "
        f"{repeat}; microseconds per bar, share of the total; the total is "
        f"{'CPU' if CLOCK is time.process_time else 'wall'} time, the split comes from wall-clock "
        "timers around each part)\n"
    )
    print("| part | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for key, text in PARTS.items():
        cells = [
            f"{per[key]:.2f} ({per[key] / (total / bars.height * 1e6):.0%})"
            for total, per in results.values()
        ]
        print(f"| {text} | " + " | ".join(cells) + " |")
    totals = [
        f"**{total / bars.height * 1e6:.2f}** ({bars.height / total:,.0f} bars/s)"
        for total, _ in results.values()
    ]
    print("| **total** | " + " | ".join(totals) + " |")


if __name__ == "__main__":
    main()
