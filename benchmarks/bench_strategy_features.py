"""Cost of the strategy-kernel features (vol-target sizing, scaling, portfolio limits), as ratios.

Baselines measured in the same run: the SMA-cross example with pct_equity sizing (event-driven
and fast path), and two separate event-driven backtests for the portfolio run.
Run: `python benchmarks/bench_strategy_features.py [--repeat 3]`; prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from artifacts.graph import check
from artifacts.io import load, to_data
from artifacts.schema import Artifact
from feeds.files import read_bars
from strategy_kernel.backtest import run_backtest
from strategy_kernel.fastpath import fast_backtest
from strategy_kernel.portfolio import AccountLimits, run_portfolio_backtest

ROOT = Path(__file__).resolve().parents[1]


def _timed(cases: list[tuple[str, str, Callable[[], object]]], repeat: int) -> list[float]:
    """Median seconds per case; the cases run round-robin so load drifts hit all alike."""
    for _, _, fn in cases:
        fn()  # warm (numba caches, imports)
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeat):
        for k, (_, _, fn) in enumerate(cases):
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    bars = read_bars(ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv")
    n = bars.height
    sma = load(ROOT / "examples" / "sma-cross.yaml")
    rsi = load(ROOT / "examples" / "rsi-reversion.yaml")
    data = to_data(sma)
    data["risk"] = {"sizing": {"method": "vol_target", "value": 20, "lookback_bars": 48}}
    vol = Artifact.model_validate(data)
    scale = load(ROOT / "examples" / "sma-voltarget-scale.yaml")
    limits = AccountLimits(max_exposure_pct=150, max_concurrent_positions=2, max_correlation=0.8)
    # (case, engine, run, index of its baseline)
    cases: list[tuple[str, str, Callable[[], object]]] = [
        (
            "SMA cross, pct_equity (baseline)",
            "event-driven",
            lambda: run_backtest(sma, check(sma), bars),
        ),
        ("SMA cross, vol_target", "event-driven", lambda: run_backtest(vol, check(vol), bars)),
        (
            "SMA cross, vol_target + scale-in/out",
            "event-driven",
            lambda: run_backtest(scale, check(scale), bars),
        ),
        (
            "SMA cross, pct_equity (baseline)",
            "fast path",
            lambda: fast_backtest(sma, check(sma), bars),
        ),
        ("SMA cross, vol_target", "fast path", lambda: fast_backtest(vol, check(vol), bars)),
        (
            "SMA + RSI, two separate backtests (baseline)",
            "event-driven",
            lambda: (run_backtest(sma, check(sma), bars), run_backtest(rsi, check(rsi), bars)),
        ),
        (
            "SMA + RSI, one account (portfolio limits)",
            "run_portfolio_backtest",
            lambda: run_portfolio_backtest([sma, rsi], {"BTC/USDT": bars}, account=limits),
        ),
    ]
    baseline = [0, 0, 0, 3, 3, 5, 5]
    secs = _timed(cases, args.repeat)
    print(f"{n:,} bars of 1h synthetic BTC/USDT, median of {args.repeat} (round-robin)\n")
    print("| case | engine | seconds | bars/s | speed vs baseline |")
    print("|---|---|---:|---:|---:|")
    for (case, engine, _), sec, b in zip(cases, secs, baseline, strict=True):
        print(f"| {case} | {engine} | {sec:.3f} | {n / sec:,.0f} | {secs[b] / sec:.2f}x |")


if __name__ == "__main__":
    main()
