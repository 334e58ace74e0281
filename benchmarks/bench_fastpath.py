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

    python benchmarks/bench_fastpath.py [--bars 300000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
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

ROOT = Path(__file__).resolve().parents[1]


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
        t = time.perf_counter()
        bt.run()
        return time.perf_counter() - t


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
        t = time.perf_counter()
        bt.run()
        return time.perf_counter() - t


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bars", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
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
        f"\n{args.bars:,} synthetic 1h bars, median of {args.repeat}; first fast-path calls "
        f"(numba compile or cache load, excluded below): {compile_s:.2f} s\n"
    )
    print(
        "| strategy | engine | seconds | bars/s | x backtesting.py | trades | identical to event-driven |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for label, (name, baseline) in cases.items():
        art = load(ROOT / "examples" / f"{name}.yaml")
        graph = check(art)
        times: dict[str, list[float]] = {"base": [], "event": [], "core": [], "full": []}
        same = True
        n_trades = 0
        for _ in range(args.repeat):
            times["base"].append(baseline(bars))
            dt, ev = _timed(lambda: run_backtest(art, graph, bars))  # noqa: B023
            times["event"].append(dt)
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
            ("stratagem fast path, core", "core", str(n_trades), str(same)),
            ("stratagem fast path, full (+ metrics)", "full", str(n_trades), str(same)),
        ]
        for engine, key, tr, ident in rows:
            med = float(np.median(times[key]))
            print(
                f"| {label} | {engine} | {med:.3f} | {args.bars / med:,.0f} | {base / med:.1f} "
                f"| {tr} | {ident} |"
            )


if __name__ == "__main__":
    main()
