"""Bars/s read from the parquet lake with polars vs pandas.read_parquet of the same file.

Run: ``python benchmarks/bench_feeds.py [--bars 500000] [--repeat 7]``. Everything is measured
in one invocation on the same file, so only the ratios are meaningful on a noisy machine.
Also times the strict CSV reader (``feeds.files.read_bars``) against ``pandas.read_csv``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import polars as pl

from feeds.files import read_bars, write_bars
from feeds.lake import Lake
from feeds.synthetic import generate_bars

T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00Z


def _median_seconds(
    readers: list[tuple[str, Callable[[], object]]], repeat: int
) -> dict[str, float]:
    """Median wall time per reader, run round-robin so machine noise hits all alike."""
    for _, fn in readers:
        fn()  # warm-up (imports, page cache)
    times: dict[str, list[float]] = {name: [] for name, _ in readers}
    for _ in range(repeat):
        for name, fn in readers:
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    """Build a one-year 1m lake partition and time the readers on it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=500_000, help="1m bars (<= 527,040 = 2024)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    bars = generate_bars(seed=1, start_ns=T0, n=args.bars, timeframe="1m")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lake = Lake(root / "lake")
        lake.write("sim", "BTC/USDT", "1m", bars)
        path = lake.partition_path("sim", "BTC/USDT", "1m", 2024)
        csv = root / "bars.csv"
        write_bars(bars, csv)

        n = bars.height
        rows: list[tuple[str, Callable[[], object]]] = [
            ("lake.read (polars, checked)", lambda: lake.read("sim", "BTC/USDT", "1m")),
            ("pl.read_parquet", lambda: pl.read_parquet(path)),
            ("pd.read_parquet (baseline)", lambda: pd.read_parquet(path)),
            ("files.read_bars CSV (validated)", lambda: read_bars(csv)),
            ("pl.read_csv", lambda: pl.read_csv(csv)),
            ("pd.read_csv (CSV baseline)", lambda: pd.read_csv(csv)),
        ]
        timings = _median_seconds(rows, args.repeat)

    base_parquet = timings["pd.read_parquet (baseline)"]
    base_csv = timings["pd.read_csv (CSV baseline)"]
    print(f"{n:,} 1m bars, one parquet year file (zstd); median of {args.repeat} runs\n")
    print("| reader | ms | bars/s | x pandas (same format) |")
    print("|---|---:|---:|---:|")
    for name, seconds in timings.items():
        base = base_csv if "csv" in name.lower() else base_parquet
        print(f"| {name} | {seconds * 1e3:.1f} | {n / seconds:,.0f} | {base / seconds:.2f} |")


if __name__ == "__main__":
    main()
