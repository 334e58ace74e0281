"""Backtest throughput: stratagem's event-driven path against backtesting.py, same strategy and data.

Both run an SMA(20)/SMA(50) cross, long only, 3 % stop, on the same seeded synthetic hourly bars.
The baseline is backtesting.py measured in the same invocation; the table reports bars/s and
the ratio, and checks both engines took the same trades (same entry and exit bars).

    python benchmarks/bench_backtest.py [--bars 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from artifacts.graph import check
from artifacts.io import load
from feeds.synthetic import generate_bars
from strategy_kernel.backtest import run_backtest

ROOT = Path(__file__).resolve().parents[1]
#: process CPU time by default: on a shared machine wall time mostly measures the other jobs
CLOCK: Callable[[], float] = time.process_time


def backtesting_py(bars: pl.DataFrame) -> tuple[float, list[tuple[int, int]]]:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    df = pd.DataFrame(
        {c.capitalize(): bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")},
        index=pd.to_datetime(bars["ts_ns"].to_numpy()),
    )

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

    bt = Backtest(df, SmaCross, cash=1e12, commission=0.0005, finalize_trades=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = CLOCK()
        stats = bt.run()
        dt = CLOCK() - t
    trades = stats["_trades"]
    pairs = [(int(e), int(x)) for e, x in zip(trades["EntryBar"], trades["ExitBar"], strict=True)]
    return dt, pairs


def stratagem_event(
    bars: pl.DataFrame, out_dir: Path | None
) -> tuple[float, list[tuple[int, int]]]:
    artifact = load(ROOT / "examples" / "sma-cross.yaml")
    graph = check(artifact)
    t = CLOCK()
    result = run_backtest(artifact, graph, bars, out_dir=out_dir)
    dt = CLOCK() - t
    return dt, [(t.entry_bar, t.exit_bar) for t in result.trades]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bars", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time or wall time"
    )
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    bars = generate_bars(seed=11, start_ns=1_704_067_200_000_000_000, n=args.bars, timeframe="1h")
    stratagem_event(bars.head(1000), None)  # numba compilation and imports out of the timing
    rows: dict[str, list[float]] = {
        "backtesting.py (baseline)": [],
        "stratagem event-driven, no log files": [],
        "stratagem event-driven, logs written": [],
    }
    trades: dict[str, list[tuple[int, int]]] = {}
    import tempfile

    for _ in range(args.repeat):
        gc.collect()  # garbage of the previous run is not charged to the next one
        dt, trades["base"] = backtesting_py(bars)
        rows["backtesting.py (baseline)"].append(dt)
        dt, trades["ours"] = stratagem_event(bars, None)
        rows["stratagem event-driven, no log files"].append(dt)
        with tempfile.TemporaryDirectory() as tmp:
            dt, _ = stratagem_event(bars, Path(tmp))
        rows["stratagem event-driven, logs written"].append(dt)
    base = float(np.median(rows["backtesting.py (baseline)"]))
    print(
        f"\nSMA cross, {args.bars:,} synthetic 1h bars, median of {args.repeat}, {args.clock} time\n"
    )
    print("| engine | seconds | bars/s | x backtesting.py |")
    print("|---|---:|---:|---:|")
    for name, times in rows.items():
        med = float(np.median(times))
        print(f"| {name} | {med:.3f} | {args.bars / med:,.0f} | {base / med:.2f} |")
    same = trades["base"] == trades["ours"]
    print(
        f"\ntrades: backtesting.py {len(trades['base'])}, stratagem {len(trades['ours'])}; "
        f"identical entry/exit bars: {same}"
    )
    if not same:
        diff = next(
            i
            for i, (a, b) in enumerate(zip(trades["base"], trades["ours"], strict=False))
            if a != b
        )
        print(f"first difference at trade {diff}: {trades['base'][diff]} vs {trades['ours'][diff]}")


if __name__ == "__main__":
    main()
