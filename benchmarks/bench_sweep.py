"""Sweep throughput: `--engine auto` (the fast path) against `--engine event` (the real kernels).

Baseline measured in the same run: the same grid on the event-driven kernels, serial. Both
engines produce the same trades per combination (asserted here as well as in the tests).
Run: `python benchmarks/bench_sweep.py [--combos 12] [--bars N] [--repeat 3]`; prints a markdown
table. Without --bars: the bundled 9,000-bar sample; with it, N seeded synthetic hourly bars.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import polars as pl

from artifacts.io import load
from feeds.files import read_bars
from feeds.synthetic import generate_bars
from strategy_kernel.sweep import SweepResult, sweep

ROOT = Path(__file__).resolve().parents[1]
ART = load(ROOT / "examples" / "sma-cross.yaml")


def _run(
    bars: pl.DataFrame, engine: str, executor: str, combos: list[dict[str, int]]
) -> list[SweepResult]:
    return sweep(ART, bars, combos, executor=executor, workers=2, engine=engine)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--combos", type=int, default=12)
    ap.add_argument("--bars", type=int, default=0, help="synthetic bars (default: the sample)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    bars = (
        generate_bars(seed=11, start_ns=1_704_067_200_000_000_000, n=args.bars, timeframe="1h")
        if args.bars
        else read_bars(ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv")
    )
    fast_periods = [5, 10, 15, 20, 25, 30]
    slow_periods = [40, 60, 80, 100]
    combos = [
        {"nodes.fast.params.period": f, "nodes.slow.params.period": s}
        for f in fast_periods
        for s in slow_periods
    ][: args.combos]
    cases = [
        ("event-driven kernels, serial (baseline)", "event", "serial"),
        ("auto (fast path), serial", "auto", "serial"),
        ("event-driven kernels, 2 processes", "event", "process"),
        ("auto (fast path), 2 processes", "auto", "process"),
        ("auto (fast path), --executor auto (the defaults)", "auto", "auto"),
    ]
    ref = _run(bars, "event", "serial", combos)
    for _, engine, executor in cases[1:]:
        got = _run(
            bars, engine, executor, combos
        )  # also warms numba caches and the workers' imports
        assert [r.trades for r in got] == [r.trades for r in ref], f"{engine}/{executor} differ"
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(args.repeat):
        for k, (_, engine, executor) in enumerate(cases):
            t = time.perf_counter()
            _run(bars, engine, executor, combos)
            times[k].append(time.perf_counter() - t)
    med = [statistics.median(t) for t in times]
    print(
        f"{len(combos)} combinations of the SMA-cross example over {bars.height:,} bars, "
        f"wall time, median of {args.repeat} (a process sweep includes starting its workers)\n"
    )
    print("| engine | seconds | combinations/s | x baseline |")
    print("|---|---:|---:|---:|")
    for (name, _, _), s in zip(cases, med, strict=True):
        print(f"| {name} | {s:.3f} | {len(combos) / s:,.1f} | {med[0] / s:.1f} |")


if __name__ == "__main__":
    main()
